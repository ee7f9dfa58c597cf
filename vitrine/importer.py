"""``vitrine import products.csv``: a shop's catalogue file → products in the bucket.

The columns are those of the AWS smart-product-onboarding sample's batch CSV (``title,
description, short_description, metadata, images``) plus ``sku``, ``brand``, ``gtin`` (and,
optional, ``main``: the main photo's position, 1 = the first).  Each row becomes a product
(``schemas/products.py``): its photos uploaded into ``<prefix>/<sku or row-N>/`` in the order
``images`` lists them (paths relative to the CSV's folder, separated by ``|``, ``;`` or
``,``), then ``product.json`` naming them with the row's facts: ``title`` as the shop's title,
``metadata`` read as ``name: value`` or ``name=value`` pairs (``;`` between) for category
attributes and colour.  ``description`` and ``short_description`` are not facts vitrine uses
(the card writes its own), and the report says so once.

A row whose photos are missing or whose facts break their rules is refused before anything of
it is uploaded, with why; the others go on.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minio import Minio

from schemas.facts import facts_from_metadata
from schemas.products import MANIFEST_NAME, PHOTOS_MOST
from services.runtime.object_keys import key_problem
from vitrine.upload import content_type_of

REQUIRED = ("images",)
IGNORED = ("description", "short_description")
SPLIT = re.compile(r"[|;,]")
PAIR = re.compile(r"^\s*([^:=]+?)\s*[:=]\s*(.+?)\s*$")
SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Row:
    number: int
    """The CSV line's data row number (1 = the first after the header)."""
    folder: str
    photos: list[Path]
    facts: dict[str, str]
    main: int = 1
    problems: list[str] = field(default_factory=list)

    @property
    def manifest_key(self) -> str:
        return self.folder + MANIFEST_NAME


def _facts(record: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    facts = {k: (record.get(k) or "").strip() for k in ("sku", "brand", "gtin", "title")}
    facts = {k: v for k, v in facts.items() if v}
    problems = []
    for part in (record.get("metadata") or "").split(";"):
        if not part.strip():
            continue
        match = PAIR.match(part)
        if not match:
            problems.append(f"metadata {part.strip()!r} is not 'name: value'")
            continue
        name = match.group(1).strip().lower().replace(" ", "_")
        facts.setdefault(name, match.group(2))
    checked = facts_from_metadata(facts)
    problems += [f"{p.fact}: {p.detail}" for p in checked.problems]
    return facts, problems


def read_rows(path: Path, prefix: str, max_photos: int) -> list[Row]:
    """Every data row of the CSV, checked: a row with problems is reported, not uploaded."""
    base = path.parent
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: no {', '.join(missing)} column (the header is the first line)"
            )
        rows = []
        for number, record in enumerate(reader, 1):
            facts, problems = _facts(record)
            names = [n.strip() for n in SPLIT.split(record.get("images") or "") if n.strip()]
            photos = [Path(n) if Path(n).is_absolute() else base / n for n in names]
            problems += [f"no such photo: {p}" for p in photos if not p.is_file()]
            if not photos:
                problems.append("no images")
            if len(photos) > min(max_photos, PHOTOS_MOST):
                problems.append(f"{len(photos)} images; a card reads at most {max_photos}")
            name = SAFE.sub("-", facts.get("sku") or f"row-{number}").strip("-.") or f"row-{number}"
            folder = f"{prefix.rstrip('/')}/{name}/" if prefix.strip("/") else f"{name}/"
            problem = key_problem(folder + MANIFEST_NAME)
            if problem:
                problems.append(f"folder {folder!r}: {problem}")
            main = (record.get("main") or "1").strip() or "1"
            if not main.isdigit() or not 1 <= int(main) <= max(len(photos), 1):
                problems.append(f"main {main!r} is not a photo's position")
                main = "1"
            rows.append(Row(number, folder, photos, facts, int(main), problems))
        return rows


def photo_names(photos: list[Path]) -> list[str]:
    return [
        f"{i:02d}-{SAFE.sub('-', p.name).strip('-.') or 'photo'}" for i, p in enumerate(photos, 1)
    ]


def upload_row(client: Minio, bucket: str, row: Row) -> None:
    """The row's photos, then its manifest (last: it commits the folder)."""
    names = photo_names(row.photos)
    for name, photo in zip(names, row.photos, strict=True):
        client.fput_object(bucket, row.folder + name, str(photo), content_type_of(photo))
    manifest = {"photos": names, "main": names[row.main - 1], "facts": row.facts}
    body = json.dumps(manifest, ensure_ascii=False).encode()
    client.put_object(
        bucket,
        row.manifest_key,
        io.BytesIO(body),
        len(body),
        content_type="application/json",
    )


def wait_for_rows(
    read: Callable[[list[str]], dict[str, dict[str, Any]]],
    keys: Iterable[str],
    seconds: float,
    interval: float = 2.0,
) -> dict[str, dict[str, Any]]:
    """The rows of ``keys`` once each has a final status, or as they are after ``seconds``."""
    wanted = list(keys)
    deadline = time.monotonic() + seconds
    while True:
        found = read(wanted)
        final = all(found.get(k, {}).get("status") not in (None, "queued") for k in wanted)
        if final or time.monotonic() >= deadline:
            return found
        time.sleep(interval)
