"""Which llama-cpp-python chat handler fits a GGUF pair, read from the files' own metadata.

A model that carries ``tokenizer.chat_template`` (or is given one with ``VITRINE_CHAT_TEMPLATE``)
runs under the generic ``mtmd`` handler, which renders that template.  A model without one needs
the handler whose built-in prompt format matches its projector: LLaVA-1.5 (``mlp``), LLaVA-1.6
(``mlp`` with ``clip.vision.image_grid_pinpoints``), Qwen2.5-VL (``qwen2.5vl_merger``).  Anything
else is refused with what was found and the two ways out (``--handler``, ``--chat-template``).

Only the metadata header is read (mmap, no tensors).  ``gguf.GGUFReader`` is not used for it: it
parses every array element of every field, which takes 9-17 s on a 262k-token vocabulary on a
2-core machine; skipping the arrays we do not want takes a fraction of a second.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGUF_MAGIC, GGUFValueType

from services.inference.engine.presets import HandlerName

PROJECTOR_TYPE_KEYS = ("clip.projector_type", "clip.vision.projector_type")
"""Where llama.cpp's clip loader looks for the projector type, in its order."""
PINPOINTS_KEY = "clip.vision.image_grid_pinpoints"
TEMPLATE_KEY = "tokenizer.chat_template"
QWEN25VL_PROJECTORS = ("qwen2.5vl_merger", "qwen2.5o")
"""``qwen2.5o`` is the omni models' legacy name, read by llama.cpp as qwen2.5vl for vision."""

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


class GGUFMetadataError(ValueError):
    """The file is not a GGUF file this reader understands (or is truncated)."""


class HandlerNotDetected(ValueError):
    """No handler follows from the files; the message names what was found and the options."""


@dataclass(frozen=True)
class HandlerChoice:
    handler: HandlerName
    reason: str
    """Why, for people: e.g. ``chosen: projector mlp, model has no chat template``."""


def read_metadata(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``keys`` present in the GGUF header of ``path`` (others are skipped).

    Strings come back as ``str``, arrays as lists, scalars as Python numbers/bools.
    """
    wanted = set(keys)
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            return _scan(buf, wanted)
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
            raise GGUFMetadataError(f"{path}: not a readable GGUF header ({exc})") from None


def _scan(buf: mmap.mmap, wanted: set[str]) -> dict[str, Any]:
    if len(buf) < 24 or struct.unpack_from("<I", buf, 0)[0] != GGUF_MAGIC:
        raise ValueError("no GGUF magic")
    version = struct.unpack_from("<I", buf, 4)[0]
    # a big-endian file reads as a huge version number in little-endian order
    order = "<" if version & 0xFFFF else ">"
    version = struct.unpack_from(order + "I", buf, 4)[0]
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported")
    n_kv = struct.unpack_from(order + "Q", buf, 16)[0]
    pos = 24
    found: dict[str, Any] = {}

    def string_at(at: int) -> tuple[int, bytes]:
        (length,) = struct.unpack_from(order + "Q", buf, at)
        end = at + 8 + length
        if end > len(buf):
            raise ValueError("string runs past the end of the file")
        return end, buf[at + 8 : end]

    for _ in range(n_kv):
        pos, raw_key = string_at(pos)
        key = raw_key.decode("utf-8")
        (vtype,) = struct.unpack_from(order + "I", buf, pos)
        pos += 4
        keep = key in wanted
        if vtype == GGUFValueType.ARRAY:
            item_type, count = struct.unpack_from(order + "IQ", buf, pos)
            pos += 12
            items: list[Any] = []
            if item_type == GGUFValueType.STRING:
                for _ in range(count):
                    pos, raw = string_at(pos)
                    if keep:
                        items.append(raw.decode("utf-8"))
            elif GGUFValueType(item_type) in _SCALARS:
                fmt = _SCALARS[GGUFValueType(item_type)]
                if keep:
                    items = list(struct.unpack_from(f"{order}{count}{fmt}", buf, pos))
                pos += count * struct.calcsize(fmt)
            else:
                raise ValueError(f"{key}: arrays of type {item_type} are not supported")
            value: Any = items
        elif vtype == GGUFValueType.STRING:
            pos, raw = string_at(pos)
            value = raw.decode("utf-8") if keep else None
        else:
            fmt = _SCALARS[GGUFValueType(vtype)]
            (value,) = struct.unpack_from(order + fmt, buf, pos)
            pos += struct.calcsize(fmt)
        if keep:
            found[key] = value
            if len(found) == len(wanted):
                break
    return found


def projector_type(metadata: dict[str, Any]) -> str | None:
    for key in PROJECTOR_TYPE_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def detect_handler(model: Path, mmproj: Path, *, chat_template: str | None = None) -> HandlerChoice:
    """The handler for an explicit pair: see the module docstring for the rule.

    ``chat_template`` is the ``VITRINE_CHAT_TEMPLATE`` setting (a built-in name or a file); given,
    it is the template the engine renders, so the generic handler applies whatever the model has.
    Raises ``GGUFMetadataError`` for an unreadable file, ``HandlerNotDetected`` when no rule fits.
    """
    if chat_template is not None:
        return HandlerChoice("mtmd", f"chosen: chat template {chat_template} given")
    text = read_metadata(model, (TEMPLATE_KEY,))
    template = text.get(TEMPLATE_KEY)
    if isinstance(template, str) and template.strip():
        return HandlerChoice("mtmd", "chosen: the model has a chat template")
    vision = read_metadata(mmproj, (*PROJECTOR_TYPE_KEYS, PINPOINTS_KEY))
    kind = projector_type(vision)
    if kind == "mlp":
        if vision.get(PINPOINTS_KEY):
            return HandlerChoice(
                "llava16",
                "chosen: projector mlp with image grid pinpoints, model has no chat template",
            )
        return HandlerChoice("llava15", "chosen: projector mlp, model has no chat template")
    if kind in QWEN25VL_PROJECTORS:
        return HandlerChoice("qwen25vl", f"chosen: projector {kind}, model has no chat template")
    found = f"projector type {kind!r}" if kind else "no projector type"
    raise HandlerNotDetected(
        f"cannot choose a chat handler for {model.name} + {mmproj.name}: the model has no "
        f"tokenizer.chat_template and the projector has {found} (known without a template: "
        "mlp -> llava15, mlp with image grid pinpoints -> llava16, qwen2.5vl_merger -> qwen25vl). "
        "Pass --handler llava15|llava16|qwen25vl|mtmd (VITRINE_HANDLER), or give the model a "
        "template with --chat-template gemma|chatml|FILE (VITRINE_CHAT_TEMPLATE)"
    )
