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

TIERS_IN_ORDER = ("model", "stack")
"""Folders whose tests run one at a time, each tier on an xdist worker of its own."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``scripts/test.sh`` runs ``-n 2 --dist loadgroup``: the model tier (CPU-bound llama.cpp)
    and the stack tier (mostly waiting on Kafka, MinIO, PostgreSQL and the services it starts)
    side by side, each in order on its own worker, so no two tests of one tier ever overlap
    (the stack's fault tests restart servers; the model's RSS tests read their own process);
    the unit tests fill in.  Without xdist the marker is inert."""
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        if len(parts) > 2 and parts[0] == "tests" and parts[1] in TIERS_IN_ORDER:
            item.add_marker(pytest.mark.xdist_group(parts[1]))


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
