"""How many of a product's photos one generation's context holds, known at start-up.

A product's card reads up to ``VITRINE_PRODUCT_MAX_PHOTOS`` photos in one prompt, and each photo
costs the projector's image tokens (64 for the test projectors, 256 for Gemma 3, 576 for
LLaVA 1.5).  The KV cache check (``capacity.py``) sizes memory for ``slots x n_ctx``; this one
asks the other question: does one slot's ``n_ctx`` hold the prompt, the photos and the card's
token budget?  Gemma 3 4B's preset (n_ctx 4096) holds three photos, not six; finding that out
from a product that fails after a minute of prefill is the wrong place.

The count is exact for the image (libmtmd tokenizes a photo at the encoder size every photo is
prepared at, without encoding it) and bounded for the text (the instructions, tokenized, plus
``TEMPLATE_MARGIN`` for the chat template's own tokens and the shop's facts).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

TEMPLATE_MARGIN = 160
"""Tokens the chat template's markers, the facts block and a retry's note add at most to the
instructions (the facts are bounded: ``schemas/facts.py``; a retry's note is a line)."""


@dataclass(frozen=True)
class PhotoCapacity:
    """One slot's context against a product prompt: what a photo costs and what fits."""

    n_ctx: int
    text_tokens: int
    """The instructions' tokens plus ``TEMPLATE_MARGIN``."""
    photo_tokens: int
    max_tokens: int
    """The card's token budget (``VITRINE_MAX_TOKENS``), which the context must also hold."""

    def needed(self, photos: int) -> int:
        """Context tokens a card from ``photos`` photos may use, the card's budget included."""
        return self.text_tokens + photos * self.photo_tokens + self.max_tokens

    @property
    def photos_fit(self) -> int:
        """The most photos one generation's context holds (0: not even one)."""
        room = self.n_ctx - self.text_tokens - self.max_tokens
        return max(room // self.photo_tokens, 0) if self.photo_tokens > 0 else 0

    def short_of(self, photos: int) -> str | None:
        """Why a card from ``photos`` photos cannot be made here, or None when it fits."""
        if self.needed(photos) <= self.n_ctx:
            return None
        return (
            f"{photos} photos need {self.needed(photos)} tokens of context "
            f"({self.text_tokens} of instructions, {self.photo_tokens} per photo, "
            f"{self.max_tokens} for the card) and one generation has {self.n_ctx}: it holds "
            f"{self.photos_fit}; raise VITRINE_N_CTX to {self.needed(photos)} or lower "
            f"VITRINE_PRODUCT_MAX_PHOTOS to {self.photos_fit}"
        )


def image_tokens(handler: Any, image: bytes) -> int:
    """The tokens libmtmd gives one image, by tokenizing its marker with the image (no
    encoding: seconds cheaper than a prefill).  Runs on the llama.cpp thread."""
    mtmd = handler._mtmd_cpp
    marker = mtmd.mtmd_default_marker()
    bitmap = handler._create_bitmap_from_bytes(image)
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        text = mtmd.mtmd_input_text()
        text.text, text.text_len = marker, len(marker)
        text.add_special, text.parse_special = False, True
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        if mtmd.mtmd_tokenize(handler.mtmd_ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
            raise ValueError("libmtmd could not tokenize an image")
        total = 0
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                total += int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
        return total
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)


def text_tokens(llm: Any, messages: list[Any]) -> int:
    """The text of a chat (the image parts left out), tokenized, plus ``TEMPLATE_MARGIN``."""
    parts: list[str] = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p["text"] for p in content if p.get("type") == "text")
    return len(llm.tokenize("\n".join(parts).encode(), add_bos=True, special=False)) + (
        TEMPLATE_MARGIN
    )
