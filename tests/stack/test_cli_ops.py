"""The operator commands (`vitrine put / cards / show / status / logs / up`) as a user runs them.

Against the real native stack, in a fresh namespace (bucket, topics, consumer groups) so that
nothing here depends on, or disturbs, a pipeline running beside it.  Cards are inserted straight
into product_cards: these tests are about reading and reporting, not about the model.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from tests.support.http_stub import serve
from tests.support.images import image_bytes
from tests.support.pipeline import (
    READER_DSN,
    REPO,
    Namespace,
    Pipeline,
    ensure_stack,
    new_namespace,
    s3_client,
    wait_for,
)
from vitrine import cli, stack
from vitrine.health import minio_health, remote_targets, resolve_addresses
from vitrine.targets import parse_targets
from vitrine.upload import content_type_of, plan, sniff

VITRINE = [sys.executable, "-m", "vitrine.cli"]
DEAD = "127.0.0.1:9"  # port 9 on loopback refuses connections on any machine


def run(env: dict[str, str], *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VITRINE, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `vitrine: error:` line of a failed command (and no traceback)."""
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("vitrine: error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# -- without servers --------------------------------------------------------------------------


def test_sniffed_bytes_win_over_the_extension(tmp_path: Path) -> None:
    assert sniff(image_bytes("JPEG")) == "image/jpeg"
    assert sniff(image_bytes("PNG")) == "image/png"
    assert sniff(image_bytes("WEBP")) == "image/webp"
    assert sniff(b"hello") is None
    fake = tmp_path / "really-a-jpeg.png"
    fake.write_bytes(image_bytes("JPEG"))
    assert content_type_of(fake) == "image/jpeg"
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    assert content_type_of(notes) == "text/plain"
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x00\x01")
    assert content_type_of(blob) == "application/octet-stream"


def test_plan_keys_follow_the_tree_and_skip_what_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "shots" / "sub").mkdir(parents=True)
    (tmp_path / "shots" / "a.jpg").write_bytes(image_bytes("JPEG"))
    (tmp_path / "shots" / "sub" / "b.png").write_bytes(image_bytes("PNG"))
    os.mkfifo(tmp_path / "shots" / "pipe")
    (tmp_path / "shots" / "gone").symlink_to(tmp_path / "nowhere")
    single = tmp_path / "c.jpg"
    single.write_bytes(image_bytes("JPEG"))
    result = plan([tmp_path / "shots", single], "shop-1")
    assert [u.key for u in result.uploads] == ["shop-1/a.jpg", "shop-1/sub/b.png", "shop-1/c.jpg"]
    assert sorted(p.name for p in result.skipped) == ["gone", "pipe"]
    with pytest.raises(FileNotFoundError):
        plan([tmp_path / "missing"])


def test_up_without_the_repository_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(stack, "INFRA_DIR", tmp_path / "infra")
    result = CliRunner().invoke(cli.app, ["up"])
    assert result.exit_code == 1
    assert "vitrine: error: " in result.output and "infra/stack not found" in result.output


def test_usage_errors_exit_2_with_one_line() -> None:
    env = dict(os.environ)
    for args in (
        ("nosuch",),
        ("cards", "--limit", "0"),
        ("cards", "--status", "nope"),
        ("cards", "--json", "--csv"),
        ("status", "--json", "--watch"),
        ("put",),
    ):
        result = run(env, *args)
        assert result.returncode == 2, (args, result.stderr)
        one_error_line(result)
        assert "╭" not in result.stderr  # click's boxed errors are replaced


def test_put_of_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = run(dict(os.environ), "put", str(tmp_path / "nope.jpg"))
    assert result.returncode == 2
    assert "no such file or directory" in one_error_line(result)


