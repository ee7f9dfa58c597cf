"""What a slot's KV cells already hold, so that a prefill evaluates only what is new.

Why: a card's prompt is some 1,650 tokens, and all of it but the image and a few words after it
is the same for every card (``VITRINE_PROMPT_ORDER=instructions_first``).  Evaluating that text
for every card, and everything again for a retry, was most of a card's prefill.

Two reuses, each proven by exact equality of the tokens (llama-server bug #27148: a prompt cache
restored an unrelated conversation into a new request), never by a hash of the text:

1. **The shared prefix** (:class:`SharedPrefix`): the prompt's first text chunk (everything
   before the image) is evaluated once, into a sequence of its own (the context's last), and a
   slot's prefill starts by copying it (``llama_memory_seq_cp``).  The KV cache is split per
   sequence, so the copy is a copy of that stream's cells, buffers and positions: the slot then
   holds exactly what evaluating those tokens there would have left, sliding-window cells
   included.  The prefix is evaluated in the same ``n_batch`` chunks as the chat handler would,
   so its values are those of a full prefill, bit for bit.
2. **A retry's image** (:class:`Held`, :func:`rewind`): while a card holds its slot between
   attempts (``slots.SlotLease``), the slot remembers its first text chunk, the image's key and
   where the image ended.  A retry with the same text and the same image truncates the sequence
   back to just after the image (``llama_memory_seq_rm``) and evaluates only its task line and
   note: no second image encode.  Sliding-window layers (Gemma 3) have by then overwritten the
   cells the retry needs, so for them the slot keeps a checkpoint of its sliding-window cells
   taken right after the image (``llama_state_seq_get_data_ext`` with the partial-state flag,
   as llama-server's context checkpoints do) and restores it when the attempt overwrote part of
   the window (:func:`rewind` says what that costs); if the window still does not reach back
   ``n_swa`` positions, the retry is prefilled afresh.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from typing import Any

import llama_cpp

from services.inference import metrics

STATE_PARTIAL_ONLY = 1
"""``LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY``: only the sliding-window (or recurrent) part."""

_lib = llama_cpp.llama_cpp._lib
_get_size = _lib.llama_state_seq_get_size_ext
_get_size.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint32]
_get_size.restype = ctypes.c_size_t
_STATE_BUFFER_ARGS = [
    ctypes.c_void_p,  # the context
    ctypes.POINTER(ctypes.c_uint8),
    ctypes.c_size_t,
    ctypes.c_int32,  # the sequence
    ctypes.c_uint32,  # the flags
]
_get_data = _lib.llama_state_seq_get_data_ext
_get_data.argtypes = _STATE_BUFFER_ARGS
_get_data.restype = ctypes.c_size_t
_set_data = _lib.llama_state_seq_set_data_ext
_set_data.argtypes = _STATE_BUFFER_ARGS
_set_data.restype = ctypes.c_size_t


class SharedPrefix:
    """The prompt's first text chunk, evaluated once into ``seq_id`` and copied into slots.

    One owner: the batched engine, on the llama.cpp thread.  A chunk that differs from the one
    held (another prompt version, a test swapping settings) replaces it."""

    def __init__(self, ctx: Any, seq_id: int, n_batch: int) -> None:
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self.seq_id = seq_id
        self._n_batch = n_batch
        self.tokens: tuple[int, ...] = ()
        self.evaluations = 0
        """Times the prefix was evaluated (once per process and prompt, unless replaced)."""
        self.build_ms = 0.0
        """How long the last evaluation took (the first card of a process waits for it)."""

    def copy_into(self, tokens: list[int], dst_seq: int, batch: Any) -> int:
        """Make ``dst_seq`` hold ``tokens``' cells, evaluating them here first if they are not
        the prefix held; returns how many tokens the copy covers (all of them)."""
        if tuple(tokens) != self.tokens:
            self._evaluate(tokens, batch)
        llama_cpp.llama_memory_seq_cp(self._memory, self.seq_id, dst_seq, -1, -1)
        return len(self.tokens)

    def _evaluate(self, tokens: list[int], batch: Any) -> None:
        self.tokens = ()  # an abort half-way must not leave a prefix that looks whole
        started = time.perf_counter()
        llama_cpp.llama_memory_seq_rm(self._memory, self.seq_id, -1, -1)
        for start in range(0, len(tokens), self._n_batch):
            chunk = tokens[start : start + self._n_batch]
            batch.clear()
            for i, token in enumerate(chunk):
                batch.add(token, start + i, self.seq_id, i == len(chunk) - 1)
            batch.decode(self._ctx)
        self.tokens = tuple(tokens)
        self.evaluations += 1
        self.build_ms = (time.perf_counter() - started) * 1000.0
        metrics.PREFIX_BUILDS.inc()


@dataclass
class Held:
    """What one slot's cells hold from its card's last attempt: positions ``[0, len(text))``
    are ``text`` (the first chunk), then the image ``image_key`` up to ``image_end``."""

    text: tuple[int, ...]
    image_key: str | None = None
    image_end: int = 0
    window: bytes | None = None
    """The sliding-window cells right after the image (models with ``n_swa`` > 0)."""
    restores: int = 0
    """Retries that put the window back from ``window``."""


def checkpoint_window(ctx: Any, seq_id: int) -> bytes:
    """The sliding-window part of ``seq_id``'s cells, as llama.cpp serialises it."""
    size = _get_size(ctx, seq_id, STATE_PARTIAL_ONLY)
    buffer = (ctypes.c_uint8 * size)()
    written = _get_data(ctx, buffer, size, seq_id, STATE_PARTIAL_ONLY)
    # string_at copies the bytes at once; slicing a c_uint8 array would build a list of ints
    # first (117 ms instead of 4 for Gemma 3 270M's 7.9 MB window, on the llama.cpp thread)
    return ctypes.string_at(buffer, written)


def rewind(ctx: Any, seq_id: int, held: Held, n_swa: int) -> bool:
    """Cut ``seq_id`` back to just after its image; False when its cells cannot be trusted to
    be what a fresh prefill would hold there (the caller then prefills afresh).  ``held``
    counts the window restores (tests read it).

    The window is put back from the checkpoint only when the attempt overwrote part of it:
    restored cells land in other cache cells than the ring had them in, so attention sums
    them in another order, and the retry's tokens may then differ from a whole prefill's in
    the last bits (as after llama-server's checkpoints); left in place, they are the same."""
    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_seq_rm(memory, seq_id, held.image_end, -1)
    window_start = max(0, held.image_end - n_swa)
    if n_swa > 0 and llama_cpp.llama_memory_seq_pos_min(memory, seq_id) > window_start:
        if held.window is None:
            return False
        data = (ctypes.c_uint8 * len(held.window)).from_buffer_copy(held.window)
        if _set_data(ctx, data, len(held.window), seq_id, STATE_PARTIAL_ONLY) == 0:
            return False
        held.restores += 1
        metrics.WINDOW_RESTORES.inc()
    if llama_cpp.llama_memory_seq_pos_max(memory, seq_id) != held.image_end - 1:
        return False
    oldest = llama_cpp.llama_memory_seq_pos_min(memory, seq_id)
    return 0 <= oldest <= window_start if n_swa > 0 else oldest == 0
