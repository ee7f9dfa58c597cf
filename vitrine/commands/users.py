"""``vitrine users``: accounts and API tokens of the review desk, as the database owner."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from vitrine.console import fail, first_line, out, validated

T = TypeVar("T")

users_app = typer.Typer(
    help="Accounts and API tokens of the review desk (run as the database owner).",
    no_args_is_help=True,
)


def _users_dsn() -> str:
    from services.runtime.settings import PostgresSettings

    settings = validated(PostgresSettings)
    return str(settings.pg_dsn.get_secret_value())


def _password(stdin: bool, generate: bool, confirm: bool = True) -> tuple[str, bool]:
    """The password to set, and whether it was generated (then it is printed once)."""
    from vitrine.users import generate_password

    if generate:
        return generate_password(), True
    if stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return typer.prompt("Password", hide_input=True, confirmation_prompt=confirm), False


def _users_call(call: Callable[[], T]) -> T:
    import psycopg

    from vitrine.users import UserError

    try:
        return call()
    except (UserError, ValueError) as exc:
        fail(str(exc))
    except psycopg.OperationalError as exc:
        fail(f"cannot reach PostgreSQL: {first_line(exc)}")
    except psycopg.errors.UndefinedTable:
        fail("the desk's tables are missing: run infra/migrate.sh (infra/stack up does)")


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Lowercase letters, digits, . _ @ -.")],
    role: Annotated[str, typer.Option(help="viewer, reviewer or admin.")] = "reviewer",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
    generate: Annotated[
        bool, typer.Option("--generate", help="Generate a password and print it once.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="An existing user gets this role and password.")
    ] = False,
) -> None:
    """Create an account of the review desk."""
    from vitrine import users

    password, generated = _password(password_stdin, generate)
    _users_call(lambda: users.add(_users_dsn(), username, role, password, replace=replace))
    out.print(f"user {username} ({role}) {'updated' if replace else 'added'}", highlight=False)
    if generated:
        out.print(f"password: {password}", highlight=False)


@users_app.command("remove")
def users_remove(username: Annotated[str, typer.Argument()]) -> None:
    """Delete an account, its sessions and its API tokens."""
    from vitrine import users

    _users_call(lambda: users.remove(_users_dsn(), username))
    out.print(f"user {username} removed", highlight=False)


@users_app.command("passwd")
def users_passwd(
    username: Annotated[str, typer.Argument()],
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    generate: Annotated[bool, typer.Option("--generate")] = False,
) -> None:
    """Set a new password (the user's sessions end)."""
    from vitrine import users

    password, generated = _password(password_stdin, generate)
    _users_call(lambda: users.passwd(_users_dsn(), username, password))
    out.print(f"password of {username} changed", highlight=False)
    if generated:
        out.print(f"password: {password}", highlight=False)


@users_app.command("role")
def users_role(
    username: Annotated[str, typer.Argument()], role: Annotated[str, typer.Argument()]
) -> None:
    """Change an account's role."""
    from vitrine import users

    _users_call(lambda: users.set_role(_users_dsn(), username, role))
    out.print(f"{username} is now {role}", highlight=False)


@users_app.command("list")
def users_list() -> None:
    """Accounts, their roles, live sessions and API tokens."""
    from vitrine import users

    accounts = _users_call(lambda: users.listing(_users_dsn()))
    table = Table("user", "role", "created", "sessions", "tokens")
    for a in accounts:
        table.add_row(
            a.username, a.role, f"{a.created_at:%Y-%m-%d}", str(a.sessions), str(a.tokens)
        )
    out.print(table)


@users_app.command("token")
def users_token(
    username: Annotated[str, typer.Argument()],
    name: Annotated[
        str, typer.Option(help="What the token is for, e.g. the client's name.")
    ] = "api",
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Delete the token of that name.")
    ] = False,
) -> None:
    """Create an API token for /v1 (printed once; stored hashed), or revoke one."""
    from vitrine import users

    if revoke:
        _users_call(lambda: users.revoke_token(_users_dsn(), username, name))
        out.print(f"token {name} of {username} revoked", highlight=False)
        return
    token = _users_call(lambda: users.create_token(_users_dsn(), username, name))
    sys.stdout.write(token + "\n")
