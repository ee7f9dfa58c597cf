"""Uploads while Kafka is down: does every object still become a row, and what do PUTs cost?

    python bench/outage_bench.py [--uploads 10000] [--threads 16] [--fast-path on|off]

MinIO notifies Kafka through two targets (infra/dev.env): a durable one that writes each event to
a disk queue first, and a fast one that sends at once and drops what it cannot send. While Kafka
is down only the durable copy survives, and it is delivered once Kafka is back. But MinIO hands
each event to *all* of a bucket's targets from one bounded in-memory queue (50 000 events,
``maxConcurrentAsyncSend`` in its ``internal/event/targetlist.go``) and waits for the slowest; an
event that finds the queue full is skipped for every target ("concurrent target notifications
exceeded ..." in MinIO's log), the durable one included.

This benchmark measures that on the real stack (infra/stack), in a namespace of its own (bucket,
topics, consumer groups, an ingest and a sink process):

1. baseline: ``--baseline`` uploads with Kafka up (PUT latency);
2. the stack's Kafka is stopped (the dev pipeline, if one runs, waits for it too);
3. ``--uploads`` small text objects are PUT by ``--threads`` threads (PUT latency, wall time);
4. Kafka is started again, and the benchmark waits until the namespace's rows stop changing.

Text objects are rejected by ingest without a model, so each becomes a final ``rejected`` row in
milliseconds: what is measured is the notification path alone. Reported: PUT p50/p95 during the
outage against the baseline of the same run, rows that reached a final status against uploads,
the notifications MinIO counted as skipped (``minio_notify_events_skipped_total``), and the time
from Kafka's return to the last row.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from tests.support.pipeline import (  # noqa: E402
    Pipeline,
    ensure_stack,
    new_namespace,
    s3_client,
    stop_server,
)

BODY = b"not a photo: the notification path is what is measured\n"


def put_all(client: Any, bucket: str, keys: list[str], threads: int) -> tuple[list[float], float]:
    def put(key: str) -> float:
        started = time.perf_counter()
        client.put_object(Bucket=bucket, Key=key, Body=io.BytesIO(BODY), ContentType="text/plain")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        latencies = sorted(pool.map(put, keys))
    return latencies, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000.0


def minio_skipped(endpoint: str) -> int:
    """MinIO's own count of notifications it skipped (its metrics; public on the dev stack)."""
    url = endpoint.rstrip("/") + "/minio/v2/metrics/cluster"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("minio_notify_events_skipped_total")
        )
    )


def final_rows(dsn: str, bucket: str, prefix: str) -> int:
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT count(*) FROM product_cards"
            " WHERE bucket = %s AND object_key LIKE %s AND status_rank = 1",
            (bucket, prefix + "%"),
        ).fetchone()
    return int(found[0]) if found else 0


def settled_rows(
    dsn: str, bucket: str, prefix: str, want: int, quiet_s: float, limit_s: float
) -> tuple[int, float]:
    """Final rows under ``prefix``, once they reach ``want`` or stop changing for ``quiet_s``;
    and when the last one came (seconds after the wait began)."""
    started = time.monotonic()
    last, last_change = -1, started
    while True:
        found = final_rows(dsn, bucket, prefix)
        now = time.monotonic()
        if found != last:
            last, last_change = found, now
        if last >= want or now - last_change > quiet_s or now - started > limit_s:
            return last, last_change - started
        time.sleep(1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uploads", type=int, default=10_000, help="PUTs while Kafka is down")
    ap.add_argument("--baseline", type=int, default=500, help="PUTs with Kafka up, first")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--fast-path", choices=("on", "off"), default="on")
    ap.add_argument("--quiet", type=float, default=60.0, help="seconds without a new row = done")
    args = ap.parse_args()

    ensure_stack()
    os.environ["VITRINE_MINIO_FAST_PATH"] = args.fast_path  # how the namespace's bucket notifies
    ns = new_namespace({})
    pipeline = Pipeline(ns, Path(ns.env.get("TMPDIR", "/tmp")) / f"outage-bench-{ns.name}")
    pipeline.log_dir.mkdir(parents=True, exist_ok=True)
    pipeline.add("ingest", "services.ingest")
    pipeline.add("sink", "services.sink")
    pipeline.start_all()
    client = s3_client(ns.env)
    try:
        for service in pipeline.services.values():
            service.wait_started()
        base_keys = [f"up/{i:06d}.txt" for i in range(args.baseline)]
        base, _ = put_all(client, ns.bucket, base_keys, args.threads)
        settled_rows(ns.dsn, ns.bucket, "up/", len(base_keys), args.quiet, 600)

        endpoint = ns.env.get("VITRINE_S3_ENDPOINT", "http://127.0.0.1:29000")
        skipped_before = minio_skipped(endpoint)
        stop_server("kafka")
        keys = [f"down/{i:06d}.txt" for i in range(args.uploads)]
        down, wall = put_all(client, ns.bucket, keys, args.threads)
        ensure_stack()  # Kafka back
        back = time.monotonic()
        final, last_row_s = settled_rows(ns.dsn, ns.bucket, "down/", len(keys), args.quiet, 3600)
        skipped = minio_skipped(endpoint) - skipped_before
    finally:
        pipeline.close()
        ensure_stack()

    print(
        f"\n## Uploads while Kafka is down (fast path {args.fast_path}, {args.threads} threads)\n"
    )
    print("| phase | PUTs | wall s | PUT p50 ms | PUT p95 ms | p50 vs Kafka up |")
    print("|---|---|---|---|---|---|")
    print(f"| Kafka up | {len(base)} | - | {pct(base, 0.5):.1f} | {pct(base, 0.95):.1f} | 1.0x |")
    ratio = statistics.median(down) / statistics.median(base)
    print(
        f"| Kafka down | {len(down)} | {wall:.1f} | {pct(down, 0.5):.1f} | {pct(down, 0.95):.1f} "
        f"| {ratio:.2f}x |"
    )
    lost = len(keys) - final
    print(
        f"\nrows final: **{final} of {len(keys)}** ({lost} without a row); MinIO skipped "
        f"{skipped} notifications; last row {last_row_s:.0f} s after the wait began "
        f"({time.monotonic() - back:.0f} s after Kafka was started again, including any wait "
        f"for rows that never came)."
    )
    if lost:
        print("In a deployment, `vitrine backfill` enqueues every object without a row.")


if __name__ == "__main__":
    main()
