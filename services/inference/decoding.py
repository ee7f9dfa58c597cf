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

Compile once, fail loudly: :class:`GuidanceGrammar` builds the tokenizer from the model's vocab
and compiles the JSON Schema when the engine starts; anything llguidance cannot enforce is a
:class:`~services.inference.errors.GrammarError` then, never unconstrained decoding later.
"""

from __future__ import annotations

import random
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llguidance import LLMatcher, LLTokenizer
from llguidance.llamacpp import lltokenizer_from_vocab

from services.inference.errors import GrammarError

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

    def __init__(self, schema: dict[str, Any], llm: Llama) -> None:
        vocab = llm._model.vocab
        try:
            with warnings.catch_warnings():  # it calls a deprecated alias once per token
                warnings.simplefilter("ignore", DeprecationWarning)
                self.tokenizer: LLTokenizer = lltokenizer_from_vocab(vocab)
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

    def matcher(self) -> LLMatcher:
        """A matcher at the start of the grammar (a copy: no recompilation per card)."""
        return self._initial.deep_copy()


@dataclass
class Decoded:
    tokens: list[int]
    text: str
    finish_reason: str
    sampled: int
    forced: int
    mask_ms: float


UNSUPPORTED = ("stream", "logprobs", "logits_processor", "grammar", "logit_bias", "stop")


class Decoder:
    """Generation after the handler's prefill: mask → sample → consume → fast-forward → decode.

    With ``grammar=None`` it decodes unconstrained through the same loop (a benchmark control
    that separates the grammar's cost from the loop's).
    """

    def __init__(self, llm: Llama, grammar: GuidanceGrammar | None, *, fast_forward: bool) -> None:
        self.llm = llm
        self.grammar = grammar
        self.fast_forward = fast_forward and grammar is not None
        self.n_vocab = llm.n_vocab()
        if grammar is not None and grammar.n_vocab != self.n_vocab:
            raise GrammarError(
                f"llguidance vocabulary has {grammar.n_vocab} tokens, the model {self.n_vocab}"
            )
        words = (self.n_vocab + 31) // 32
        self._bitmask = np.zeros(words, dtype=np.int32)
        self._bitmask_u8 = self._bitmask.view(np.uint8)
        self._bitmask_ptr = self._bitmask.ctypes.data
        self._bitmask_bytes = self._bitmask.nbytes

    def run(
        self,
        *,
        prompt: list[int],
        max_tokens: int | None,
        seed: int | None,
        temperature: float,
        top_p: float,
        top_k: int,
        min_p: float,
        typical_p: float,
        repeat_penalty: float,
        frequency_penalty: float,
        presence_penalty: float,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        **rest: Any,
    ) -> Decoded:
        for name in UNSUPPORTED:
            if rest.get(name):
                raise ValueError(f"the guided decoder does not support {name}={rest[name]!r}")
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

        # the seed rule of Llama.create_completion: explicit, else drawn from the previous one
        llm.set_seed(seed if seed is not None else random.Random(llm._seed).randint(0, 2**32))
        sampler = llm._init_sampler(
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            typical_p=typical_p,
            temp=temperature,
            repeat_penalty=repeat_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            mirostat_mode=mirostat_mode,
            mirostat_tau=mirostat_tau,
            mirostat_eta=mirostat_eta,
        )
        try:
            return self._loop(sampler.sampler, budget)
        finally:
            sampler.close()

    def _loop(self, smpl: Any, budget: int) -> Decoded:
        llm = self.llm
        ctx = llm._ctx.ctx
        vocab = llm._model.vocab
        n_vocab = self.n_vocab
        matcher = self.grammar.matcher() if self.grammar is not None else None
        ff = self.fast_forward
        bitmask_u8, bitmask_ptr, bitmask_bytes = (
            self._bitmask_u8,
            self._bitmask_ptr,
            self._bitmask_bytes,
        )
        perf = time.perf_counter
        sample = llama_cpp.llama_sampler_sample
        get_logits = llama_cpp.llama_get_logits_ith
        out: list[int] = []
        sampled = forced = 0
        mask_s = 0.0
        finish = "length"
        if ff and matcher is not None:  # the grammar may force the opening, e.g. '{"name": "'
            pending = self._forced(matcher, smpl, budget)
            if pending:
                out += pending
                forced += len(pending)
                self._eval(pending)
        while len(out) < budget:
            if matcher is not None:
                started = perf()
                matcher.unsafe_compute_mask_ptr(bitmask_ptr, bitmask_bytes)
                logits = np.ctypeslib.as_array(get_logits(ctx, -1), shape=(n_vocab,))
                disallowed = np.unpackbits(
                    np.invert(bitmask_u8), bitorder="little", count=n_vocab
                ).view(np.bool_)
                logits[disallowed] = NEG_INF
                mask_s += perf() - started
            token = sample(smpl, ctx, -1)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            sampled += 1
            out.append(token)
            step = [token]
            if matcher is not None:
                self._consume(matcher, step)
                if matcher.is_stopped():  # only EOS could follow
                    finish = "stop"
                    break
                if ff:
                    pending = self._forced(matcher, smpl, budget - len(out))
                    if pending:
                        out += pending
                        forced += len(pending)
                        step += pending
                        if matcher.is_stopped():
                            finish = "stop"
                            break
            if len(out) >= budget:
                break
            self._eval(step)
        if self.grammar is not None:
            raw = self.grammar.tokenizer.decode_bytes(out)
        else:
            raw = llm.detokenize(out)
        return Decoded(
            tokens=out,
            text=raw.decode("utf-8", errors="ignore"),
            finish_reason=finish,
            sampled=sampled,
            forced=forced,
            mask_ms=mask_s * 1000.0,
        )

    def _forced(self, matcher: LLMatcher, smpl: Any, room: int) -> list[int]:
        """The tokens the grammar forces next (at most ``room``), consumed by the matcher and
        fed to the sampler's history as if sampled (so the repeat penalty sees them)."""
        pending: list[int] = matcher.compute_ff_tokens()[:room]
        if pending:
            self._consume(matcher, pending)
            for t in pending:
                llama_cpp.llama_sampler_accept(smpl, t)
        return pending

    @staticmethod
    def _consume(matcher: LLMatcher, tokens: list[int]) -> None:
        if not matcher.consume_tokens(tokens):
            raise RuntimeError(f"llguidance refused a token it allowed: {matcher.get_error()}")

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
