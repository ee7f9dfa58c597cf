"""Hostile inputs end to end: every bad object ends as one precise row, and no service dies.

The corpus (tests/support/hostile_corpus.py, generated in memory) is uploaded with boto3 to a fresh
namespace served by real ingest, sink and inference processes (one worker, the tiny model), with
``VITRINE_IMAGE_MAX_BYTES`` lowered so that "far over the size limit" is a 3 MB upload.  Then
garbage is produced straight onto the ``minio.events`` topic.  ``pytest -s`` prints the table
"input -> status/reason" that the run measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from botocore.exceptions import ClientError

from tests.support import hostile_corpus as hostile
from tests.support.pipeline import (
    Pipeline,
    ensure_stack,
    new_namespace,
    rows,
    s3_client,
    tiny_model_env,
    wait_for,
)

pytestmark = [pytest.mark.pipeline, pytest.mark.model]

CORPUS_DEADLINE_S = 900  # bounds a hang; ~20 cards at 2-4 s each on an idle 2-core machine
CARD_DEADLINE_S = 180
FINAL = "status_rank = 1"
RACE_KEY = "h/race/deleted-before-fetch.jpg"
SERVICES = ("ingest", "sink", "inference")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def pipeline(tiny_pairs, tmp_path_factory) -> Iterator[Pipeline]:
    ensure_stack()
    ns = new_namespace(
        {
            **tiny_model_env(tiny_pairs["llava"]),
            "VITRINE_N_THREADS": "1",  # as fast as 2 here, and robust to a busy CPU
            "VITRINE_IMAGE_MAX_BYTES": str(hostile.MAX_BYTES),
        }
    )
    p = Pipeline(ns, tmp_path_factory.mktemp("hostile-logs"))
    p.add("ingest", "services.ingest", VITRINE_METRICS_PORT=str(_free_port()))
    p.add("sink", "services.sink")
    p.add("inference", "services.inference", VITRINE_SHUTDOWN_GRACE_S="5")
    p.start_all()
    yield p
    p.close()


def assert_alive(p: Pipeline, names: tuple[str, ...] = SERVICES) -> None:
    for name in names:
        proc = p.services[name].proc
        assert proc is not None and proc.poll() is None, f"{name} died:\n" + "\n".join(
            p.services[name].lines()[-15:]
        )


def final_rows(p: Pipeline) -> dict[str, dict[str, Any]]:
    return {r["object_key"]: r for r in rows(p.ns.dsn, p.ns.bucket, FINAL)}


def short(text: str | None, width: int) -> str:
    text = "" if text is None else ascii(text)[1:-1] if not text.isprintable() else text
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(lines: list[tuple[str, str, str, str, str]]) -> None:
    header = ("input", "key", "expected", "measured", "detail")
    widths = (44, 34, 28, 28, 70)
    out = ["", "hostile corpus: input -> status/reason"]
    for line in (header, tuple("-" * w for w in widths), *lines):
        out.append("  ".join(short(cell, w).ljust(w) for cell, w in zip(line, widths, strict=True)))
    print("\n".join(out))


def upload(s3: Any, bucket: str, case: hostile.Case) -> str | None:
    """Put the object; the S3 error code when the server refuses it."""
    extra = {"ContentType": case.content_type} if case.content_type is not None else {}
    try:
        s3.put_object(Bucket=bucket, Key=case.key, Body=case.data(), **extra)
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code"))
    return None


def test_hostile_corpus_ends_in_precise_rows_and_nothing_dies(pipeline: Pipeline) -> None:
    started = time.monotonic()
    s3, bucket = s3_client(pipeline.ns.env), pipeline.ns.bucket
    cases = hostile.corpus()
    assert len({c.key for c in cases}) == len(cases)
    with ThreadPoolExecutor(8) as pool:
        refusals = list(pool.map(lambda c: upload(s3, bucket, c), cases))
    # Deleted between its event and the fetch: the worker is busy with the corpus by now, so the
    # object is gone when it gets to the job.  The delete event has the newer sequencer.
    s3.put_object(Bucket=bucket, Key=RACE_KEY, Body=hostile.jpeg(), ContentType="image/jpeg")
    s3.delete_object(Bucket=bucket, Key=RACE_KEY)

    expected_keys = {c.key for c in cases if c.status != hostile.REFUSED} | {RACE_KEY}
    final = wait_for(
        lambda: (found := final_rows(pipeline)).keys() >= expected_keys and found,
        CORPUS_DEADLINE_S,
        "a final row for every corpus key",
        interval=1,
    )
    elapsed = time.monotonic() - started

    table, problems = [], []
    for case, refusal in zip(cases, refusals, strict=True):
        expected = f"{case.status}/{case.reason or '-'}"
        if case.status == hostile.REFUSED:
            measured = f"{hostile.REFUSED}/{refusal or '-'}"
            detail = "no row" if case.key not in final else "a row exists!"
            ok = refusal == case.reason and case.key not in final
        else:
            row = final[case.key]
            measured = f"{row['status']}/{row['reason'] or '-'}"
            detail = row["detail"] or (f"card: {row['product_name']}" if row["card"] else "")
            ok = (
                refusal is None
                and (row["status"], row["reason"]) == (case.status, case.reason)
                and (case.detail is None or case.detail.lower() in (row["detail"] or "").lower())
                and (row["status"] != "done" or row["card"] is not None)
                and (row["status"] == "done" or bool(row["detail"]))
            )
        table.append((case.label, case.key, expected, measured, detail))
        if not ok:
            problems.append((case.label, expected, measured, detail))

    # the delete makes the row final before the worker reaches the job: wait for the worker too,
    # then read the row again (the worker's older failed result must not replace the delete)
    missing_logged = wait_for(
        lambda: [
            e
            for e in pipeline.services["inference"].events()
            if e.get("key") == f"{bucket}/{RACE_KEY}" and e.get("reason") == "object_missing"
        ],
        CARD_DEADLINE_S,
        "the worker to find the raced object gone (object_missing)",
        interval=1,
    )
    wait_for(
        lambda: any(
            e.get("key") == f"{bucket}/{RACE_KEY}" and e.get("reason") == "object_missing"
            for e in pipeline.services["sink"].events()
        ),
        CARD_DEADLINE_S,
        "the sink to apply the worker's object_missing result",
        interval=1,
    )
    race = final_rows(pipeline)[RACE_KEY]
    table.append(
        (
            "deleted right after upload",
            RACE_KEY,
            "deleted/-",
            f"{race['status']}/{race['reason'] or '-'}",
            "worker: object_missing" if missing_logged else "worker never saw it missing",
        )
    )
    print_table(table)
    print(f"{len(cases) + 1} inputs, all final after {elapsed:.0f} s")

    assert not problems, "\n".join(map(str, problems))
    assert race["status"] == "deleted" and race["card"] is None, race
    assert_alive(pipeline)


async def _produce(bootstrap: str, topic: str, values: list[bytes | None]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        placed = []
        for value in values:
            meta = await producer.send_and_wait(topic, value=value, key=b"vitrine-hostile-test")
            placed.append((meta.partition, meta.offset))
        return placed
    finally:
        await producer.stop()


def produce(p: Pipeline, values: list[bytes | None]) -> list[tuple[int, int]]:
    bootstrap = p.ns.env.get("VITRINE_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
    topic = p.ns.env.get("VITRINE_TOPIC_EVENTS", "minio.events")
    return asyncio.run(_produce(bootstrap, topic, values))


def read_topic(p: Pipeline, topic: str, want: int, timeout: float = 60) -> list[bytes | None]:
    async def consume() -> list[bytes | None]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=p.ns.env.get("VITRINE_KAFKA_BOOTSTRAP", "127.0.0.1:29092"),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        found: list[bytes | None] = []
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while len(found) < want:
                        batch = await consumer.getmany(timeout_ms=500)
                        found.extend(r.value for records in batch.values() for r in records)
        finally:
            await consumer.stop()
        return found

    return asyncio.run(consume())


def ingest_metric(p: Pipeline, name: str) -> float:
    port = p.services["ingest"].env["VITRINE_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def minio_record(
    bucket: str,
    key: str,
    event_name: str = "s3:ObjectCreated:Put",
    sequencer: str = "17F0A1B2C3D4E5F6",
) -> dict[str, Any]:
    """One record shaped like MinIO's notification (keys URL-encoded, as MinIO sends them)."""
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "eventName": event_name,
        "s3": {
            "bucket": {"name": bucket},
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": 1234,
                "eTag": "0123456789abcdef0123456789abcdef",
                "contentType": "image/jpeg",
                "sequencer": sequencer,
            },
        },
    }


