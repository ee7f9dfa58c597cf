"""The inference service's layers, held at import time.

Only ``services/inference/engine/`` imports llama_cpp (and llguidance); the worker, the card
rules, the other services and the review desk import none of them, nor OpenCV: each layer's
modules are imported in a fresh interpreter in which those packages cannot be found.  A worker
that loaded llama.cpp to consume Kafka would pay its import time and memory, and a change there
could crash a process that only moves messages.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NATIVE = ("llama_cpp", "llguidance", "cv2")

PROBE = """
import importlib, json, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this layer")
        return None

BLOCKED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Blocked())
failures = {}
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        failures[module] = str(exc)
print(json.dumps(failures))
"""


def modules_of(package: str) -> list[str]:
    found = [package]
    path = import_module(package).__path__
    for info in pkgutil.walk_packages(path, prefix=f"{package}."):
        if not info.name.endswith("__main__"):
            found.append(info.name)
    return found


LAYERS = {
    "inference worker": [
        *modules_of("services.inference.worker"),
        "services.inference.settings",
        "services.inference.metrics",
    ],
    "card rules": modules_of("services.inference.card"),
    "language (colour science, function words)": modules_of("services.language"),
    "ingest": modules_of("services.ingest"),
    "sink": modules_of("services.sink"),
    "review desk": modules_of("services.review"),
    "schemas": modules_of("schemas"),
}


def imports_with_blocked(blocked: tuple[str, ...], modules: list[str]) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(blocked), *modules],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_neither_llama_cpp_nor_opencv(layer: str) -> None:
    assert len(LAYERS[layer]) > 1 or layer == "schemas"
    assert imports_with_blocked(NATIVE, LAYERS[layer]) == {}


def test_the_probe_sees_a_layer_that_breaks_the_rule() -> None:
    """The engine imports llama_cpp: the same probe must say so, or the tests above prove
    nothing."""
    failures = imports_with_blocked(NATIVE, ["services.inference.engine.card_engine"])
    assert "llama_cpp" in failures.get("services.inference.engine.card_engine", "")


def test_the_contracts_import_no_service() -> None:
    """``schemas/`` is what every service imports; it depending on a service would make the
    contracts move with that service's code."""
    assert imports_with_blocked(("services", *NATIVE), LAYERS["schemas"]) == {}
