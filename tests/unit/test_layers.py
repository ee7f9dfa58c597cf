"""The inference service's layers, held at import time.

Only ``services/inference/engine/`` imports llama_cpp (and llguidance); the worker, the card
rules, the other services and the review desk import none of them, nor OpenCV: each layer's
modules are imported in a fresh interpreter in which those packages cannot be found.  A worker
that loaded llama.cpp to consume Kafka would pay its import time and memory, and a change there
could crash a process that only moves messages.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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
    "export (the stage and the channels)": [
        *modules_of("services.export"),
        "vitrine.commands.export",
    ],
    "schemas": modules_of("schemas"),
    # the parent of `vitrine eval run`: it reads sets, scores and draws reports while each
    # candidate's child (vitrine.eval.child, the one module that loads an engine) generates
    "eval (all but its child process)": [
        m for m in modules_of("vitrine.eval") if m != "vitrine.eval.child"
    ]
    + ["vitrine.commands.eval"],
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


def imported_modules(path: Path) -> set[str]:
    """Every module a file names in an import statement, at any depth (a test's own imports
    inside functions count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_tests_import_support_never_each_other_and_the_product_imports_no_test() -> None:
    """A test that imports another test file runs that file's module-level code and ties the two
    together; what they share lives in ``tests/support``.  The shipping packages never import
    ``tests`` at all."""
    wrong: list[str] = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")
            if (
                top[0] == "conftest"
                or top[0].startswith("test_")
                or (top[0] == "tests" and len(top) > 1 and top[1] != "support")
            ):
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    for package in ("schemas", "services", "vitrine"):
        for path in sorted((REPO / package).rglob("*.py")):
            wrong += [
                f"{path.relative_to(REPO)} imports {name}"
                for name in imported_modules(path)
                if name.split(".")[0] == "tests"
            ]
    assert wrong == []


def test_the_checker_sees_a_test_importing_another(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text("from test_checks import card\nfrom tests.stack.test_review import Desk\n")
    assert imported_modules(bad) >= {"test_checks", "tests.stack.test_review"}


def test_collecting_the_unit_tests_loads_no_native_library() -> None:
    """``tests/unit`` is the tier a change is checked on first: collecting it (every conftest and
    every unit test module) must not import llama.cpp or OpenCV."""
    probe = (
        "import sys, pytest\n"
        "code = pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests/unit'])\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'llama_cpp', 'llguidance'})\n"
        "print('LOADED', ','.join(loaded))\n"
        "sys.exit(int(code))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "LOADED"
