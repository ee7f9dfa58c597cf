"""A candidate: a name and the engine settings it differs by.

``--candidate q4=model_path=/m/gemma-Q4_K_M.gguf,mmproj_path=/m/mmproj.gguf`` or with the
environment variables' names, ``--candidate en=VITRINE_PROMPT_LANGUAGE=en``.  Any setting the
inference worker reads is a candidate's axis (model, quantization, prompt language or order,
grammar backend, adaptation mode, ...), because a candidate *is* those variables: its child
process starts with them on top of the caller's environment and builds the engine the way a
worker does.  Names are checked here against the settings the engine knows, so a typo fails
before minutes of generation instead of being ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
ALIASES = {"model": "model_path", "mmproj": "mmproj_path"}


class CandidateError(ValueError):
    """A candidate that cannot be run: said before anything is loaded."""


@dataclass(frozen=True)
class Candidate:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    """``VITRINE_*`` variables, on top of the caller's environment."""

    def label(self) -> str:
        shown = ", ".join(f"{k.removeprefix('VITRINE_').lower()}={v}" for k, v in self.env.items())
        return f"{self.name} ({shown or 'the environment as it is'})"


def engine_setting_names() -> frozenset[str]:
    """What the engine reads: every field of the worker's settings, by its variable's name."""
    from services.inference.settings import EngineSettings

    return frozenset(name.lower() for name in EngineSettings.model_fields)


def parse_candidate(text: str, known: frozenset[str] | None = None) -> Candidate:
    """``NAME=key=value,key=value``; keys as setting names or ``VITRINE_*`` variables."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not NAME_RE.match(name):
        raise CandidateError(
            f"candidate {text!r}: give NAME=SETTINGS, NAME being letters, digits, '.', '_' "
            "or '-' (up to 40)"
        )
    env: dict[str, str] = {}
    if sep:
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise CandidateError(f"candidate {name}: {item!r} is not key=value")
            key = key.strip().lower().removeprefix("vitrine_")
            key = ALIASES.get(key, key)
            if known is not None and key not in known:
                close = sorted(k for k in known if k.split("_")[0] == key.split("_")[0])
                hint = f" (did you mean {', '.join(close[:4])}?)" if close else ""
                raise CandidateError(f"candidate {name}: no engine setting {key!r}{hint}")
            env[f"VITRINE_{key.upper()}"] = value.strip()
    return Candidate(name, env)


def parse_candidates(texts: list[str], known: frozenset[str] | None = None) -> list[Candidate]:
    candidates = [parse_candidate(t, known) for t in texts] or [Candidate("default")]
    names = [c.name for c in candidates]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CandidateError(f"candidate names must differ: {', '.join(twice)} given twice")
    return candidates
