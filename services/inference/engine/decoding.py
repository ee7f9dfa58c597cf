"""Fast constrained decoding: llguidance token masks in vitrine's own decode loop.

llama.cpp's GBNF sampler checks every one of the 32k vocabulary entries against the grammar on
every step; on a small model that mask *is* the cost of a token.  llguidance computes the same
mask from a token trie in tens of microseconds, and tells us which tokens the grammar *forces*
(keys, quotes, separators), so those are appended and evaluated as one batch without sampling.

The chat handler still does the multimodal part (image embedding + prompt evaluation into the KV
cache); :class:`Decoder` then takes over from the point where llama-cpp-python would start
sampling.  It keeps llama-cpp-python's own sampler chain (penalties → top-k → typical → top-p →
min-p → temperature → seeded dist, built by ``Llama._init_sampler`` from the same arguments),
so temperature, top-p, repetition penalty and seed mean exactly what they mean for the GBNF
backend; the only difference is where the grammar's mask comes from.  Forced tokens are fed to
the chain's history (``llama_sampler_accept``) as if they had been sampled, and count as output
tokens.

Per token, the loop is held to llama.cpp's own decode (``bench/engine_bench.py --model``): the
repetition penalty is applied by :class:`Penalties` to the recent tokens' logits instead of by
the chain's sampler, which looks up all 262k entries of a Gemma 3 vocabulary in a hash map on
every step (same float32 arithmetic, same tokens for the same seed); the mask is applied from
:class:`MaskCache`'s token indices of recent masks, not unpacked from 262k bits each step.

Compile once, fail loudly: :class:`GuidanceGrammar` builds the tokenizer from the model's vocab
and compiles the JSON Schema when the engine starts; anything llguidance cannot enforce is a
:class:`~services.inference.card.errors.GrammarError` then, never unconstrained decoding later.
"""

from __future__ import annotations

import ctypes
import random
import time
import warnings
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llguidance import LLMatcher, LLTokenizer
from llguidance.llamacpp import lltokenizer_from_vocab

from services.inference.card.errors import GrammarError
from services.inference.engine.repetition import DrySettings, NoRepeat, breaker_tokens
from services.inference.engine.shortlist import Shortlist
from services.inference.engine.word_minimum import WordMinimum, quote_tokens

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
"""Fixed separators and no free whitespace: the layout is forced (fast-forwarded), and a model
cannot spend its budget on blank lines between keys.  Content rules are the schema's alone."""

NEG_INF = np.float32(-np.inf)


class GuidanceGrammar:
    """The card schema compiled for llguidance against one model's vocabulary, once."""

    def __init__(
        self, schema: dict[str, Any], llm: Llama, tokenizer: LLTokenizer | None = None
    ) -> None:
        """``tokenizer``: another grammar's, for a variant of the schema (a card's facts
        forcing values, ``card/facts.py``): building it from the vocabulary is the slow part."""
        vocab = llm._model.vocab
        try:
            if tokenizer is None:
                with warnings.catch_warnings():  # it calls a deprecated alias once per token
                    warnings.simplefilter("ignore", DeprecationWarning)
                    tokenizer = lltokenizer_from_vocab(vocab)
            self.tokenizer: LLTokenizer = tokenizer
            self.grammar = LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
        except (ValueError, RuntimeError) as exc:
            raise GrammarError(f"llguidance cannot compile the card schema: {exc}") from exc
        is_error, messages = LLMatcher.validate_grammar_with_warnings(self.grammar, self.tokenizer)
        if is_error:
            raise GrammarError(f"llguidance cannot enforce the card schema: {messages[0]}")
        if messages:
            # Warnings mean llguidance would ignore part of the schema: not exact, so refuse.
            raise GrammarError(f"llguidance would not enforce all of the schema: {messages}")
        self._initial = LLMatcher(self.tokenizer, self.grammar, log_level=0)
        if self._initial.is_error():
            raise GrammarError(f"llguidance rejected the card grammar: {self._initial.get_error()}")
        self.n_vocab = self.tokenizer.vocab_size
        self._pieces: list[bytes] | None = None

    def pieces(self) -> list[bytes]:
        """Every vocabulary entry's bytes (computed once per grammar, when first asked)."""
        if self._pieces is None:
            decode = self.tokenizer.decode_bytes
            self._pieces = [decode([i]) for i in range(self.n_vocab)]
        return self._pieces

    def matcher(self) -> LLMatcher:
        """A matcher at the start of the grammar (a copy: no recompilation per card)."""
        return self._initial.deep_copy()

    def variant(self, schema: dict[str, Any], llm: Llama) -> GuidanceGrammar:
        """Another schema compiled against the same vocabulary (its tokenizer shared)."""
        variant = GuidanceGrammar(schema, llm, self.tokenizer)
        variant._pieces = self._pieces
        return variant


