"""The model preset registry (``presets.toml``), parsed into typed records.

Presets keep "which file, which handler, which context size" out of users' heads: a preset name and
a quantisation are enough to pull and run a model.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

HandlerName = Literal["llava15", "llava16", "qwen25vl", "mtmd"]
ImageFit = Literal["pad", "fit"]
REGISTRY = Path(__file__).with_name("presets.toml")


class HubFile(BaseModel):
    repo: str
    filename: str


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    repo: str
    mmproj: str
    handler: HandlerName
    default_quant: str
    quants: dict[str, str]
    n_ctx: int = Field(ge=1024)
    n_gpu_layers: int = -1
    image_size: int = Field(ge=32)
    image_fit: ImageFit
    size_gb: float
    notes: str = ""

    @model_validator(mode="after")
    def _default_quant_exists(self) -> Preset:
        if self.default_quant not in self.quants:
            raise ValueError(
                f"preset {self.name}: default_quant {self.default_quant} not in quants"
            )
        return self

    def model_file(self, quant: str | None = None) -> HubFile:
        quant = quant or self.default_quant
        try:
            spec = self.quants[quant]
        except KeyError:
            have = ", ".join(self.quants)
            raise KeyError(f"preset {self.name} has no {quant} file (available: {have})") from None
        repo, _, filename = spec.rpartition(":")
        return HubFile(repo=repo or self.repo, filename=filename)

    def mmproj_file(self) -> HubFile:
        return HubFile(repo=self.repo, filename=self.mmproj)


class Registry(BaseModel):
    default: str
    presets: dict[str, Preset]

    def get(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(self.presets)
            raise KeyError(f"unknown preset {name!r} (known: {known})") from None


@lru_cache(maxsize=4)
def load_registry(path: Path = REGISTRY) -> Registry:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    presets = {name: Preset(name=name, **body) for name, body in raw["presets"].items()}
    registry = Registry(default=raw["default"], presets=presets)
    registry.get(registry.default)
    return registry
