"""No loops: a DRY ("don't repeat yourself") penalty on tokens that would extend a repeat.

A small model writing 150 words of prose falls into loops ("de alta qualidade, de alta
qualidade, ..."), which the repetition check then rejects; a repeat penalty over the last 64
tokens does not stop a loop of whole phrases.  DRY, as llama.cpp's sampler and koboldcpp define
it, looks at the output so far: if the last ``k`` tokens already occurred earlier, followed by
token ``t``, then ``t`` would extend a repeat of ``k + 1`` tokens, and once ``k`` reaches
``allowed_length`` its logit loses ``multiplier * base ** (k - allowed_length)`` — a growing cost
that ends loops while leaving ordinary word reuse alone.  Sequence breakers (tokens with a
newline, quote, colon or asterisk) end a match, so the JSON's own punctuation never counts.

Written here rather than taken from llama.cpp's chain because that sampler visits all 262,144
candidates of a Gemma vocabulary on every step; this looks only at the few tokens it penalises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BREAKERS = (b"\n", b":", b'"', b"*")
"""llama.cpp's default DRY sequence breakers."""


def breaker_tokens(pieces: list[bytes]) -> frozenset[int]:
    """Ids of the vocabulary entries (``pieces[id]``) that contain a sequence breaker."""
    return frozenset(i for i, p in enumerate(pieces) if any(b in p for b in BREAKERS))


@dataclass(frozen=True)
class DrySettings:
    multiplier: float = 0.8
    base: float = 1.75
    allowed_length: int = 2
    last_n: int = 512


class NoRepeat:
    """DRY over one generation's output tokens; :meth:`apply` lowers the logits in place."""

    def __init__(self, settings: DrySettings, breakers: frozenset[int]) -> None:
        self.settings = settings
        self.breakers = breakers

    def penalties(self, out: list[int]) -> dict[int, float]:
        """Token → logit penalty for the next step, after ``out``."""
        s = self.settings
        hist = out[-s.last_n :]
        n = len(hist)
        if n < 2 or hist[-1] in self.breakers:
            return {}
        arr = np.asarray(hist, dtype=np.int64)
        longest: dict[int, int] = {}
        breakers = self.breakers
        # every earlier position j whose previous token equals the last one: hist[j] would follow
        for j in (np.flatnonzero(arr[:-1] == arr[-1]) + 1).tolist():
            k = 1
            while k < j and hist[j - 1 - k] == hist[n - 1 - k] and hist[j - 1 - k] not in breakers:
                k += 1
            if k >= s.allowed_length:
                token = hist[j]
                if k > longest.get(token, 0):
                    longest[token] = k
        return {t: s.multiplier * s.base ** (k - s.allowed_length) for t, k in longest.items()}

    def apply(self, logits: np.ndarray, out: list[int]) -> None:
        for token, penalty in self.penalties(out).items():
            logits[token] -= np.float32(penalty)