def test_logs_of_an_unknown_name_and_the_tail_of_a_known_one(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "ingest.log").write_text("".join(f"line {i}\n" for i in range(10)))
    env = {**os.environ, "VITRINE_STATE_DIR": str(tmp_path)}
    result = run(env, "logs", "ingest", "-n", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["line 8", "line 9"]
    result = run(env, "logs", "nosuch")
    assert result.returncode == 1
    assert "no log for nosuch" in one_error_line(result) and "known: ingest" in result.stderr


def test_a_scaled_service_is_one_row_per_address() -> None:
    answers = {"inference-workers": ["10.0.0.7", "10.0.0.5"], "ingest": ["10.0.0.2"]}

    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("Name or service not known")
        return sorted(answers[host])

    spec = "ingest=ingest:9100,inference=inference-workers:9100,sink=gone:9100"
    targets = remote_targets(spec, resolve)
    assert [(t.name, t.host, t.port, t.error) for t in targets] == [
        ("ingest", "ingest", 9100, None),
        ("inference-1", "10.0.0.5", 9100, None),
        ("inference-2", "10.0.0.7", 9100, None),
        ("sink", "gone", 9100, "cannot resolve gone: Name or service not known"),
    ]
    assert all(t.pidfile is None for t in targets)
    assert parse_targets(" a=[::1]:9 ,") == [("a", "::1", 9)]
    for bad in ("ingest", "ingest=host", "=h:1", "i=h:port"):
        with pytest.raises(ValueError, match="name=host:port"):
            parse_targets(bad)


def test_a_dual_stack_name_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))
        v4 = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in ("10.0.0.9", "10.0.0.3")
        ]
        return [v6, *v4] if host == "both" else [v6]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert resolve_addresses("both", 9100) == ["10.0.0.3", "10.0.0.9"]
    assert resolve_addresses("v6only", 9100) == ["::1"]


@pytest.mark.parametrize(("skipped", "metrics_status"), [(9946, 200), (0, 200), (5, 403)])
def test_minio_skipped_notifications_are_a_notice(skipped: int, metrics_status: int) -> None:
    # A real overflow takes 50 000+ queued events (bench/outage_bench.py); here a stand-in
    # server answers MinIO's two URLs the way MinIO does.
    metrics = (
        b"# TYPE minio_notify_events_skipped_total counter\n"
        + f'minio_notify_events_skipped_total{{server="x"}} {skipped}\n'.encode()
    )

    def minio(path: str) -> tuple[int, bytes]:
        if path == "/minio/health/live":
            return 200, b""
        return metrics_status, metrics if metrics_status == 200 else b""

    server, port = serve(minio)
    try:
        health = minio_health(f"http://127.0.0.1:{port}")
    finally:
        server.shutdown()
    assert health.up
    if skipped and metrics_status == 200:
        assert health.notice is not None and f"skipped {skipped} " in health.notice
        assert "vitrine backfill" in health.notice
    else:
        assert health.notice is None


def test_every_server_down_is_reported_not_raised(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VITRINE_STATE_DIR": str(tmp_path),
        "VITRINE_KAFKA_BOOTSTRAP": DEAD,
        "VITRINE_S3_ENDPOINT": f"http://{DEAD}",
        "VITRINE_PG_DSN": f"postgresql://vitrine:vitrine@{DEAD}/vitrine",
        "VITRINE_METRICS_BASE_PORT": "9",
    }
    result = run(env, "status", "--json")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    status = json.loads(result.stdout)
    assert status["healthy"] is False
    assert {s["name"]: s["up"] for s in status["servers"]} == {
        "kafka": False,
        "minio": False,
        "postgres": False,
    }
    assert "cannot connect to PostgreSQL" in status["cards_error"]
    screen = run(env, "status")
    assert screen.returncode == 3 and "Traceback" not in screen.stderr
    assert "✕ down" in screen.stdout and "problem(s)" in screen.stdout


