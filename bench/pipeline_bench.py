"""End-to-end pipeline benchmark on the real stack: upload → row latency and throughput.

    python bench/pipeline_bench.py [--images 200] [--sequential 20] [--workers 1]

Starts Kafka/MinIO/PostgreSQL if needed (infra/stack), runs ingest, sink and N inference workers
with the tiny generated model in a private namespace, then measures, in one run:

1. sequential: one image at a time, upload → final row (no queueing), split into the engine's
   own time (preprocess + image encode + prompt eval + generation, from the row's timings) and
   everything else (events, Kafka hops, fetch, sink transaction) — what the pipeline adds;
2. burst: N images uploaded at once; throughput (images/s) and latency percentiles, which then
   include queueing behind the model.

The tiny model makes the engine fast but not free (~2 s/card on 2 cores); the pipeline's share
is what this benchmark is about.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pipeline import (  # noqa: E402
    Pipeline,
    ensure_stack,
    new_namespace,
    rows,
    s3_client,
    tiny_model_env,
    wait_for,
)
from tiny_models import generate  # noqa: E402


def small_jpeg(i: int) -> bytes:
    image = Image.new("RGB", (256, 256), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def engine_ms(row: dict) -> float:
    t = row["timings"] or {}
    return sum(
        t.get(k, 0.0) for k in ("preprocess_ms", "image_encode_ms", "prompt_eval_ms", "generate_ms")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    ensure_stack()
    pair = generate(Path("/tmp/vitrine-bench-models"))["llava"]
    ns = new_namespace(tiny_model_env(pair))
    logs = Path("/tmp/vitrine-bench-logs") / ns.name
    logs.mkdir(parents=True, exist_ok=True)
    p = Pipeline(ns, logs)
    p.add("ingest", "services.ingest")
    p.add("sink", "services.sink")
    for i in range(args.workers):
        p.add(f"inference-{i + 1}", "services.inference")
    p.start_all()
    s3 = s3_client(ns.env)
    try:
        # warm-up: first card pays for lazy initialisation
        s3.put_object(
            Bucket=ns.bucket, Key="warmup.jpg", Body=small_jpeg(0), ContentType="image/jpeg"
        )
        wait_for(
            lambda: rows(ns.dsn, ns.bucket, "object_key = 'warmup.jpg' AND status_rank = 1"),
            300,
            "warm-up row",
        )

        seq_total, seq_engine = [], []
        for i in range(args.sequential):
            key = f"seq/{i:04d}.jpg"
            started = datetime.now(UTC)
            s3.put_object(
                Bucket=ns.bucket, Key=key, Body=small_jpeg(i + 1), ContentType="image/jpeg"
            )
            [row] = wait_for(
                lambda k=key: rows(ns.dsn, ns.bucket, "object_key = %s AND status_rank = 1", (k,)),
                300,
                key,
                interval=0.01,
            )
            seq_total.append((row["updated_at"] - started).total_seconds() * 1000)
            seq_engine.append(engine_ms(row))
        added = [t - e for t, e in zip(seq_total, seq_engine, strict=True)]

        keys = [f"burst/{i:04d}.jpg" for i in range(args.images)]
        bodies = [small_jpeg(1000 + i) for i in range(args.images)]
        started_at: dict[str, datetime] = {}

        def put(i: int) -> None:
            started_at[keys[i]] = datetime.now(UTC)
            s3.put_object(Bucket=ns.bucket, Key=keys[i], Body=bodies[i], ContentType="image/jpeg")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(args.images)))
        upload_s = time.perf_counter() - t0
        wait_for(
            lambda: (
                len(rows(ns.dsn, ns.bucket, "object_key LIKE 'burst/%%' AND status_rank = 1"))
                == args.images
            ),
            7200,
            "burst rows",
            interval=0.5,
        )
        wall_s = time.perf_counter() - t0
        burst = rows(ns.dsn, ns.bucket, "object_key LIKE 'burst/%%'")
        latency = [
            (r["updated_at"] - started_at[r["object_key"]]).total_seconds() * 1000 for r in burst
        ]
        burst_engine = [engine_ms(r) for r in burst]
        done = sum(r["status"] == "done" for r in burst)
    finally:
        p.close()

    print(f"\n## Sequential: {args.sequential} images, one at a time ({args.workers} worker)\n")
    print("| | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for label, values in (
        ("upload → final row", seq_total),
        ("engine (row timings)", seq_engine),
        ("added by the pipeline", added),
    ):
        print(
            f"| {label} | {pct(values, 0.5):.0f} | {pct(values, 0.95):.0f} | "
            f"{statistics.mean(values):.0f} |"
        )
    share = statistics.mean(added) / statistics.mean(seq_total)
    print(f"\npipeline share of end-to-end time: {share:.1%}")

    print(f"\n## Burst: {args.images} images uploaded at once ({args.workers} worker(s))\n")
    print(f"- upload of all objects: {upload_s:.1f} s; last row after {wall_s:.1f} s")
    print(
        f"- throughput: {args.images / wall_s:.2f} images/s ({done} done, "
        f"{args.images - done} failed)"
    )
    print(
        f"- engine time per card: mean {statistics.mean(burst_engine):.0f} ms → engine-bound "
        f"ceiling {1000 * args.workers / statistics.mean(burst_engine):.2f} images/s"
    )
    print(
        f"- upload → row latency (includes queueing): p50 {pct(latency, 0.5) / 1000:.1f} s, "
        f"p95 {pct(latency, 0.95) / 1000:.1f} s"
    )


if __name__ == "__main__":
    main()
