"""The card engine: one loaded vision-language model turning prepared images into product cards.

Loading is the expensive part (seconds to minutes, gigabytes of memory), so an engine loads its
model and projector once and is then reused for every image; services keep one per process.  Each
card is generated under a grammar compiled from the card's JSON Schema, parsed by Pydantic, then
held to the semantic checks; a failed attempt is retried with a new seed and a note saying what was
wrong, up to ``max_attempts``, after which a typed error says which rule failed.

Two grammar backends enforce the same schema (``VITRINE_GRAMMAR_BACKEND``): ``llguidance`` (the
default; token masks and forced-token fast-forward in vitrine's own decode loop, see
``decoding.py``) and ``gbnf`` (llama.cpp's grammar sampler over our own GBNF, see ``grammar.py``).
Either compiles once at start-up or the engine refuses to start with a ``GrammarError``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import llama_cpp
import llama_cpp._logger as llama_logger
import llama_cpp.mtmd_cpp as mtmd_cpp
from llama_cpp import Llama, LlamaGrammar
from llama_cpp import llama_chat_format as chat_format
from pydantic import ValidationError

from schemas.card import ProductCard, generation_schema, parse_generated
from schemas.messages import Checks, ColourCheck, Timings
from schemas.reasons import Reason
from services.inference.card.checks import check_card
from services.inference.card.errors import (
    AttemptFailure,
    GenerationError,
    GrammarError,
    InvalidOutput,
    ModelLoadError,
    SemanticCheckFailed,
    TruncatedOutput,
    decode_failure,
)
from services.inference.card.outcome import CardOutcome, RawGeneration
from services.inference.card.prompt import Prompt
from services.inference.engine.capacity import check_kv_fits, choose_slots, context_error
from services.inference.engine.decoding import Decoded, Decoder, GuidanceGrammar, completion_dict
from services.inference.engine.grammar import (
    SchemaNotSupported,
    grammar_schema,
    json_schema_to_gbnf,
    word_minimums,
)
from services.inference.engine.model_files import ModelFiles
from services.inference.engine.native import (
    RepackableLlama,
    RepackChoice,
    choose_repack,
    on_native_thread,
    self_test,
)
from services.inference.engine.native_probe import ProbeResult, ProbeSpec, isolated_self_test
from services.inference.engine.repetition import DrySettings
from services.inference.engine.slots import AbortClock, SlotEngine
from services.inference.image.pixel_colour import ColourEstimate, check_colour, estimate_colour
from services.inference.image.preprocess import (
    EncoderInput,
    ImageLimits,
    PreparedImage,
    prepare_image,
)
from services.inference.settings import EngineSettings

HANDLER_CLASSES = {
    "llava15": chat_format.Llava15ChatHandler,
    "llava16": chat_format.Llava16ChatHandler,
    "qwen25vl": chat_format.Qwen25VLChatHandler,
    "mtmd": chat_format.MTMDChatHandler,
}

log = logging.getLogger("vitrine.inference")

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


class _TimedMtmd:
    """Stands in for the ``mtmd_cpp`` module inside a chat handler to time image chunks.

    While ``seq_id`` is set (the batched engine prefilling one slot, ``slots.py``), image chunks
    are evaluated into that sequence instead of the handler's sequence 0."""

    def __init__(self) -> None:
        self.image_s = 0.0
        self.seq_id: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(mtmd_cpp, name)

    def mtmd_helper_eval_chunk_single(self, *args: Any) -> Any:
        if self.seq_id is not None:  # (mtmd_ctx, lctx, chunk, n_past, seq_id, n_batch, ...)
            args = (*args[:4], llama_cpp.llama_seq_id(self.seq_id), *args[5:])
        started = time.perf_counter()
        try:
            return mtmd_cpp.mtmd_helper_eval_chunk_single(*args)
        finally:
            self.image_s += time.perf_counter() - started


class _TimedLlama(RepackableLlama):
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


