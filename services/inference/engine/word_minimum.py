"""A string field held open until it has enough words: the word minimum, enforced at decode time.

The description must have at least 150 words *and* at most 2000 characters.  No grammar backend
can intersect the two (see ``grammar.py``), and a word pattern costs llguidance about 3 ms of mask
per token at a 262k vocabulary.  So on vitrine's own decode loop the grammar keeps the exact
character bounds, and this keeps the string from closing too early: while the decoder is inside
the field and the text has fewer words than the minimum, every token that contains a ``"`` is
masked out, so the model cannot end the string (an escaped ``\\"`` goes too, which costs
nothing).  Words are counted as the contract's pattern counts them (``schemas.card``), which
the content checks' counter never undercounts.  If the character bound leaves no
other token (150 words cannot fit), the quote is allowed back and the checks report the count.
"""

from __future__ import annotations

import json
import re

import numpy as np

from schemas.card import WORD_PATTERN

WORD = re.compile(WORD_PATTERN)

NEG_INF = np.float32(-np.inf)
_ESCAPE = re.compile(rb"\\(u[0-9a-fA-F]{4}|.)")


def quote_tokens(pieces: list[bytes]) -> np.ndarray:
    """Ids of the vocabulary entries (``pieces[id]``) whose bytes contain a double quote."""
    return np.fromiter((i for i, p in enumerate(pieces) if b'"' in p), dtype=np.intp)


class WordMinimum:
    """Tracks one top-level string field in the output; :meth:`holds` while it is too short.

    ``key_separator`` must be the grammar's (``": "`` in ``decoding.JSON_OPTIONS``), so the
    field's opening ``"name": "`` is found byte for byte.
    """

    def __init__(
        self, field: str, min_words: int, quotes: np.ndarray, *, key_separator: str = ": "
    ) -> None:
        self.field = field
        self.min_words = min_words
        self.quotes = quotes
        self.opening = (json.dumps(field) + key_separator + '"').encode()
        self.reset()

    def reset(self) -> None:
        self._out = bytearray()
        self._start: int | None = None
        self._closed = False
        self._escaped = False
        self.words = 0

    def feed(self, piece: bytes) -> None:
        """The next output bytes (a sampled or forced token)."""
        if self._closed:
            return
        before = len(self._out)
        self._out += piece
        if self._start is None:
            found = self._out.find(self.opening, max(0, before - len(self.opening)))
            if found < 0:
                return
            self._start = found + len(self.opening)
            before = self._start
        for i in range(max(before, self._start), len(self._out)):
            byte = self._out[i]
            if self._escaped:
                self._escaped = False
            elif byte == 0x5C:  # backslash
                self._escaped = True
            elif byte == 0x22:  # the closing quote
                self._closed = True
                break
        content = _ESCAPE.sub(b" ", bytes(self._out[self._start :]))
        self.words = len(WORD.findall(content.decode("utf-8", errors="ignore")))

    def holds(self) -> bool:
        """Inside the field, with fewer words than the minimum: the quote must wait."""
        return self._start is not None and not self._closed and self.words < self.min_words

    def mask(self, logits: np.ndarray) -> None:
        """Mask the quote tokens in ``logits`` (in place), unless nothing else is allowed."""
        saved = logits[self.quotes]
        logits[self.quotes] = NEG_INF
        if not np.isfinite(logits.max()):
            logits[self.quotes] = saved