def test_garbage_on_the_events_topic_is_logged_counted_parked_and_skipped(
    pipeline: Pipeline,
) -> None:
    bucket = pipeline.ns.bucket
    malformed: dict[str, bytes | None] = {
        "not JSON": b'{"Records": [ this is not json',
        "empty message": b"",
        "null value (tombstone)": None,
        "JSON null": b"null",
        "JSON array": b"[1, 2, 3]",
        "binary": bytes(range(256)),
        "unknown JSON object": json.dumps({"vitrine_test": "hostile", "hello": "world"}).encode(),
        "MinIO shape, no records": json.dumps(
            {"EventName": "s3:ObjectCreated:Put", "Records": []}
        ).encode(),
        "record without s3 entity": json.dumps(
            {
                "Records": [
                    {"eventName": "s3:ObjectCreated:Put", "eventTime": "2024-01-01T00:00:00Z"}
                ]
            }
        ).encode(),
    }
    unknown_key = "h/garbage/accessed.jpg"
    unknown = json.dumps(
        {"Records": [minio_record(bucket, unknown_key, event_name="s3:ObjectAccessed:Get")]}
    ).encode()
    before = ingest_metric(pipeline, "vitrine_ingest_malformed_total")
    placed = produce(pipeline, [*malformed.values(), unknown])
    ingest = pipeline.services["ingest"]

    def logged() -> list[dict[str, Any]]:
        wanted = set(placed[: len(malformed)])
        return [
            e
            for e in ingest.events()
            if e.get("event") == "message.parked"
            and (e.get("partition"), e.get("offset")) in wanted
        ]

    found = wait_for(lambda: len(logged()) == len(malformed) and logged(), 60, "malformed logs")
    assert all(e["level"] == "error" and e.get("error") for e in found)
    wait_for(
        lambda: any(
            e.get("event") == "event.ignored" and e.get("key") == f"{bucket}/{unknown_key}"
            for e in ingest.events()
        ),
        60,
        "the unknown event name to be logged as ignored",
    )
    assert ingest_metric(pipeline, "vitrine_ingest_malformed_total") >= before + len(malformed)
    parked = read_topic(pipeline, pipeline.ns.env["VITRINE_TOPIC_DLQ"], want=len(malformed))
    for name, value in malformed.items():
        assert value in parked, f"{name} was not parked on the dead-letter topic"
    assert_alive(pipeline)

    s3 = s3_client(pipeline.ns.env)
    s3.put_object(
        Bucket=bucket, Key="h/garbage/after.jpg", Body=hostile.jpeg(), ContentType="image/jpeg"
    )
    row = wait_for(
        lambda: final_rows(pipeline).get("h/garbage/after.jpg"), CARD_DEADLINE_S, "a later card"
    )
    assert row["status"] == "done", row
    assert unknown_key not in {r["object_key"] for r in rows(pipeline.ns.dsn, bucket)}
    print_table(
        [(f"event: {name}", "-", "logged+parked", "logged+parked", "") for name in malformed]
        + [("event: s3:ObjectAccessed:Get", unknown_key, "ignored", "ignored", "no row")]
        + [("upload after the garbage", "h/garbage/after.jpg", "done/-", "done/-", "")]
    )
    assert_alive(pipeline)


