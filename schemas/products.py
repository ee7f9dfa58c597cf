"""A product: a folder of photos committed by a manifest uploaded last.

A catalogue photographs a product several times (front, back, the label with the composition),
and a card written from all of them is better than one per photo.  A shop uploads the photos of
``shop-42/123/`` and then ``shop-42/123/product.json``: the data pipelines' ``_SUCCESS``
convention, so a card never starts from half a product.  The manifest names the photos in the
order the model sees them, the main one (the pixel colour is read from it, the desk shows it)
and the shop's facts (``schemas/facts.py``)::

    {"photos": ["front.jpg", "back.jpg", "label.jpg"], "main": "front.jpg",
     "facts": {"sku": "123", "brand": "Tramontina", "material": "aço inox"}}

Photos are named relative to the manifest's folder (no ``/``, no ``..``).  The product's row is
the manifest's (its key ``shop-42/123/product.json``), listing the photos' keys; each photo the
manifest names ends ``grouped`` (part of that product) instead of with a card of its own.
Photos no manifest names keep their own cards.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MANIFEST_NAME = "product.json"
MANIFEST_MAX_BYTES = 64 * 1024
PHOTOS_MOST = 20
"""What a manifest may name at all; ``VITRINE_PRODUCT_MAX_PHOTOS`` is how many a card reads."""


class ProductManifest(BaseModel):
    """``product.json``: the photos, in order, the main one, the shop's facts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    photos: list[str] = Field(min_length=1, max_length=PHOTOS_MOST)
    main: str | None = Field(None, description="One of photos; the first when absent.")
    facts: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("photos")
    @classmethod
    def _names(cls, photos: list[str]) -> list[str]:
        for name in photos:
            if not name or "/" in name or name in (".", "..") or name == MANIFEST_NAME:
                raise ValueError(f"{name!r} is not a photo name in this folder")
            if len(name.encode()) > 255 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
                raise ValueError(f"{name!r} is not a photo name in this folder")
        if len(set(photos)) != len(photos):
            raise ValueError("a photo is named twice")
        return photos

    @model_validator(mode="after")
    def _main(self) -> ProductManifest:
        if self.main is not None and self.main not in self.photos:
            raise ValueError(f"main {self.main!r} is not one of the photos")
        return self

    @property
    def main_index(self) -> int:
        return self.photos.index(self.main) if self.main else 0


class ProductSpec(BaseModel):
    """What a product's job and row carry: the photos' keys in order, and the main one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    photos: list[str] = Field(min_length=1, max_length=PHOTOS_MOST)
    main: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _main_is_a_photo(self) -> ProductSpec:
        if self.main >= len(self.photos):
            raise ValueError(f"main {self.main} is not the index of one of the photos")
        return self


def manifest_folder(key: str) -> str | None:
    """The folder a manifest commits (``shop-42/123/``), or None for any other key."""
    if key == MANIFEST_NAME:
        return ""
    if key.endswith("/" + MANIFEST_NAME):
        return key[: -len(MANIFEST_NAME)]
    return None


def read_manifest(data: bytes) -> tuple[ProductManifest | None, str | None]:
    """The manifest in ``data``, or why it is not one (a clear sentence for the row)."""
    if len(data) > MANIFEST_MAX_BYTES:
        return None, f"the manifest is over {MANIFEST_MAX_BYTES} bytes"
    if not data.strip():
        return None, "the manifest is empty"
    try:
        # utf-8-sig: a byte-order mark (Notepad's) is UTF-8 all the same
        document: Any = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"the manifest is not JSON: {exc}"
    except RecursionError:  # valid JSON nested deeper than a recursive reader goes
        return None, "the manifest is not JSON a reader can take: nested too deep"
    try:  # JSON may escape a lone surrogate ("\ud800"), which is not text
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None, "the manifest holds a string that is not Unicode text (a lone surrogate)"
    try:
        return ProductManifest.model_validate(document), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        return None, f"the manifest is invalid at {where}: {first['msg']}"
