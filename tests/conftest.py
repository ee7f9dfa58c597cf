"""Fixtures every folder may use: the tiny generated GGUF models, and engines loaded on them once
per test session.

The suite mirrors the source: ``tests/unit`` needs neither a model nor a server, ``tests/model``
runs llama.cpp (tiny generated models and the real Gemma 3 270M weights), ``tests/stack`` talks
to the servers ``infra/stack`` starts, and ``tests/support`` holds what they share.  Nothing here
imports llama.cpp at collection: a unit run never loads it (the engine is imported inside the
fixtures that build one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.tiny_models import TinyPair, generate

if TYPE_CHECKING:
    from services.inference.engine.card_engine import CardEngine


@pytest.fixture(scope="session")
def tiny_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyPair]:
    return generate(tmp_path_factory.mktemp("tiny-models"))


def _session_engine(pair: TinyPair) -> Iterator[CardEngine]:
    from tests.support.engines import load_engine

    engine = load_engine(pair)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def llava_engine(tiny_pairs: dict[str, TinyPair]) -> Iterator[CardEngine]:
    yield from _session_engine(tiny_pairs["llava"])


@pytest.fixture(scope="session")
def mtmd_engine(tiny_pairs: dict[str, TinyPair]) -> Iterator[CardEngine]:
    yield from _session_engine(tiny_pairs["mtmd"])
