"""Several cards at once: continuous batching of generations in one llama.cpp context.

Why: decoding one token for one sequence leaves most of the hardware idle.  On the real Gemma 3
270M (2 CPU cores) one ``llama_decode`` carrying one token for each of 8 sequences returns 3.2x
the tokens per second of a single sequence, and far more on a GPU.  llama-cpp-python's ``Llama``
generates one sequence at a time, so the engine keeps its own scheduler over the low-level API.

How: the context holds ``slots`` sequences (``n_seq_max``; each with its own ``n_ctx`` cells, the
KV cache not unified).  One generation (one attempt at one card) is a request; callers block in
:meth:`SlotEngine.generate` from as many threads as they like while the process's llama.cpp
thread (``native.on_native_thread``: all llama.cpp compute runs on one thread) does all the
decoding, one *tick* (admissions, then one step) at a time, so that several engines in one
process take turns:

1. **Admit.** A queued request takes a free slot.  The model's chat handler renders its prompt
   and evaluates the text and image chunks into that slot's sequence (mtmd with the sequence id),
   through :class:`SlotView`, the model as the handler sees it for that slot; the handler then
   asks to "complete", which only records the sampling arguments.  The first token is sampled at
   once, from the prefill's logits, before the next decode overwrites them.
2. **Step.** Every live sequence's next tokens (the token it sampled plus the run the grammar
   forces after it) go into one ``llama_decode``; each then samples from its own logits row with
   its own matcher, sampler chain, seed, penalties and word counters (``decoding.Sequence``).
3. **Leave.** A sequence that finishes, overflows its slot, runs out of time or fails frees its
   cells and its slot, and the next queued request takes it; the others go on undisturbed.

A job's time budget (its deadline) is checked between steps for each sequence; llama.cpp's abort
callback is armed with it only during that sequence's own prefill (the one long decode that
belongs to one job alone), never during a shared step, which would abort every batch-mate.

With one request alone in the engine, the decode calls are those of the single-sequence path
(``Decoder.run`` after the handler's prefill), so the same seed gives the same tokens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

from services.inference import metrics
from services.inference.card.errors import (
    CardError,
    EngineClosed,
    InferenceError,
    JobTimeout,
    decode_failure,
)
from services.inference.engine.decoding import Decoded, Decoder, Sampling, Sequence, completion_dict
from services.inference.engine.native import NATIVE_THREAD, on_native_thread, submit_native

log = logging.getLogger("vitrine.inference")


class AbortClock:
    """The deadline llama.cpp's abort callback enforces while it is armed (``None``: none), and
    the engine's stop: once :meth:`stop` is called every decode is aborted, armed or not."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.stopped = False

    def stop(self) -> None:
        """The engine is closing: the decode running now ends at its next compute step."""
        self.stopped = True

    def expired(self) -> bool:
        if self.stopped:
            return True
        return self.deadline is not None and time.monotonic() > self.deadline


@dataclass
class Generation:
    """One request's result, with where its time went."""

    decoded: Decoded
    prompt_tokens: int
    image_ms: float
    prompt_ms: float
    generate_ms: float
    queue_ms: float


