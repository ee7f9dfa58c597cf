"""``vitrine up / down / logs``: thin wrappers over ``infra/stack`` and the services' log files.

``infra/stack`` stays the one implementation of starting and stopping (locks, ports, installs,
provisioning); these wrappers only find it from any working directory, pass options through as
the variables it reads, and refuse clearly when vitrine was installed without its repository.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from vitrine.config import INFRA_DIR, OpsSettings

SERVERS = ("kafka", "minio", "postgres")


class StackMissing(RuntimeError):
    """infra/stack is not beside the package (a wheel install): the native stack needs the repo."""


def stack_script(infra_dir: Path | None = None) -> Path:
    script = (infra_dir or INFRA_DIR) / "stack"
    if not script.is_file():
        raise StackMissing(
            f"{script} not found: `vitrine up/down/logs` drive the native stack of a vitrine "
            "checkout (git clone the repository and run them from its virtualenv)"
        )
    return script


def run_stack(command: str, env: dict[str, str] | None = None) -> int:
    """Run ``infra/stack COMMAND`` with the terminal attached; its exit code is ours."""
    script = stack_script()
    return subprocess.call(["bash", str(script), command], env={**os.environ, **(env or {})})


def up_env(inference: int | None, services: bool) -> dict[str, str]:
    env: dict[str, str] = {}
    if inference is not None:
        env["VITRINE_INFERENCE_PROCESSES"] = str(inference)
    if not services:
        env["VITRINE_SERVICES"] = "0"
    return env


def log_files(settings: OpsSettings, names: Sequence[str]) -> list[Path]:
    """The log files of servers and services; every name must have one.

    Servers (kafka, minio, postgres) and services (ingest, sink, inference-N) all log to
    ``$VITRINE_STATE_DIR/logs/<name>.log``; no name means all of them.
    """
    log_dir = settings.state_path / "logs"
    if not names:
        return sorted(p for p in log_dir.glob("*.log") if p.is_file())
    files: list[Path] = []
    unknown: list[str] = []
    for name in names:
        path = log_dir / f"{name}.log"
        if path.exists():
            files.append(path)
        else:
            unknown.append(name)
    if unknown:
        known = sorted(p.stem for p in log_dir.glob("*.log"))
        raise FileNotFoundError(
            f"no log for {', '.join(unknown)} in {log_dir} (known: {', '.join(known) or 'none'})"
        )
    return files


def show_logs(files: Sequence[Path], follow: bool, lines: int) -> int:
    """``tail`` the files: the last ``lines`` lines, then new ones when following."""
    if not files:
        raise FileNotFoundError("no log files yet (has the stack been started?)")
    command = ["tail", "-n", str(lines)]
    if follow:
        command.append("-F")
    if len(files) == 1:
        command.append("-q")
    return subprocess.call([*command, *map(str, files)])