@dataclass
class Decoded:
    tokens: list[int]
    text: str
    finish_reason: str
    sampled: int
    forced: int
    mask_ms: float


class Penalties:
    """llama.cpp's penalties sampler (``llama_sampler_init_penalties``), applied to the logits.

    In the chain it looks up every one of the vocabulary's entries in its hash map of recent
    tokens on every step: 0.65 ms of a Gemma 3 step at 262k entries, more than everything else
    vitrine adds.  Here the same float32 arithmetic is applied to the (at most ``last_n``)
    distinct recent tokens only, and the chain is built without its penalties; every other
    sampler sees exactly the candidates it saw before, so the same seed samples the same tokens.
    """

    def __init__(self, last_n: int, repeat: float, freq: float, present: float) -> None:
        self.last_n = last_n
        # ctypes hands llama.cpp these as C floats: the same rounding as np.float32
        self.repeat, self.freq, self.present = (
            np.float32(repeat),
            np.float32(freq),
            np.float32(present),
        )
        self._repeat = float(self.repeat)
        self._window: deque[int] = deque()
        self._counts: dict[int, int] = {}

    @staticmethod
    def replaces(last_n: int, repeat: float, freq: float, present: float) -> bool:
        """Whether to take the penalties out of the chain: they are active, and not both a
        frequency and a presence penalty (a build that fuses ``count * freq + present`` into one
        FMA would round that sum differently)."""
        active = last_n > 0 and not (repeat == 1.0 and freq == 0.0 and present == 0.0)
        return active and (freq == 0.0 or present == 0.0)

    def accept(self, token: int) -> None:
        """``llama_sampler_penalties_accept``: the last ``last_n`` tokens, counted."""
        counts = self._counts
        counts[token] = counts.get(token, 0) + 1
        if len(self._window) >= self.last_n:
            old = self._window.popleft()
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        self._window.append(token)

    def apply(self, logits: np.ndarray, logits_c: Any) -> None:
        """``llama_sampler_penalties_apply`` on the recent tokens' logits, in place.

        A repetition penalty alone is applied by a Python loop over the ctypes array (fewer
        calls than numpy for 64 tokens); Python's double arithmetic then stored as a C float is
        float32's correctly rounded product and quotient (double has more than 2 x 24 + 2 bits),
        so it is llama.cpp's result to the bit.  Frequency/presence penalties take numpy's
        float32 arithmetic, which rounds each step as C does.
        """
        counts = self._counts
        if not counts:
            return
        if not (self.freq or self.present):
            repeat = self._repeat
            for token in counts:
                value = logits_c[token]
                logits_c[token] = value * repeat if value <= 0 else value / repeat
            return
        ids = np.fromiter(counts, dtype=np.intp, count=len(counts))
        values = logits[ids]
        values = np.where(values <= 0, values * self.repeat, values / self.repeat)
        n = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        values -= n * self.freq + np.float32(1.0) * self.present
        logits[ids] = values


_memcmp = ctypes.CDLL(None).memcmp
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_memcmp.restype = ctypes.c_int


