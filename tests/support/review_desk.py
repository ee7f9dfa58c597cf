"""Harness for the review desk's tests: a namespace, seeded rows with real photos, accounts,
and the desk itself as a real subprocess (``python -m services.review``) on a free port.

The desk connects to PostgreSQL as its own role (vitrine_review), so every statement these tests
drive runs under the grants migration 0005 gives it.  Its MinIO user is the root one here: the
review and upload users' policies name the pipeline's bucket (VITRINE_BUCKET), not a test's, and
are tested on their own (tests/stack/test_review_grants.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer
from PIL import Image
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from schemas.card import ProductCard
from schemas.facts import FactsCheck, GivenFacts
from schemas.messages import CardResult, CardStatus, Checks, ColourCheck, ImageJob, ObjectRef
from services.sink.store import upsert_batch
from tests.support.card_text import card_values
from tests.support.pipeline import DEFAULT_DSN, Namespace, Service, new_namespace, s3_client
from vitrine import users

T = TypeVar("T")
REVIEW_DSN = "postgresql://vitrine_review:vitrine-review-dev@127.0.0.1:25432/vitrine"  # dev.env
SINK_DSN = "postgresql://vitrine_sink:vitrine-sink-dev@127.0.0.1:25432/vitrine"
PASSWORD = "correct-horse-battery"
MIN_WORDS = 60  # the desk's contract in these tests (VITRINE_MIN_DESCRIPTION_WORDS)

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def photo(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    image = Image.new("RGB", size, (245, 245, 245))
    image.paste(colour, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


card = card_values


def result(
    ref: ObjectRef,
    values: dict[str, Any] | None,
    *,
    at: float = 0.0,
    flagged: bool = False,
    status: CardStatus = CardStatus.done,
    facts: GivenFacts | None = None,
    bound: FactsCheck | None = None,
) -> CardResult:
    checks = None
    if flagged:
        checks = Checks(
            colour=ColourCheck(
                model="azul", estimate="vermelho", distance=40.0, agrees=False, action="flagged"
            )
        )
    if bound is not None:
        checks = (checks or Checks()).model_copy(update={"facts": bound})
    return CardResult(
        job_id=ImageJob.job_id_for(ref),
        trace_id=uuid.uuid4().hex,
        object=ref,
        status=status,
        card=ProductCard.model_validate(values) if values else None,
        reason=None if status is CardStatus.done else "bad_image",
        detail=None if status is CardStatus.done else "test failure",
        model_id="gemma-3-270m-q4_k_m",
        prompt_version="card-v3+test",
        attempts=1,
        checks=checks,
        facts=facts,
        producer="inference",
        produced_at=T0 + timedelta(seconds=at),
    )


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run`` on a thread of its own: callers include the browser tests, whose thread
    already runs Playwright's event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def upsert(results: Sequence[CardResult], dsn: str = SINK_DSN) -> int:
    """Through the sink's own upsert, as its own role."""

    async def go() -> int:
        conn = await AsyncConnection.connect(dsn, connect_timeout=5)
        try:
            return await upsert_batch(conn, results)
        finally:
            await conn.close()

    return run_async(go)


def query(sql: str, *params: Any, dsn: str = DEFAULT_DSN) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