def test_database_down_is_one_line() -> None:
    env = {**os.environ, "VITRINE_PG_DSN": f"postgresql://vitrine:vitrine@{DEAD}/vitrine"}
    for args in (("show", "a.jpg"), ("cards",)):
        result = run(env, *args)
        assert result.returncode == 1
        assert "cannot connect to PostgreSQL" in one_error_line(result)


def test_an_invalid_dsn_is_one_line_without_the_password() -> None:
    env = {**os.environ, "VITRINE_PG_DSN": "bogus=1 password=s3cr3t-pw host=127.0.0.1"}
    result = run(env, "cards")
    assert result.returncode == 1
    assert "not a valid connection string" in one_error_line(result)
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    status = run(env, "status", "--json")
    assert "s3cr3t-pw" not in status.stdout + status.stderr
    assert json.loads(status.stdout)["problems"][0] == "server postgres down"


def test_put_with_minio_down_is_one_line(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    result = run({**os.environ, "VITRINE_S3_ENDPOINT": f"http://{DEAD}"}, "put", str(photo))
    assert result.returncode == 1
    assert "cannot reach MinIO" in one_error_line(result)


# -- on the real stack ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespace]:
    ensure_stack()
    namespace = new_namespace({})
    yield namespace
    with psycopg.connect(namespace.dsn) as conn:
        conn.execute("DELETE FROM product_cards WHERE bucket = %s", (namespace.bucket,))
    s3 = s3_client(namespace.env)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=namespace.bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=namespace.bucket, Key=obj["Key"])


def insert_card(ns: Namespace, key: str, status: str, **values: Any) -> None:
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "bucket": ns.bucket,
        "object_key": key,
        "sequencer": 1,
        "event_time": now - timedelta(seconds=30),
        "status": status,
        "status_rank": 0 if status == "queued" else 1,
        "produced_at": now,
        "reason": None,
        "detail": None,
        "product_name": None,
        "category_standard": None,
        "description_long": None,
        "color_primary": None,
        "features_list": None,
        "card": None,
        "model_id": "tiny-llava:f32",
        "prompt_version": "card-v1+test",
        "attempts": 1,
        "timings": None,
        **values,
    }
    if status == "done":
        card = {
            k: row[k]
            for k in (
                "product_name",
                "category_standard",
                "description_long",
                "color_primary",
                "features_list",
            )
        }
        row["card"] = Jsonb(card)
        row["features_list"] = Jsonb(row["features_list"])
    if row["timings"] is not None:
        row["timings"] = Jsonb(row["timings"])
    with psycopg.connect(ns.dsn) as conn:
        conn.execute(
            """INSERT INTO product_cards (bucket, object_key, sequencer, event_time, status,
                   status_rank, produced_at, reason, detail, product_name, category_standard,
                   description_long, color_primary, features_list, card, model_id,
                   prompt_version, attempts, timings)
               VALUES (%(bucket)s, %(object_key)s, %(sequencer)s, %(event_time)s, %(status)s,
                   %(status_rank)s, %(produced_at)s, %(reason)s, %(detail)s, %(product_name)s,
                   %(category_standard)s, %(description_long)s, %(color_primary)s,
                   %(features_list)s, %(card)s, %(model_id)s, %(prompt_version)s,
                   %(attempts)s, %(timings)s)""",
            row,
        )


def timings(total_ms: float) -> dict[str, float]:
    return {
        "fetch_ms": 12.0,
        "preprocess_ms": 30.0,
        "image_encode_ms": 400.0,
        "prompt_eval_ms": 100.0,
        "generate_ms": total_ms - 542.0,
        "prompt_tokens": 300,
        "completion_tokens": 200,
        "tokens_per_s": 20.0,
        "total_ms": total_ms,
    }


