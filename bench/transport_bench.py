"""References vs image bytes in Kafka messages (the design report's Table 2), measured.

    python bench/transport_bench.py [--burst 40] [--sequential 15]

The photo is in the bucket either way (that is where shops put it), so both variants do exactly
one S3 GET; what differs is where, and what travels through the broker:

- reference (what vitrine does): the job names the object (ImageJob, ~0.6 KB); the worker
  consumes it and GETs the bytes.
- base64 (the report's "Byte Stream"): ingest GETs the object and embeds it base64-encoded in
  the job; the worker consumes and decodes it.

Measured on the real Kafka and MinIO of infra/stack, for a 1 MP, a 12 MP and a 24 MP photo:
bytes written to the broker's log per image, producer → bytes-in-the-worker latency one image at
a time (p50/p95), and a burst's throughput. Kafka refuses messages over 1 MB by default; the
base64 runs use a topic and clients with the limits raised to 64 MB (and the default-limit
refusal is reported as measured, not assumed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from schemas.messages import ImageJob, ObjectRef  # noqa: E402
from tests.support.pipeline import ensure_stack, s3_client, state_dir  # noqa: E402

BOOTSTRAP = "127.0.0.1:29092"
BIG = 64 * 1024 * 1024
SIZES = {"1 MP": (1200, 900), "12 MP": (4000, 3000), "24 MP": (6000, 4000)}


def photo(width: int, height: int, seed: int) -> bytes:
    """Phone-photo-like JPEG: smooth shading, edges and sensor noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 90 * np.sin(x / (width / 3.1) + c) * np.cos(y / (height / 2.3) - c)
            for c in (0.0, 1.1, 2.3)
        ],
        axis=-1,
    )
    base[(x // 97 + y // 89) % 7 == 0] *= 0.6
    noisy = base + rng.normal(0, 6, base.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def log_bytes(topic: str) -> int:
    """Bytes in the topic's log segments on the broker's disk (index files excluded)."""
    return sum(
        f.stat().st_size for f in (state_dir() / "kafka").rglob(f"{topic}-*/*.log") if f.is_file()
    )


class Variant:
    def __init__(self, name: str, bucket: str, s3: Any) -> None:
        self.name = name
        self.bucket = bucket
        self.s3 = s3
        self.topic = f"bench.transport.{name}.{uuid.uuid4().hex[:6]}"

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def job(self, key: str, size: int) -> ImageJob:
        ref = ObjectRef(
            bucket=self.bucket,
            key=key,
            size=size,
            sequencer=f"{time.time_ns():X}",
            event_time=datetime.now(UTC),
        )
        return ImageJob(job_id=ImageJob.job_id_for(ref), trace_id=uuid.uuid4().hex, object=ref)

    def encode(self, key: str, size: int) -> bytes:
        """What the producer (ingest) does per image."""
        raise NotImplementedError

    def decode(self, value: bytes) -> bytes:
        """What the consumer (worker) does per message until it holds the image bytes."""
        raise NotImplementedError


class Reference(Variant):
    def encode(self, key: str, size: int) -> bytes:
        return self.job(key, size).model_dump_json().encode()

    def decode(self, value: bytes) -> bytes:
        job = ImageJob.model_validate_json(value)
        return self.get(job.object.key)


class Base64(Variant):
    def encode(self, key: str, size: int) -> bytes:
        data = self.get(key)
        message = self.job(key, size).model_dump(mode="json")
        message["image_base64"] = base64.b64encode(data).decode()
        return json.dumps(message).encode()

    def decode(self, value: bytes) -> bytes:
        message = json.loads(value)
        return base64.b64decode(message["image_base64"])


async def default_limit_refuses(admin: AIOKafkaAdminClient, value_size: int) -> str:
    """Send one base64 job through a topic and producer with Kafka's default limits."""
    topic = f"bench.transport.default.{uuid.uuid4().hex[:6]}"
    await admin.create_topics([NewTopic(topic, 1, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x" * value_size)
        return "accepted"
    except KafkaError as exc:
        return f"refused: {type(exc).__name__}"
    finally:
        await producer.stop()
        await admin.delete_topics([topic])


async def run_variant(
    v: Variant, admin: AIOKafkaAdminClient, keys: list[str], size: int, sequential: int
) -> dict[str, float]:
    await admin.create_topics(
        [NewTopic(v.topic, 1, 1, topic_configs={"max.message.bytes": str(BIG)})]
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5, max_request_size=BIG
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=None,
        fetch_max_bytes=BIG,
        max_partition_fetch_bytes=BIG,
        auto_offset_reset="earliest",
    )
    tp = TopicPartition(v.topic, 0)
    await producer.start()
    await consumer.start()
    consumer.assign([tp])
    try:

        async def one(key: str) -> tuple[float, float, float]:
            t0 = time.perf_counter()
            value = await asyncio.to_thread(v.encode, key, size)
            t1 = time.perf_counter()
            await producer.send_and_wait(v.topic, value)
            got: list[Any] = []
            while not got:
                got = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
            t2 = time.perf_counter()
            data = await asyncio.to_thread(v.decode, got[0].value)
            t3 = time.perf_counter()
            assert len(data) == size
            return (t3 - t0) * 1000, (t1 - t0 + t3 - t2) * 1000, len(value)

        for key in keys[:2]:  # warm-up: connections, caches
            await one(key)
        seq = [await one(keys[i % len(keys)]) for i in range(sequential)]
        before = log_bytes(v.topic)

        # burst: produce everything, consume everything, in parallel
        async def produce_all() -> None:
            for key in keys:
                value = await asyncio.to_thread(v.encode, key, size)
                await producer.send(v.topic, value)
            await producer.flush()

        async def consume_all() -> None:
            left = len(keys)
            while left:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    data = await asyncio.to_thread(v.decode, record.value)
                    assert len(data) == size
                    left -= 1

        t0 = time.perf_counter()
        await asyncio.gather(produce_all(), consume_all())
        burst_s = time.perf_counter() - t0
        return {
            "p50": pct([s[0] for s in seq], 0.5),
            "p95": pct([s[0] for s in seq], 0.95),
            "codec_ms": statistics.median(s[1] for s in seq),
            "message": statistics.median(s[2] for s in seq),
            "broker_per_image": (log_bytes(v.topic) - before) / len(keys),
            "rate": len(keys) / burst_s,
        }
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.delete_topics([v.topic])


async def main_async(args: argparse.Namespace) -> None:
    s3 = s3_client({})
    bucket = f"bench-transport-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)  # no notification: nothing else reacts to these uploads
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    rows: list[tuple[str, str, dict[str, float]]] = []
    refusals: dict[str, str] = {}
    try:
        for label, (w, h) in SIZES.items():
            blob = photo(w, h, seed=len(rows))
            size = len(blob)
            keys = [f"{label.replace(' ', '')}/{i:03d}.jpg" for i in range(args.burst)]
            for key in keys:
                s3.put_object(Bucket=bucket, Key=key, Body=blob, ContentType="image/jpeg")
            refusals[label] = await default_limit_refuses(admin, len(base64.b64encode(blob)))
            for variant in (Reference("ref", bucket, s3), Base64("b64", bucket, s3)):
                result = await run_variant(variant, admin, keys, size, args.sequential)
                print(f"  {label} ({size / 1e6:.1f} MB) {variant.name}: {result}", flush=True)
                rows.append((f"{label} ({size / 1e6:.1f} MB JPEG)", variant.name, result))
    finally:
        await admin.close()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)

    print(
        "\n| photo | job carries | job message | broker log per image | "
        "ms in our code per image (one S3 GET included) | latency p50 ms | p95 ms | "
        "burst images/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    by_photo: dict[str, dict[str, dict[str, float]]] = {}
    for photo_label, name, r in rows:
        by_photo.setdefault(photo_label, {})[name] = r
        print(
            f"| {photo_label} | {'reference' if name == 'ref' else 'base64'} | "
            f"{r['message'] / 1024:.1f} KB | {r['broker_per_image'] / 1024:.1f} KB | "
            f"{r['codec_ms']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['rate']:.1f} |"
        )
    print("\n| photo | broker bytes base64/ref | latency p50 base64/ref | throughput ref/base64 |")
    print("|---|---|---|---|")
    for photo_label, r in by_photo.items():
        ref, b64 = r["ref"], r["b64"]
        print(
            f"| {photo_label} | {b64['broker_per_image'] / ref['broker_per_image']:.0f}× | "
            f"{b64['p50'] / ref['p50']:.2f}× | {ref['rate'] / b64['rate']:.2f}× |"
        )
    print("\nbase64 job with Kafka's default limits (1 MB; the producer refuses first):")
    for label, outcome in refusals.items():
        print(f"- {label}: {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--sequential", type=int, default=15)
    args = parser.parse_args()
    ensure_stack()
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # new topics' metadata warnings
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
