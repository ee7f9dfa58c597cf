"""Opening what a load plan names: the model, its projector, the grammar and the slots.

A load opens native resources in a fixed order (the isolated self-test probe, the ``Llama``
with its chat handler, the chat template override, the in-process self-test, the abort
callback, the grammar, the slot engine) and any step can refuse.  All of it happens under one
``contextlib.ExitStack``, so a refusal at any step closes whatever the earlier steps opened: a
worker that fails to start must not keep gigabytes of weights mapped while it reports why.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import llama_cpp
import llama_cpp._logger as llama_logger
import llama_cpp.mtmd_cpp as mtmd_cpp
from llama_cpp import Llama, LlamaGrammar
from llama_cpp import llama_chat_format as chat_format

from services.inference.card.errors import GrammarError, ModelLoadError
from services.inference.engine.capacity import context_error
from services.inference.engine.decoding import Decoded, Decoder, GuidanceGrammar, completion_dict
from services.inference.engine.grammar import (
    SchemaNotSupported,
    grammar_schema,
    json_schema_to_gbnf,
    word_minimums,
)
from services.inference.engine.model_files import ModelFiles
from services.inference.engine.native import RepackableLlama, self_test
from services.inference.engine.native_probe import ProbeResult, isolated_self_test
from services.inference.engine.plan import LoadPlan
from services.inference.engine.repetition import DrySettings
from services.inference.engine.slot_view import SlotView
from services.inference.engine.slots import AbortClock, SlotEngine
from services.inference.settings import EngineSettings

HANDLER_CLASSES = {
    "llava15": chat_format.Llava15ChatHandler,
    "llava16": chat_format.Llava16ChatHandler,
    "qwen25vl": chat_format.Qwen25VLChatHandler,
    "mtmd": chat_format.MTMDChatHandler,
}

# libmtmd logs through its own callback; route it through llama-cpp-python's so ``verbose``
# silences it too (services write JSON logs and must not get raw C chatter on stderr).
mtmd_cpp.mtmd_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
mtmd_cpp.mtmd_helper_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def _keep_stdio(disable: bool = False) -> Iterator[None]:
    yield


# The chat handlers wrap every image's bitmap creation in llama-cpp-python's
# suppress_stdout_stderr, which points file descriptors 1 and 2 at /dev/null for the moment:
# a process-wide change, so a JSON log line another thread writes then (a card finishing while
# the next one prefills, which batching makes routine) is lost.  Found as a `card.done` line
# missing from a worker's log while its row was done.  libmtmd's own chatter already goes
# through the log callback above, so there is nothing left for the redirection to hide.
chat_format.suppress_stdout_stderr = _keep_stdio  # type: ignore[misc,assignment]


class TimedMtmd:
    """Stands in for the ``mtmd_cpp`` module inside a chat handler to time image chunks.

    While ``slot`` is set (the batched engine prefilling one slot, ``slots.py``), image chunks
    go into that slot's sequence instead of the handler's sequence 0, and the slot may keep
    the image its cells already hold (a retry) instead of encoding it again."""

    def __init__(self) -> None:
        self.image_s = 0.0
        self.slot: SlotView | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(mtmd_cpp, name)

    def mtmd_helper_eval_chunk_single(self, *args: Any) -> Any:
        slot = self.slot
        if slot is None:
            return self._timed(*args)
        # (mtmd_ctx, lctx, chunk, n_past, seq_id, n_batch, logits_last, byref(new_n_past))
        out = args[7]._obj  # the c_int32 behind byref(): the handler reads it afterwards

        def evaluate() -> tuple[int, int]:
            seq = llama_cpp.llama_seq_id(slot.seq_id)
            code = self._timed(*args[:4], seq, *args[5:])
            return int(code), int(out.value)

        code, end = slot.image(int(args[3].value), evaluate)
        out.value = end
        return code

    def _timed(self, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return mtmd_cpp.mtmd_helper_eval_chunk_single(*args)
        finally:
            self.image_s += time.perf_counter() - started


class TimedLlama(RepackableLlama):
    """Marks when the chat handler finishes the prompt and starts sampling.

    While ``decoder`` is set (by the engine's one-at-a-time path on the llguidance backend;
    the batched path prefills through ``slots.SlotView`` instead), generation
    is handed to it at that point: the handler has evaluated the image and prompt into the KV
    cache, the decoder samples from there, and the handler converts its result into a chat
    response as usual.  Outside ``generate`` the model behaves like a stock ``Llama``.

    ``use_extra_bufts``: see :class:`native.RepackableLlama`.
    """

    prefill_done_at: float = 0.0
    decoder: Decoder | None = None
    last_decoded: Decoded | None = None

    def create_completion(self, *args: Any, **kwargs: Any) -> Any:
        self.prefill_done_at = time.perf_counter()
        self.last_decoded = None
        if self.decoder is None:
            return super().create_completion(*args, **kwargs)
        decoded = self.decoder.run(**kwargs)
        self.last_decoded = decoded
        return completion_dict(decoded, len(kwargs["prompt"]), self.model_path)


def compile_grammar(schema: dict[str, Any], llm: Llama) -> LlamaGrammar:
    """Compile the schema to GBNF and prove llama.cpp accepts it.

    llama-cpp-python adds a grammar sampler without checking it: a grammar llama.cpp cannot parse
    would silently decode unconstrained.  Fail at start instead.
    """
    try:
        grammar = LlamaGrammar.from_string(json_schema_to_gbnf(schema), verbose=False)
    except SchemaNotSupported as exc:
        raise GrammarError(f"the card schema cannot be enforced by a grammar: {exc}") from exc
    sampler = llama_cpp.llama_sampler_init_grammar(
        llm._model.vocab, grammar._grammar.encode(), grammar._root.encode()
    )
    if not sampler:
        raise GrammarError("llama.cpp rejected the grammar compiled from the card schema")
    llama_cpp.llama_sampler_free(sampler)
    return grammar


@dataclass(frozen=True)
class Grammars:
    """The card schema compiled for one backend (``VITRINE_GRAMMAR_BACKEND``); all None for
    ``none``, the unconstrained control."""

    grammar: LlamaGrammar | None = None
    """llama.cpp's grammar sampler (``gbnf``)."""
    guidance: GuidanceGrammar | None = None
    decoder: Decoder | None = None
    """Takes over sampling after the handler's prefill (``llguidance``)."""


