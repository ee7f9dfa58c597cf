"""Write (or check) the JSON Schema files under ``schemas/json/`` for downstream consumers.

    python -m schemas.export           # rewrite the files
    python -m schemas.export --check   # exit 1 if a committed file is stale

The files are generated from the Pydantic models, never edited by hand; a test runs ``--check`` so
a contract change without a regenerated file fails CI.  ``categories/<category_id>.schema.json``
is the ``attributes`` schema of each leaf of the default pt-BR tree (``vitrine taxonomy export``
writes them for any other tree).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.card import card_json_schema, default_taxonomy
from schemas.language import PT_BR
from schemas.messages import ApprovedCard, CardResult, ImageJob
from schemas.taxonomy import Taxonomy

JSON_DIR = Path(__file__).resolve().parent / "json"

EXPORTS: dict[str, Callable[[], dict[str, Any]]] = {
    "product_card.schema.json": card_json_schema,
    "image_job.schema.json": ImageJob.model_json_schema,
    "card_result.schema.json": CardResult.model_json_schema,
    "approved_card.schema.json": ApprovedCard.model_json_schema,
}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


CATEGORY_DIR = "categories"


def category_files(tree: Taxonomy) -> dict[str, dict[str, Any]]:
    """``categories/<id>.schema.json`` → the leaf's attributes schema, for every leaf."""
    return {
        f"{CATEGORY_DIR}/{leaf.id}.schema.json": leaf.attributes_schema() for leaf in tree.leaves
    }


def _expected() -> dict[str, Callable[[], dict[str, Any]]]:
    expected = dict(EXPORTS)
    for name, schema in category_files(default_taxonomy(PT_BR)).items():
        expected[name] = functools.partial(dict, schema)
    return expected


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of exported files that are missing, differ from what the models generate, or
    are left over (a category no longer in the tree)."""
    expected = _expected()
    stale = []
    for name, build in expected.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(build()):
            stale.append(name)
    for path in sorted((directory / CATEGORY_DIR).glob("*.json")):
        if f"{CATEGORY_DIR}/{path.name}" not in expected:
            stale.append(f"{CATEGORY_DIR}/{path.name}")
    return stale


def write_tree(tree: Taxonomy, directory: Path) -> list[Path]:
    """Every leaf's attributes schema of ``tree`` under ``directory`` (stale ones removed)."""
    files = category_files(tree)
    target = directory / CATEGORY_DIR
    target.mkdir(parents=True, exist_ok=True)
    for path in target.glob("*.schema.json"):
        if f"{CATEGORY_DIR}/{path.name}" not in files:
            path.unlink()
    written = []
    for name, schema in files.items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def write_all(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in EXPORTS.items():
        path = directory / name
        path.write_text(render(build()), encoding="utf-8")
        written.append(path)
    return written + write_tree(default_taxonomy(PT_BR), directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: schemas/json/{name} (run: python -m schemas.export)", file=sys.stderr)
        return 1 if stale else 0
    written = write_all()
    for path in written:
        if path.parent.name != CATEGORY_DIR:
            print(f"wrote {path}")
    print(f"wrote {sum(p.parent.name == CATEGORY_DIR for p in written)} category schemas")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
