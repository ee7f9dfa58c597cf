"""One slot's sequence as a chat handler sees it, and the token batch the engine decodes.

Why a view: llama-cpp-python's chat handlers render the prompt and evaluate it into "the"
model (``llama.eval``, ``llama._ctx``, ``llama.n_tokens``, mtmd with sequence 0).  The batched
engine (``slots.py``) hands each handler a :class:`SlotView` instead, so the same handler code
prefills one sequence of a shared context, and what that sequence's cells already hold (the
shared prefix, a retry's image: ``prompt_cache.py``) is not evaluated again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

from services.inference.engine.decoding import Decoded, completion_dict
from services.inference.engine.prompt_cache import Held, SharedPrefix, checkpoint_window, rewind


class _SlotMemory:
    """``llama._ctx`` as a chat handler sees it: the real context, one sequence's cells.

    The handler clears "the" cache before every prompt; here that is left to the view, which
    removes cells only from the first position it evaluates anew (what it can reuse stays)."""

    def __init__(self, ctx: Any, seq_id: int) -> None:
        self.ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._seq_id = seq_id

    def kv_cache_clear(self) -> None:
        """Nothing yet: :meth:`SlotView.eval` and :meth:`SlotView.image` remove what they
        replace."""

    def kv_cache_seq_rm(self, _seq_id: int, p0: int, p1: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, self._seq_id, p0, p1)


class TokenBatch:
    """A ``llama_batch`` of tokens, each in one sequence, filled and decoded in place."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.batch = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    @property
    def room(self) -> int:
        return self.capacity - self.n

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        """Append one token; its row index in the batch."""
        b, i = self.batch, self.n
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits
        self.n += 1
        return i

    def decode(self, ctx: Any) -> None:
        self.batch.n_tokens = self.n
        code = llama_cpp.llama_decode(ctx, self.batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)


