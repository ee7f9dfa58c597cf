"""Faults on the real stack: workers killed mid-job and poison messages lose nothing.

Marked ``faults`` (run alone with ``pytest -m faults``); CI runs them with everything else.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from PIL import Image

from tests.support.pipeline import (
    Pipeline,
    Service,
    ensure_stack,
    new_namespace,
    rows,
    s3_client,
    stop_server,
    tiny_model_env,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.pipeline, pytest.mark.model]


# the real services, started through the test-only wrapper that injects VITRINE_FAULT_* faults
FAULTY_INFERENCE = "tests.support.fault_services inference"
FAULTY_SINK = "tests.support.fault_services sink"


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    image.save(buf, "JPEG")
    return buf.getvalue()


class Supervisor:
    """Restarts a service whenever it dies, as systemd or Kubernetes would."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            proc = self.service.proc
            if proc is not None and proc.poll() is not None:
                self.restarts += 1
                self.service.start()
            time.sleep(0.2)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def pipeline(tiny_pairs, tmp_path) -> Iterator[Pipeline]:
    ensure_stack()
    ns = new_namespace(
        {**tiny_model_env(tiny_pairs["llava"]), "VITRINE_FAULT_CRASH_ON_KEY": "poison"}
    )
    p = Pipeline(ns, tmp_path)
    p.add("ingest", "services.ingest")
    p.add("sink", "services.sink")
    p.add("inference", FAULTY_INFERENCE)
    p.start_all()
    yield p
    p.close()


def final_count(p: Pipeline, prefix: str) -> int:
    return len(
        rows(p.ns.dsn, p.ns.bucket, "object_key LIKE %s AND status_rank = 1", (prefix + "%",))
    )


KILL_PRODUCTS = {
    f"kill/p{j}/product.json": [f"kill/p{j}/{name}.jpg" for name in ("front", "back")]
    for j in range(3)
}
"""Three products of two photos each, uploaded before the 100 photos: their jobs are among the
first the worker takes, so the kill lands with products in flight."""


def card_events_for(events: list[dict[str, Any]], bucket: str, key: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if str(e.get("event")).startswith("card.") and e.get("key") == f"{bucket}/{key}"
    ]


def test_kill_9_mid_batch_loses_and_duplicates_nothing(pipeline: Pipeline) -> None:
    """The worker runs the batched engine (auto slots) with rolling deliveries, so the kill
    lands with several jobs in flight: each is redelivered and run alone, none is parked.  Three
    products go first: each ends with one final row listing its photos, which end grouped."""
    s3 = s3_client(pipeline.ns.env)
    bucket = pipeline.ns.bucket
    for j, (manifest, photos) in enumerate(KILL_PRODUCTS.items()):
        for i, key in enumerate(photos):
            s3.put_object(
                Bucket=bucket, Key=key, Body=jpeg(1000 + 10 * j + i), ContentType="image/jpeg"
            )
        document = {"photos": [key.rsplit("/", 1)[1] for key in photos], "facts": {"sku": f"K{j}"}}
        s3.put_object(
            Bucket=bucket,
            Key=manifest,
            Body=json.dumps(document).encode(),
            ContentType="application/json",
        )
    keys = [f"kill/{i:03d}.jpg" for i in range(100)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=jpeg(i), ContentType="image/jpeg")
    grouped = {photo: manifest for manifest, photos in KILL_PRODUCTS.items() for photo in photos}
    everything = sorted([*keys, *KILL_PRODUCTS, *grouped])
    worker = pipeline.services["inference"]
    # the first card, then a second into the next jobs: the products, queued first, are running
    # or next (a product's card reads two photos, slower than one photo's)
    wait_for(lambda: any(e.get("event") == "card.done" for e in worker.events()), 300, "a card")
    time.sleep(1.0)
    before = worker.events()
    pending = [m for m in KILL_PRODUCTS if not card_events_for(before, bucket, m)]
    worker.kill()  # SIGKILL: no cleanup, no commit
    worker.start()
    worker.wait_started()
    wait_for(
        lambda: final_count(pipeline, "kill/") == len(everything),
        1200,
        f"{len(everything)} final rows",
        interval=2,
    )
    batch = rows(pipeline.ns.dsn, pipeline.ns.bucket, "object_key LIKE 'kill/%%'")
    assert sorted(r["object_key"] for r in batch) == everything  # one row per object
    by_key = {r["object_key"]: r for r in batch}
    assert {by_key[k]["status"] for k in keys} <= {"done", "failed"}
    assert not [r for r in batch if r["reason"] == "poison"]  # one death is not poison
    for j, (manifest, photos) in enumerate(KILL_PRODUCTS.items()):
        product = by_key[manifest]
        assert product["status"] in ("done", "failed"), product
        assert product["reason"] not in ("internal_error", "invalid_result"), product
        assert (product["photo_keys"], product["sku"]) == (photos, f"K{j}"), product
    for photo, manifest in grouped.items():
        assert (by_key[photo]["status"], by_key[photo]["detail"]) == (
            "grouped",
            f"part of product {manifest}",
        ), by_key[photo]
    events = worker.events()
    assert max(e.get("parallel", 1) for e in events if e.get("event") == "worker.started") > 1
    rerun = {(e["partition"], e["offset"]) for e in events if e.get("event") == "delivery.suspect"}
    assert len(rerun) >= 2, f"the kill found {len(rerun)} job(s) in flight, not a batch"
    # the products the killed worker had not finished were finished by the restarted one
    restarted = max(i for i, e in enumerate(events) if e.get("event") == "worker.started")
    after = events[restarted:]
    print(f"products unfinished at the kill: {pending}; job(s) rerun alone: {len(rerun)}")
    assert pending, "every product was finished before the kill: none was in flight"
    assert all(card_events_for(after, bucket, m) for m in pending), pending


