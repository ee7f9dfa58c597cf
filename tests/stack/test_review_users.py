"""``vitrine users``: accounts and API tokens of the review desk, as a real command against the
stack's PostgreSQL (the owner's DSN, as an operator runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from services.review.accounts import token_hash, verify_password
from tests.support.pipeline import DEFAULT_DSN, ensure_stack
from tests.support.review_desk import query

pytestmark = pytest.mark.pipeline


def vitrine(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vitrine.cli", "users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VITRINE_PG_DSN": DEFAULT_DSN},
    )


@pytest.fixture
def name() -> Iterator[str]:
    ensure_stack()
    username = f"cli-{uuid.uuid4().hex[:8]}"
    yield username
    with psycopg.connect(DEFAULT_DSN) as conn:
        conn.execute("DELETE FROM review_users WHERE username = %s", (username,))


def test_users_add_passwd_role_token_and_remove(name: str) -> None:
    added = vitrine("add", name, "--role", "viewer", "--password-stdin", stdin="first-password-1\n")
    assert added.returncode == 0, added.stderr
    [row] = query("SELECT role, password_hash FROM review_users WHERE username = %s", name)
    assert row["role"] == "viewer" and row["password_hash"].startswith("$argon2id$")
    assert verify_password(row["password_hash"], "first-password-1")
    again = vitrine("add", name, "--password-stdin", stdin="another-password\n")
    assert again.returncode == 1 and "exists" in again.stderr

    generated = vitrine("passwd", name, "--generate")
    assert generated.returncode == 0
    password = generated.stdout.split("password: ")[1].strip()
    [row] = query("SELECT password_hash FROM review_users WHERE username = %s", name)
    assert verify_password(row["password_hash"], password)
    assert not verify_password(row["password_hash"], "first-password-1")

    assert vitrine("role", name, "admin").returncode == 0
    assert vitrine("role", name, "god").returncode == 1

    token = vitrine("token", name, "--name", "shop-sync")
    assert token.returncode == 0
    secret = token.stdout.strip()
    [stored] = query("SELECT token_hash FROM api_tokens WHERE username = %s", name)
    assert bytes(stored["token_hash"]) == token_hash(secret)  # only the hash is kept
    assert secret.encode() not in bytes(stored["token_hash"])

    listed = vitrine("list")
    assert name in listed.stdout and "admin" in listed.stdout

    assert vitrine("remove", name).returncode == 0
    assert query("SELECT 1 FROM api_tokens WHERE username = %s", name) == []
    assert vitrine("remove", name).returncode == 1


def test_bad_usernames_and_short_passwords_are_refused(name: str) -> None:
    bad = vitrine("add", "Robert'); DROP TABLE", "--password-stdin", stdin="long-enough-pass\n")
    assert bad.returncode == 1 and "not a username" in bad.stderr
    short = vitrine("add", name, "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "12 characters" in short.stderr
    assert query("SELECT 1 FROM review_users WHERE username = %s", name) == []
