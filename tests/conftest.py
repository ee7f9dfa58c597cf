"""Shared fixtures: tiny generated GGUF models and engines loaded once per test session."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from services.inference.engine import CardEngine
from services.inference.model_files import resolve
from services.inference.settings import EngineSettings
from tiny_models import TinyPair, generate


@pytest.fixture(scope="session")
def tiny_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyPair]:
    return generate(tmp_path_factory.mktemp("tiny-models"))


def tiny_settings(pair: TinyPair, **overrides: object) -> EngineSettings:
    values: dict[str, object] = {
        "model_path": pair.model,
        "mmproj_path": pair.mmproj,
        "handler": pair.handler,
        "n_ctx": 4096,
        "max_tokens": 1536,
        "n_threads": 2,
    }
    values.update(overrides)
    return EngineSettings(**values)  # type: ignore[arg-type]


def load_engine(pair: TinyPair, **overrides: object) -> CardEngine:
    settings = tiny_settings(pair, **overrides)
    return CardEngine(resolve(settings), settings)


@pytest.fixture(scope="session")
def llava_engine(tiny_pairs: dict[str, TinyPair]) -> Iterator[CardEngine]:
    engine = load_engine(tiny_pairs["llava"])
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def mtmd_engine(tiny_pairs: dict[str, TinyPair]) -> Iterator[CardEngine]:
    engine = load_engine(tiny_pairs["mtmd"])
    yield engine
    engine.close()


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (320, 240)) -> bytes:
    colour = {"RGB": (30, 60, 200), "RGBA": (200, 30, 30, 120)}.get(mode, 128)
    image = Image.new(mode, size, colour)  # type: ignore[arg-type]
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()
