"""``vitrine config``: every variable a service reads, its value, and where the value came from.

Sources, in the order they win: ``environment`` (set in this shell), ``file`` (a secret read
from ``VITRINE_<NAME>_FILE``), ``dev.env`` (a default of ``infra/dev.env``, which
``infra/services.sh`` and ``infra/stack`` source and which only fills what the environment
leaves unset), ``default`` (the settings class).  Secrets are masked; a DSN keeps everything
but its password.  The values are those of the settings class built exactly as the service
builds it, so a variable the service would refuse fails here with the same message.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

SERVICES = {
    "ingest": "services.ingest.settings:IngestSettings",
    "inference": "services.inference.settings:InferenceSettings",
    "sink": "services.sink.settings:SinkSettings",
    "review": "services.review.settings:ReviewSettings",
    "export": "services.export.settings:ExportSettings",
    "vitrine": "vitrine.config:OpsSettings",
}
"""Each service's one settings class (``vitrine``: the operator commands)."""

MASK = "********"


@dataclass(frozen=True)
class Setting:
    variable: str
    value: str
    source: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return {
            "variable": self.variable,
            "value": self.value,
            "source": self.source,
            "description": self.description,
        }


def settings_class(service: str) -> type[Any]:
    module, _, name = SERVICES[service].partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), name)
    return cls


def variables_of(name: str, field: FieldInfo) -> list[str]:
    """The variable names a field reads, the preferred first."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"VITRINE_{name.upper()}"]


def dev_env_values(dev_env: Path, environ: dict[str, str]) -> dict[str, str]:
    """What sourcing dev.env adds to ``environ`` (it only assigns unset variables)."""
    if not dev_env.exists():
        return {}
    done = subprocess.run(
        ["bash", "-c", 'set -a; . "$0"; env -0', str(dev_env)],
        env=environ,
        capture_output=True,
        check=True,
        timeout=30,
    )
    found = {}
    for entry in done.stdout.decode(errors="replace").split("\0"):
        key, sep, value = entry.partition("=")
        if sep and key.startswith("VITRINE_") and not environ.get(key):
            found[key] = value
    return found


@contextlib.contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def show(value: Any, secret: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, SecretStr):
        raw = value.get_secret_value()
        return _masked_dsn(raw) if "://" in raw or "password=" in raw else MASK
    if secret:
        return MASK
    return str(value)


def _masked_dsn(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return MASK
    if "password" in params:
        params["password"] = MASK
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def report(service: str, dev_env: Path) -> list[Setting]:
    """Every variable ``service`` reads; raises the settings' own error on a refused value."""
    cls = settings_class(service)
    environ = dict(os.environ)
    from_dev_env = dev_env_values(dev_env, environ)
    with _environment(from_dev_env):
        settings = cls()
    lines = []
    for name, field in sorted(cls.model_fields.items()):
        variables = variables_of(name, field)
        used = next((v for v in variables if environ.get(v)), None)
        file_field = f"{name}_file"
        if (
            file_field in cls.model_fields
            and getattr(settings, file_field) is not None
            and isinstance(getattr(settings, name), SecretStr)
        ):
            source = f"file ({variables_of(file_field, cls.model_fields[file_field])[0]})"
        elif used is not None:
            source = "environment"
        elif any(v in from_dev_env for v in variables):
            used = next(v for v in variables if v in from_dev_env)
            source = "dev.env"
        else:
            source = "default"
        label = variables[0] if used in (None, variables[0]) else f"{variables[0]} (as {used})"
        secret = isinstance(getattr(settings, name), SecretStr)
        lines.append(
            Setting(
                label,
                show(getattr(settings, name), secret),
                source,
                " ".join((field.description or "").split()),
            )
        )
    return lines