@pytest.fixture(scope="module")
def cards_ns(ns: Namespace) -> Namespace:
    done_cards = [
        (
            "c/caneca.jpg",
            ("Caneca de cerâmica azul", "Casa e Cozinha", "azul", 9000.0),
            "Caneca de cerâmica azul com alça confortável, ideal para café e chá.",
            ["Cerâmica resistente", "Alça confortável", "Vai ao micro-ondas"],
        ),
        (
            "c/tenis.jpg",
            ("Tênis de corrida preto", "Calçados", "preto", 4000.0),
            "Tênis leve para corrida com solado amortecido e cabedal respirável.",
            ["Solado amortecido", "Cabedal respirável", "Leve"],
        ),
    ]
    for key, (name, category, colour, total_ms), description, features in done_cards:
        insert_card(
            ns,
            key,
            "done",
            product_name=name,
            category_standard=category,
            description_long=description,
            color_primary=colour,
            features_list=features,
            timings=timings(total_ms),
        )
    insert_card(
        ns,
        "c/borrada.jpg",
        "failed",
        reason="semantic_check",
        detail="description_min_words: 12 < 150",
        attempts=3,
    )
    insert_card(ns, "c/texto.jpg", "rejected", reason="not_an_image", detail="looks like text")
    return ns


def test_put_uploads_a_tree_with_content_types_from_the_bytes(
    ns: Namespace, tmp_path: Path
) -> None:
    tree = tmp_path / "shots"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.jpg").write_bytes(image_bytes("JPEG"))
    (tree / "sub" / "b.png").write_bytes(image_bytes("PNG"))
    (tree / "disguised.png").write_bytes(image_bytes("JPEG"))
    (tree / "notes.txt").write_text("not an image")
    os.mkfifo(tree / "pipe")
    prefix = f"put-{uuid.uuid4().hex[:6]}/"
    result = run(ns.env, "put", str(tree), "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert "uploaded 4 file(s)" in result.stderr and "skipped 1" in result.stderr
    assert "skipping" in result.stderr and "pipe" in result.stderr
    s3 = s3_client(ns.env)
    types = {
        key: s3.head_object(Bucket=ns.bucket, Key=prefix + key)["ContentType"]
        for key in ("a.jpg", "sub/b.png", "disguised.png", "notes.txt")
    }
    assert types == {
        "a.jpg": "image/jpeg",
        "sub/b.png": "image/png",
        "disguised.png": "image/jpeg",
        "notes.txt": "text/plain",
    }


def test_put_to_a_missing_bucket_is_one_line(ns: Namespace, tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    result = run(ns.env, "put", str(photo), "--bucket", f"no-such-{uuid.uuid4().hex[:8]}")
    assert result.returncode == 1
    assert "does not exist" in one_error_line(result)


def test_cards_json_lists_the_namespace_rows(cards_ns: Namespace) -> None:
    result = run(cards_ns.env, "cards", "--json", "--prefix", "c/")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["object_key"]: r["status"] for r in rows} == {
        "c/caneca.jpg": "done",
        "c/tenis.jpg": "done",
        "c/borrada.jpg": "failed",
        "c/texto.jpg": "rejected",
    }
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["reason"] == "semantic_check"
    only_done = run(cards_ns.env, "cards", "--json", "--status", "done", "--limit", "1")
    assert [json.loads(line)["status"] for line in only_done.stdout.splitlines()] == ["done"]
    by_category = run(cards_ns.env, "cards", "--json", "--category", "calçados")
    assert [json.loads(line)["object_key"] for line in by_category.stdout.splitlines()] == [
        "c/tenis.jpg"
    ]


def test_the_read_only_role_is_enough_for_cards_show_and_status(cards_ns: Namespace) -> None:
    # What the compose `vitrine` service runs with: role vitrine_reader (migration 0003).
    reader = {**cards_ns.env, "VITRINE_PG_DSN": READER_DSN}
    listed = run(reader, "cards", "--json", "--prefix", "c/", "--search", "caneca")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["object_key"] for line in listed.stdout.splitlines()] == [
        "c/caneca.jpg"
    ]
    shown = run(reader, "show", "c/tenis.jpg", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "done", shown.stderr
    status = json.loads(run(reader, "status", "--json").stdout)
    assert status["cards_error"] is None and status["cards"]["counts"]["done"] == 2


def test_cards_search_ranks_portuguese_full_text(cards_ns: Namespace) -> None:
    # "canecas de cerâmica" only matches through the Portuguese stemmer (canec, cerâm).
    result = run(cards_ns.env, "cards", "--json", "--search", "canecas de cerâmica")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["object_key"] for r in rows] == ["c/caneca.jpg"]
    assert rows[0]["rank"] > 0
    either = run(cards_ns.env, "cards", "--json", "--search", "caneca or corrida")
    assert {json.loads(line)["object_key"] for line in either.stdout.splitlines()} == {
        "c/caneca.jpg",
        "c/tenis.jpg",
    }
    hostile = run(cards_ns.env, "cards", "--json", "--search", "'; DROP TABLE product_cards; --")
    assert hostile.returncode == 0 and hostile.stdout == ""