def test_poison_job_is_parked_after_bounded_deliveries(pipeline: Pipeline) -> None:
    s3 = s3_client(pipeline.ns.env)
    bucket = pipeline.ns.bucket
    with Supervisor(pipeline.services["inference"]) as supervisor:
        s3.put_object(Bucket=bucket, Key="p/before.jpg", Body=jpeg(1), ContentType="image/jpeg")
        s3.put_object(Bucket=bucket, Key="p/poison.jpg", Body=jpeg(2), ContentType="image/jpeg")
        s3.put_object(Bucket=bucket, Key="p/after.jpg", Body=jpeg(3), ContentType="image/jpeg")
        wait_for(lambda: final_count(pipeline, "p/") == 3, 600, "3 final rows", interval=1)
    got = {r["object_key"]: r for r in rows(pipeline.ns.dsn, bucket, "object_key LIKE 'p/%%'")}
    assert got["p/poison.jpg"]["status"] == "failed"
    assert got["p/poison.jpg"]["reason"] == "poison"
    assert "died 3 times" in got["p/poison.jpg"]["detail"]
    assert got["p/before.jpg"]["status"] == got["p/after.jpg"]["status"] == "done"
    assert supervisor.restarts == 3  # three deliveries killed the worker, the fourth parked it
    headers = asyncio.run(dlq_headers(pipeline, "p/poison.jpg"))
    assert headers["vitrine-reason"] == b"poison" and headers["vitrine-deaths"] == b"3"


def test_poison_job_inside_a_batch_is_isolated_and_parked(tmp_path) -> None:
    """A fast engine takes many jobs per poll; the batch the poison job kills is re-run one job
    at a time, so only the poison job is parked and its neighbours are done."""
    ensure_stack()
    ns = new_namespace(
        {
            "VITRINE_ENGINE": "bench",
            "VITRINE_FAULT_CRASH_ON_KEY": "poison",
            "VITRINE_SESSION_TIMEOUT_MS": "6000",
        }
    )
    p = Pipeline(ns, tmp_path)
    p.add("sink", "services.sink")
    worker = p.add("inference", FAULTY_INFERENCE)
    p.start_all()
    try:
        s3 = s3_client(ns.env)
        keys = [f"b/{i:03d}.jpg" for i in range(60)]
        keys[45] = "b/045-poison.jpg"
        for i, key in enumerate(keys):  # a backlog, so that the worker takes batches
            s3.put_object(Bucket=ns.bucket, Key=key, Body=jpeg(i), ContentType="image/jpeg")
        with Supervisor(worker) as supervisor:
            p.add("ingest", "services.ingest").start()
            wait_for(lambda: final_count(p, "b/") == 60, 300, "60 final rows", interval=1)
        got = {r["object_key"]: r for r in rows(ns.dsn, ns.bucket, "object_key LIKE 'b/%%'")}
        assert got["b/045-poison.jpg"]["reason"] == "poison"
        assert "died 3 times" in got["b/045-poison.jpg"]["detail"]
        assert {k for k, r in got.items() if r["status"] != "done"} == {"b/045-poison.jpg"}
        # queued + at most two runs: the dead batch, then its suspect re-run one job at a time
        assert max(r["results_applied"] for r in got.values()) <= 3
        assert supervisor.restarts == 3
        batches = [e["jobs"] for e in worker.events() if e.get("event") == "batch.finished"]
        assert batches and max(batches) > 1  # it did batch
    finally:
        p.close()


