"""Sampling from the top-k shortlist instead of the whole vocabulary: the same token, sooner.

Why: ``llama_sampler_sample`` copies every logit into a candidate array (262,144 entries for
Gemma 3) and the chain's first sampler, top-k, then picks ``k`` of them; only those ``k``
reach typical / top-p / min-p / temperature / the seeded draw.  In the batched engine that is
done per sequence per step on the one llama.cpp thread, between decodes, while the cores that
decode wait: ``bench/step_profile.py`` put it at 7 % of a step at 8 slots on 2 cores.

:class:`Shortlist` hands the chain the ``k`` best logits (numpy's ``argpartition``) instead, so
top-k keeps exactly those and the rest of the chain, the random draw included, sees what it
saw before: the same token for the same seed.  One exception: logits exactly equal (at the
k-th place, or anywhere in the k) may be kept or sorted in another order, and the draw then
lands on another of the equally likely tokens, with the same logit
(``tests/model/test_shortlist.py``); the grammar's masked -inf candidates have probability 0
whatever their place.  Only the chain llama-cpp-python builds for plain sampling (``top_k`` >
0, temperature > 0, no mirostat, no penalties in the chain) may be shortened this way: without
top-k every candidate counts, and penalties would see only the shortlist.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp
import numpy as np

BAND = np.float32(8.0)
"""Logits this far below the largest are searched first (Gemma 3 270M, a card's prompt: about
1,850 of 262k entries; 40 within 4)."""

MOST = 1024
"""A larger ``top_k`` than this samples from the whole vocabulary (the shortcut pays for
itself when k is a small share of the vocabulary)."""


class Shortlist:
    """One reusable candidate array of ``k`` entries, filled per step."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._data = (llama_cpp.llama_token_data * k)()
        self._rows = np.ctypeslib.as_array(self._data)
        """The same memory as a numpy record array (fields ``id``, ``logit``, ``p``)."""
        self._array = llama_cpp.llama_token_data_array(
            data=self._data, size=k, selected=-1, sorted=False
        )
        self._ref = ctypes.byref(self._array)

    @staticmethod
    def applies(top_k: int, temperature: float, mirostat_mode: int, n_vocab: int) -> bool:
        return mirostat_mode == 0 and temperature > 0.0 and 0 < top_k <= min(MOST, n_vocab // 4)

    def best(self, logits: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """The indices of (at most) the ``k`` largest logits, in no order.

        A partition of the whole vocabulary costs about as much as llama.cpp's own top-k
        (0.38 ms at 262k entries), so it is done only on the logits within ``BAND`` of the
        largest (a compare, 0.09 ms): those hold the top ``k`` whenever there are ``k`` of
        them; else (a flat row) over everything.  ``allowed`` is the grammar's short list of
        the only tokens it allows this step (:meth:`MaskCache.apply`'s), when it has one: then
        the search is over those alone, and when they are ``k`` or fewer they are the
        candidates as they are.  Without it a row the grammar masked down to a few tokens fell
        to the whole-vocabulary partition, 3 ms a draw on 2 cores (``bench/step_profile.py``);
        the tokens it padded the shortlist with were -inf, probability 0: the draw is the same.
        """
        if allowed is not None:
            if allowed.size <= self.k:
                return allowed
            return allowed[self._top(logits[allowed])]
        return self._top(logits)

    def _top(self, values: np.ndarray) -> np.ndarray:
        """Positions of the ``k`` largest of ``values``: the band first, else a partition."""
        k = self.k
        near = np.flatnonzero(values >= values.max() - BAND)
        if near.size >= k:
            return near[np.argpartition(values[near], -k)[-k:]]
        return np.argpartition(values, -k)[-k:]

    def sample(self, sampler: Any, logits: np.ndarray, allowed: np.ndarray | None = None) -> int:
        """What ``llama_sampler_sample`` does (apply the chain, take the selected token, accept
        it into the chain's state), on the ``k`` best logits (of ``allowed``, when given)."""
        best = self.best(logits, allowed)
        n = best.size
        rows = self._rows[:n]
        rows["id"] = best
        rows["logit"] = logits[best]
        rows["p"] = 0.0
        array = self._array
        array.data = self._data
        array.size = n
        array.selected = -1
        array.sorted = False
        llama_cpp.llama_sampler_apply(sampler, self._ref)
        if not 0 <= array.selected < array.size:
            raise RuntimeError(f"the sampler chain selected no candidate ({array.selected})")
        token = int(array.data[array.selected].id)
        llama_cpp.llama_sampler_accept(sampler, token)
        return token
