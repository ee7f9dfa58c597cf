"""Shared fixtures: tiny generated GGUF models and engines loaded once per test session."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from services.inference.engine.card_engine import CardEngine
from services.inference.engine.model_files import resolve
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


def serve(respond: Callable[[str], tuple[int, bytes]]) -> tuple[HTTPServer, int]:
    """A stand-in HTTP server on a free local port: ``respond(path)`` gives each GET's status
    and body. The caller shuts it down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = respond(self.path)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]
