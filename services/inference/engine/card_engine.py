"""The card engine: one loaded vision-language model turning prepared images into product cards.

Loading is the expensive part (seconds to minutes, gigabytes of memory), so an engine loads its
model and projector once and is then reused for every image; services keep one per process.  A
load is planned first (``plan.py``: what will be loaded and how large) and then opened
(``opener.py``: everything native, closed again if any step refuses).  Each card is generated
under a grammar compiled from the card's JSON Schema, parsed by Pydantic, then held to the
semantic checks; what a failed attempt leads to (another with a new seed and a note saying what
was wrong, up to ``max_attempts``, then a typed error saying which rule failed) is the retry
policy's call (``card/attempts.py``).

Two grammar backends enforce the same schema (``VITRINE_GRAMMAR_BACKEND``): ``llguidance`` (the
default; token masks and forced-token fast-forward in vitrine's own decode loop, see
``decoding.py``) and ``gbnf`` (llama.cpp's grammar sampler over our own GBNF, see ``grammar.py``).
Either compiles once at start-up or the engine refuses to start with a ``GrammarError``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from schemas.card import ProductCard, generation_schema, parse_generated
from schemas.facts import ProductFacts
from schemas.language import LanguageProfile
from schemas.messages import Checks, Timings
from schemas.taxonomy import Taxonomy
from services.inference.card.attempts import (
    AttemptPolicy,
    AttemptRules,
    Decision,
    Fail,
    Parsed,
    Retry,
)
from services.inference.card.errors import (
    CardError,
    ContextOverflow,
    EngineClosed,
    GenerationError,
    InvalidOutput,
    ModelLoadError,
    TruncatedOutput,
    decode_failure,
)
from services.inference.card.facts import Binding, bind, facts_check, with_identifiers
from services.inference.card.outcome import CardOutcome, RawGeneration
from services.inference.card.prompt import Prompt
from services.inference.engine.decoding import GuidanceGrammar
from services.inference.engine.fact_grammars import Constraint, FactGrammars
from services.inference.engine.model_files import ModelFiles
from services.inference.engine.native import on_native_thread
from services.inference.engine.opener import open_model
from services.inference.engine.photo_capacity import PhotoCapacity, image_tokens, text_tokens
from services.inference.engine.plan import plan_load
from services.inference.engine.slots import SlotLease
from services.inference.image.pixel_colour import ColourCheck as PixelVerdict
from services.inference.image.pixel_colour import ColourEstimate, check_colour, estimate_colour
from services.inference.image.preprocess import (
    EncoderInput,
    ImageLimits,
    PreparedImage,
    prepare_image,
)
from services.inference.settings import EngineSettings

log = logging.getLogger("vitrine.inference")


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

    :meth:`close` stops it for good: from then on every call is refused with ``EngineClosed``
    (a typed error, not a call into a freed context), and the generations running then end at
    their next decode step.
    """

    def __init__(self, files: ModelFiles, settings: EngineSettings) -> None:
        self._close_lock = threading.Lock()
        self._closing = False
        """Set by :meth:`close` before anything is stopped: new calls are refused."""
        self._closed = False
        """Set on the llama.cpp thread just before the model is freed: a generation queued
        behind the close finds it there, the one thread where it cannot race."""
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
        plan = plan_load(files, settings)
        self.repack = plan.repack
        self.parallel, self.parallel_reason = plan.parallel, plan.parallel_reason
        self.n_ctx = plan.n_ctx
        """One generation's context: a slot's share of the KV cache."""
        opened = open_model(plan, settings, self.schema)
        self.probe, self.llm, self.handler = opened.probe, opened.llm, opened.handler
        self._mtmd = opened.mtmd
        self.clock = opened.clock
        """The deadline llama.cpp's abort callback enforces while it is armed."""
        self._abort_cb = opened.abort_cb
        self.grammar = opened.grammars.grammar
        self.guidance = opened.grammars.guidance
        self.decoder = opened.grammars.decoder
        """Takes over sampling after the handler's prefill (llguidance backend)."""
        self.fact_grammars = FactGrammars(self.llm, self.guidance, self.grammar)
        """The grammars a card's facts force (``card/facts.py``), compiled once per variant."""
        self.slots = opened.slots
        self._resources = opened.resources
        """Closes the slots, then the model (:meth:`close`)."""
        log.info(
            "engine.grammar",
            extra={
                "grammar_backend": settings.grammar_backend,
                "fast_forward": settings.grammar_fast_forward
                if settings.grammar_backend == "llguidance"
                else None,
            },
        )
        self._photo_capacity: PhotoCapacity | None = None
        self.load_ms = (time.perf_counter() - started) * 1000.0

    def describe(self) -> dict[str, Any]:
        """How this engine was set up, for the start-up log line: what a user checks first."""
        return {
            "handler": self.files.handler,
            "handler_reason": self.files.handler_reason,
            "cpu_repack": self.repack.label,
            "cpu_repack_reason": self.repack.reason,
            "self_test_child": self.probe.ran,
            "self_test_child_reason": self.probe.reason,
            "grammar_backend": self.settings.grammar_backend,
            "parallel": self.parallel,
            "parallel_reason": self.parallel_reason,
            "n_ctx_per_slot": self.n_ctx,
            "shared_prefix": self.slots is not None and self.slots.prefix is not None,
        }

    # -- one generation ---------------------------------------------------------------------

    def generate(
        self,
        image: PreparedImage | Sequence[PreparedImage],
        *,
        seed: int,
        retry_problems: list[str] | None = None,
        deadline: float | None = None,
        lease: SlotLease | None = None,
        facts: ProductFacts | None = None,
        constraint: Constraint | None = None,
    ) -> RawGeneration:
        """One constrained generation for one image (or a product's photos, in order), by
        ``deadline`` (``time.monotonic()``); no validation.  ``EngineClosed`` once the engine
        is closing, however it ended.

        Within a ``lease`` (the batched engine's hold on a slot for one card's attempts) a
        retry keeps the image the slot already evaluated (one image: several are evaluated
        again).  ``facts`` are quoted after the image; ``constraint`` is the grammar they force
        (``fact_grammars.py``)."""
        self._refuse_if_closing()
        images = [image] if isinstance(image, PreparedImage) else list(image)
        uris = [i.data_uri() for i in images]
        messages = self.prompt.messages(uris, retry_problems, facts)
        constraint = constraint or self.fact_grammars.base
        image_key = images[0].key if len(images) == 1 else None
        try:
            if self.slots is not None:
                return self._generate_in_slot(
                    messages, seed, deadline, image_key, lease, constraint.guidance
                )
            return on_native_thread(self._generate_alone, messages, seed, deadline, constraint)
        except CardError as exc:
            if self._closing and not isinstance(exc, EngineClosed):
                # aborted by the close (it stops the clock): not the image's budget or fault
                raise EngineClosed("the engine closed during this generation") from exc
            raise

    def warm_prefix(self) -> None:
        """Evaluate the prompt's shared prefix now (seconds on a CPU), so that the first card
        does not wait for it; a no-op without one."""
        self._refuse_if_closing()
        if self.slots is None:
            return
        image = self._blank_image()
        self.slots.warm(self.prompt.messages(image.data_uri(), None), self._sampling(0))

    def _blank_image(self) -> PreparedImage:
        import io

        from PIL import Image

        blank = io.BytesIO()
        Image.new("RGB", (64, 64), (255, 255, 255)).save(blank, format="PNG")
        return self.prepare(blank.getvalue())

    def photo_capacity(self) -> PhotoCapacity:
        """What one product photo costs in context and how many one generation holds
        (``photo_capacity.py``); measured once, without encoding an image."""
        self._refuse_if_closing()
        if self._photo_capacity is None:
            image = self._blank_image()
            messages = self.prompt.messages(image.data_uri(), None)
            self._photo_capacity = on_native_thread(
                lambda: PhotoCapacity(
                    n_ctx=self.n_ctx,
                    text_tokens=text_tokens(self.llm, messages),
                    photo_tokens=image_tokens(self.handler, image.png),
                    max_tokens=self.settings.max_tokens,
                )
            )
        return self._photo_capacity

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise EngineClosed("the engine is closed: no card is made")

    def _generate_alone(
        self, messages: list[Any], seed: int, deadline: float | None, constraint: Constraint
    ) -> RawGeneration:
        if self._closed:  # queued on the llama.cpp thread behind the close: the model is gone
            raise EngineClosed("the engine is closed: no card is made")
        s = self.settings
        self.clock.deadline = deadline
        self._mtmd.image_s = 0.0
        started = time.perf_counter()
        self.llm.decoder = self.decoder
        if self.decoder is not None:
            self.decoder.variant = constraint.guidance
        try:
            response: Any = self.llm.create_chat_completion(
                messages=messages, grammar=constraint.grammar, **self._sampling(seed)
            )
        except (ValueError, RuntimeError) as exc:
            raise decode_failure(
                exc, timed_out=self.clock.expired(), budget_s=s.job_timeout_s
            ) from exc
        finally:
            self.llm.decoder = None
            if self.decoder is not None:
                self.decoder.variant = None
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
        self,
        messages: list[dict[str, Any]],
        seed: int,
        deadline: float | None,
        image_key: str | None,
        lease: SlotLease | None,
        grammar: GuidanceGrammar | None = None,
    ) -> RawGeneration:
        assert self.slots is not None
        s = self.settings
        generation = (lease or self.slots).generate(
            messages,
            self._sampling(seed),
            deadline=deadline,
            budget_s=s.job_timeout_s,
            image_key=image_key,
            grammar=grammar,
        )
        decoded = generation.decoded
        timings = Timings(
            image_encode_ms=generation.image_ms,
            prompt_eval_ms=generation.prompt_ms,
            generate_ms=generation.generate_ms,
            prompt_tokens=generation.prompt_tokens,
            cached_tokens=generation.cached_tokens,
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

    def card_for_image(
        self,
        image: PreparedImage,
        *,
        seed: int | None = None,
        facts: ProductFacts | None = None,
    ) -> CardOutcome:
        """Generate, parse and check, retrying within the budget; raises ``GenerationError``.
        The shop's ``facts`` bind the card (``card/facts.py``)."""
        return self.card_for_images([image], seed=seed, facts=facts)

    def card_for_images(
        self,
        images: Sequence[PreparedImage],
        *,
        seed: int | None = None,
        facts: ProductFacts | None = None,
        main: int = 0,
    ) -> CardOutcome:
        """One card from a product's photos, in one prompt (consecutive, in order); the pixel
        colour is read from ``images[main]``."""
        if not images:
            raise ValueError("a card needs at least one photo")
        if len(images) > 1 and (short := self.photo_capacity().short_of(len(images))):
            raise ContextOverflow(short)  # before a prefill that would end in the same place
        budget = self.settings.job_timeout_s
        deadline = time.monotonic() + budget if budget > 0 else None
        binding = bind(facts, self.schema, self.tree, self.settings.profile)
        outcome = self._card_with_retries(list(images), main, seed, deadline, binding)
        record = facts_check(binding, outcome.card)
        if record is not None:
            outcome.checks = (outcome.checks or Checks()).model_copy(update={"facts": record})
        return outcome

    @property
    def tree(self) -> Taxonomy:
        tree = self.card_type.taxonomy
        assert tree is not None  # a configured card type (settings.card_type) has its tree
        return tree

    def _card_with_retries(
        self,
        images: list[PreparedImage],
        main: int,
        seed: int | None,
        deadline: float | None,
        binding: Binding,
    ) -> CardOutcome:
        """Generate and parse until the retry policy keeps a card or gives up."""
        policy = AttemptPolicy(
            self._attempt_rules(binding),
            base_seed=self.settings.seed if seed is None else seed,
            preprocess_ms=sum(i.preprocess_ms for i in images),
        )
        facts = binding.facts if not binding.facts.empty else None
        constraint = self.fact_grammars.for_binding(binding)
        pixels = _PixelColour(images[main], self.settings.profile)
        decision: Decision = policy.first()
        with contextlib.ExitStack() as stack:
            lease = None
            if self.slots is not None and self.settings.max_attempts > 1:
                lease = stack.enter_context(self.slots.lease())
            while isinstance(decision, Retry):
                raw = self.generate(
                    images,
                    seed=decision.seed,
                    retry_problems=decision.problems,
                    deadline=deadline,
                    lease=lease,
                    facts=facts,
                    constraint=constraint,
                )
                decision = policy.decide(raw.timings, self._judge(raw, policy, pixels, facts))
        if isinstance(decision, Fail):
            raise decision.error
        return decision.outcome

    def _attempt_rules(self, binding: Binding) -> AttemptRules:
        """Read per image: the settings are the engine's, but tests swap them between cards.
        A colour the shop gave is forced: the pixels may flag it, never replace or retry it."""
        s = self.settings
        colour = s.colour_check
        if "color_primary" in binding.forced and colour in ("retry", "replace"):
            colour = "flag"
        return AttemptRules(
            max_attempts=s.max_attempts,
            colour=colour,
            profile=s.profile,
            min_words=s.min_description_words,
            language=s.language_check,
            instructions=self._instructions,
            prompt=self.prompt,
            model_id=self.model_id,
            card_type=self.card_type,
            facts=binding.facts if not binding.facts.empty else None,
        )

    def _judge(
        self,
        raw: RawGeneration,
        policy: AttemptPolicy,
        pixels: _PixelColour,
        facts: ProductFacts | None,
    ) -> Parsed | GenerationError:
        """One attempt's outcome as the policy reads it (the card carrying the shop's
        identifiers); the pixels are asked about the colour only for a card that broke no rule
        (the estimate costs milliseconds)."""
        try:
            card = with_identifiers(self.parse(raw), facts)
        except GenerationError as exc:
            return exc
        broken = policy.check(card)
        if broken or not policy.checks_colour:
            return Parsed(card, broken)
        return Parsed(card, broken, pixels.verdict(card.color_primary))

    def prepare(self, data: bytes) -> PreparedImage:
        return prepare_image(data, self.encoder_input, self.limits, adapt=self.settings.adapt_mode)

    def card_for_bytes(
        self, data: bytes, *, seed: int | None = None, facts: ProductFacts | None = None
    ) -> CardOutcome:
        self._refuse_if_closing()
        return self.card_for_image(self.prepare(data), seed=seed, facts=facts)

    def card_for_photos(
        self,
        photos: list[bytes],
        *,
        facts: ProductFacts | None = None,
        main: int = 0,
        seed: int | None = None,
    ) -> CardOutcome:
        """One card from a product's photos.  A photo that is not a usable image raises its
        error with ``photo_index`` set to its place in ``photos``: the product's row is the
        manifest's, and the worker names the photo's key in it (``worker/job.py``)."""
        self._refuse_if_closing()
        images = []
        for index, data in enumerate(photos):
            try:
                images.append(self.prepare(data))
            except CardError as exc:
                exc.photo_index = index
                raise
        return self.card_for_images(images, seed=seed, facts=facts, main=main)

    @property
    def closed(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Refuse new calls, stop the generations running, free the model; once, from any
        thread but the llama.cpp one.

        In that order: the abort clock is stopped first, so the decode running now (prefill or
        step) ends at its next compute step; the slots then fail what is queued or running
        (after the tick in progress); and the model is freed on the llama.cpp thread, behind
        anything queued there, each of which finds the engine closed and refuses.  What it
        cannot cut short: an image being encoded (libmtmd asks no abort callback), seconds at
        most."""
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        self.clock.stop()
        if self.slots is not None:
            self.slots.close()  # first, here: no tick may be queued behind the model's close
        on_native_thread(self._close_native)

    def _close_native(self) -> None:
        self._closed = True
        self._resources.close()


class _PixelColour:
    """The product's colour from the unpadded photo, estimated once per image (not per
    attempt) and only when a card's colour is to be checked."""

    def __init__(self, image: PreparedImage, profile: LanguageProfile) -> None:
        self._image = image
        self._profile = profile
        self._estimate: ColourEstimate | None = None

    def verdict(self, colour: str) -> PixelVerdict:
        if self._estimate is None:
            pixels = self._image.pixels
            if pixels is None:
                import io

                from PIL import Image

                pixels = Image.open(io.BytesIO(self._image.png)).convert("RGB")
            self._estimate = estimate_colour(pixels, self._profile)
        return check_colour(colour, self._estimate, self._profile)