class MaskCache:
    """llguidance's bitmask applied to the logits, with the token indices of recent masks kept.

    A card spends most of its tokens inside a few strings, where the mask is the same on every
    step (at 262k entries, about 7 300 tokens refused: quotes, backslashes, control bytes), so
    unpacking 262k bits each step is wasted work.  The bitmask is compared (``memcmp``) with the
    last few seen; a known one sets its cached indices to -inf, a new one is unpacked once.  A
    mask that allows fewer tokens than it refuses is cached as the allowed ones (those logits
    are kept, the rest set to -inf): the same result either way.
    """

    SIZE = 8

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self.bitmask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
        self.bitmask_ptr = self.bitmask.ctypes.data
        self.bitmask_bytes = self.bitmask.nbytes
        self._scratch = np.empty_like(self.bitmask)
        self._recent: list[tuple[np.ndarray, bool, np.ndarray]] = []
        """(bitmask copy, indices are the allowed tokens, token indices), newest first."""
        self.hits = self.misses = 0

    def refuse(self, tokens: np.ndarray) -> None:
        """Take ``tokens`` (a bitmask of them, see :meth:`bits`) out of the current bitmask,
        unless nothing would be left: what masking their logits after :meth:`apply` does, but on
        8k words instead of the logits (and the result is a mask the cache knows next step)."""
        left = np.bitwise_and(self.bitmask, ~tokens, out=self._scratch)
        if left.any():
            np.copyto(self.bitmask, left)

    def bits(self, tokens: np.ndarray) -> np.ndarray:
        """``tokens`` (ids) as a bitmask laid out like llguidance's."""
        allowed = np.zeros(self.bitmask.size * 32, dtype=np.bool_)
        allowed[tokens] = True
        return np.packbits(allowed, bitorder="little").view(np.int32)

    def apply(self, logits: np.ndarray) -> np.ndarray | None:
        """Set the logits of the tokens the current bitmask refuses to -inf; the allowed
        tokens' ids when the mask is cached as those (fewer allowed than refused), so the
        sampler can search them alone (:meth:`Shortlist.best`), else None."""
        recent, ptr, size = self._recent, self.bitmask_ptr, self.bitmask_bytes
        for i, entry in enumerate(recent):
            if _memcmp(entry[0].ctypes.data, ptr, size) == 0:
                if i:
                    recent.insert(0, recent.pop(i))
                self.hits += 1
                break
        else:
            self.misses += 1
            allowed = np.unpackbits(
                self.bitmask.view(np.uint8), bitorder="little", count=self.n_vocab
            ).view(np.bool_)
            n_allowed = int(np.count_nonzero(allowed))
            keep = n_allowed < self.n_vocab - n_allowed
            indices = np.flatnonzero(allowed if keep else ~allowed)
            entry = (self.bitmask.copy(), keep, indices)
            recent.insert(0, entry)
            del recent[self.SIZE :]
        _, keep, indices = entry
        if keep:
            kept = logits[indices]
            logits.fill(NEG_INF)
            logits[indices] = kept
            return indices
        logits[indices] = NEG_INF
        return None


class LogitsView:
    """Rows of llama.cpp's logits as numpy and ctypes arrays, built once per row address.

    llama.cpp reallocates its output buffer only to grow it, so the addresses of the rows a
    batch asks for (one per sequence) repeat from step to step; a view is rebuilt only for an
    address not seen since the buffer last moved."""

    MOST = 256

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self._views: dict[int, tuple[np.ndarray, Any]] = {}

    def view(self, pointer: Any) -> tuple[np.ndarray, Any]:
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        if not address:
            raise RuntimeError("llama.cpp returned no logits")
        views = self._views.get(address)
        if views is None:
            if len(self._views) >= self.MOST:
                self._views.clear()
            array = (ctypes.c_float * self.n_vocab).from_address(address)
            views = self._views[address] = (np.ctypeslib.as_array(array), array)
        return views


UNSUPPORTED = ("stream", "logprobs", "logits_processor", "grammar", "logit_bias", "stop")