def test_cards_csv_and_table(cards_ns: Namespace) -> None:
    result = run(cards_ns.env, "cards", "--csv", "--status", "done")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["object_key"] for r in rows} == {"c/caneca.jpg", "c/tenis.jpg"}
    caneca = next(r for r in rows if r["object_key"] == "c/caneca.jpg")
    assert caneca["features_list"] == "Cerâmica resistente | Alça confortável | Vai ao micro-ondas"
    assert caneca["product_name"] == "Caneca de cerâmica azul"
    table = run(cards_ns.env, "cards", "--prefix", "c/")
    assert table.returncode == 0
    assert "c/caneca.jpg" in table.stdout and "semantic_check" in table.stdout


def test_show_one_card_and_an_unknown_key(cards_ns: Namespace) -> None:
    result = run(cards_ns.env, "show", "c/borrada.jpg", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert (row["status"], row["reason"], row["attempts"]) == ("failed", "semantic_check", 3)
    assert row["model_id"] == "tiny-llava:f32" and row["prompt_version"] == "card-v1+test"
    shown = run(cards_ns.env, "show", "c/caneca.jpg")
    assert shown.returncode == 0
    assert "Caneca de cerâmica azul" in shown.stdout and "total 9.00s: fetch 12ms" in shown.stdout
    missing = run(cards_ns.env, "show", "c/nope.jpg")
    assert missing.returncode == 1
    assert f"no card for s3://{cards_ns.bucket}/c/nope.jpg" in one_error_line(missing)


async def _produce_and_commit(topic: str, group: str, messages: int, committed: int) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = "127.0.0.1:29092"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(messages):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: committed})
        # The precondition the assertions below rest on, as the broker answers it: once (CI,
        # a loaded broker) status read an end offset equal to the commit.
        for _ in range(50):
            ends = await consumer.end_offsets([tp])
            done = await consumer.committed(tp)
            if ends[tp] == messages and done == committed:
                break
            await asyncio.sleep(0.1)
        assert (ends[tp], done) == (messages, committed)
    finally:
        await consumer.stop()


