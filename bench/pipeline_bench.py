"""What the pipeline itself costs, on the real MinIO, Kafka and PostgreSQL (infra/stack).

    python bench/pipeline_bench.py                 # all three below, one run
    python bench/pipeline_bench.py latency [--images 60]
    python bench/pipeline_bench.py throughput [--images 3000] [--workers 2]
    python bench/pipeline_bench.py scaling [--sleep-ms 100] [--images 240] [--max-workers 4]

The model is replaced by the benchmark engine (``VITRINE_ENGINE=bench``, bench/
bench_engine.py): a fixed card after 0 ms, or after a fixed sleep for the scaling run. Services run
as subprocesses in a private namespace (own bucket, topics, groups), exactly as in the tests.

1. latency: one upload at a time; upload start → the row's final status (its ``updated_at``,
   PostgreSQL's clock = this machine's). With a zero-time engine all of it is pipeline. Measured
   for the shipped configuration and, in the same run, for a bucket whose notifications only go
   through MinIO's disk queue (``VITRINE_MINIO_FAST_PATH=off``, the previous configuration).
2. throughput: a backlog of N uploads is made while ingest is stopped, then the pipeline drains
   it: rows reaching a final status per second, between the 10th and 90th percentile of arrival
   (sustained rate, not the ramp).  Measured with the shipped worker settings and, in the same
   run, with one job per poll (``VITRINE_INFERENCE_BATCH_MAX=1``, the previous behaviour).
3. scaling: the engine sleeps a fixed time per card; 1, 2, ... N inference processes drain the
   same backlog; efficiency = rate(N) / (N × rate(1)).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from tests.support.pipeline import (  # noqa: E402
    Namespace,
    Pipeline,
    ensure_stack,
    new_namespace,
    rows,
    s3_client,
    wait_for,
)

LOGS = Path("/tmp/vitrine-bench-logs")


def small_jpeg(i: int) -> bytes:
    image = Image.new("RGB", (64, 64), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_env(engine_ms: float, **extra: str) -> dict[str, str]:
    return {
        "VITRINE_ENGINE": "bench",
        "VITRINE_BENCH_ENGINE_MS": str(engine_ms),
        **extra,
    }


def start(ns: Namespace, workers: int, services: tuple[str, ...] = ("ingest", "sink")) -> Pipeline:
    logs = LOGS / ns.name
    logs.mkdir(parents=True, exist_ok=True)
    p = Pipeline(ns, logs)
    if "ingest" in services:
        p.add("ingest", "services.ingest")
    if "sink" in services:
        p.add("sink", "services.sink")
    for i in range(workers):
        p.add(f"inference-{i + 1}", "bench.bench_engine")
    p.start_all()
    return p


def final_rows(ns: Namespace, prefix: str) -> list[dict[str, Any]]:
    return rows(ns.dsn, ns.bucket, "object_key LIKE %s AND status_rank = 1", (prefix + "%",))


def upload_all(ns: Namespace, prefix: str, n: int) -> dict[str, datetime]:
    s3 = s3_client(ns.env)
    bodies = [small_jpeg(i) for i in range(n)]
    started: dict[str, datetime] = {}

    def put(i: int) -> None:
        key = f"{prefix}{i:05d}.jpg"
        started[key] = datetime.now().astimezone()
        s3.put_object(Bucket=ns.bucket, Key=key, Body=bodies[i], ContentType="image/jpeg")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(n)))
    return started


# -- 1. latency --------------------------------------------------------------------------------


def latency_run(label: str, env: dict[str, str], images: int) -> list[float]:
    ns = new_namespace(env)
    p = start(ns, 1)
    s3 = s3_client(ns.env)
    try:
        out = []
        for i in range(images + 3):  # the first three warm connections and caches up
            key = f"lat/{i:04d}.jpg"
            started = datetime.now().astimezone()
            s3.put_object(Bucket=ns.bucket, Key=key, Body=small_jpeg(i), ContentType="image/jpeg")
            [row] = wait_for(
                lambda k=key: rows(ns.dsn, ns.bucket, "object_key = %s AND status_rank = 1", (k,)),
                60,
                key,
                interval=0.002,
            )
            if i >= 3:
                out.append((row["updated_at"] - started).total_seconds() * 1000)
            time.sleep(0.05)
    finally:
        p.close()
    print(
        f"  {label}: p50 {pct(out, 0.5):.0f} ms, p95 {pct(out, 0.95):.0f} ms (n={len(out)})",
        flush=True,
    )
    return out


def latency(args: argparse.Namespace) -> None:
    print("\n## 1. Added latency: upload → final row, zero-time engine, one at a time\n")
    shipped = latency_run("shipped", bench_env(0), args.images)
    base = latency_run(
        "baseline (disk-queue notifications only)",
        bench_env(0, VITRINE_MINIO_FAST_PATH="off"),
        args.images,
    )
    print("\n| configuration | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for label, values in (("disk-queue target only (baseline)", base), ("shipped", shipped)):
        print(
            f"| {label} | {pct(values, 0.5):.0f} | {pct(values, 0.95):.0f} | "
            f"{statistics.mean(values):.0f} |"
        )
    print(
        f"\np50 ratio shipped/baseline: {pct(shipped, 0.5) / pct(base, 0.5):.3f}; "
        f"goals: p50 ≤ 100 ms, p95 ≤ 250 ms"
    )


# -- 2. throughput -----------------------------------------------------------------------------


def drain(ns: Namespace, workers: int, images: int, prefix: str) -> tuple[float, float]:
    """Make a backlog with ingest stopped, then time its drain. Returns (rate, wall seconds)."""
    p = start(ns, workers, services=("sink",))
    try:
        t0 = time.perf_counter()
        upload_all(ns, prefix, images)
        upload_s = time.perf_counter() - t0
        ingest = p.add("ingest", "services.ingest")
        t0 = time.perf_counter()
        ingest.start()
        wait_for(
            lambda: len(final_rows(ns, prefix)) >= images, 3600, f"{images} rows", interval=0.5
        )
        wall = time.perf_counter() - t0
        stamps = sorted(r["updated_at"].timestamp() for r in final_rows(ns, prefix))
        lo, hi = stamps[len(stamps) // 10], stamps[(len(stamps) * 9) // 10]
        rate = (len(stamps) * 0.8) / max(hi - lo, 1e-3)
        print(
            f"  {workers} worker(s): {rate:.0f} images/s sustained; all {images} in {wall:.1f} s "
            f"(backlog uploaded at {images / upload_s:.0f}/s)",
            flush=True,
        )
        return rate, wall
    finally:
        p.close()


def throughput(args: argparse.Namespace) -> None:
    print(f"\n## 2. Sustained throughput, zero-time engine, {args.images}-image backlog\n")
    shipped, _ = drain(new_namespace(bench_env(0)), args.workers, args.images, "thr/")
    base, _ = drain(
        new_namespace(bench_env(0, VITRINE_INFERENCE_BATCH_MAX="1")),
        args.workers,
        args.images,
        "thr/",
    )
    print("\n| configuration | images/s | ratio |")
    print("|---|---|---|")
    print(f"| one job per poll (baseline) | {base:.0f} | 1.00× |")
    print(f"| shipped | {shipped:.0f} | {shipped / base:.2f}× |")
    print("\ngoal: ≥ 200 images/s")


# -- 3. scaling --------------------------------------------------------------------------------


def scaling(args: argparse.Namespace) -> None:
    print(
        f"\n## 3. Scaling, engine sleeping {args.sleep_ms:g} ms per card, "
        f"{args.images}-image backlog\n"
    )
    rates: dict[int, float] = {}
    for n in range(1, args.max_workers + 1):
        rates[n], _ = drain(new_namespace(bench_env(args.sleep_ms)), n, args.images, "scale/")
    ideal = 1000 / args.sleep_ms
    print("\n| processes | images/s | ideal | efficiency vs 1 process |")
    print("|---|---|---|---|")
    for n, rate in rates.items():
        print(f"| {n} | {rate:.2f} | {n * ideal:.2f} | {rate / (n * rates[1]):.1%} |")
    print("\ngoal: ≥ 90% at 4 processes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what")
    runs: dict[str, Callable[[argparse.Namespace], None]] = {
        "latency": latency,
        "throughput": throughput,
        "scaling": scaling,
    }
    for name in (*runs, "all"):
        s = sub.add_parser(name)
        s.add_argument("--images", type=int, default=None)
        s.add_argument("--workers", type=int, default=2)
        s.add_argument("--sleep-ms", type=float, default=100.0)
        s.add_argument("--max-workers", type=int, default=4)
    args = parser.parse_args()
    what = args.what or "all"
    if args.what is None:
        args = parser.parse_args(["all"])
    ensure_stack()
    defaults = {"latency": 60, "throughput": 3000, "scaling": 240}
    for name, run in runs.items():
        if what in (name, "all"):
            run(argparse.Namespace(**{**vars(args), "images": args.images or defaults[name]}))


if __name__ == "__main__":
    main()
