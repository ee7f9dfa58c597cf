"""Sampling from the top-k shortlist draws what the whole vocabulary draws (``shortlist.py``)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import llama_cpp
import numpy as np
import pytest

from services.inference.engine.shortlist import BAND, Shortlist

N_VOCAB = 262_144
"""Gemma 3's vocabulary: the size the shortcut is for."""


def chain(seed: int, top_k: int = 40) -> ctypes.c_void_p:
    """The chain llama-cpp-python builds for plain sampling (``Llama._init_sampler``), with
    neutral penalties, as the guided decoder's is."""
    params = llama_cpp.llama_sampler_chain_default_params()
    smpl = llama_cpp.llama_sampler_chain_init(params)
    for sampler in (
        llama_cpp.llama_sampler_init_top_k(top_k),
        llama_cpp.llama_sampler_init_typical(1.0, 1),
        llama_cpp.llama_sampler_init_top_p(0.9, 1),
        llama_cpp.llama_sampler_init_min_p(0.05, 1),
        llama_cpp.llama_sampler_init_temp(0.3),
        llama_cpp.llama_sampler_init_dist(seed),
    ):
        llama_cpp.llama_sampler_chain_add(smpl, sampler)
    return smpl


@contextmanager
def chains_in_step(seed: int) -> Iterator[tuple[ctypes.c_void_p, ctypes.c_void_p]]:
    """Two chains seeded alike: one sampled the whole vocabulary's way, one the shortlist's."""
    full, short = chain(seed), chain(seed)
    try:
        yield full, short
    finally:
        llama_cpp.llama_sampler_free(full)
        llama_cpp.llama_sampler_free(short)


def whole_vocabulary(smpl: ctypes.c_void_p, logits: np.ndarray) -> int:
    """``llama_sampler_sample``'s own steps: every logit a candidate, apply, accept."""
    data = (llama_cpp.llama_token_data * logits.size)()
    rows = np.ctypeslib.as_array(data)
    rows["id"] = np.arange(logits.size)
    rows["logit"] = logits
    rows["p"] = 0.0
    array = llama_cpp.llama_token_data_array(data=data, size=logits.size, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(smpl, ctypes.byref(array))
    token = int(array.data[array.selected].id)
    llama_cpp.llama_sampler_accept(smpl, token)
    return token


def rows(rng: np.random.Generator) -> list[np.ndarray]:
    """Logit rows of the kinds a card meets: a peaked row, a flat one (no 40 within the band),
    one the grammar masked down to a few tokens (fewer than k finite), one with ties."""
    peaked = rng.normal(0, 3, N_VOCAB).astype(np.float32)
    peaked[rng.integers(0, N_VOCAB, 30)] += 20
    flat = rng.normal(0, 0.5, N_VOCAB).astype(np.float32)
    flat[7] = 40.0  # one far ahead: nothing else within the band
    masked = np.full(N_VOCAB, -np.inf, np.float32)
    allowed = rng.choice(N_VOCAB, 12, replace=False)
    masked[allowed] = rng.normal(0, 2, 12)
    ties = np.round(rng.normal(0, 2, N_VOCAB)).astype(np.float32)
    return [peaked, flat, masked, ties]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_shortlist_draws_the_same_tokens_as_the_whole_vocabulary(seed: int) -> None:
    """Both chains seeded alike draw 100 times, from rows of every kind, and stay in step."""
    rng = np.random.default_rng(seed)
    shortlist = Shortlist(40)
    with chains_in_step(seed) as (full, short):
        drawn = []
        for _ in range(25):
            *distinct, ties = rows(rng)
            for row in distinct:
                a = whole_vocabulary(full, row)
                b = shortlist.sample(short, row)
                assert a == b
                drawn.append(a)
            # exactly equal logits may be kept or sorted in another order (so another of
            # the equally likely tokens drawn), but the draw lands on the same logit
            a, b = whole_vocabulary(full, ties), shortlist.sample(short, ties)
            assert ties[a] == ties[b]
        assert len(set(drawn)) > 10  # the draws are random, not one token every time


def grammar_rows(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows the grammar masked, with the ids it allows (what ``MaskCache.apply`` hands the
    sampler): fewer than k allowed, many allowed with a peak, many allowed and flat."""
    made = []
    for n, spread, peak in ((12, 2.0, 0.0), (600, 3.0, 20.0), (600, 0.2, 0.0)):
        allowed = rng.choice(N_VOCAB, n, replace=False)
        row = np.full(N_VOCAB, -np.inf, np.float32)
        row[allowed] = rng.normal(0, spread, n)
        row[allowed[:5]] += peak
        made.append((row, allowed))
    return made


@pytest.mark.parametrize("seed", [4, 5])
def test_a_grammar_s_allowed_tokens_draw_what_the_whole_vocabulary_draws(seed: int) -> None:
    """Given the grammar's allowed ids, the shortlist searches only those (as few as they
    are, or their top k) and the chain still draws the whole vocabulary's token, 150 times."""
    rng = np.random.default_rng(seed)
    shortlist = Shortlist(40)
    with chains_in_step(seed) as (full, short):
        drawn = []
        for _ in range(50):
            for row, allowed in grammar_rows(rng):
                a = whole_vocabulary(full, row)
                b = shortlist.sample(short, row, allowed)
                assert a == b
                assert b in set(allowed.tolist())
                drawn.append(a)
        assert len(set(drawn)) > 10


def test_the_allowed_ids_are_searched_alone() -> None:
    rng = np.random.default_rng(1)
    shortlist = Shortlist(40)
    for row, allowed in grammar_rows(rng):
        got = shortlist.best(row, allowed)
        if allowed.size <= 40:
            assert sorted(got.tolist()) == sorted(allowed.tolist())
        else:
            assert got.size == 40
            assert np.array_equal(np.sort(row[got]), np.sort(row[allowed])[-40:])


def test_the_band_holds_the_top_k_or_the_whole_row_is_partitioned() -> None:
    rng = np.random.default_rng(0)
    shortlist = Shortlist(40)
    for row in rows(rng):
        finite = row[np.isfinite(row)]
        expected = np.sort(row)[-40:]
        got = np.sort(row[shortlist.best(row)])
        assert np.array_equal(got, expected) or (finite.size < 40 and np.isneginf(got[0]))
    assert BAND > 0


def test_only_the_plain_chain_with_a_small_top_k_is_shortened() -> None:
    assert Shortlist.applies(40, 0.3, 0, N_VOCAB)
    assert not Shortlist.applies(0, 0.3, 0, N_VOCAB)  # no top-k: every candidate counts
    assert not Shortlist.applies(40, 0.0, 0, N_VOCAB)  # greedy
    assert not Shortlist.applies(40, 0.3, 2, N_VOCAB)  # mirostat
    assert not Shortlist.applies(40, 0.3, 0, 100)  # k is not a small share of this vocabulary
