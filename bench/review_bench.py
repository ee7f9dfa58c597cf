"""The review desk under a 10,000-card table: how long the server takes to answer its pages.

    python bench/review_bench.py [--cards 10000] [--requests 200]

On the real stack (infra/stack): a bucket of its own is filled with ``--cards`` done, failed and
rejected rows through the sink's own upsert (leaves of the shipped tree, colours, flagged
checks, a third approved), a desk process is started as its own database role, and one signed-in
client asks for, ``--requests`` times each:

* the list's first page, unfiltered and under each filter (review state, category subtree,
  full-text search, colour flag), and pages deep in the list by their keyset cursor;
* a card page (photo, form, history, neighbours for j/k), for random cards;
* ``/v1/cards`` (whole rows as JSON).

Server-side time is the desk's own ``Server-Timing`` header (from the request entering the app
to the response leaving it); the round trip is reported beside it.  Two ratios against baselines
measured in the same run: the keyset page deep in the list against the OFFSET query a naive
pager would run for it (in SQL, same filters, same page), and a cached thumbnail against a cold
one generated from the photo.  The goals (issue 14): list p95 <= 150 ms, card page <= 100 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from schemas.card import default_taxonomy  # noqa: E402
from schemas.language import PT_BR  # noqa: E402
from schemas.messages import CardStatus, ObjectRef  # noqa: E402
from tests.support.pipeline import DEFAULT_DSN, ensure_stack  # noqa: E402
from tests.support.review_desk import Desk, card, result, start_desk, upsert  # noqa: E402

COLOURS = ["azul", "preto", "branco", "vermelho", "verde", "cinza", "amarelo", "rosa"]
WORDS = ["couro", "algodão", "aço", "inox", "térmica", "esportivo", "infantil", "elegante"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seed(desk: Desk, n: int, photos: int) -> list[str]:
    """``n`` rows (and ``photos`` real objects for the thumbnail measurement)."""
    rng = random.Random(14)
    leaves = [
        leaf
        for leaf in default_taxonomy(PT_BR).leaves
        if not leaf.attributes or not any(a.required for a in leaf.attributes)
    ]
    keys, batch = [], []
    sample = sorted((ROOT / "samples").glob("*.jpg"))
    for i in range(n):
        key = f"bench/{i // 1000:02d}/item-{i:05d}.jpg"
        keys.append(key)
        if i < photos:
            ref = desk.put_photo(key, sample[i % len(sample)].read_bytes())
        else:
            ref = ObjectRef(
                bucket=desk.bucket,
                key=key,
                etag=uuid.uuid4().hex,
                size=50_000,
                content_type="image/jpeg",
                sequencer=format(10**15 + i, "X"),
                event_time="2026-12-01T10:00:00Z",
            )
        roll = rng.random()
        leaf = rng.choice(leaves)
        if roll < 0.9:
            colour = rng.choice(COLOURS)
            values = card(
                f"{leaf.name} {colour} {rng.choice(WORDS)} {i}", path=leaf.path_text, colour=colour
            )
            batch.append(result(ref, values, at=i / 1000, flagged=rng.random() < 0.08))
        else:
            batch.append(result(ref, None, at=i / 1000, status=CardStatus.failed))
        if len(batch) == 500:
            upsert(batch)
            batch = []
    if batch:
        upsert(batch)
    with psycopg.connect(DEFAULT_DSN) as conn:  # a third decided, as a desk in use would be
        conn.execute(
            "UPDATE product_cards SET review_state = CASE WHEN random() < 0.8 THEN 'approved' "
            "ELSE 'rejected' END, reviewed_by = 'bench', reviewed_at = now() "
            "WHERE bucket = %s AND status = 'done' AND random() < 0.33",
            (desk.bucket,),
        )
        conn.execute("ANALYZE product_cards")
    return keys


def timed(
    client: httpx.Client, url: str, params: dict[str, Any] | None = None
) -> tuple[float, float, httpx.Response]:
    started = time.perf_counter()
    answer = client.get(url, params=params)
    total = (time.perf_counter() - started) * 1000
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
    server = float(answer.headers["server-timing"].split("dur=")[1])
    return server, total, answer


def measure(
    client: httpx.Client,
    label: str,
    calls: list[tuple[str, dict[str, Any] | None]],
    rows: list[list[str]],
) -> dict[str, float]:
    server, total = [], []
    for url, params in calls:
        s, t, _ = timed(client, url, params)
        server.append(s)
        total.append(t)
    stats = {
        "p50": statistics.median(server),
        "p95": percentile(server, 0.95),
        "max": max(server),
        "rt_p95": percentile(total, 0.95),
    }
    rows.append(
        [
            label,
            str(len(calls)),
            f"{stats['p50']:.1f}",
            f"{stats['p95']:.1f}",
            f"{stats['max']:.1f}",
            f"{stats['rt_p95']:.1f}",
        ]
    )
    return stats


def offset_baseline(page: int, size: int, repeats: int) -> tuple[float, float]:
    """The same deep page by OFFSET (a naive pager) and by keyset, timed in SQL."""
    offset_q = (
        "SELECT bucket, object_key FROM product_cards WHERE status <> 'deleted' "
        "ORDER BY updated_at DESC, bucket DESC, object_key DESC OFFSET %s LIMIT %s"
    )
    with psycopg.connect(DEFAULT_DSN) as conn:
        anchor = conn.execute(
            "SELECT updated_at, bucket, object_key FROM product_cards WHERE status <> 'deleted' "
            "ORDER BY updated_at DESC, bucket DESC, object_key DESC OFFSET %s LIMIT 1",
            (page * size - 1,),
        ).fetchone()
        keyset_q = (
            "SELECT bucket, object_key FROM product_cards WHERE status <> 'deleted' AND "
            "(updated_at, bucket, object_key) < (%s, %s, %s) "
            "ORDER BY updated_at DESC, bucket DESC, object_key DESC LIMIT %s"
        )
        times: dict[str, list[float]] = {"offset": [], "keyset": []}
        for _ in range(repeats):
            for name, q, args in (
                ("offset", offset_q, (page * size, size)),
                ("keyset", keyset_q, (*anchor, size)),
            ):
                started = time.perf_counter()
                conn.execute(q, args).fetchall()
                times[name].append((time.perf_counter() - started) * 1000)
    return statistics.median(times["offset"]), statistics.median(times["keyset"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--photos", type=int, default=60)
    args = parser.parse_args()
    ensure_stack()
    log_dir = Path("/tmp") / f"review-bench-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir(parents=True)
    desk = start_desk(log_dir)
    try:
        started = time.perf_counter()
        keys = seed(desk, args.cards, args.photos)
        with psycopg.connect(DEFAULT_DSN) as conn:
            (total,) = conn.execute("SELECT count(*) FROM product_cards").fetchone()
        took = time.perf_counter() - started
        print(
            f"seeded {len(keys)} rows in {took:.0f} s (bucket {desk.bucket}); the table holds "
            f"{total}; desk at {desk.url}"
        )
        client = desk.login("admin")
        n = args.requests
        rng = random.Random(7)
        base: dict[str, str] = {}  # the whole table, as a reviewer sees it
        for _ in range(20):  # warm the pool, the plans and the facet cache
            client.get("/", params=base)
        # cursors deep into the list, by following next links
        cursors: list[str] = []
        cursor = None
        for _ in range(min(150, args.cards // 50 - 1)):
            _, _, answer = timed(
                client, "/v1/cards", {**base, "limit": 50, **({"cursor": cursor} if cursor else {})}
            )
            cursor = answer.json()["next"]
            if cursor is None:
                break
            cursors.append(cursor)
        rows: list[list[str]] = []
        results = {
            "list": measure(client, "list, first page", [("/", base)] * n, rows),
            "pending": measure(
                client, "list, review=pending", [("/", {**base, "review": "pending"})] * n, rows
            ),
            "category": measure(
                client,
                "list, category subtree",
                [("/", {**base, "category": "Calçados"})] * n,
                rows,
            ),
            "search": measure(
                client,
                "list, full-text q",
                [("/", {**base, "q": rng.choice(WORDS)}) for _ in range(n)],
                rows,
            ),
            "flagged": measure(
                client, "list, colour flagged", [("/", {**base, "flagged": "1"})] * n, rows
            ),
            "deep": measure(
                client,
                "list, deep page (keyset)",
                [("/", {**base, "cursor": rng.choice(cursors)}) for _ in range(n)],
                rows,
            ),
            "card": measure(
                client,
                "card page",
                [(f"/cards/{desk.bucket}/{rng.choice(keys)}", base) for _ in range(n)],
                rows,
            ),
            "api": measure(
                client, "/v1/cards, 50 whole rows", [("/v1/cards", {**base, "limit": 50})] * n, rows
            ),
        }
        print("\nserver-side ms (Server-Timing), and the round trip's p95:")
        widths = [28, 6, 7, 7, 7, 9]
        header = ["request", "n", "p50", "p95", "max", "rt p95"]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        list_p95 = max(
            results[k]["p95"] for k in ("list", "pending", "category", "search", "flagged", "deep")
        )
        verdict = "met" if list_p95 <= 150 else "MISSED"
        print(f"\nworst list p95 {list_p95:.1f} ms (goal <= 150): {verdict}")
        card_p95 = results["card"]["p95"]
        verdict = "met" if card_p95 <= 100 else "MISSED"
        print(f"card page p95 {card_p95:.1f} ms (goal <= 100): {verdict}")
        page = len(cursors)
        offset_ms, keyset_ms = offset_baseline(page, 50, 30)
        print(
            f"\npage {page + 1} (50 a page) in SQL: OFFSET {offset_ms:.2f} ms, keyset "
            f"{keyset_ms:.2f} ms -> keyset {offset_ms / keyset_ms:.1f}x faster than OFFSET"
        )
        cold, warm = [], []
        for key in keys[: args.photos]:
            path = f"/images/thumb/{desk.bucket}/{key}"
            cold.append(timed(client, path)[0])
            warm.append(timed(client, path)[0])
        print(
            f"thumbnail: cold {statistics.median(cold):.1f} ms (generated), warm "
            f"{statistics.median(warm):.1f} ms (cached) -> cache "
            f"{statistics.median(cold) / statistics.median(warm):.1f}x faster"
        )
    finally:
        desk.close()


if __name__ == "__main__":
    main()
