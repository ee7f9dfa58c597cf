"""``vitrine users``: the review desk's accounts and API tokens, as the database owner.

The desk's own role cannot create accounts or tokens (a compromised desk mints no admin): these
commands run with the operator's DSN (VITRINE_PG_DSN, the owner on the dev stack).  Removing a
user or changing a password ends their sessions; removing a user also revokes their tokens.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg

from services.review.accounts import (
    MIN_PASSWORD,
    USERNAME_PATTERN,
    Role,
    hash_password,
    new_token,
    token_hash,
)


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    created_at: datetime
    sessions: int
    tokens: int


def check_username(name: str) -> str:
    if not re.fullmatch(USERNAME_PATTERN, name):
        raise UserError(
            f"{name!r} is not a username: lowercase letters, digits and . _ @ -, up to 64"
        )
    return name


def check_role(role: str) -> str:
    if role not in Role.__members__:
        raise UserError(f"role must be one of {', '.join(Role.__members__)}")
    return role


def generate_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, ~120 bits


def add(dsn: str, username: str, role: str, password: str, *, replace: bool = False) -> None:
    check_username(username)
    check_role(role)
    hashed = hash_password(password)
    with psycopg.connect(dsn) as conn:
        if replace:
            conn.execute(
                "INSERT INTO review_users (username, role, password_hash) VALUES (%s, %s, %s) "
                "ON CONFLICT (username) DO UPDATE SET role = EXCLUDED.role, "
                "password_hash = EXCLUDED.password_hash, password_changed_at = now()",
                (username, role, hashed),
            )
            conn.execute("DELETE FROM review_sessions WHERE username = %s", (username,))
            return
        try:
            conn.execute(
                "INSERT INTO review_users (username, role, password_hash) VALUES (%s, %s, %s)",
                (username, role, hashed),
            )
        except psycopg.errors.UniqueViolation:
            raise UserError(f"{username} exists (vitrine users passwd, or --replace)") from None


def remove(dsn: str, username: str) -> None:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute("DELETE FROM review_users WHERE username = %s", (username,))
        if cur.rowcount == 0:
            raise UserError(f"no user {username}")


def passwd(dsn: str, username: str, password: str) -> None:
    hashed = hash_password(password)
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "UPDATE review_users SET password_hash = %s, password_changed_at = now() "
            "WHERE username = %s",
            (hashed, username),
        )
        if cur.rowcount == 0:
            raise UserError(f"no user {username}")
        conn.execute("DELETE FROM review_sessions WHERE username = %s", (username,))


def set_role(dsn: str, username: str, role: str) -> None:
    check_role(role)
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "UPDATE review_users SET role = %s WHERE username = %s", (role, username)
        )
        if cur.rowcount == 0:
            raise UserError(f"no user {username}")


def listing(dsn: str) -> list[Account]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT u.username, u.role, u.created_at, "
            "(SELECT count(*) FROM review_sessions s WHERE s.username = u.username "
            " AND s.expires_at > now()), "
            "(SELECT count(*) FROM api_tokens t WHERE t.username = u.username) "
            "FROM review_users u ORDER BY u.username"
        ).fetchall()
    return [Account(*row) for row in rows]


def create_token(dsn: str, username: str, name: str) -> str:
    """A new API token for ``username``: shown once, stored as its SHA-256."""
    token = new_token()
    with psycopg.connect(dsn) as conn:
        if (
            conn.execute("SELECT 1 FROM review_users WHERE username = %s", (username,)).fetchone()
            is None
        ):
            raise UserError(f"no user {username}")
        try:
            conn.execute(
                "INSERT INTO api_tokens (token_hash, username, name) VALUES (%s, %s, %s)",
                (token_hash(token), username, name),
            )
        except psycopg.errors.UniqueViolation:
            raise UserError(f"{username} already has a token named {name!r}") from None
    return token


def revoke_token(dsn: str, username: str, name: str) -> None:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "DELETE FROM api_tokens WHERE username = %s AND name = %s", (username, name)
        )
        if cur.rowcount == 0:
            raise UserError(f"{username} has no token named {name!r}")


__all__ = [
    "MIN_PASSWORD",
    "UserError",
    "add",
    "create_token",
    "generate_password",
    "listing",
    "passwd",
    "remove",
    "revoke_token",
    "set_role",
]