def compile_grammars(schema: dict[str, Any], llm: Llama, settings: EngineSettings) -> Grammars:
    """Compile once, at start: a schema the backend cannot enforce exactly is a
    ``GrammarError`` now rather than unconstrained cards later."""
    if settings.grammar_backend == "gbnf":
        return Grammars(grammar=compile_grammar(grammar_schema(schema), llm))
    if settings.grammar_backend == "llguidance":
        # the decoder holds the word minimum: the grammar keeps the character bounds
        guidance = GuidanceGrammar(grammar_schema(schema, words_by_decoder=True), llm)
        decoder = Decoder(
            llm,
            guidance,
            fast_forward=settings.grammar_fast_forward,
            word_minimums=word_minimums(schema),
            dry=DrySettings(multiplier=settings.dry_multiplier),
        )
        return Grammars(guidance=guidance, decoder=decoder)
    return Grammars()


@dataclass(frozen=True)
class OpenModel:
    """Everything a load opened; ``resources`` closes it (the slots, then the model)."""

    probe: ProbeResult
    llm: TimedLlama
    handler: Any
    mtmd: TimedMtmd
    clock: AbortClock
    abort_cb: Any
    """The abort callback llama.cpp holds a pointer to: it must live as long as the context."""
    grammars: Grammars
    slots: SlotEngine | None
    resources: contextlib.ExitStack


def open_model(plan: LoadPlan, settings: EngineSettings, schema: dict[str, Any]) -> OpenModel:
    """Open what ``plan`` names, in order; a step that refuses closes what the others opened."""
    with contextlib.ExitStack() as stack:
        # a kernel that crashes must crash a child, not this process (native_probe.py)
        probe = isolated_self_test(plan.probe_spec, plan.repack, settings.self_test_isolation)
        mtmd = TimedMtmd()
        llm, handler = _load_llama(plan, settings, mtmd, stack)
        _set_chat_template(llm, plan.files, settings.chat_template)
        self_test(llm, plan.repack)
        clock = AbortClock()
        abort_cb = _arm_abort(llm, clock)
        grammars = compile_grammars(schema, llm, settings)
        slots = _slot_engine(plan, settings, llm, handler, mtmd, grammars.decoder, clock, stack)
        return OpenModel(
            probe, llm, handler, mtmd, clock, abort_cb, grammars, slots, stack.pop_all()
        )


