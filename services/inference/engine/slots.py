"""Several cards at once: continuous batching of generations in one llama.cpp context.

Why: decoding one token for one sequence leaves most of the hardware idle.  On the real Gemma 3
270M (2 CPU cores) one ``llama_decode`` carrying one token for each of 8 sequences returns 3.2x
the tokens per second of a single sequence, and far more on a GPU.  llama-cpp-python's ``Llama``
generates one sequence at a time, so the engine keeps its own scheduler over the low-level API.

How: the context holds ``slots`` sequences (``n_seq_max``; each with its own ``n_ctx`` cells, the
KV cache not unified), and one more for the prompt's shared prefix.  One generation (one
attempt at one card) is a request; callers block in :meth:`SlotEngine.generate` from as many
threads as they like while the process's llama.cpp thread (``native.on_native_thread``: all
llama.cpp compute runs on one thread) does all the decoding, one *tick* (admissions, then one
step) at a time, so that several engines in one process take turns:

1. **Admit.** A queued request takes a free slot.  The model's chat handler renders its prompt
   and evaluates the text and image chunks into that slot's sequence (mtmd with the sequence id),
   through :class:`SlotView`, the model as the handler sees it for that slot (the text before
   the image is copied from the shared prefix, ``prompt_cache.py``); the handler then
   asks to "complete", which only records the sampling arguments.  The first token is sampled at
   once, from the prefill's logits, before the next decode overwrites them.
2. **Step.** Every live sequence's next tokens (the token it sampled plus the run the grammar
   forces after it) go into one ``llama_decode``; each then samples from its own logits row with
   its own matcher, sampler chain, seed, penalties and word counters (``decoding.Sequence``).
3. **Leave.** A sequence that finishes, overflows its slot, runs out of time or fails frees its
   cells and its slot, and the next queued request takes it; the others go on undisturbed.  A
   card that may retry holds its slot (:class:`SlotLease`) until it is done: its retry keeps
   the cells up to the end of its image.

A job's time budget (its deadline) is checked between steps for each sequence; llama.cpp's abort
callback is armed with it only during that sequence's own prefill (the one long decode that
belongs to one job alone), never during a shared step, which would abort every batch-mate.

With one request alone in the engine, the decode calls are those of the single-sequence path
(``Decoder.run`` after the handler's prefill, the prefix's cells copied rather than evaluated:
the same values), so the same seed gives the same tokens.
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
from llama_cpp import Llama

from services.inference import metrics
from services.inference.card.errors import (
    CardError,
    EngineClosed,
    InferenceError,
    JobTimeout,
    decode_failure,
)
from services.inference.engine.decoding import (
    Decoded,
    Decoder,
    GuidanceGrammar,
    Sampling,
    Sequence,
)
from services.inference.engine.native import NATIVE_THREAD, on_native_thread, submit_native
from services.inference.engine.prompt_cache import SharedPrefix
from services.inference.engine.slot_view import SlotView, TokenBatch

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
    cached_tokens: int
    """Of ``prompt_tokens``, those copied from the shared prefix or kept from the previous
    attempt instead of evaluated."""
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
    image_key: str | None = None
    lease: SlotLease | None = None
    grammar: GuidanceGrammar | None = None
    future: Future[Generation] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class SlotLease:
    """One card's hold on a slot across its attempts, so that a retry finds its image still in
    the slot's cells (``prompt_cache.py``).

    Between attempts (while the caller parses and checks, milliseconds) the slot takes no other
    request; :meth:`close` (or leaving the ``with`` block) gives it back.  A generation that
    failed in the slot (a timeout, an overflow) gives it back at once: its cells are no use."""

    def __init__(self, engine: SlotEngine) -> None:
        self._engine = engine
        self.slot: _Slot | None = None
        """The slot held, once the first attempt was admitted (the engine's lock guards it)."""
        self.closed = False

    def generate(
        self,
        messages: list[dict[str, Any]],
        call: dict[str, Any],
        *,
        deadline: float | None,
        budget_s: float,
        image_key: str | None,
        grammar: GuidanceGrammar | None = None,
    ) -> Generation:
        return self._engine.generate(
            messages,
            call,
            deadline=deadline,
            budget_s=budget_s,
            image_key=image_key,
            lease=self,
            grammar=grammar,
        )

    def close(self) -> None:
        self._engine.release(self)

    def __enter__(self) -> SlotLease:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class _Slot:
    view: SlotView
    request: _Request | None = None
    sequence: Sequence | None = None
    pending: list[int] = field(default_factory=list)
    prompting: bool = False
    """``pending`` is the rest of the prompt, decoded in shared steps (no token sampled yet)."""
    lease: SlotLease | None = None
    """The card holding this slot between its attempts."""
    waiting: _Request | None = None
    """That card's next attempt, admitted here before anything queued."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
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
        shared_prefix: bool = False,
        prefill_in_steps: bool = True,
    ) -> None:
        """``handler`` is the model's chat handler, its projector loaded; ``mtmd`` the module
        stand-in it calls (``opener.TimedMtmd``: it times image chunks and, while
        ``slot`` is set, evaluates them into that slot); ``n_ctx`` is one slot's.  With
        ``shared_prefix`` the context has one more sequence than slots, the prefix's; with
        ``prefill_in_steps`` a prompt's text after its image is decoded in shared steps."""
        sequences = slots + (1 if shared_prefix else 0)
        if llama_cpp.llama_n_seq_max(llm._ctx.ctx) < sequences:
            raise ValueError(f"the context was created for fewer than {sequences} sequences")
        self.llm = llm
        self.handler = handler
        self.mtmd = mtmd
        self.decoder = decoder
        self.n_ctx = n_ctx
        self.clock = clock
        self.batch = TokenBatch(max(llm.n_batch, slots))
        self.prefix = SharedPrefix(llm._ctx.ctx, slots, llm.n_batch) if shared_prefix else None
        self.prefill_in_steps = prefill_in_steps
        self._slots = [
            _Slot(SlotView(llm, i, n_ctx, self.batch, self.prefix)) for i in range(slots)
        ]
        self._queue: deque[_Request] = deque()
        self._lock = threading.Lock()
        self._ticking = False
        """A tick is queued on the llama.cpp thread (or running)."""
        self._closing = False
        self.steps = 0
        """Batched decodes so far (tests and benchmarks read these three)."""
        self.peak_occupancy = 0
        self.output_tokens = 0
        """Generated tokens fed back in steps so far: a benchmark samples it for the rate
        over a stretch of a run."""
        metrics.SLOTS.set(slots)

    @property
    def slots(self) -> int:
        return len(self._slots)

    @property
    def busy(self) -> int:
        """Slots holding a generation now, prefilling or decoding: a benchmark samples it to
        tell the run's steady part (every slot busy) from its ramp and tail."""
        return sum(slot.request is not None for slot in self._slots)

    # -- callers' side ---------------------------------------------------------------------------

    def generate(
        self,
        messages: list[dict[str, Any]],
        call: dict[str, Any],
        *,
        deadline: float | None,
        budget_s: float,
        image_key: str | None = None,
        lease: SlotLease | None = None,
        grammar: GuidanceGrammar | None = None,
    ) -> Generation:
        """Queue one generation and wait for it; raises the ``CardError`` it ended with.

        ``image_key`` names the image in ``messages`` (a digest of its bytes): within a
        ``lease`` a retry with the same key keeps the image the slot's cells hold.
        ``grammar``: a variant of the decoder's grammar for this generation (facts forcing
        values); the decoder's own when None.

        Refused on the llama.cpp thread: the ticks that decode the request run there, so a call
        from it would wait on a tick queued behind itself, forever."""
        if threading.current_thread().name.startswith(NATIVE_THREAD):
            raise InferenceError(
                "SlotEngine.generate was called on the llama.cpp thread, which decodes the "
                "slots: it would wait for itself; call it from another thread"
            )
        request = _Request(messages, call, deadline, budget_s, image_key, lease, grammar)
        with self._lock:
            if self._closing:
                raise EngineClosed("the engine is closed: no generation starts")
            if lease is not None and lease.closed:
                raise InferenceError("a generation was asked on a closed slot lease")
            if lease is not None and lease.slot is not None:
                lease.slot.waiting = request
            else:
                self._queue.append(request)
                metrics.QUEUED.set(len(self._queue))
            self._schedule()
        return request.future.result()

    def warm(self, messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
        """Evaluate the shared prefix now rather than in the first card's prefill: ``messages``
        rendered into a free slot, which is then emptied again."""
        if self.prefix is not None:
            on_native_thread(self._warm, _Request(messages, call, None, 0.0))

    def _warm(self, request: _Request) -> None:
        slot = next((s for s in self._slots if s.request is None and s.lease is None), None)
        if slot is None or self._closing:
            return
        try:
            self._render(slot.view, request)
        finally:
            slot.view.forget()

    def lease(self) -> SlotLease:
        """A hold on one slot for a card's attempts (see :class:`SlotLease`)."""
        return SlotLease(self)

    def release(self, lease: SlotLease) -> None:
        """The card is done: its slot (if it still holds one) goes back to the queue."""
        with self._lock:
            if lease.closed:
                return
            lease.closed = True
            if lease.slot is not None:
                self._schedule()  # the tick frees the slot's cells, on the llama.cpp thread

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
                if self._has_work():
                    self._schedule()

    def _has_work(self) -> bool:
        """Something for the next tick: a queued request, a live sequence, a held slot's next
        attempt or a released hold (asked while this tick ran); the caller holds ``_lock``."""
        return bool(self._queue or self._live()) or any(
            slot.waiting is not None or (slot.lease is not None and slot.lease.closed)
            for slot in self._slots
        )

    def _shut(self) -> None:
        error = EngineClosed("the engine closed before this generation finished")
        for slot in self._slots:
            if slot.request is not None:
                self._leave(slot, error)
        with self._lock:
            waiting = [slot.waiting for slot in self._slots if slot.waiting is not None]
            for slot in self._slots:
                slot.waiting = None
            while self._queue:
                waiting.append(self._queue.popleft())
        for request in waiting:
            request.future.set_exception(error)
        self.batch.close()

    def _live(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.sequence is not None]

    def _admit(self) -> None:
        """Fill free slots: a held slot with its card's next attempt, the others from the
        queue, oldest request first."""
        for slot in self._slots:
            if slot.request is not None:
                continue
            with self._lock:
                request = self._next_for(slot)
            if request is None:
                continue
            if request.deadline is not None and time.monotonic() > request.deadline:
                self._leave(slot, _timeout(request), request)
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

    def _next_for(self, slot: _Slot) -> _Request | None:
        """What ``slot`` takes now, if anything; the caller holds ``_lock``."""
        lease = slot.lease
        if lease is not None:
            if slot.waiting is not None:
                request, slot.waiting = slot.waiting, None
                return request
            if not lease.closed:
                return None  # held for its card's next attempt
            lease.slot, slot.lease = None, None
            slot.view.forget()
        if not self._queue:
            return None
        request = self._queue.popleft()
        metrics.QUEUED.set(len(self._queue))
        if slot.view.held is not None:  # the cells of a card that is done
            slot.view.forget()
        if request.lease is not None and not request.lease.closed:
            slot.lease, request.lease.slot = request.lease, slot
        return request

    def _prefill(self, slot: _Slot, request: _Request) -> None:
        """The handler's prefill into the slot, then its sequence starts: the prompt's last
        text (after the image) goes into the next shared step with its batch-mates' tokens,
        the first token sampled from there."""
        view = slot.view
        started = time.perf_counter()
        self._render(view, request)
        done_at = time.perf_counter()
        slot.image_ms = self.mtmd.image_s * 1000.0
        slot.prompt_ms = max(done_at - started - self.mtmd.image_s, 0.0) * 1000.0
        slot.decoding_since = done_at
        slot.prompt_tokens = view.n_tokens
        slot.cached_tokens = view.cached_tokens
        _count_prompt(view)
        completion = view.completion
        assert completion is not None
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
        sequence = self.decoder.sequence(
            Sampling.from_completion_kwargs(completion), budget, request.grammar
        )
        slot.sequence = sequence
        slot.pending = view.take_deferred()
        slot.prompting = bool(slot.pending)
        if not slot.prompting:
            self._open(slot, -1)  # the prefill's logits

    def _render(self, view: SlotView, request: _Request) -> None:
        """The chat handler evaluates the prompt into ``view``'s sequence, by its deadline."""
        view.reset()
        view.image_key = request.image_key
        view.keep_window = request.lease is not None
        view.defer = self.prefill_in_steps
        self.mtmd.image_s = 0.0
        self.mtmd.slot = view
        self.clock.deadline = request.deadline
        try:
            self.handler(llama=view, messages=request.messages, **request.call)
            if view.completion is None:
                raise InferenceError("the chat handler did not ask for a completion")
            if not view.has_logits and not view.deferred:  # the prompt ended in an image
                view.n_tokens -= 1
                view.eval([int(view.input_ids[view.n_tokens])])  # its last token again
        except (ValueError, RuntimeError) as exc:
            raise decode_failure(
                exc, timed_out=self.clock.expired(), budget_s=request.budget_s
            ) from exc
        finally:
            self.clock.deadline = None
            self.mtmd.slot = None

    def _open(self, slot: _Slot, index: int) -> None:
        """The sequence's first tokens: those the grammar forces, else one sampled from row
        ``index`` of the last decode (the prompt's last token)."""
        sequence = slot.sequence
        assert sequence is not None
        slot.pending = sequence.opening()
        if not slot.pending and not sequence.done:
            slot.pending = sequence.step(self.llm._ctx.ctx, index)
        if sequence.done:
            self._finish(slot)

    def _step(self) -> None:
        """One decode: every generating sequence's pending tokens, then as much of new
        sequences' prompts as the batch has room for (llama-server's order: a prompt is cut
        into steps rather than stalling its batch-mates for all of it); each sequence whose
        row came back then samples its next."""
        batch = self.batch
        rows: list[tuple[_Slot, int]] = []
        batch.clear()
        live = self._live()
        for slot in [s for s in live if not s.prompting]:
            view, tokens = slot.view, slot.pending
            self.output_tokens += len(tokens)
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
        for slot in [s for s in live if s.prompting]:
            view = slot.view
            chunk, slot.pending = slot.pending[: batch.room], slot.pending[batch.room :]
            for i, token in enumerate(chunk):
                last = not slot.pending and i == len(chunk) - 1
                index = batch.add(token, view.n_tokens, view.seq_id, last)
                view.n_tokens += 1
                if last:
                    rows.append((slot, index))
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
                if slot.prompting:  # its prompt's last token: the sequence starts here
                    slot.prompting = False
                    self._open(slot, index)
                    continue
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
            cached_tokens=slot.cached_tokens,
            image_ms=slot.image_ms,
            prompt_ms=slot.prompt_ms,
            generate_ms=generate_s * 1000.0,
            queue_ms=slot.queue_ms,
        )
        self._leave(slot, generation)

    def _leave(
        self,
        slot: _Slot,
        outcome: Generation | CardError,
        request: _Request | None = None,
    ) -> None:
        """Free the slot (its sampler; its cells unless its card may retry in them) and answer
        its caller (``request``: one that never reached the slot)."""
        request = request or slot.request
        if slot.sequence is not None:
            slot.sequence.close()
        keep = isinstance(outcome, Generation) and slot.lease is not None
        with self._lock:
            if not keep and slot.lease is not None:
                slot.lease.slot, slot.lease = None, None
        if keep:
            slot.view.reset()
        else:
            slot.view.forget()
        slot.request, slot.sequence, slot.pending, slot.prompting = None, None, [], False
        metrics.SLOTS_BUSY.set(sum(s.request is not None for s in self._slots))
        if request is None:
            return
        if isinstance(outcome, Generation):
            request.future.set_result(outcome)
        else:
            request.future.set_exception(outcome)


def _count_prompt(view: SlotView) -> None:
    copied = min(view.copied_tokens, view.n_tokens)
    kept = max(view.cached_tokens - copied, 0)
    metrics.PROMPT_TOKENS.labels("evaluated").inc(max(view.n_tokens - view.cached_tokens, 0))
    metrics.PROMPT_TOKENS.labels("shared_prefix").inc(copied)
    metrics.PROMPT_TOKENS.labels("kept").inc(kept)


def _timeout(request: _Request) -> JobTimeout:
    return JobTimeout(f"processing time budget of {request.budget_s:g}s spent")