@dataclass(frozen=True)
class Sampling:
    """What one generation samples with: llama-cpp-python's ``create_completion`` arguments."""

    seed: int | None
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    typical_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1

    @classmethod
    def from_completion_kwargs(cls, kwargs: Mapping[str, Any]) -> Sampling:
        """The sampling part of what a chat handler passes to ``create_completion``; refuses
        what the guided decoder cannot honour rather than ignoring it."""
        for name in UNSUPPORTED:
            if kwargs.get(name):
                raise ValueError(f"the guided decoder does not support {name}={kwargs[name]!r}")
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in kwargs.items() if k in names})


class Decoder:
    """Generation after the prompt: mask → sample → consume → fast-forward → decode.

    One decoder per engine holds what every generation shares (the compiled grammar, the mask
    cache, the word-minimum and DRY settings); each generation's own state is a
    :class:`Sequence`.  :meth:`run` drives one sequence at the end of llama-cpp-python's
    single-sequence context (the chat handler's prefill, then this loop); the batched engine
    (``slots.py``) drives one per slot, each step's tokens decoded together.

    With ``grammar=None`` it decodes unconstrained through the same loop (a benchmark control
    that separates the grammar's cost from the loop's).
    """

    def __init__(
        self,
        llm: Llama,
        grammar: GuidanceGrammar | None,
        *,
        fast_forward: bool,
        word_minimums: Mapping[str, int] | None = None,
        dry: DrySettings | None = None,
    ) -> None:
        self.llm = llm
        self.grammar = grammar
        self.fast_forward = fast_forward and grammar is not None
        self.n_vocab = llm.n_vocab()
        if grammar is not None and grammar.n_vocab != self.n_vocab:
            raise GrammarError(
                f"llguidance vocabulary has {grammar.n_vocab} tokens, the model {self.n_vocab}"
            )
        self.masks = MaskCache(self.n_vocab)
        self.logits = LogitsView(self.n_vocab)
        self.word_minimums = dict(word_minimums or {}) if grammar is not None else {}
        """String fields held open until they have their words (see ``word_minimum.py``)."""
        self._quotes: np.ndarray | None = None
        self._quote_bits: np.ndarray | None = None
        if self.word_minimums:
            assert grammar is not None
            self._quotes = quote_tokens(grammar.pieces())
            self._quote_bits = self.masks.bits(self._quotes)
        self.variant: GuidanceGrammar | None = None
        """Set by the engine's one-at-a-time path for one call (on the llama.cpp thread, so one
        call at a time): the grammar variant that call's facts force (:meth:`run`)."""
        self.shortlist = True
        """Sample from the top-k shortlist where the chain allows it (``shortlist.py``); off,
        every step hands llama.cpp the whole vocabulary (the benchmark's and tests' control)."""
        self.norepeat: NoRepeat | None = None
        """The DRY penalty against loops (see ``repetition.py``)."""
        if grammar is not None and dry is not None and dry.multiplier > 0:
            self.norepeat = NoRepeat(dry, breaker_tokens(grammar.pieces()))

    def sequence(
        self, sampling: Sampling, budget: int, grammar: GuidanceGrammar | None = None
    ) -> Sequence:
        """A new generation's state: its own matcher, sampler chain (seeded), penalties and
        word counters, for at most ``budget`` output tokens; ``grammar``: a variant of the
        decoder's for this generation (the shop's facts forcing values), same vocabulary."""
        llm = self.llm
        # the seed rule of Llama.create_completion: explicit, else drawn from the previous one
        seed = sampling.seed
        llm.set_seed(seed if seed is not None else random.Random(llm._seed).randint(0, 2**32))
        repeat, freq, present = (
            sampling.repeat_penalty,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        )
        penalties: Penalties | None = None
        last_n = llm.last_n_tokens_size
        if Penalties.replaces(last_n, repeat, freq, present):
            penalties = Penalties(last_n, repeat, freq, present)
            repeat, freq, present = 1.0, 0.0, 0.0
        sampler = llm._init_sampler(
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            typical_p=sampling.typical_p,
            temp=sampling.temperature,
            repeat_penalty=repeat,
            frequency_penalty=freq,
            presence_penalty=present,
            mirostat_mode=sampling.mirostat_mode,
            mirostat_tau=sampling.mirostat_tau,
            mirostat_eta=sampling.mirostat_eta,
        )
        words = [
            WordMinimum(field, n, self._quotes, key_separator=JSON_OPTIONS["key_separator"] or ": ")
            for field, n in self.word_minimums.items()
            if self._quotes is not None
        ]
        shortlist = None
        chain_penalties = last_n > 0 and not (repeat == 1.0 and freq == 0.0 and present == 0.0)
        if (
            self.shortlist
            and not chain_penalties  # they would see only the shortlist
            and Shortlist.applies(
                sampling.top_k, sampling.temperature, sampling.mirostat_mode, self.n_vocab
            )
        ):
            shortlist = Shortlist(sampling.top_k)
        return Sequence(self, sampler, penalties, budget, words, shortlist, grammar)

    def run(self, *, prompt: list[int], max_tokens: int | None, **rest: Any) -> Decoded:
        """Generate at the end of ``llm``'s one sequence, which holds ``prompt`` evaluated."""
        sampling = Sampling.from_completion_kwargs(rest)
        llm = self.llm
        n_ctx = llm.n_ctx()
        if len(prompt) != llm.n_tokens:
            raise RuntimeError("the chat handler did not leave the prompt evaluated")
        if llm.n_tokens >= n_ctx:
            raise ValueError(f"Requested tokens ({llm.n_tokens}) exceed context window of {n_ctx}")
        budget = n_ctx - llm.n_tokens
        if max_tokens is not None and 0 < max_tokens < budget:
            budget = max_tokens
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        if llm._requires_eval:  # the handler left no logits: replay the last prompt token
            llm.n_tokens -= 1
            llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
            self._eval([int(llm.input_ids[llm.n_tokens])])
        sequence = self.sequence(sampling, budget, self.variant)
        try:
            ctx = llm._ctx.ctx
            step = sequence.opening()
            if step:
                self._eval(step)
            while not sequence.done:
                step = sequence.step(ctx, -1)
                if not sequence.done:
                    self._eval(step)
            return sequence.result()
        finally:
            sequence.close()

    def _eval(self, tokens: list[int]) -> None:
        """Decode ``tokens`` at the end of the sequence; logits only for the last one."""
        llm = self.llm
        step = llm.n_batch
        for i in range(0, len(tokens), step):
            chunk = tokens[i : i + step]
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=chunk, n_past=n_past, logits_all=False)
            llm._ctx.decode(llm._batch)  # RuntimeError when aborted (processing-time budget)
            llm.input_ids[n_past : n_past + len(chunk)] = chunk
            llm.n_tokens += len(chunk)
            llm._requires_eval = False