def test_status_json_reports_counts_lag_and_services(cards_ns: Namespace, tmp_path: Path) -> None:
    lag_topic = f"{cards_ns.name}.lag"
    lag_group = f"{cards_ns.name}-lagcheck"
    asyncio.run(_produce_and_commit(lag_topic, lag_group, messages=5, committed=2))
    base = 39_000 + os.getpid() % 500 * 20  # metrics ports of this run only
    env = {
        **cards_ns.env,
        "VITRINE_STATE_DIR": str(tmp_path),
        "VITRINE_METRICS_BASE_PORT": str(base),
        "VITRINE_TOPIC_JOBS": lag_topic,
        "VITRINE_INFERENCE_GROUP": lag_group,
    }
    (tmp_path / "run").mkdir()
    p = Pipeline(cards_ns, tmp_path)
    ingest = p.add("ingest", "services.ingest", VITRINE_METRICS_PORT=str(base + 1)).start()
    try:
        ingest.wait_started()
        assert ingest.proc is not None
        (tmp_path / "run" / "ingest.pid").write_text(f"{ingest.proc.pid}\n")
        (tmp_path / "run" / "sink.pid").write_text("999999999\n")  # a stale pid file

        result = run(env, "status", "--json")
        assert result.returncode == 3, result.stderr  # sink, desk and worker are not running
        status = json.loads(result.stdout)
        services = {s["name"]: s for s in status["services"]}
        assert list(services) == ["ingest", "sink", "review", "export", "inference-1"]
        assert services["ingest"]["up"] is True and services["ingest"]["pid"] == ingest.proc.pid
        assert services["ingest"]["metrics_port"] == base + 1
        assert services["sink"]["state"] == "down" and services["sink"]["pid"] is None
        assert services["review"]["state"] == "down" and services["review"]["metrics_port"] == (
            base + 3
        )
        assert services["inference-1"]["state"] == "down"
        assert sorted(status["problems"]) == [
            "service export down",
            "service inference-1 down",
            "service review down",
            "service sink down",
        ]
        assert all(s["up"] for s in status["servers"])

        cards = status["cards"]
        assert cards["counts"] == {"done": 2, "failed": 1, "rejected": 1}
        assert {(r["status"], r["reason"], r["n"]) for r in cards["reasons"]} == {
            ("failed", "semantic_check", 1),
            ("rejected", "not_an_image", 1),
        }
        assert [r["object_key"] for r in cards["slowest"]] == ["c/caneca.jpg", "c/tenis.jpg"]
        assert cards["slowest"][0]["total_ms"] == 9000.0
        assert {r["object_key"] for r in cards["recent_failures"]} == {
            "c/borrada.jpg",
            "c/texto.jpg",
        }
        assert sum(m["done"] + m["not_done"] for m in cards["throughput"]) == 4
        assert len(cards["throughput"]) == 10

        lag = {g["group"]: g for g in status["lag"]}
        assert lag[lag_group]["topic"] == lag_topic
        assert lag[lag_group]["partitions"] == {"0": 3, "1": 0}, status["lag"]
        assert lag[lag_group]["total"] == 3 and lag[lag_group]["committed"] == 2
        assert lag[lag_group]["members"] == 0
        assert lag[f"{cards_ns.name}-ingest"]["members"] == 1  # the ingest just started

        screen = run(env, "status")
        assert screen.returncode == 3
        rows = {line.split()[0]: line for line in screen.stdout.splitlines() if line.strip()}
        assert "✕ down" in rows["sink"] and "● up" in rows["ingest"], screen.stdout
        assert "semantic_check" in screen.stdout
        assert lag_group in screen.stdout

        # Services elsewhere (compose): found by their endpoints, no pid files involved; a name
        # with nothing behind it is down, with why.
        remote = {
            **env,
            "VITRINE_STATE_DIR": str(tmp_path / "elsewhere"),
            "VITRINE_METRICS_TARGETS": (
                f"ingest=127.0.0.1:{base + 1}, sink=127.0.0.1:{base + 2},"
                "inference=no-such-host.invalid:9100"
            ),
        }
        result = run(remote, "status", "--json")
        assert result.returncode == 3, result.stderr
        services = {s["name"]: s for s in json.loads(result.stdout)["services"]}
        assert list(services) == ["ingest", "sink", "inference"]
        assert services["ingest"]["up"] is True and services["ingest"]["running"] is None
        assert services["ingest"]["handled"] is not None
        assert services["sink"]["state"] == "down" and "127.0.0.1:" in services["sink"]["error"]
        assert "cannot resolve no-such-host.invalid" in services["inference"]["error"]
        screen = run(remote, "status")
        rows = {line.split()[0]: line for line in screen.stdout.splitlines() if line.strip()}
        assert f"127.0.0.1:{base + 1}" in rows["ingest"] and "● up" in rows["ingest"]
        bad = run({**remote, "VITRINE_METRICS_TARGETS": "ingest:9100"}, "status")
        assert bad.returncode == 1 and "VITRINE_METRICS_TARGETS" in bad.stderr, bad.stderr
        assert "'ingest:9100' is not name=host:port" in bad.stderr

        ingest.stop()
        wait_for(
            lambda: (
                json.loads(run(env, "status", "--json").stdout)["services"][0]["state"] == "down"
            ),
            30,
            "ingest reported down after it stopped",
        )
    finally:
        p.stop_all()