def encoder_input_for(files: ModelFiles, settings: EngineSettings) -> EncoderInput:
    """Preset's encoder size, else the projector's own ``clip.vision.image_size``."""
    if settings.image_size is not None:
        fit = files.preset.image_fit if files.preset else "pad"
        return EncoderInput(settings.image_size, fit)
    if files.preset is not None:
        return EncoderInput(files.preset.image_size, files.preset.image_fit)
    import gguf

    try:
        reader = gguf.GGUFReader(files.mmproj)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"cannot read vision projector {files.mmproj}: {exc}") from exc
    size_field = reader.get_field("clip.vision.image_size")
    size = int(size_field.contents()) if size_field is not None else 336
    return EncoderInput(size, "pad")


class CardEngine:
    """Holds one model in memory; ``card_for_bytes`` is the whole image → card path.

    With ``parallel`` > 1 (``VITRINE_ENGINE_PARALLEL``, llguidance backend), ``card_for_bytes``
    may be called from that many threads at once: their generations share one context and
    are decoded together (``slots.py``).  With 1, generations run one at a time.  Everything
    that touches llama.cpp runs on the process's llama.cpp thread (``native.on_native_thread``).
    """

    def __init__(self, files: ModelFiles, settings: EngineSettings) -> None:
        on_native_thread(self._load, files, settings)

    def _load(self, files: ModelFiles, settings: EngineSettings) -> None:
        self.files = files
        self.settings = settings
        self.model_id = files.model_id
        # what the model writes (the grammar's and the prompt's): the card, with a category
        # object (a leaf path of the tree, then its attributes) for the category fields
        self.schema = generation_schema(settings.card_type())
        self.card_type = settings.card_type(word_pattern=False)  # parsing: words are a check
        self.prompt: Prompt = settings.prompt(self.schema)
        self._instructions = f"{self.prompt.system}\n{self.prompt.user}"  # for the echo check
        self.encoder_input = encoder_input_for(files, settings)
        self.limits = ImageLimits(settings.image_max_bytes, settings.image_max_pixels)

        started = time.perf_counter()
        self.repack: RepackChoice = choose_repack(settings.cpu_repack)
        self._mtmd = _TimedMtmd()
        preset = files.preset
        n_gpu_layers = (
            settings.n_gpu_layers
            if settings.n_gpu_layers is not None
            else (preset.n_gpu_layers if preset else -1)
        )
        self.parallel, self.parallel_reason = choose_slots(
            settings.engine_parallel,
            grammar_backend=settings.grammar_backend,
            n_gpu_layers=n_gpu_layers,
        )
        self.n_ctx = settings.n_ctx or (preset.n_ctx if preset else 4096)
        """One generation's context: a slot's share of the KV cache."""
        on_gpu = n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        kv_bytes = check_kv_fits(files.model, self.parallel, self.n_ctx, on_gpu=on_gpu)
        n_threads = settings.n_threads or os.cpu_count() or 1
        # a kernel that crashes must crash a child, not this process (native_probe.py)
        self.probe: ProbeResult = isolated_self_test(
            ProbeSpec(str(files.model), self.repack.enabled, n_gpu_layers, n_threads),
            self.repack,
            settings.self_test_isolation,
        )
        try:
            handler = HANDLER_CLASSES[files.handler](
                clip_model_path=str(files.mmproj), verbose=settings.verbose
            )
            handler._mtmd_cpp = self._mtmd
            self.llm = _TimedLlama(
                model_path=str(files.model),
                chat_handler=handler,
                n_ctx=self.n_ctx * self.parallel,
                sequences=self.parallel,
                n_gpu_layers=n_gpu_layers,
                n_threads=n_threads,
                # llama-cpp-python would default batches (prompt, fast-forwarded tokens) to every
                # core; on a shared box that waits on busy cores for each multi-token decode
                n_threads_batch=n_threads,
                n_batch=settings.n_batch,
                # Sliding-window layers (Gemma 3: five of six) keep only their window of KV
                # cells: the full-size cache makes every step attend over the whole context,
                # which made a 4-sequence step 1.33x slower at 2 500 tokens (bench/batch_bench)
                swa_full=False,
                seed=settings.seed,
                verbose=settings.verbose,
                use_extra_bufts=self.repack.enabled,
            )
            handler._init_mtmd_context(self.llm)  # load the projector now, not on first image
        except (ValueError, RuntimeError, OSError) as exc:
            if "llama_context" in str(exc):
                raise context_error(exc, self.parallel, self.n_ctx, kv_bytes) from exc
            raise ModelLoadError(f"cannot load {files.model} + {files.mmproj}: {exc}") from exc
        if settings.chat_template is not None:  # given explicitly, so it wins over the model's
            from services.inference.engine.chat_templates import load_chat_template

            self.llm.metadata["tokenizer.chat_template"] = load_chat_template(
                settings.chat_template
            )
        if files.handler == "mtmd" and not self.llm.metadata.get("tokenizer.chat_template"):
            self.llm.close()
            raise ModelLoadError(
                f"{files.model.name} has no tokenizer.chat_template, which the mtmd handler "
                "needs; choose the model's dedicated handler (e.g. --handler llava15)"
            )
        self.handler = handler
        try:
            self_test(self.llm, self.repack)
        except ModelLoadError:
            self.llm.close()
            raise
        # Processing-time budget: llama.cpp asks this callback between compute steps of every
        # decode (prompt and each token) and abandons the decode once it answers True.
        self.clock = AbortClock()
        self._abort_cb = llama_cpp.ggml_abort_callback(self._past_deadline)
        llama_cpp.llama_set_abort_callback(self.llm._ctx.ctx, self._abort_cb, None)
        self.grammar: LlamaGrammar | None = None
        self.guidance: GuidanceGrammar | None = None
        self.decoder: Decoder | None = None
        """Takes over sampling after the handler's prefill (llguidance backend)."""
        try:
            if settings.grammar_backend == "gbnf":
                self.grammar = compile_grammar(grammar_schema(self.schema), self.llm)
            elif settings.grammar_backend == "llguidance":
                # the decoder holds the word minimum: the grammar keeps the character bounds
                self.guidance = GuidanceGrammar(
                    grammar_schema(self.schema, words_by_decoder=True), self.llm
                )
                self.decoder = Decoder(
                    self.llm,
                    self.guidance,
                    fast_forward=settings.grammar_fast_forward,
                    word_minimums=word_minimums(self.schema),
                    dry=DrySettings(multiplier=settings.dry_multiplier),
                )
        except GrammarError:
            self.llm.close()
            raise
        self.slots: SlotEngine | None = None
        if self.parallel > 1:
            assert self.decoder is not None  # choose_slots: llguidance only
            self.slots = SlotEngine(
                self.llm,
                handler,
                self._mtmd,
                self.decoder,
                slots=self.parallel,
                n_ctx=self.n_ctx,
                clock=self.clock,
            )
        log.info(
            "engine.grammar",
            extra={
                "grammar_backend": settings.grammar_backend,
                "fast_forward": settings.grammar_fast_forward
                if settings.grammar_backend == "llguidance"
                else None,
            },
        )
        self.load_ms = (time.perf_counter() - started) * 1000.0

    def describe(self) -> dict[str, Any]:
        """How this engine was set up, for the start-up log line: what a user checks first."""
        return {
            "handler": self.files.handler,
            "handler_reason": self.files.handler_reason,
            "cpu_repack": self.repack.enabled,
            "cpu_repack_reason": self.repack.reason,
            "self_test_child": self.probe.ran,
            "self_test_child_reason": self.probe.reason,
            "grammar_backend": self.settings.grammar_backend,
            "parallel": self.parallel,
            "parallel_reason": self.parallel_reason,
            "n_ctx_per_slot": self.n_ctx,
        }

    def _past_deadline(self, _data: Any) -> bool:
        return self.clock.expired()

    # -- one generation ---------------------------------------------------------------------

    def generate(
        self,
        image: PreparedImage,
        *,
        seed: int,
        retry_problems: list[str] | None = None,
        deadline: float | None = None,
    ) -> RawGeneration:
        """One constrained generation for one image, by ``deadline`` (``time.monotonic()``);
        no validation."""
        messages = self.prompt.messages(image.data_uri(), retry_problems)
        if self.slots is not None:
            return self._generate_in_slot(messages, seed, deadline)
        return on_native_thread(self._generate_alone, messages, seed, deadline)

    def _generate_alone(
        self, messages: list[Any], seed: int, deadline: float | None
    ) -> RawGeneration:
        s = self.settings
        self.clock.deadline = deadline
        self._mtmd.image_s = 0.0
        started = time.perf_counter()
        self.llm.decoder = self.decoder
        try:
            response: Any = self.llm.create_chat_completion(
                messages=messages, grammar=self.grammar, **self._sampling(seed)
            )
        except (ValueError, RuntimeError) as exc:
            raise decode_failure(
                exc, timed_out=self.clock.expired(), budget_s=s.job_timeout_s
            ) from exc
        finally:
            self.llm.decoder = None
            self.clock.deadline = None
        finished = time.perf_counter()
        prefill_s = self.llm.prefill_done_at - started
        image_s = self._mtmd.image_s
        decoded = self.llm.last_decoded
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        timings = Timings(
            image_encode_ms=image_s * 1000.0,
            prompt_eval_ms=max(prefill_s - image_s, 0.0) * 1000.0,
            generate_ms=(finished - self.llm.prefill_done_at) * 1000.0,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            forced_tokens=decoded.forced if decoded else 0,
            mask_ms=decoded.mask_ms if decoded else 0.0,
        )
        return RawGeneration(choice["message"]["content"] or "", choice["finish_reason"], timings)

    def _sampling(self, seed: int) -> dict[str, Any]:
        """The chat handler's generation arguments, the same on both paths (a lone slot must
        sample as the one-at-a-time path does)."""
        s = self.settings
        return {
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "repeat_penalty": s.repeat_penalty,
            "seed": seed,
        }

    def _generate_in_slot(
        self, messages: list[dict[str, Any]], seed: int, deadline: float | None
    ) -> RawGeneration:
        assert self.slots is not None
        s = self.settings
        generation = self.slots.generate(
            messages,
            self._sampling(seed),
            deadline=deadline,
            budget_s=s.job_timeout_s,
        )
        decoded = generation.decoded
        timings = Timings(
            image_encode_ms=generation.image_ms,
            prompt_eval_ms=generation.prompt_ms,
            generate_ms=generation.generate_ms,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=len(decoded.tokens),
            forced_tokens=decoded.forced,
            mask_ms=decoded.mask_ms,
        )
        return RawGeneration(decoded.text, decoded.finish_reason, timings)

    def parse(self, raw: RawGeneration) -> ProductCard:
        """Raw text → validated card; typed errors for truncation and schema failures."""
        if raw.finish_reason == "length":
            raise TruncatedOutput(
                f"generation hit max_tokens={self.settings.max_tokens} before the JSON closed"
            )
        try:
            return parse_generated(raw.text, self.card_type)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise InvalidOutput(
                f"output does not match the card schema at {where}: {first['msg']}"
            ) from None
        except ValueError as exc:  # not JSON, or a category outside the tree
            raise InvalidOutput(f"output does not match the card schema: {exc}") from None

    # -- the whole path ---------------------------------------------------------------------

    def card_for_image(self, image: PreparedImage, *, seed: int | None = None) -> CardOutcome:
        """Generate, parse and check, retrying within the budget; raises ``GenerationError``."""
        budget = self.settings.job_timeout_s
        deadline = time.monotonic() + budget if budget > 0 else None
        return self._card_with_retries(image, seed, deadline)

    def _card_with_retries(
        self, image: PreparedImage, seed: int | None, deadline: float | None
    ) -> CardOutcome:
        base_seed = self.settings.seed if seed is None else seed
        total = Timings(preprocess_ms=image.preprocess_ms)
        failures: list[AttemptFailure] = []
        problems: list[str] | None = None
        last: GenerationError | None = None
        kept: CardOutcome | None = None
        """A card whose colour the pixels disputed, while its corrective attempt runs."""
        estimate: ColourEstimate | None = None
        for attempt in range(1, self.settings.max_attempts + 1):
            raw = self.generate(
                image, seed=base_seed + attempt - 1, retry_problems=problems, deadline=deadline
            )
            total = total.plus(raw.timings)
            try:
                card = self.parse(raw)
            except GenerationError as exc:
                last = exc
                failures.append(AttemptFailure(attempt, exc.reason, str(exc)))
                problems = [self.prompt.correction(exc.reason, str(exc))]
                continue
            broken = check_card(
                card,
                self.settings.profile,
                self.settings.min_description_words,
                language=self.settings.language_check,
                prompt=self._instructions,
            )
            if not broken:
                outcome = CardOutcome(
                    card=card,
                    model_id=self.model_id,
                    prompt_version=self.prompt.version,
                    attempts=attempt,
                    seed=base_seed + attempt - 1,
                    timings=total,
                    failures=failures,
                )
                if self.settings.colour_check != "off" and estimate is None:
                    estimate = self._estimate_colour(image)
                colour = self._colour_check(
                    outcome,
                    estimate,
                    retried=kept is not None,
                    can_retry=attempt < self.settings.max_attempts,
                )
                if colour is None or colour.agrees or colour.action != "retried":
                    return outcome
                if kept is not None:  # the retry disagreed too: the first card stands, flagged
                    kept.attempts, kept.timings = attempt, total
                    return kept
                kept = outcome  # one corrective attempt; this card stands if that one fails
                problems = [self.prompt.correction("colour_mismatch", colour.estimate)]
                failures.append(
                    AttemptFailure(
                        attempt,
                        Reason.semantic_check,
                        f"color_primary {card.color_primary!r}, pixels {colour.estimate!r}",
                        ("colour_mismatch",),
                    )
                )
                continue
            detail = "; ".join(b.detail for b in broken)
            last = SemanticCheckFailed(detail, [b.check for b in broken])
            failures.append(
                AttemptFailure(attempt, last.reason, detail, tuple(b.check for b in broken))
            )
            problems = [self.prompt.correction(b.check, b.detail) for b in broken]
        if kept is not None:  # the corrective attempt failed otherwise: the checked card stands
            kept.attempts, kept.timings = self.settings.max_attempts, total
            return kept
        assert last is not None
        summary = f"no acceptable card after {len(failures)} attempt(s); last: {last}"
        error = (
            SemanticCheckFailed(summary, last.checks, failures)
            if isinstance(last, SemanticCheckFailed)
            else type(last)(summary, failures)
        )
        error.timings = total
        raise error

    def _estimate_colour(self, image: PreparedImage) -> ColourEstimate:
        """The product's colour from the unpadded photo, once per image (not per attempt)."""
        pixels = image.pixels
        if pixels is None:
            import io

            from PIL import Image

            pixels = Image.open(io.BytesIO(image.png)).convert("RGB")
        return estimate_colour(pixels, self.settings.profile)

    def _colour_check(
        self,
        outcome: CardOutcome,
        estimate: ColourEstimate | None,
        *,
        retried: bool,
        can_retry: bool,
    ) -> ColourCheck | None:
        """Hold ``outcome``'s colour to the pixels and apply the policy to it, in place.

        Returns the check, whose ``action`` is ``retried`` (and ``agrees`` false) when the
        caller should make a corrective attempt: the first disagreement under ``retry`` with
        an attempt left."""
        policy = self.settings.colour_check
        if policy == "off" or estimate is None:
            return None
        found = check_colour(outcome.card.color_primary, estimate, self.settings.profile)
        check = ColourCheck(
            model=found.model,
            estimate=found.estimate,
            distance=round(found.distance, 2)
            if found.checkable and math.isfinite(found.distance)
            else None,
            agrees=found.agrees,
            checkable=found.checkable,
            policy=policy,
            action="retried" if retried else "none",
        )
        if not found.agrees:
            if policy == "replace":
                card = outcome.card
                outcome.card = self.card_type.model_validate(
                    {**card.model_dump(), "color_primary": found.estimate}
                )
                check = check.model_copy(
                    update={
                        "model": found.estimate,
                        "generated": card.color_primary,
                        "action": "replaced",
                    }
                )
            elif policy == "retry" and (can_retry or retried):
                check = check.model_copy(update={"action": "retried"})
            else:
                check = check.model_copy(update={"action": "flagged"})
        outcome.checks = Checks(colour=check)
        return check

    def prepare(self, data: bytes) -> PreparedImage:
        return prepare_image(data, self.encoder_input, self.limits, adapt=self.settings.adapt_mode)

    def card_for_bytes(self, data: bytes, *, seed: int | None = None) -> CardOutcome:
        return self.card_for_image(self.prepare(data), seed=seed)

    def close(self) -> None:
        if self.slots is not None:
            self.slots.close()
        on_native_thread(self.llm.close)
