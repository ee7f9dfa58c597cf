"""Accounts, sessions and API tokens of the desk, and the login rate limit.

Passwords are argon2id hashes (argon2-cffi's defaults; a hash made with older parameters still
verifies, and `vitrine users passwd` writes one with the current ones: the desk's role may
not write password hashes).  A session or an API token is 32 random bytes handed to the
client once; the database keeps only their SHA-256, so a copy of the tables opens nothing.
Roles are ordered: a viewer reads, a reviewer also edits, decides and uploads, an admin also
approves a filtered set at once.

A password check costs about 0.2 s of CPU (argon2 is meant to): it runs in threads of its own
(:class:`PasswordChecks`), never on the event loop, and a login is counted against the limits
before its password is checked (:meth:`LoginLimiter.reserve`), so that neither a burst of logins
stalls the desk nor does its size multiply the guesses the limits allow.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

_hasher = PasswordHasher()
# A real hash to verify against when the user does not exist, so that a login for an unknown
# name costs the same time as a wrong password (no username probing by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"
MIN_PASSWORD = 12


class Role(IntEnum):
    viewer = 1
    reviewer = 2
    admin = 3


@dataclass(frozen=True)
class User:
    username: str
    role: Role

    def can(self, needed: Role) -> bool:
        return self.role >= needed


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class PasswordChecks:
    """argon2 off the event loop: each check runs in a pool of ``at_once`` threads of its own
    (VITRINE_REVIEW_PASSWORD_CHECKS), so the loop keeps answering while logins are checked and
    a burst never runs more than ``at_once`` hashes at a time; the others wait in the pool's
    queue (a wait given up is dropped from it unrun).  A pool of threads rather than a
    semaphore around ``asyncio.to_thread``: a cancelled await would release a semaphore while
    its hash still ran, and asyncio's default pool also serves the desk's S3 calls."""

    def __init__(self, at_once: int) -> None:
        self._threads = ThreadPoolExecutor(at_once, thread_name_prefix="password-check")

    async def verify(self, stored: str | None, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, verify_password, stored, password)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


async def login(
    pool: AsyncConnectionPool[Any], checks: PasswordChecks, username: str, password: str
) -> User | None:
    """The user whose password this is, else None.  The connection goes back to the pool
    before the password is checked: logins waiting for their turn hold none."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT role, password_hash FROM review_users WHERE username = %s", (username,)
            )
        ).fetchone()
    if not await checks.verify(row[1] if row else None, password) or row is None:
        return None
    return User(username, Role[row[0]])


async def open_session(conn: AsyncConnection[Any], user: User, hours: float) -> tuple[str, str]:
    """A new session: (the cookie's token, its CSRF token)."""
    token, csrf = new_token(), new_token()
    # expired sessions (everyone's) go as a new one comes: the table holds live ones only
    await conn.execute("DELETE FROM review_sessions WHERE expires_at <= now()")
    await conn.execute(
        "INSERT INTO review_sessions (token_hash, username, csrf_token, expires_at) "
        "VALUES (%s, %s, %s, %s)",
        (token_hash(token), user.username, csrf, datetime.now(UTC) + timedelta(hours=hours)),
    )
    return token, csrf


async def session_of(conn: AsyncConnection[Any], token: str) -> Session | None:
    row = await (
        await conn.execute(
            "SELECT u.username, u.role, s.csrf_token FROM review_sessions s "
            "JOIN review_users u USING (username) "
            "WHERE s.token_hash = %s AND s.expires_at > now()",
            (token_hash(token),),
        )
    ).fetchone()
    return Session(User(row[0], Role[row[1]]), row[2]) if row else None


async def close_session(conn: AsyncConnection[Any], token: str) -> None:
    await conn.execute("DELETE FROM review_sessions WHERE token_hash = %s", (token_hash(token),))


async def token_user(conn: AsyncConnection[Any], token: str) -> User | None:
    """The user of an API token (``Authorization: Bearer …``), its use recorded."""
    row = await (
        await conn.execute(
            "UPDATE api_tokens t SET last_used_at = now() FROM review_users u "
            "WHERE t.token_hash = %s AND u.username = t.username RETURNING u.username, u.role",
            (token_hash(token),),
        )
    ).fetchone()
    return User(row[0], Role[row[1]]) if row else None


class LoginLimiter:
    """At most ``attempts`` failed logins per ``window`` seconds per key; a key is a username
    (``user:…``) or a client address (``addr:…``, which has its own, higher, budget).  Either
    one exhausted refuses the login before the password is even checked.

    A login takes its place in both budgets (:meth:`reserve`) in one step, before its first
    await: of any number of simultaneous logins, only as many as the budgets hold get their
    password checked.  A login that succeeds gives its place back (:meth:`succeeded`); one
    that fails keeps it, as a failure.

    Kept in the process: one desk process per deployment is the design; behind several, each
    has its own budget (the limit multiplies by their number)."""

    def __init__(self, attempts: int, window: float, per_address: int | None = None) -> None:
        self.attempts = attempts
        self.per_address = per_address or attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _budget(self, key: str) -> int:
        return self.per_address if key.startswith("addr:") else self.attempts

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, *keys: str) -> float:
        """Seconds until a login may be tried again; 0 when it may now."""
        now = time.monotonic()
        waits = [
            failures[0] + self.window - now
            for key in keys
            if len(failures := self._recent(key, now)) >= self._budget(key)
        ]
        return max(waits, default=0.0)

    def reserve(self, *keys: str) -> float | None:
        """Count one attempt against every key, if each has budget left: its time stamp, to
        hand to :meth:`succeeded`; None (nothing counted) when one has not (then
        :meth:`retry_after` says how long).  Synchronous, so atomic on the event loop."""
        if self.retry_after(*keys) > 0:
            return None
        now = time.monotonic()
        self.failed(*keys, at=now)
        return now

    def failed(self, *keys: str, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        for key in keys:
            self._recent(key, now).append(now)
        if len(self._failures) > 100_000:  # a flood of distinct names: forget the idle ones
            for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                del self._failures[key]

    def succeeded(self, username_key: str, *others: str, at: float | None = None) -> None:
        """A login succeeded: the user's failures are forgotten, and the place its
        reservation (stamped ``at``) took in the ``others`` budgets is given back."""
        self._failures.pop(username_key, None)
        for key in others:
            places = self._failures.get(key)
            if places is not None and at is not None and at in places:
                places.remove(at)
