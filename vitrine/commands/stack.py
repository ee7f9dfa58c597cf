"""``vitrine up``, ``down`` and ``logs``: the native stack, through ``infra/stack``."""

from __future__ import annotations

from typing import Annotated

import typer

from vitrine.console import fail


def _stack_call(command: str, env: dict[str, str] | None = None) -> None:
    from vitrine.stack import StackMissing, run_stack

    try:
        code = run_stack(command, env)
    except StackMissing as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


def up(
    inference: Annotated[
        int | None,
        typer.Option(
            "--inference", min=0, help="Inference workers to run (VITRINE_INFERENCE_PROCESSES)."
        ),
    ] = None,
    services: Annotated[
        bool, typer.Option(help="Start ingest, sink and the workers after the servers.")
    ] = True,
) -> None:
    """Start the native stack (Kafka, MinIO, PostgreSQL) and the services: `infra/stack up`.

    Idempotent: what runs is left running. A model is chosen by the usual variables
    (VITRINE_PRESET, or VITRINE_MODEL_PATH + VITRINE_MMPROJ_PATH + VITRINE_HANDLER).
    """
    from vitrine.stack import up_env

    _stack_call("up", up_env(inference, services))


def down() -> None:
    """Stop the services (workers finish their job), then the servers: `infra/stack down`."""
    _stack_call("down")


def logs(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="kafka, minio, postgres, ingest, sink, review, inference-N (default: all)."
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines of history.")] = 50,
) -> None:
    """Print (or follow) the logs of servers and services from $VITRINE_STATE_DIR/logs."""
    from vitrine.config import OpsSettings
    from vitrine.stack import log_files, show_logs

    try:
        files = log_files(OpsSettings(), names or [])
        code = show_logs(files, follow, lines)
    except FileNotFoundError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
