"""Review quality in operation (issue 25, item 5), against the real stack: the desk's metrics
as people decide, the summary from the table, the ``vitrine status`` line, the desk's Quality
page and ``GET /v1/quality``, all on the same decisions with exact numbers.

Cards of two models: approvals with and without a person's edit (one through the API, two
through an admin's bulk approval), rejections with and without edits, a card approved and then
rejected (two decisions to the metrics, one rejected card to the summary), and an edit left
pending (counted nowhere).  Each card's arrival time is moved back by a known amount first, so
each decision falls into a known bucket of the time-to-decision histogram.  The desk is this
module's own process and its cards live in this module's own bucket.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.api import EDITABLE_FIELDS
from services.review.quality import LABEL_MAX, summary_sync
from tests.support.card_text import DESCRIPTION
from tests.support.pipeline import DEFAULT_DSN, READER_DSN, REPO, ensure_stack
from tests.support.review_desk import (
    Desk,
    card,
    free_port,
    iter_desk,
    photo,
    query,
    result,
    upsert,
)

pytestmark = pytest.mark.pipeline

MODEL_A, PROMPT_A = "gemma-3-270m-q4_k_m", "card-v3+test"
MODEL_B = "/srv/models/qwen2.5-vl-3b-instruct-" + "x" * 50 + ".gguf"
PROMPT_B = "card-v4"
LABEL_B = ("qwen2.5-vl-3b-instruct-" + "x" * 50 + ".gguf")[:LABEL_MAX]  # no directory, cut

# key: (model, prompt, seconds since the card arrived when it is decided on)
CARDS = {
    "a/approved.jpg": (MODEL_A, PROMPT_A, 600),
    "a/edited-approved.jpg": (MODEL_A, PROMPT_A, 6000),
    "a/rejected.jpg": (MODEL_A, PROMPT_A, 30 * 3600),
    "a/edited-pending.jpg": (MODEL_A, PROMPT_A, 60),
    "b/approved-then-rejected.jpg": (MODEL_B, PROMPT_B, 1200),
    "b/edited-approved.jpg": (MODEL_B, PROMPT_B, 1200),
    "c/edited-rejected.jpg": (MODEL_B, PROMPT_B, 3 * 86400),
}
LONGER = DESCRIPTION + " Acompanha tampa extra."


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(
        tmp_path_factory.mktemp("review-quality"), VITRINE_METRICS_PORT=str(free_port())
    )


def vitrine(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it, on a screen wide enough for a quality line."""
    return subprocess.run(
        [sys.executable, "-m", "vitrine.cli", *args],
        cwd=REPO,
        env={**env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def seed(desk: Desk) -> None:
    for i, (key, (model, prompt, age)) in enumerate(CARDS.items()):
        ref = desk.put_photo(key, photo((30, 60, 200 - i)))
        made = result(ref, card(f"Garrafa térmica {i}"))
        upsert([made.model_copy(update={"model_id": model, "prompt_version": prompt})])
        # the card arrived `age` seconds ago (only the sink moves updated_at; the owner may)
        query(
            "UPDATE product_cards SET updated_at = now() - %s * interval '1 second' "
            "WHERE bucket = %s AND object_key = %s RETURNING 1",
            age,
            desk.bucket,
            key,
        )


def ok(answer: httpx.Response) -> httpx.Response:
    assert answer.status_code in (200, 303), (answer.status_code, answer.text[:500])
    return answer


@pytest.fixture(scope="module")
def decided(desk: Desk) -> Desk:
    """Every decision of this module, made once."""
    seed(desk)
    b = desk.bucket
    with desk.api("reviewer") as api:
        ok(api.post(f"/v1/cards/{b}/a/approved.jpg/approve", json={}))
        ok(
            api.patch(
                f"/v1/cards/{b}/a/edited-approved.jpg",
                json={"product_name": "Garrafa térmica inox 500 ml"},
            )
        )
        ok(api.post(f"/v1/cards/{b}/a/edited-approved.jpg/approve", json={"note": "ok"}))
        ok(api.post(f"/v1/cards/{b}/a/rejected.jpg/reject", json={"note": "outra foto"}))
        ok(
            api.patch(
                f"/v1/cards/{b}/a/edited-pending.jpg",
                json={"product_name": "Garrafa térmica inox 750 ml"},
            )
        )
        ok(api.patch(f"/v1/cards/{b}/b/edited-approved.jpg", json={"description_long": LONGER}))
        ok(api.patch(f"/v1/cards/{b}/c/edited-rejected.jpg", json={"color_primary": "vermelho"}))
        ok(api.post(f"/v1/cards/{b}/c/edited-rejected.jpg/reject", json={"note": "cor errada"}))
    admin = desk.login("admin")
    page = ok(admin.get("/", params={"prefix": "b/", "bucket": b}))
    bulk = ok(
        admin.post("/bulk-approve", data={"csrf": csrf_of(page.text), "prefix": "b/", "bucket": b})
    )
    assert "Approved+2+cards" in bulk.headers["location"]
    with desk.api("reviewer") as api:
        ok(api.post(f"/v1/cards/{b}/b/approved-then-rejected.jpg/reject", json={"note": "não"}))
    states = {k: desk.row(k)["review_state"] for k in CARDS}
    assert states == {
        "a/approved.jpg": "approved",
        "a/edited-approved.jpg": "approved",
        "a/rejected.jpg": "rejected",
        "a/edited-pending.jpg": "pending",
        "b/approved-then-rejected.jpg": "rejected",
        "b/edited-approved.jpg": "approved",
        "c/edited-rejected.jpg": "rejected",
    }
    return desk


def samples(desk: Desk) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    port = desk.service.env["VITRINE_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("vitrine_review_")
        for s in family.samples
    }


def of(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> dict[Any, float]:
    """The samples of ``name``, keyed by their labels (a dict)."""
    return {tuple(sorted(labels)): value for (n, labels), value in found.items() if n == name}


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def seconds_to_decision(desk: Desk) -> dict[str, float]:
    rows = query(
        "SELECT object_key, extract(epoch FROM reviewed_at - updated_at)::float8 AS s "
        "FROM product_cards WHERE bucket = %s AND review_state <> 'pending'",
        desk.bucket,
    )
    return {r["object_key"]: r["s"] for r in rows}


def percentile(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (at - low) * (ordered[high] - ordered[low])


def expected_report(desk: Desk) -> dict[str, Any]:
    s = seconds_to_decision(desk)
    b = [s["b/approved-then-rejected.jpg"], s["b/edited-approved.jpg"], s["c/edited-rejected.jpg"]]
    a = [s["a/approved.jpg"], s["a/edited-approved.jpg"], s["a/rejected.jpg"]]
    none = dict.fromkeys(EDITABLE_FIELDS, 0)
    return {
        "bucket": desk.bucket,
        "groups": [
            {  # 3 decided each: "/srv/..." sorts before "gemma..."
                "model_id": MODEL_B,
                "prompt_version": PROMPT_B,
                "decided": 3,
                "approved": 1,
                "approved_unchanged": 0,
                "rejected": 2,
                "approval_rate": pytest.approx(1 / 3),
                "unchanged_approval_rate": 0.0,
                "edited_fields": {**none, "description_long": 1, "color_primary": 1},
                "edit_rate": {
                    **dict.fromkeys(EDITABLE_FIELDS, 0.0),
                    "description_long": pytest.approx(1 / 3),
                    "color_primary": pytest.approx(1 / 3),
                },
                "median_decision_s": pytest.approx(percentile(b, 0.5)),
                "p90_decision_s": pytest.approx(percentile(b, 0.9)),
            },
            {
                "model_id": MODEL_A,
                "prompt_version": PROMPT_A,
                "decided": 3,
                "approved": 2,
                "approved_unchanged": 1,
                "rejected": 1,
                "approval_rate": pytest.approx(2 / 3),
                "unchanged_approval_rate": pytest.approx(1 / 3),
                "edited_fields": {**none, "product_name": 1},
                "edit_rate": {
                    **dict.fromkeys(EDITABLE_FIELDS, 0.0),
                    "product_name": pytest.approx(1 / 3),
                },
                "median_decision_s": pytest.approx(percentile(a, 0.5)),
                "p90_decision_s": pytest.approx(percentile(a, 0.9)),
            },
        ],
    }


def test_the_times_to_decision_are_the_ages_given(decided: Desk) -> None:
    s = seconds_to_decision(decided)
    for key_, (_, _, age) in CARDS.items():
        if key_ in s:
            assert age < s[key_] < age + 300, key_  # the decision came within minutes


def test_the_desk_counts_each_decision_in_its_metrics(decided: Desk) -> None:
    found = samples(decided)
    a = {"model_id": MODEL_A, "prompt_version": PROMPT_A}
    b = {"model_id": LABEL_B, "prompt_version": PROMPT_B}
    assert of(found, "vitrine_review_decisions_total") == {
        key(**a, decision="approve", edited="false"): 1.0,
        key(**a, decision="approve", edited="true"): 1.0,
        key(**a, decision="reject", edited="false"): 1.0,
        key(**b, decision="approve", edited="false"): 1.0,  # bulk: each card counts
        key(**b, decision="approve", edited="true"): 1.0,
        key(**b, decision="reject", edited="true"): 1.0,
        key(**b, decision="reject", edited="false"): 1.0,  # the approved card, rejected after
    }
    assert of(found, "vitrine_review_edited_fields_total") == {
        key(**a, field="product_name"): 1.0,  # the pending card's edit is no decision
        key(**b, field="description_long"): 1.0,
        key(**b, field="color_primary"): 1.0,
    }
    count = of(found, "vitrine_review_decision_seconds_count")
    assert count == {key(**a): 3.0, key(**b): 4.0}
    buckets = of(found, "vitrine_review_decision_seconds_bucket")

    def le(labels: dict[str, str], bound: str) -> float:
        return buckets[key(**labels, le=bound)]

    assert [le(a, x) for x in ("60.0", "300.0", "900.0", "7200.0", "86400.0", "172800.0")] == [
        0.0,
        0.0,
        1.0,
        2.0,
        2.0,
        3.0,
    ]
    assert [le(b, x) for x in ("900.0", "1800.0", "172800.0", "604800.0", "+Inf")] == [
        0.0,
        3.0,
        3.0,
        4.0,
        4.0,
    ]
    s = seconds_to_decision(decided)
    total = s["a/approved.jpg"] + s["a/edited-approved.jpg"] + s["a/rejected.jpg"]
    assert of(found, "vitrine_review_decision_seconds_sum")[key(**a)] == pytest.approx(total)


def test_the_summary_counts_each_decided_card_once(decided: Desk) -> None:
    import psycopg

    for dsn in (DEFAULT_DSN, READER_DSN):  # the operator's read-only role reads it too
        with psycopg.connect(dsn) as conn:
            report = summary_sync(conn, decided.bucket)
        assert report.model_dump() == expected_report(decided), dsn


def test_v1_quality_answers_viewers_and_refuses_the_rest(decided: Desk) -> None:
    with decided.api("viewer") as api:
        answer = api.get("/v1/quality", params={"bucket": decided.bucket})
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected_report(decided)
        every = api.get("/v1/quality")
        assert every.status_code == 200 and every.json()["bucket"] is None
        ours = [g for g in every.json()["groups"] if g["model_id"] == MODEL_B]
        assert ours and ours[0]["decided"] >= 3
        assert api.get("/v1/quality", params={"bucket": ""}).json()["bucket"] is None
        for hostile in ("\x00", "a" * 64, "../x", "Bucket", "x", "a b", "é-bucket", "ab\n"):
            refused = api.get("/v1/quality", params={"bucket": hostile})
            assert refused.status_code == 422, (hostile, refused.text)
            assert refused.json()["error"] == "invalid"
    with httpx.Client(base_url=decided.url) as anonymous:
        assert anonymous.get("/v1/quality").status_code == 401
        assert anonymous.get("/v1/quality", params={"bucket": "\x00"}).status_code == 401
    spec = httpx.get(f"{decided.url}/openapi.json").json()
    assert "/v1/quality" in spec["paths"]


def test_the_quality_page_shows_the_same_numbers_to_any_user(decided: Desk) -> None:
    with httpx.Client(base_url=decided.url) as anonymous:
        assert anonymous.get("/quality").headers["location"] == "/login"
    viewer = decided.login("viewer")
    assert 'href="/quality"' in ok(viewer.get("/")).text  # the header links to it
    page = viewer.get("/quality", params={"bucket": decided.bucket})
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text  # no inline script: only base.html's desk.js
    rows = re.findall(r'<tr class="group">(.*?)</tr>', page.text, re.S)
    assert len(rows) == 2

    def cells(row: str) -> dict[str, str]:
        return dict(re.findall(r'<td class="([\w -]+)">([^<]*)</td>', row))

    first, second = cells(rows[0]), cells(rows[1])
    assert first["model"] == MODEL_B and second["model"] == MODEL_A
    assert (first["decided"], first["approved"], first["unchanged"], first["rejected"]) == (
        "3",
        "1 (33.3 %)",
        "0 (0.0 %)",
        "2",
    )
    assert first["edited edited-color_primary"] == "1 (33.3 %)"
    assert first["edited edited-product_name"] == "0 (0.0 %)"
    assert (second["approved"], second["unchanged"]) == ("2 (66.7 %)", "1 (33.3 %)")
    assert second["edited edited-product_name"] == "1 (33.3 %)"
    assert second["p50"] == "1.7 h"  # 6,000 s and a few
    assert second["p90"] == "1.0 d"  # 6,000 s + 0.8 x (108,000 - 6,000) s = 87,600 s
    refused = viewer.get("/quality", params={"bucket": "\x00<script>"})
    assert refused.status_code == 422
    assert "<script>" not in refused.text and "not a bucket name" in refused.text


def test_status_has_a_review_quality_line_and_stays_information(decided: Desk) -> None:
    env = {**decided.ns.env, "VITRINE_PG_DSN": READER_DSN}
    as_json = vitrine(env, "status", "--json", "--bucket", decided.bucket)
    assert as_json.returncode in (0, 3), as_json.stderr  # health alone decides the code
    status = json.loads(as_json.stdout)
    assert status["quality_error"] is None
    assert status["quality"] == expected_report(decided)
    assert not any("quality" in p for p in status["problems"])
    screen = vitrine(env, "status", "--bucket", decided.bucket)
    assert screen.returncode == as_json.returncode
    lines = [line for line in screen.stdout.splitlines() if line.startswith("review quality")]
    assert lines == [
        f"review quality {MODEL_B} / {PROMPT_B}: 3 decided, approved 33.3 % (unchanged 0.0 %), "
        "edited color_primary 33.3 %, description_long 33.3 %, decision p50 20 min, p90 2.4 d",
        f"review quality {MODEL_A} / {PROMPT_A}: 3 decided, approved 66.7 % (unchanged 33.3 %), "
        "edited product_name 33.3 %, decision p50 1.7 h, p90 1.0 d",
    ]
