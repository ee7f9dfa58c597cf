"""Write (or check) the JSON Schema files under ``schemas/json/`` for downstream consumers.

    python -m schemas.export           # rewrite the files
    python -m schemas.export --check   # exit 1 if a committed file is stale

The files are generated from the Pydantic models, never edited by hand; a test runs ``--check`` so
a contract change without a regenerated file fails CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.card import card_json_schema
from schemas.messages import CardResult, ImageJob

JSON_DIR = Path(__file__).resolve().parent / "json"

EXPORTS: dict[str, Callable[[], dict[str, Any]]] = {
    "product_card.schema.json": card_json_schema,
    "image_job.schema.json": ImageJob.model_json_schema,
    "card_result.schema.json": CardResult.model_json_schema,
}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of exported files that are missing or differ from what the models generate."""
    stale = []
    for name, build in EXPORTS.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(build()):
            stale.append(name)
    return stale


def write_all(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in EXPORTS.items():
        path = directory / name
        path.write_text(render(build()), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: schemas/json/{name} (run: python -m schemas.export)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
