"""Engines on the tiny generated models, with the settings the tests share.  Importing this loads
llama.cpp: only the model and stack tests do."""

from __future__ import annotations

from services.inference.engine.card_engine import CardEngine
from services.inference.engine.model_files import resolve
from services.inference.settings import EngineSettings
from tests.support.tiny_models import TinyPair


def tiny_settings(pair: TinyPair, **overrides: object) -> EngineSettings:
    values: dict[str, object] = {
        "model_path": pair.model,
        "mmproj_path": pair.mmproj,
        "handler": pair.handler,
        "n_ctx": 4096,
        "max_tokens": 1536,
        "n_threads": 2,
        # Random weights write every word as long as a pattern allows, so under the word
        # pattern their descriptions overrun 2000 characters; the tiny tests keep the grammar
        # that bounds characters exactly.  The word pattern runs on real weights
        # (test_real_weights.py) and in the grammar tests.
        "word_minimum": "check",
    }
    values.update(overrides)
    return EngineSettings(**values)  # type: ignore[arg-type]


def load_engine(pair: TinyPair, **overrides: object) -> CardEngine:
    settings = tiny_settings(pair, **overrides)
    return CardEngine(resolve(settings), settings)