class Sequence:
    """One generation's decode state, from the end of its prompt to its last token.

    :meth:`opening` gives the tokens the grammar forces before anything is sampled; then each
    :meth:`step` reads the logits its last tokens produced (row ``index`` of the last decode),
    masks and penalises them, samples, consumes, fast-forwards, and returns the tokens to decode
    next.  Once :attr:`done`, :meth:`result` is the text.  Forced tokens are fed to the chain's
    history as if sampled and count as output tokens.
    """

    def __init__(
        self,
        decoder: Decoder,
        sampler: Any,
        penalties: Penalties | None,
        budget: int,
        words: list[WordMinimum],
        shortlist: Shortlist | None = None,
        grammar: GuidanceGrammar | None = None,
    ) -> None:
        self.decoder = decoder
        self.shortlist = shortlist
        self._sampler = sampler
        self.smpl = sampler.sampler
        self.penalties = penalties
        self.budget = budget
        grammar = grammar or decoder.grammar
        self.matcher = grammar.matcher() if grammar is not None else None
        self.piece = grammar.tokenizer.decode_bytes if grammar is not None else None
        self.words = words
        self.out: list[int] = []
        self.sampled = self.forced = 0
        self.mask_s = 0.0
        self.finish = "length"
        self.done = budget <= 0

    def opening(self) -> list[int]:
        """The tokens the grammar forces first, e.g. ``{"name": "`` (fed to the matcher)."""
        if self.done or not self.decoder.fast_forward or self.matcher is None:
            return []
        pending = self._forced(self.budget)
        if pending:
            self.out += pending
            self.forced += len(pending)
            self._feed(pending)
        if len(self.out) >= self.budget:
            self.done = True
        return pending

    def step(self, ctx: Any, index: int) -> list[int]:
        """Sample from row ``index`` of the last decode; the tokens to decode next (none once
        :attr:`done`)."""
        decoder, matcher, out = self.decoder, self.matcher, self.out
        logits, logits_c = decoder.logits.view(llama_cpp.llama_get_logits_ith(ctx, index))
        allowed = None
        if matcher is not None:
            masks = decoder.masks
            started = time.perf_counter()
            matcher.unsafe_compute_mask_ptr(masks.bitmask_ptr, masks.bitmask_bytes)
            for field in self.words:
                if field.holds():  # WordMinimum.mask's quote tokens, in the bitmask
                    assert decoder._quote_bits is not None
                    masks.refuse(decoder._quote_bits)
            allowed = masks.apply(logits)
            self.mask_s += time.perf_counter() - started
        if self.penalties is not None:
            self.penalties.apply(logits, logits_c)
        if decoder.norepeat is not None:
            decoder.norepeat.apply(logits, out)
        if self.shortlist is not None:
            token = self.shortlist.sample(self.smpl, logits, allowed)
        else:
            token = llama_cpp.llama_sampler_sample(self.smpl, ctx, index)
        if llama_cpp.llama_vocab_is_eog(decoder.llm._model.vocab, token):
            return self._finish("stop")
        if self.penalties is not None:
            self.penalties.accept(token)
        self.sampled += 1
        out.append(token)
        step = [token]
        if matcher is not None:
            _consume(matcher, step)
            self._feed(step)
            if matcher.is_stopped():  # only EOS could follow
                return self._finish("stop")
            if decoder.fast_forward:
                pending = self._forced(self.budget - len(out))
                if pending:
                    out += pending
                    self.forced += len(pending)
                    step += pending
                    self._feed(pending)
                    if matcher.is_stopped():
                        return self._finish("stop")
        if len(out) >= self.budget:
            return self._finish("length")
        return step

    def result(self) -> Decoded:
        grammar = self.decoder.grammar
        if grammar is not None:
            raw = grammar.tokenizer.decode_bytes(self.out)
        else:
            raw = self.decoder.llm.detokenize(self.out)
        return Decoded(
            tokens=self.out,
            text=raw.decode("utf-8", errors="ignore"),
            finish_reason=self.finish,
            sampled=self.sampled,
            forced=self.forced,
            mask_ms=self.mask_s * 1000.0,
        )

    def close(self) -> None:
        self._sampler.close()

    def _finish(self, reason: str) -> list[int]:
        self.finish = reason
        self.done = True
        return []

    def _feed(self, tokens: list[int]) -> None:
        if self.words:
            assert self.piece is not None
            data = self.piece(tokens)
            for field in self.words:
                field.feed(data)

    def _forced(self, room: int) -> list[int]:
        """The tokens the grammar forces next (at most ``room``), consumed by the matcher and
        fed to the sampler's history as if sampled (so the repeat penalty sees them)."""
        assert self.matcher is not None
        pending: list[int] = self.matcher.compute_ff_tokens()[:room]
        if pending:
            _consume(self.matcher, pending)
            for t in pending:
                llama_cpp.llama_sampler_accept(self.smpl, t)
                if self.penalties is not None:
                    self.penalties.accept(t)
        return pending


def _consume(matcher: LLMatcher, tokens: list[int]) -> None:
    if not matcher.consume_tokens(tokens):
        raise RuntimeError(f"llguidance refused a token it allowed: {matcher.get_error()}")


def completion_dict(decoded: Decoded, prompt_tokens: int, model: str) -> dict[str, Any]:
    """The decoded text in llama-cpp-python's completion shape (what the handlers convert)."""
    return {
        "id": f"cmpl-vitrine-{time.monotonic_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "text": decoded.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": decoded.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(decoded.tokens),
            "total_tokens": prompt_tokens + len(decoded.tokens),
        },
    }
