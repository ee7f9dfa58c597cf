"""What every ``vitrine`` command shares: the consoles and the one-line user errors.

Kept apart from ``vitrine/cli.py`` so that the command modules (``vitrine/commands/``) can use
it while ``cli.py`` imports them to build the app: were these helpers in ``cli.py``, running
``python -m vitrine.cli`` would import that file a second time, as ``vitrine.cli``, from inside
the command modules.  ``vitrine.cli`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

T = TypeVar("T")

out = Console()
err = Console(stderr=True)


def error_line(message: str) -> None:
    """``vitrine: error: MESSAGE`` on one stderr line (the message is never read as markup)."""
    line = Text("vitrine: error: ", style="bold red")
    line.append(" ".join(message.split()))
    err.print(line, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Say what the user has to fix in one line and exit with ``code`` (no traceback)."""
    error_line(message)
    raise typer.Exit(code)


def validated(make: Callable[[], T]) -> T:
    """``make()`` (settings from the environment, usually), with an invalid setting said in
    one line: a bad variable is the user's to fix, not a bug to show a traceback for."""
    from pydantic import ValidationError

    from services.runtime.settings import SecretSettingsError

    try:
        return make()
    except ValidationError as exc:
        fail(
            "invalid settings: "
            + "; ".join(
                f"VITRINE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
            ),
        )
    except SecretSettingsError as exc:
        fail(str(exc))


def first_line(exc: Exception) -> str:
    """An exception's first line: a driver's multi-line message would break the one-line rule."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