@dataclass
class Desk:
    ns: Namespace
    url: str
    service: Service
    approved_topic: str
    refs: dict[str, ObjectRef] = field(default_factory=dict)
    usernames: list[str] = field(default_factory=list)

    @property
    def bucket(self) -> str:
        return self.ns.bucket

    def put_photo(self, key: str, data: bytes) -> ObjectRef:
        s3 = s3_client(self.ns.env)
        s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="image/jpeg")
        head = s3.head_object(Bucket=self.bucket, Key=key)
        ref = ObjectRef(
            bucket=self.bucket,
            key=key,
            etag=head["ETag"].strip('"'),
            size=len(data),
            content_type="image/jpeg",
            sequencer=format(time.time_ns(), "X"),
            event_time=T0,
        )
        self.refs[key] = ref
        return ref

    def seed(
        self, key: str, values: dict[str, Any] | None, data: bytes | None = None, **kw: Any
    ) -> ObjectRef:
        ref = self.put_photo(key, data or photo((30, 60, 200)))
        upsert([result(ref, values, **kw)])
        return ref

    def user(self, role: str, name: str | None = None) -> tuple[str, str]:
        name = name or f"{role}-{self.ns.name}"
        users.add(DEFAULT_DSN, name, role, PASSWORD, replace=True)
        if name not in self.usernames:
            self.usernames.append(name)
        return name, PASSWORD

    def token(self, role: str) -> str:
        name, _ = self.user(role)
        return users.create_token(DEFAULT_DSN, name, f"t{uuid.uuid4().hex[:6]}")

    def api(self, role: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token(role)}"}, timeout=30
        )

    def login(self, role: str) -> httpx.Client:
        """A browser-like client signed in through the login form (cookies, CSRF)."""
        name, password = self.user(role)
        client = httpx.Client(base_url=self.url, timeout=30)
        page = client.get("/login")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        answer = client.post("/login", data={"csrf": csrf, "username": name, "password": password})
        assert answer.status_code == 303, answer.text
        return client

    def row(self, key: str) -> dict[str, Any]:
        found = query(
            "SELECT * FROM product_cards WHERE bucket = %s AND object_key = %s", self.bucket, key
        )
        assert found, key
        return found[0]

    def reviews(self, key: str) -> list[dict[str, Any]]:
        return query(
            "SELECT * FROM card_reviews WHERE bucket = %s AND object_key = %s ORDER BY id",
            self.bucket,
            key,
        )

    def approved_messages(
        self, timeout: float = 30, want: int = 1, keys: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Every message on the desk's approved topic (from the start), once ``want`` arrived
        and one for each object key of ``keys``."""
        wanted = {f"{self.bucket}/{k}" for k in keys}

        async def read() -> list[dict[str, Any]]:
            consumer = AIOKafkaConsumer(
                self.approved_topic,
                bootstrap_servers=self.ns.env.get("VITRINE_KAFKA_BOOTSTRAP", "127.0.0.1:29092"),
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                group_id=None,
            )
            await consumer.start()
            out: list[dict[str, Any]] = []
            try:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and (
                    len(out) < want or not wanted <= {m["key"] for m in out}
                ):
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        out += [{"key": r.key.decode(), **json.loads(r.value)} for r in records]
            finally:
                await consumer.stop()
            return out

        return run_async(read)

    def close(self) -> None:
        self.service.stop(30)
        with psycopg.connect(DEFAULT_DSN) as conn:
            conn.execute("DELETE FROM card_reviews WHERE bucket = %s", (self.bucket,))
            conn.execute("DELETE FROM product_cards WHERE bucket = %s", (self.bucket,))
            for name in self.usernames:
                conn.execute("DELETE FROM review_users WHERE username = %s", (name,))


def start_desk(log_dir: Path, **env: str) -> Desk:
    approved = f"review-{uuid.uuid4().hex[:8]}.approved"
    ns = new_namespace({"VITRINE_TOPIC_APPROVED": approved})
    port = free_port()
    desk_env = {
        **ns.env,
        "VITRINE_PG_DSN": REVIEW_DSN,
        "VITRINE_REVIEW_PORT": str(port),
        "VITRINE_REVIEW_HOST": "127.0.0.1",
        "VITRINE_TOPIC_APPROVED": approved,
        "VITRINE_S3_REGION": "us-east-1",
        "VITRINE_UPLOAD_S3_ACCESS_KEY": ns.env.get("VITRINE_S3_ACCESS_KEY", "vitrine"),
        "VITRINE_UPLOAD_S3_SECRET_KEY": ns.env.get("VITRINE_S3_SECRET_KEY", "vitrine-dev-secret"),
        "VITRINE_MIN_DESCRIPTION_WORDS": str(MIN_WORDS),
        "VITRINE_REVIEW_THUMB_DIR": str(log_dir / "thumbs"),
        "VITRINE_REVIEW_PUBLISH_INTERVAL_S": "1",
        "VITRINE_REVIEW_TRUSTED_PROXIES": "127.0.0.1",  # the TLS-proxy test speaks as one
        **env,
    }
    service = Service("review", "services.review", desk_env, log_dir / "review.log").start()
    service.wait_started(120)
    desk = Desk(ns=ns, url=f"http://127.0.0.1:{port}", service=service, approved_topic=approved)
    return desk


def iter_desk(log_dir: Path, **env: str) -> Iterator[Desk]:
    desk = start_desk(log_dir, **env)
    try:
        yield desk
    finally:
        desk.close()