# -- forged notifications: keys S3 cannot even name -----------------------------------------


def forge_upload(p: Pipeline, key: str) -> None:
    produce(p, [json.dumps({"Records": [minio_record(p.ns.bucket, key)]}).encode()])


def test_forged_event_for_a_dot_dot_key_rejects_the_row_not_the_worker(pipeline: Pipeline) -> None:
    """MinIO refuses to store ``../`` keys, so only a forged notification can name one: ingest
    holds it to the one key rule (``services/runtime/object_keys.py``) and it ends as a row
    ``rejected/bad_key``, never as a job, and no service dies."""
    forged = "../../etc/passwd.jpg"
    forge_upload(pipeline, forged)
    worker = pipeline.services["inference"].proc
    assert worker is not None
    wait_for(
        lambda: worker.poll() is not None or forged in final_rows(pipeline),
        60,
        "a final row for the forged key (or a dead worker)",
    )
    assert_alive(pipeline)
    row = final_rows(pipeline)[forged]
    assert row["status"] == "rejected" and row["reason"] == "bad_key" and row["detail"], row
    print_table(
        [
            (
                "forged event, '../' key",
                forged,
                "rejected/bad_key",
                f"{row['status']}/{row['reason']}",
                row["detail"],
            )
        ]
    )


def test_forged_event_for_a_key_minio_refuses_is_not_retried_forever(pipeline: Pipeline) -> None:
    forged = "h/" + "k" * 300 + ".jpg"  # one 304-byte segment: MinIO's limit is 255
    forge_upload(pipeline, forged)
    worker = pipeline.services["inference"]

    def retried() -> bool:
        return any(
            e.get("event") == "retry" and "XMinioInvalidObjectName" in str(e.get("error"))
            for e in worker.events()
        )

    wait_for(
        lambda: retried() or forged in final_rows(pipeline),
        60,
        "a final row for the forged key (or a retry of a permanent error)",
    )
    assert not retried(), "a permanent S3 error was retried"
    assert final_rows(pipeline)[forged]["status"] == "failed"
    assert_alive(pipeline)