class SlotView:
    """The model as a chat handler sees it while it prefills one slot.

    The handler resets "the" context, evaluates text with ``llama.eval``, hands image chunks to
    mtmd with ``llama._ctx.ctx`` and ``llama.n_tokens``, reads ``llama.input_ids`` and calls
    ``llama.create_completion``; here each of those means this slot's sequence, and the
    completion only keeps the arguments (the engine's thread generates).  Everything else
    (tokenizer, metadata, ``n_batch``) is the real model's.

    The first text chunk is copied from the shared prefix instead of evaluated, and a retry of
    the card this slot holds skips its image (``prompt_cache.py``).
    """

    def __init__(
        self,
        llm: Llama,
        seq_id: int,
        n_ctx: int,
        batch: TokenBatch,
        prefix: SharedPrefix | None = None,
    ) -> None:
        self._llm = llm
        self.seq_id = seq_id
        self._n_ctx = n_ctx
        self._batch = batch
        self._prefix = prefix
        self._ctx = _SlotMemory(llm._ctx.ctx, seq_id)
        self._n_swa = int(llama_cpp.llama_model_n_swa(llm.model))
        self.input_ids = np.zeros(n_ctx, dtype=np.intc)
        self.n_tokens = 0
        self.has_logits = False
        self.completion: dict[str, Any] | None = None
        self.held: Held | None = None
        """What the cells hold from this slot's card's previous attempt (while leased)."""
        self.image_key: str | None = None
        """The image of the request being prefilled (set by the engine)."""
        self.keep_window = False
        """Checkpoint the sliding-window cells after the image: a retry may follow."""
        self.cached_tokens = 0
        """Of this prefill's tokens, those copied or kept rather than evaluated."""
        self.copied_tokens = 0
        """Of those, the ones copied from the shared prefix."""
        self.defer = False
        """Keep text that may end the prompt for the engine's next shared step instead of
        decoding it now (set by the engine; text before an image is decoded when it comes)."""
        self.deferred: list[int] = []
        """The prompt's last tokens, not decoded yet; counted in ``n_tokens``."""
        self._first: tuple[int, ...] = ()
        self._retrying = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def n_ctx(self) -> int:
        return self._n_ctx

    def reset(self) -> None:
        self.n_tokens = 0
        self.has_logits = False
        self.completion = None
        self.cached_tokens = 0
        self.copied_tokens = 0
        self.deferred = []
        self._first = ()
        self._retrying = False

    def forget(self) -> None:
        """Drop every cell of this sequence (the slot goes to another card)."""
        self._ctx.kv_cache_seq_rm(self.seq_id, -1, -1)
        self.held = None
        self.reset()

    def eval(self, tokens: list[int]) -> None:
        """``Llama.eval`` into this slot's sequence; the prompt's first chunk comes from what
        the cells can reuse, and with :attr:`defer` the rest waits (:meth:`take_deferred`)."""
        if self.n_tokens == 0:
            tokens = self._begin(tokens)
            if not tokens:
                return
        elif self._retrying:  # text, not the image, follows the first chunk: nothing is kept
            self._retrying = False
            if self.held is not None:
                self.held.image_key = None
        if self.defer:
            self.input_ids[self.n_tokens : self.n_tokens + len(tokens)] = tokens
            self.deferred.extend(tokens)
            self.n_tokens += len(tokens)
            return
        self._decode_now(tokens)

    def _decode_now(self, tokens: list[int]) -> None:
        """``n_batch`` tokens per decode from ``n_tokens`` on, logits for the last one."""
        self._ctx.kv_cache_seq_rm(self.seq_id, self.n_tokens, -1)
        batch, ctx, step = self._batch, self._llm._ctx.ctx, self._llm.n_batch
        for start in range(0, len(tokens), step):
            chunk = tokens[start : start + step]
            batch.clear()
            for i, token in enumerate(chunk):
                batch.add(token, self.n_tokens + i, self.seq_id, i == len(chunk) - 1)
            batch.decode(ctx)
            self.input_ids[self.n_tokens : self.n_tokens + len(chunk)] = chunk
            self.n_tokens += len(chunk)
            self.has_logits = True

    def take_deferred(self) -> list[int]:
        """The prompt's tokens left to decode (the engine's steps decode them), ``n_tokens``
        back to what the cells hold."""
        tokens, self.deferred = self.deferred, []
        self.n_tokens -= len(tokens)
        if tokens:
            self._ctx.kv_cache_seq_rm(self.seq_id, self.n_tokens, -1)
        return tokens

    def _flush(self) -> None:
        """Decode the deferred text now: an image follows it."""
        tokens = self.take_deferred()
        if tokens:
            self._decode_now(tokens)

    def _begin(self, tokens: list[int]) -> list[int]:
        """The first chunk: what is left to evaluate of it after reuse."""
        self._first = tuple(tokens)
        held = self.held
        if held is not None and held.image_key is not None and held.text == self._first:
            # maybe a retry of the same image: decided when the image chunk comes (image())
            self._retrying = True
            self._keep(tokens)
            return []
        return self._fresh(tokens)

    def _fresh(self, tokens: list[int]) -> list[int]:
        self.held = Held(text=tuple(tokens))
        if self._prefix is None:
            return tokens
        self._keep(tokens[: self._prefix.copy_into(tokens, self.seq_id, self._batch)])
        self.copied_tokens = self.n_tokens
        return tokens[self.n_tokens :]

    def _keep(self, tokens: list[int]) -> None:
        """Positions ``[0, len(tokens))`` already hold ``tokens``."""
        self.input_ids[: len(tokens)] = tokens
        self.n_tokens = len(tokens)
        self.cached_tokens = len(tokens)
        self.has_logits = False

    def image(self, n_past: int, evaluate: Callable[[], tuple[int, int]]) -> tuple[int, int]:
        """An image chunk at ``n_past``: kept from the previous attempt when this is its retry,
        else evaluated (``evaluate`` returns mtmd's result code and the position after it)."""
        self._flush()
        held = self.held
        if self._retrying:
            self._retrying = False
            assert held is not None
            if (
                n_past == len(held.text)
                and self.image_key == held.image_key
                and rewind(self._llm._ctx.ctx, self.seq_id, held, self._n_swa)
            ):
                self.cached_tokens = held.image_end
                return 0, held.image_end
            # the cells cannot be reused: the first chunk afresh, then the image
            self._ctx.kv_cache_seq_rm(self.seq_id, -1, -1)
            self.n_tokens = 0
            self.cached_tokens = 0
            rest = self._fresh(list(self._first))
            if rest:
                self._decode_now(rest)
            held = self.held
        self._ctx.kv_cache_seq_rm(self.seq_id, n_past, -1)
        code, end = evaluate()
        self.has_logits = False  # the last decode was the image's, without logits
        if code == 0 and held is not None and self.image_key is not None:
            held.image_key, held.image_end = self.image_key, end
            held.window = (
                checkpoint_window(self._llm._ctx.ctx, self.seq_id)
                if self.keep_window and self._n_swa > 0
                else None
            )
        return code, end

    def create_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.completion = kwargs
        empty = Decoded(tokens=[], text="", finish_reason="stop", sampled=0, forced=0, mask_ms=0)
        return completion_dict(empty, len(kwargs.get("prompt") or ()), self._llm.model_path)
