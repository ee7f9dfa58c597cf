"""Harness for tests against the real servers the project starts (infra/stack).

Each test session gets its own namespace — bucket, job/result topics, consumer groups — so it
neither disturbs nor is disturbed by a dev pipeline running on the same stack; rows are told
apart by bucket.  Services run as real subprocesses (``python -m services.X``) so tests can
kill, restart and scale them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DSN = "postgresql://vitrine:vitrine@127.0.0.1:25432/vitrine"
READER_DSN = "postgresql://vitrine_reader:vitrine-reader-dev@127.0.0.1:25432/vitrine"  # dev.env


def ensure_stack() -> None:
    """Start Kafka, MinIO and PostgreSQL if needed (idempotent; seconds when already up)."""
    subprocess.run(
        [str(REPO / "infra" / "stack"), "up"],
        env={**os.environ, "VITRINE_SERVICES": "0"},
        check=True,
        timeout=1800,
        stdout=subprocess.DEVNULL,
    )


def state_dir() -> Path:
    return Path(os.environ.get("VITRINE_STATE_DIR", REPO / ".vitrine"))


def server_pid(name: str) -> int:
    """pid of a stack server, from the pid file infra/stack (or PostgreSQL) writes."""
    if name == "postgres":
        data = (state_dir() / "postgres").resolve() / "data" / "postmaster.pid"
        return int(data.read_text().splitlines()[0])
    return int((state_dir() / "run" / f"{name}.pid").read_text().strip())


def stop_server(name: str, timeout: float = 60) -> None:
    """Stop one server the way an operator or a crash would leave it: gone, until `up`."""
    pid = server_pid(name)
    # PostgreSQL: SIGINT is its "fast" shutdown (SIGTERM would wait for every client).
    os.kill(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@dataclass
class Namespace:
    name: str
    env: dict[str, str]

    @property
    def bucket(self) -> str:
        return self.env["VITRINE_BUCKET"]

    @property
    def results_topic(self) -> str:
        return self.env["VITRINE_TOPIC_RESULTS"]

    @property
    def dsn(self) -> str:
        return self.env.get("VITRINE_PG_DSN", DEFAULT_DSN)


def tiny_model_env(pair: Any) -> dict[str, str]:
    """Services on the tiny random-weight model; the colour facet is enforced by the grammar,
    the word minimum lowered and left to the checks (see conftest.tiny_settings), and the
    language check off, so that random weights can produce ``done`` cards at all."""
    return {
        "VITRINE_MODEL_PATH": str(pair.model),
        "VITRINE_MMPROJ_PATH": str(pair.mmproj),
        "VITRINE_HANDLER": pair.handler,
        "VITRINE_COLOUR_VOCABULARY": "enforce",
        "VITRINE_MIN_DESCRIPTION_WORDS": "20",
        "VITRINE_WORD_MINIMUM": "check",
        "VITRINE_LANGUAGE_CHECK": "false",
    }


def new_namespace(model_env: dict[str, str]) -> Namespace:
    name = f"t{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "VITRINE_BUCKET": f"vitrine-{name}",
        "VITRINE_TOPIC_JOBS": f"{name}.jobs",
        "VITRINE_TOPIC_RESULTS": f"{name}.results",
        "VITRINE_TOPIC_DLQ": f"{name}.jobs.dlq",
        "VITRINE_INGEST_GROUP": f"{name}-ingest",
        "VITRINE_SINK_GROUP": f"{name}-sink",
        "VITRINE_INFERENCE_GROUP": f"{name}-inference",
        "VITRINE_LOG_LEVEL": "INFO",
        **model_env,
    }
    env.pop("VITRINE_METRICS_PORT", None)
    for command in ("topics", "bucket"):
        subprocess.run(
            [
                "bash",
                "-c",
                f'set -a; . infra/dev.env; set +a; exec "$0" infra/provision.py {command}',
                sys.executable,
            ],
            cwd=REPO,
            env=env,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
        )
    return Namespace(name, env)


@dataclass
class Service:
    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _mark: int = 0

    def start(self) -> Service:
        self._mark = len(self.lines())
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.module.split()],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return self

    def lines(self) -> list[str]:
        return (
            self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_started(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines()[self._mark :]:
                if '.started"' in line:
                    return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n" + "\n".join(self.lines()[-10:]))
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not start in {timeout}s")

    def stop(self, timeout: float = 90) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Pipeline:
    ns: Namespace
    log_dir: Path
    services: dict[str, Service] = field(default_factory=dict)

    def add(self, name: str, module: str, **env: str) -> Service:
        service = Service(name, module, {**self.ns.env, **env}, self.log_dir / f"{name}.log")
        self.services[name] = service
        return service

    def start_all(self) -> None:
        for service in self.services.values():
            service.start()
        for service in self.services.values():
            service.wait_started()

    def stop_all(self) -> None:
        for service in self.services.values():
            service.stop()

    def close(self) -> None:
        """Stop the services and remove this namespace's rows and bucket: the shared table
        stays small, and MinIO does not carry hundreds of buckets, whose metadata it loads
        after every start while it takes uploads (the events of those go unsent, measured:
        the server-restart fault test, minio/minio#18404)."""
        self.stop_all()
        with psycopg.connect(self.ns.dsn) as conn:
            conn.execute("DELETE FROM product_cards WHERE bucket = %s", (self.ns.bucket,))
        remove_bucket(self.ns.env, self.ns.bucket)


def remove_bucket(env: dict[str, str], bucket: str) -> None:
    """Every version of every object, then the bucket; best effort (a teardown must not fail
    a test that passed)."""
    s3 = s3_client(env)
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if doomed:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
    except Exception:
        pass


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env.get("VITRINE_S3_ENDPOINT", "http://127.0.0.1:29000"),
        aws_access_key_id=env.get("VITRINE_S3_ACCESS_KEY", "vitrine"),
        aws_secret_access_key=env.get("VITRINE_S3_SECRET_KEY", "vitrine-dev-secret"),
        region_name="us-east-1",
    )


def rows(
    dsn: str, bucket: str, where: str = "true", params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            f"SELECT * FROM product_cards WHERE bucket = %s AND ({where}) ORDER BY object_key",
            (bucket, *params),
        ).fetchall()


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