def _load_llama(
    plan: LoadPlan, settings: EngineSettings, mtmd: TimedMtmd, stack: contextlib.ExitStack
) -> tuple[TimedLlama, Any]:
    """The model and its chat handler, the projector loaded now rather than on first image."""
    files = plan.files
    try:
        handler = HANDLER_CLASSES[files.handler](
            clip_model_path=str(files.mmproj), verbose=settings.verbose
        )
        handler._mtmd_cpp = mtmd
        llm = TimedLlama(
            model_path=str(files.model),
            chat_handler=handler,
            n_ctx=plan.n_ctx * plan.sequences,
            sequences=plan.sequences,
            n_gpu_layers=plan.n_gpu_layers,
            n_threads=plan.n_threads,
            # llama-cpp-python would default batches (prompt, fast-forwarded tokens) to every
            # core; on a shared box that waits on busy cores for each multi-token decode
            n_threads_batch=plan.n_threads,
            n_batch=settings.n_batch,
            # Sliding-window layers (Gemma 3: five of six) keep only their window of KV
            # cells: the full-size cache makes every step attend over the whole context,
            # which made a 4-sequence step 1.33x slower at 2 500 tokens (bench/batch_bench)
            swa_full=False,
            seed=settings.seed,
            verbose=settings.verbose,
            use_extra_bufts=plan.repack.use_extra_bufts,
            portable_repack=plan.repack.portable,
        )
        stack.callback(llm.close)
        handler._init_mtmd_context(llm)
    except (ValueError, RuntimeError, OSError) as exc:
        if "llama_context" in str(exc):
            raise context_error(exc, plan.parallel, plan.n_ctx, plan.kv_bytes) from exc
        raise ModelLoadError(f"cannot load {files.model} + {files.mmproj}: {exc}") from exc
    return llm, handler


def _set_chat_template(llm: Llama, files: ModelFiles, chat_template: str | None) -> None:
    """A template given explicitly wins over the model's; the mtmd handler cannot do without
    one, so a model that has none is refused here rather than on its first image."""
    if chat_template is not None:
        from services.inference.engine.chat_templates import load_chat_template

        llm.metadata["tokenizer.chat_template"] = load_chat_template(chat_template)
    if files.handler == "mtmd" and not llm.metadata.get("tokenizer.chat_template"):
        raise ModelLoadError(
            f"{files.model.name} has no tokenizer.chat_template, which the mtmd handler "
            "needs; choose the model's dedicated handler (e.g. --handler llava15)"
        )


def _arm_abort(llm: Llama, clock: AbortClock) -> Any:
    """Processing-time budget: llama.cpp asks this callback between compute steps of every
    decode (prompt and each token) and abandons the decode once it answers True."""

    def past_deadline(_data: Any) -> bool:
        return clock.expired()

    callback = llama_cpp.ggml_abort_callback(past_deadline)
    llama_cpp.llama_set_abort_callback(llm._ctx.ctx, callback, None)
    return callback


def _slot_engine(
    plan: LoadPlan,
    settings: EngineSettings,
    llm: Llama,
    handler: Any,
    mtmd: TimedMtmd,
    decoder: Decoder | None,
    clock: AbortClock,
    stack: contextlib.ExitStack,
) -> SlotEngine | None:
    """The batched engine when the plan has slots or a prefix to share; else none."""
    if not plan.batched:
        return None
    assert decoder is not None  # choose_slots, plan_load: llguidance only
    slots = SlotEngine(
        llm,
        handler,
        mtmd,
        decoder,
        slots=plan.parallel,
        n_ctx=plan.n_ctx,
        clock=clock,
        shared_prefix=plan.shared_prefix,
        prefill_in_steps=settings.prefill_in_steps,
    )
    stack.callback(slots.close)
    return slots