# -- vitrine config -------------------------------------------------------------------------------


def config_lines(env: dict[str, str], service: str) -> dict[str, dict[str, str]]:
    done = run(env, "config", "--service", service, "--json")
    assert done.returncode == 0, done.stderr
    return {json.loads(line)["variable"]: json.loads(line) for line in done.stdout.splitlines()}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}


def test_config_says_where_each_value_came_from_and_masks_secrets(tmp_path) -> None:
    env = {
        **clean_env(),
        "VITRINE_SINK_BATCH_MAX": "9",
        "VITRINE_PG_DSN": "postgresql://u:topsecret-pw@db.example:5432/cards",
    }
    sink = config_lines(env, "sink")
    assert sink["VITRINE_SINK_BATCH_MAX"] | {"description": ""} == {
        "variable": "VITRINE_SINK_BATCH_MAX",
        "value": "9",
        "source": "environment",
        "description": "",
    }
    assert sink["VITRINE_BATCH_WAIT_MS"]["source"] == "default"
    assert sink["VITRINE_KAFKA_BOOTSTRAP"] == sink["VITRINE_KAFKA_BOOTSTRAP"] | {
        "value": "127.0.0.1:29092",
        "source": "dev.env",
    }
    dsn = sink["VITRINE_PG_DSN"]
    assert dsn["source"] == "environment" and "db.example" in dsn["value"]
    assert "topsecret" not in json.dumps(sink)
    assert "VITRINE_S3_ACCESS_KEY" not in sink  # the sink does not talk to S3

    secret = tmp_path / "s3-secret"
    secret.write_text("a-real-secret-from-a-file\n")
    inference = config_lines(
        {**clean_env(), "VITRINE_S3_SECRET_KEY_FILE": str(secret)}, "inference"
    )
    assert inference["VITRINE_S3_SECRET_KEY"]["source"] == "file (VITRINE_S3_SECRET_KEY_FILE)"
    assert inference["VITRINE_S3_SECRET_KEY"]["value"] == "********"
    assert "a-real-secret" not in json.dumps(inference)
    assert inference["VITRINE_ENGINE"]["value"] == "llama"
    # the old shared name still sets the batch size, and says so
    ingest = config_lines({**clean_env(), "VITRINE_BATCH_MAX": "7"}, "ingest")
    assert ingest["VITRINE_INGEST_BATCH_MAX (as VITRINE_BATCH_MAX)"]["value"] == "7"


def test_config_refuses_what_the_service_would_refuse() -> None:
    done = run({**clean_env(), "VITRINE_SINK_BATCH_MAX": "0"}, "config", "--service", "sink")
    assert done.returncode == 1
    assert "VITRINE_SINK_BATCH_MAX" in one_error_line(done)
    done = run(clean_env(), "config", "--service", "nope")
    assert done.returncode == 2 and "--service must be one of" in one_error_line(done)


def test_every_variable_a_service_reads_is_documented() -> None:
    from vitrine.settings_report import SERVICES, settings_class

    undocumented = {
        service: [
            name for name, f in settings_class(service).model_fields.items() if not f.description
        ]
        for service in SERVICES
    }
    assert all(not names for names in undocumented.values()), undocumented