async def dlq_headers(p: Pipeline, key: str) -> dict[str, bytes]:
    consumer = AIOKafkaConsumer(
        p.ns.env["VITRINE_TOPIC_DLQ"],
        bootstrap_servers=p.ns.env.get("VITRINE_KAFKA_BOOTSTRAP", "127.0.0.1:29092"),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if record.key and record.key.decode().endswith(key):
                            return dict(record.headers)
    finally:
        await consumer.stop()


def test_sink_crash_between_transaction_and_commit_replays_without_changes(
    tiny_pairs, tmp_path
) -> None:
    ensure_stack()
    marker = tmp_path / "crashed-once"
    ns = new_namespace(tiny_model_env(tiny_pairs["llava"]))
    p = Pipeline(ns, tmp_path)
    p.add("ingest", "services.ingest")
    p.add("inference", FAULTY_INFERENCE)
    sink = p.add(
        "sink",
        FAULTY_SINK,
        VITRINE_FAULT_CRASH_BEFORE_COMMIT_ONCE=str(marker),
        VITRINE_BATCH_WAIT_MS="2000",
    )
    p.start_all()
    try:
        with Supervisor(sink) as supervisor:
            s3 = s3_client(ns.env)
            for i in range(3):
                s3.put_object(
                    Bucket=ns.bucket, Key=f"s/{i}.jpg", Body=jpeg(i), ContentType="image/jpeg"
                )
            wait_for(lambda: final_count(p, "s/") == 3, 300, "3 final rows", interval=1)
            wait_for(lambda: supervisor.restarts >= 1, 30, "the sink restart")
        final = rows(ns.dsn, ns.bucket, "object_key LIKE 's/%%'")
        # queued + done applied once each: the replayed batch was a no-op.
        assert [r["results_applied"] for r in final] == [2, 2, 2]
        assert marker.exists()
        crashes = [
            e for e in sink.events() if e.get("event") == "fault_injection.crash_before_commit"
        ]
        assert len(crashes) == 1
    finally:
        p.close()


def test_server_restarts_lose_and_duplicate_nothing(pipeline: Pipeline) -> None:
    """Kafka, MinIO and PostgreSQL restarted one at a time while images flow. Uploads made while
    Kafka is down wait in MinIO's event queue on disk and arrive after it is back."""
    s3 = s3_client(pipeline.ns.env)
    bucket = pipeline.ns.bucket
    put = lambda key, seed: s3.put_object(  # noqa: E731
        Bucket=bucket, Key=key, Body=jpeg(seed), ContentType="image/jpeg"
    )
    for i in range(6):
        put(f"restart/a{i}.jpg", i)
    wait_for(lambda: final_count(pipeline, "restart/") >= 2, 300, "first cards")

    stop_server("kafka")
    for i in range(4):  # MinIO accepts uploads; their events queue on its disk
        put(f"restart/k{i}.jpg", 10 + i)
    time.sleep(4)
    ensure_stack()  # `up` starts only what is stopped

    stop_server("postgres")
    for i in range(3):
        put(f"restart/p{i}.jpg", 20 + i)
    time.sleep(3)  # the sink retries its batch meanwhile
    ensure_stack()

    stop_server("minio")
    time.sleep(3)  # a worker fetching now retries with backoff
    ensure_stack()
    for i in range(3):
        put(f"restart/m{i}.jpg", 30 + i)

    try:
        wait_for(lambda: final_count(pipeline, "restart/") == 16, 150, "16 final rows", interval=2)
    except AssertionError:
        # MinIO may take uploads in the seconds after its start before it has loaded the
        # bucket's notification rules, and then sends no event for them (minio/minio#18404,
        # #17182; measured here once in several runs): only the uploads made after its
        # restart may be missing, and the documented recovery, `vitrine backfill`, finds them
        have = {
            r["object_key"] for r in rows(pipeline.ns.dsn, bucket, "object_key LIKE 'restart/%%'")
        }
        uploaded = {f"restart/{x}{i}.jpg" for x, n in (("a", 6), ("k", 4), ("p", 3), ("m", 3))
                    for i in range(n)}  # fmt: skip
        missing = uploaded - have
        after_restart = {f"restart/m{i}.jpg" for i in range(3)}
        assert missing and missing <= after_restart, missing
        backfill = subprocess.run(
            [sys.executable, "-m", "vitrine.cli", "backfill", "--bucket", bucket,
             "--prefix", "restart/"],
            env=pipeline.ns.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert f"backfill: {len(missing)} job(s) enqueued" in backfill.stderr, backfill.stderr
        wait_for(lambda: final_count(pipeline, "restart/") == 16, 300, "16 rows", interval=2)
    final = rows(pipeline.ns.dsn, bucket, "object_key LIKE 'restart/%%'")
    assert len(final) == 16 and {r["status"] for r in final} == {"done"}
    for name, service in pipeline.services.items():
        assert service.proc is not None and service.proc.poll() is None, f"{name} died"


def group_settled(workers: list[Any], quiet_s: float) -> bool:
    """Every worker was assigned partitions, and no assignment changed for ``quiet_s``."""
    moves = []
    for worker in workers:
        events = [e for e in worker.events() if str(e.get("event")).startswith("partitions.")]
        if not any(e["event"] == "partitions.assigned" and e["partitions"] for e in events):
            return False
        moves += [datetime.fromisoformat(e["ts"]) for e in events]
    return (datetime.now(UTC) - max(moves)).total_seconds() >= quiet_s


def test_a_job_longer_than_the_poll_interval_runs_once_without_rebalancing(
    tiny_pairs, tmp_path
) -> None:
    """A 25 s job against a 10 s max poll interval and a 6 s session: the worker keeps polling
    while paused, so it stays in the group, no partition moves, and no second copy runs."""
    ensure_stack()
    ns = new_namespace(tiny_model_env(tiny_pairs["llava"]))
    p = Pipeline(ns, tmp_path)
    p.add("ingest", "services.ingest")
    p.add("sink", "services.sink")
    slow = {
        "VITRINE_FAULT_SLOW_ON_KEY": "slow",
        "VITRINE_FAULT_SLOW_S": "25",
        "VITRINE_MAX_POLL_INTERVAL_MS": "10000",
        "VITRINE_SESSION_TIMEOUT_MS": "6000",
        # one OpenMP thread each: two workers spinning on every core of a 2-core machine beside
        # the servers could starve a heartbeat for the 6 s session on a slower CPU
        "VITRINE_N_THREADS": "1",
    }
    workers = [p.add(f"inference-{i}", FAULTY_INFERENCE, **slow) for i in (1, 2)]
    p.start_all()
    try:
        # the start-up rebalances settle before the job: both workers hold partitions and the
        # group has been quiet for 3 s (a fixed sleep was a guess at how fast this CPU joins)
        wait_for(lambda: group_settled(workers, quiet_s=3.0), 180, "a settled group", interval=0.5)
        s3 = s3_client(ns.env)
        s3.put_object(Bucket=ns.bucket, Key="slow/one.jpg", Body=jpeg(5), ContentType="image/jpeg")
        wait_for(lambda: final_count(p, "slow/") == 1, 300, "the slow card", interval=1)
        [row] = rows(ns.dsn, ns.bucket, "object_key = 'slow/one.jpg'")
        assert row["status"] == "done" and row["results_applied"] == 2
        events = [e for w in workers for e in w.events()]
        [started] = [e for e in events if e.get("event") == "fault_injection.slow"]
        # Joining workers rebalance at start-up; none may happen once the slow job runs.
        assert not [
            e for e in events if e.get("event") == "partitions.revoked" and e["ts"] > started["ts"]
        ]
    finally:
        p.close()