def test_event_with_an_invalid_record_does_not_kill_ingest(pipeline: Pipeline) -> None:
    bucket = pipeline.ns.bucket
    bad = json.dumps({"Records": [minio_record(bucket, "h/x.jpg", sequencer="not-hex!")]})
    [(partition, offset)] = produce(pipeline, [bad.encode()])
    ingest = pipeline.services["ingest"]
    proc = ingest.proc
    assert proc is not None
    wait_for(
        lambda: (
            proc.poll() is not None
            or any(
                e.get("event") == "message.parked"
                and (e.get("partition"), e.get("offset")) == (partition, offset)
                for e in ingest.events()
            )
        ),
        30,
        "the invalid record to be logged (or ingest to die)",
    )
    time.sleep(1)
    assert_alive(pipeline, ("ingest",))


def test_a_result_that_breaks_the_contract_is_parked_and_a_fixed_copy_replays(
    pipeline: Pipeline, tmp_path
) -> None:
    """The sink parks the broken result with its headers and records the object as failed
    (it stays running); `vitrine dlq replay --value-file` puts the fixed result back on the
    results topic and the row becomes done."""
    from schemas.messages import CardStatus
    from services.runtime import dead_letters as h
    from services.runtime.settings import KafkaSettings
    from tests.support.messages import make_ref, make_result
    from vitrine.dlq import read_parked

    env = pipeline.ns.env
    ref = make_ref(pipeline.ns.bucket, key="h/dlq/broken-result.jpg")
    good = make_result(ref, CardStatus.done).model_copy(update={"produced_at": datetime.now(UTC)})
    broken = json.loads(good.model_dump_json())
    broken["card"]["features_list"] = ["only one"]  # a producer on another contract
    bootstrap = env.get("VITRINE_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
    [(partition, offset)] = asyncio.run(
        _produce(bootstrap, pipeline.ns.results_topic, [json.dumps(broken).encode()])
    )

    key = "h/dlq/broken-result.jpg"
    row = wait_for(
        lambda: final_rows(pipeline).get(key), CARD_DEADLINE_S, "a failed row for the result"
    )
    assert (row["status"], row["reason"]) == ("failed", "invalid_result"), row
    assert "card.features_list" in row["detail"]
    assert_alive(pipeline, ("sink",))

    settings = KafkaSettings(kafka_bootstrap=bootstrap, topic_dlq=env["VITRINE_TOPIC_DLQ"])

    def mine() -> list[Any]:
        return [
            p
            for p in read_parked(settings)
            if p.headers.get(h.SOURCE_TOPIC) == pipeline.ns.results_topic
            and p.headers.get(h.SOURCE_OFFSET) == str(offset)
        ]

    [parked] = wait_for(mine, 60, "the broken result on the dead-letter topic")
    assert parked.value == json.dumps(broken).encode()
    assert parked.headers[h.SERVICE] == "sink"
    assert parked.headers[h.REASON] == "invalid_result"
    assert parked.headers[h.SOURCE_PARTITION] == str(partition)
    assert "features_list" in parked.headers[h.DETAIL]
    assert h.PARKED_AT in parked.headers

    fixed = tmp_path / "fixed.json"
    fixed.write_text(good.model_dump_json())
    replayed = subprocess.run(
        [
            sys.executable,
            "-m",
            "vitrine.cli",
            "dlq",
            "replay",
            parked.position,
            "--value-file",
            str(fixed),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert f"-> {pipeline.ns.results_topic}" in replayed.stdout
    row = wait_for(
        lambda: (r := final_rows(pipeline).get(key)) and r["status"] == "done" and r,
        CARD_DEADLINE_S,
        "the replayed, fixed result to make the row done",
    )
    assert good.card is not None and row["product_name"] == good.card.product_name
    listed = subprocess.run(
        [sys.executable, "-m", "vitrine.cli", "dlq", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert parked.position in {json.loads(line)["position"] for line in listed.stdout.splitlines()}
    assert_alive(pipeline)