@dataclass
class _Request:
    messages: list[dict[str, Any]]
    call: dict[str, Any]
    """The chat handler's arguments: sampling, ``max_tokens``, ``seed``."""
    deadline: float | None
    budget_s: float
    future: Future[Generation] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class _SlotMemory:
    """``llama._ctx`` as a chat handler sees it: the real context, clearing one sequence."""

    def __init__(self, ctx: Any, seq_id: int) -> None:
        self.ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._seq_id = seq_id

    def kv_cache_clear(self) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, self._seq_id, -1, -1)

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
    """

    def __init__(self, llm: Llama, seq_id: int, n_ctx: int, batch: TokenBatch) -> None:
        self._llm = llm
        self.seq_id = seq_id
        self._n_ctx = n_ctx
        self._batch = batch
        self._ctx = _SlotMemory(llm._ctx.ctx, seq_id)
        self.input_ids = np.zeros(n_ctx, dtype=np.intc)
        self.n_tokens = 0
        self.has_logits = False
        self.completion: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def n_ctx(self) -> int:
        return self._n_ctx

    def reset(self) -> None:
        self.n_tokens = 0
        self.has_logits = False
        self.completion = None

    def eval(self, tokens: list[int]) -> None:
        """``Llama.eval`` into this slot's sequence: ``n_batch`` tokens per decode, logits for
        the last one."""
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

    def create_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.completion = kwargs
        empty = Decoded(tokens=[], text="", finish_reason="stop", sampled=0, forced=0, mask_ms=0)
        return completion_dict(empty, len(kwargs.get("prompt") or ()), self._llm.model_path)


@dataclass
class _Slot:
    view: SlotView
    request: _Request | None = None
    sequence: Sequence | None = None
    pending: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    image_ms: float = 0.0
    prompt_ms: float = 0.0
    queue_ms: float = 0.0
    decoding_since: float = 0.0


class SlotEngine:
    """Generations from many threads, decoded together by one thread in one context."""

    def __init__(
        self,
        llm: Llama,
        handler: Any,
        mtmd: Any,
        decoder: Decoder,
        *,
        slots: int,
        n_ctx: int,
        clock: AbortClock,
    ) -> None:
        """``handler`` is the model's chat handler, its projector loaded; ``mtmd`` the module
        stand-in it calls (``opener.TimedMtmd``: it times image chunks and, while
        ``seq_id`` is set, evaluates them into that sequence); ``n_ctx`` is one slot's."""
        if llama_cpp.llama_n_seq_max(llm._ctx.ctx) < slots:
            raise ValueError(f"the context was created for fewer than {slots} sequences")
        self.llm = llm
        self.handler = handler
        self.mtmd = mtmd
        self.decoder = decoder
        self.n_ctx = n_ctx
        self.clock = clock
        self.batch = TokenBatch(max(llm.n_batch, slots))
        self._slots = [_Slot(SlotView(llm, i, n_ctx, self.batch)) for i in range(slots)]
        self._queue: deque[_Request] = deque()
        self._lock = threading.Lock()
        self._ticking = False
        """A tick is queued on the llama.cpp thread (or running)."""
        self._closing = False
        self.steps = 0
        """Batched decodes so far (tests and benchmarks read these two)."""
        self.peak_occupancy = 0
        metrics.SLOTS.set(slots)

    @property
    def slots(self) -> int:
        return len(self._slots)

    # -- callers' side ---------------------------------------------------------------------------

    def generate(
        self,
        messages: list[dict[str, Any]],
        call: dict[str, Any],
        *,
        deadline: float | None,
        budget_s: float,
    ) -> Generation:
        """Queue one generation and wait for it; raises the ``CardError`` it ended with.

        Refused on the llama.cpp thread: the ticks that decode the request run there, so a call
        from it would wait on a tick queued behind itself, forever."""
        if threading.current_thread().name.startswith(NATIVE_THREAD):
            raise InferenceError(
                "SlotEngine.generate was called on the llama.cpp thread, which decodes the "
                "slots: it would wait for itself; call it from another thread"
            )
        request = _Request(messages, call, deadline, budget_s)
        with self._lock:
            if self._closing:
                raise EngineClosed("the engine is closed: no generation starts")
            self._queue.append(request)
            metrics.QUEUED.set(len(self._queue))
            self._schedule()
        return request.future.result()

    def close(self) -> None:
        """Fail what is still queued or running, after the tick in progress (if any).

        Once only: the card engine asks from its caller's thread and again as it closes the
        model's resources, and the token batch must be freed once."""
        with self._lock:
            if self._closing:
                return
            self._closing = True  # no tick is queued after this
        on_native_thread(self._shut)

    # -- the llama.cpp thread --------------------------------------------------------------------

    def _schedule(self) -> None:
        """Queue a tick unless one is queued; the caller holds ``_lock``."""
        if not self._ticking and not self._closing:
            self._ticking = True
            submit_native(self._tick)

    def _tick(self) -> None:
        try:
            self._admit()
            if self._live():
                self._step()
        except Exception as exc:  # a bug: fail what runs rather than loop on it
            log.exception("slots.tick_crashed")
            for slot in self._slots:
                if slot.request is not None:
                    self._leave(slot, InferenceError(f"{type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self._ticking = False
                if self._queue or self._live():
                    self._schedule()

    def _shut(self) -> None:
        error = EngineClosed("the engine closed before this generation finished")
        for slot in self._slots:
            if slot.request is not None:
                self._leave(slot, error)
        with self._lock:
            while self._queue:
                self._queue.popleft().future.set_exception(error)
        self.batch.close()

    def _live(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.sequence is not None]

    def _admit(self) -> None:
        """Fill free slots from the queue, oldest request first."""
        for slot in self._slots:
            if slot.request is not None:
                continue
            with self._lock:
                if not self._queue:
                    break
                request = self._queue.popleft()
                metrics.QUEUED.set(len(self._queue))
            if request.deadline is not None and time.monotonic() > request.deadline:
                request.future.set_exception(_timeout(request))
                continue
            slot.request = request
            slot.queue_ms = (time.perf_counter() - request.queued_at) * 1000.0
            metrics.SLOTS_BUSY.set(sum(s.request is not None for s in self._slots))
            try:
                self._prefill(slot, request)
            except CardError as exc:
                self._leave(slot, exc)
            except Exception as exc:  # a bug must fail this generation, not the engine
                log.exception("slots.prefill_crashed")
                self._leave(slot, InferenceError(f"{type(exc).__name__}: {exc}"))

    def _prefill(self, slot: _Slot, request: _Request) -> None:
        view = slot.view
        view.reset()
        self.mtmd.image_s = 0.0
        self.mtmd.seq_id = view.seq_id
        self.clock.deadline = request.deadline
        started = time.perf_counter()
        try:
            self.handler(llama=view, messages=request.messages, **request.call)
            if view.completion is None:
                raise InferenceError("the chat handler did not ask for a completion")
            if not view.has_logits:  # the prompt ended in an image chunk: replay its last token
                last = int(view.input_ids[view.n_tokens - 1])
                view.n_tokens -= 1
                view.eval([last])
        except (ValueError, RuntimeError) as exc:
            raise decode_failure(
                exc, timed_out=self.clock.expired(), budget_s=request.budget_s
            ) from exc
        finally:
            self.clock.deadline = None
            self.mtmd.seq_id = None
        done_at = time.perf_counter()
        slot.image_ms = self.mtmd.image_s * 1000.0
        slot.prompt_ms = max(done_at - started - self.mtmd.image_s, 0.0) * 1000.0
        slot.decoding_since = done_at
        slot.prompt_tokens = view.n_tokens
        completion = view.completion
        budget = self.n_ctx - view.n_tokens
        max_tokens = completion.get("max_tokens")
        if max_tokens is not None and 0 < max_tokens < budget:
            budget = max_tokens
        if budget <= 0:
            raise decode_failure(
                ValueError(f"Requested tokens ({view.n_tokens}) exceed context window"),
                timed_out=False,
                budget_s=request.budget_s,
            )
        sequence = self.decoder.sequence(Sampling.from_completion_kwargs(completion), budget)
        slot.sequence = sequence
        slot.pending = sequence.opening()
        if not slot.pending and not sequence.done:
            slot.pending = sequence.step(self.llm._ctx.ctx, -1)  # the prefill's logits
        if sequence.done:
            self._finish(slot)

    def _step(self) -> None:
        """One decode of every live sequence's pending tokens, then each samples its next."""
        batch = self.batch
        rows: list[tuple[_Slot, int]] = []
        batch.clear()
        for slot in self._live():
            view, tokens = slot.view, slot.pending
            for i, token in enumerate(tokens):
                if batch.room == 0:  # a long forced run: decode what is there first
                    self._decode(rows)
                    rows = []
                last = i == len(tokens) - 1
                index = batch.add(token, view.n_tokens, view.seq_id, last)
                view.n_tokens += 1
                if last:
                    rows.append((slot, index))
            slot.pending = []
        self._decode(rows)

    def _decode(self, rows: list[tuple[_Slot, int]]) -> None:
        batch, ctx = self.batch, self.llm._ctx.ctx
        if batch.n == 0:
            return
        metrics.BATCH_OCCUPANCY.observe(len(rows))
        self.steps += 1
        self.peak_occupancy = max(self.peak_occupancy, len(rows))
        try:
            batch.decode(ctx)
        except RuntimeError as exc:
            batch.clear()
            for slot, _ in rows:
                self._leave(slot, InferenceError(f"batched decode failed: {exc}"))
            return
        batch.clear()
        now = time.monotonic()
        for slot, index in rows:
            request, sequence = slot.request, slot.sequence
            assert request is not None and sequence is not None
            if request.deadline is not None and now > request.deadline:
                self._leave(slot, _timeout(request))
                continue
            try:
                slot.pending = sequence.step(ctx, index)
            except Exception as exc:  # one sequence's bug must not stop its batch-mates
                log.exception("slots.step_crashed")
                self._leave(slot, InferenceError(f"{type(exc).__name__}: {exc}"))
                continue
            if sequence.done:
                self._finish(slot)

    def _finish(self, slot: _Slot) -> None:
        assert slot.sequence is not None and slot.request is not None
        decoded = slot.sequence.result()
        generate_s = time.perf_counter() - slot.decoding_since
        metrics.ENGINE_TOKENS.inc(len(decoded.tokens))
        if decoded.tokens and generate_s > 0:
            metrics.SEQUENCE_TOKENS_PER_SECOND.observe(len(decoded.tokens) / generate_s)
        generation = Generation(
            decoded=decoded,
            prompt_tokens=slot.prompt_tokens,
            image_ms=slot.image_ms,
            prompt_ms=slot.prompt_ms,
            generate_ms=generate_s * 1000.0,
            queue_ms=slot.queue_ms,
        )
        self._leave(slot, generation)

    def _leave(self, slot: _Slot, outcome: Generation | CardError) -> None:
        """Free the slot (its cells, its sampler) and answer its caller."""
        request = slot.request
        if slot.sequence is not None:
            slot.sequence.close()
        slot.view._ctx.kv_cache_clear()
        slot.view.reset()
        slot.request, slot.sequence, slot.pending = None, None, []
        metrics.SLOTS_BUSY.set(sum(s.request is not None for s in self._slots))
        if request is None:
            return
        if isinstance(outcome, Generation):
            request.future.set_result(outcome)
        else:
            request.future.set_exception(outcome)


def _timeout(request: _Request) -> JobTimeout:
    return JobTimeout(f"processing time budget of {request.budget_s:g}s spent")
