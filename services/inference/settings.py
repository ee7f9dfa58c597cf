"""Settings of the card engine, read from ``VITRINE_*`` environment variables.

One object, with defaults that work on a laptop: the default preset pulled into the user's cache,
every layer offloaded to the GPU when there is one, the pt-BR taxonomy.  An explicit model file
(``VITRINE_MODEL_PATH`` + ``VITRINE_MMPROJ_PATH``) overrides the preset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas.card import ProductCard
from schemas.language import LanguageProfile, profile_for
from schemas.taxonomy import Taxonomy
from services.inference.card.prompt import Prompt, PromptOrder, build_prompt
from services.inference.engine.presets import HandlerName
from services.runtime.settings import (
    CardContractSettings,
    ImageSettings,
    InferenceGroup,
    KafkaSettings,
    S3Settings,
    product_max_photos_field,
)

if TYPE_CHECKING:  # adapt.py imports OpenCV (a quarter of a second): only the engine needs it
    from services.inference.image.adapt import AdaptMode

CpuRepack = Literal["auto", "on", "portable", "off"]
SelfTestIsolation = Literal["auto", "always", "never"]

GrammarBackend = Literal["llguidance", "gbnf", "none"]
"""llguidance: token masks + forced-token fast-forward in vitrine's decode loop (the default);
gbnf: llama.cpp's built-in grammar sampler (the fallback); none: unconstrained, benchmarks only."""


def default_models_dir() -> Path:
    cache = Path(os.environ.get("VITRINE_CACHE_DIR", Path.home() / ".cache" / "vitrine"))
    return cache / "models"


class EngineSettings(ImageSettings, CardContractSettings):
    # which model
    preset: str | None = Field(None, description="Preset name; None = the registry default.")
    quant: str | None = Field(None, description="Quantisation, e.g. Q4_K_M; None = preset's.")
    model_path: Path | None = Field(
        None, description="Explicit text-model GGUF (overrides preset)."
    )
    mmproj_path: Path | None = Field(None, description="Explicit vision projector GGUF.")
    handler: HandlerName | None = Field(
        None, description="Chat handler for an explicit model; None = chosen from its files."
    )
    chat_template: str | None = Field(
        None,
        description="Chat template the mtmd handler renders: a built-in name (gemma, chatml) or "
        "a Jinja file. Given, it replaces the model's own tokenizer.chat_template; None = the "
        "model's own.",
    )
    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="Where presets are downloaded to (VITRINE_CACHE_DIR/models by default).",
    )

    # llama.cpp runtime
    n_gpu_layers: int | None = Field(None, description="-1 = all layers on GPU; None = preset's.")
    n_ctx: int | None = Field(
        None,
        ge=512,
        description="Context size of one generation (one slot's KV cache, in tokens); the "
        "context holds VITRINE_ENGINE_PARALLEL times this. None = preset's.",
    )
    n_threads: int | None = Field(None, ge=1, description="CPU threads; None = all cores.")
    n_batch: int = Field(512, ge=32, description="llama.cpp's prompt-evaluation batch size.")
    engine_parallel: int | Literal["auto"] = Field(
        "auto",
        description="Cards generated at once in one llama.cpp context (continuous batching; "
        "each slot has VITRINE_N_CTX tokens of KV cache). auto: 8 on a CPU and 16 with the "
        "model on a GPU (measured: bench/batch_bench.py); 1 with the gbnf backend, which "
        "cannot batch.",
    )
    shared_prefix: bool = Field(
        True,
        description="Evaluate the prompt's text before the image once per process into a "
        "sequence of its own and copy it into each card's sequence (llama_memory_seq_cp), and "
        "let a retry keep its image's cells; the context then holds one sequence more than "
        "VITRINE_ENGINE_PARALLEL. llguidance backend only; off: every card prefills its whole "
        "prompt.",
    )
    prefill_in_steps: bool = Field(
        True,
        description="The prompt's text after the image is decoded in the batched engine's "
        "shared steps, beside the other cards' next tokens (as much as a batch of "
        "VITRINE_N_BATCH has room for), instead of alone while they wait.",
    )
    cpu_repack: CpuRepack = Field(
        "auto",
        description="llama.cpp's CPU weight repacking (extra buffer types: AMX, CPU_REPACK). "
        "auto: on, except where this llama.cpp build has its AMX kernels (they crash on real "
        "quantized models): there portable, the weights x86 CPU_REPACK has kernels for pinned "
        "to it by name, the AMX buffer never used; on / portable / off force a choice.",
    )
    self_test_isolation: SelfTestIsolation = Field(
        "auto",
        description="Where the start-up self-test runs first, so that a crashing native kernel "
        "is a clear error and not a dead process: auto (in a child process when the load is "
        "not known safe: repacking on and not yet passed with this build, CPU and model), "
        "always (in a child at every start), never (only in the process itself).",
    )
    verbose: bool = Field(False, description="llama.cpp's own logging on stderr.")

    # sampling
    seed: int = Field(42, description="Sampling seed of the first attempt (retries add 1).")
    temperature: float = Field(0.3, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    repeat_penalty: float = Field(
        1.1, ge=1.0, description="llama.cpp's repetition penalty (DRY is dry_multiplier)."
    )
    dry_multiplier: float = Field(
        0.8,
        ge=0.0,
        description="DRY penalty against loops (llguidance backend): a token that would "
        "extend a repeated sequence of 2+ tokens loses multiplier * 1.75^(length-2) of its "
        "logit; 0 = off.",
    )
    max_tokens: int = Field(1536, ge=64, description="Token budget for the whole JSON card.")
    max_attempts: int = Field(3, ge=1, le=10, description="Generations per image before failing.")
    job_timeout_s: float = Field(
        900.0,
        ge=0,
        description="Wall-clock budget of one image across its attempts; llama.cpp "
        "aborts the running decode when it is spent. 0 = no limit, for vitrine card and the "
        "benchmarks only: the worker refuses it, since a rebalance waits for the running job "
        "and Kafka's rebalance timeout (this budget + 60 s) must cover it.",
    )
    grammar_backend: GrammarBackend = Field(
        "llguidance",
        description="llguidance (default) or gbnf (llama.cpp's grammar sampler; 'llama' is an "
        "alias); none = unconstrained, for benchmarks only.",
    )
    grammar_fast_forward: bool = Field(
        True,
        description="llguidance: append the tokens the grammar forces without sampling them.",
    )

    # card content (the contract's settings: CardContractSettings)
    prompt_language: Literal["output", "en"] = Field(
        "output",
        description="Language of the instructions: the output language (where vitrine has "
        "a translation, else English) or English.",
    )
    prompt_order: PromptOrder = Field(
        "instructions_first",
        description="instructions_first: every static instruction before the image, only a "
        "short task line (and a retry's note) after it, so the part before the image is the "
        "same for every card; image_first: the image, then the instructions (the older order). "
        "Part of the prompt version.",
    )
    taxonomy_prompt_chars: int = Field(
        3200,
        ge=200,
        description="Characters of the prompt the tree takes: up to 5/8 for its outline (upper "
        "levels, breadth first), the rest for the attributes' descriptions; the grammar holds "
        "every leaf whatever the prompt shows.",
    )
    language_check: bool = Field(
        True,
        description="Hold the text fields to the output language (a function-word test); "
        "off for mixed-language catalogues.",
    )
    colour_check: Literal["off", "flag", "retry", "replace"] = Field(
        "flag",
        description="The model's colour held against the pixels' (the product separated from "
        "its background, clustered in CIELAB, named in the output language): flag only (the "
        "row's checks say so), retry (one more attempt with a corrective note naming the "
        "pixels' colour; the card is kept, flagged, if that one disagrees too), replace "
        "(color_primary becomes the pixels' colour), or off.",
    )

    # image limits (image_max_bytes: ImageSettings)
    image_max_pixels: int = Field(
        60_000_000, ge=1, description="Larger images are refused before decoding (bombs)."
    )
    image_size: int | None = Field(None, ge=32, description="Encoder input side; None = preset's.")
    # Off by default.  What is measured is the pixel colour estimate (bench/adapt_bench.py):
    # auto keeps it on clean photos (99.6 -> 100 %) and lifts it on cast ones (90.9 -> 94.5 %),
    # but the card's colour is the model's, and how the model reads an adapted photo is not
    # measured (CI's model is blind); a backdrop tinted on purpose also looks like a cast.
    # auto is the mode to try for photos shot under mixed light.
    preprocess_adapt: str = Field(
        "off",
        description="Domain adaptation of the resized photo before the encoder sees it: off; "
        "auto (a white balance when the light backdrop shows a colour cast, CLAHE when the "
        "photo has next to no tonal range, nothing otherwise); or corrections joined by '+': "
        "one white balance (grayworld, whitepatch, neutral), one tone curve (stretch, or match / "
        "match-chroma: histogram matching in YCrCb to VITRINE_PREPROCESS_ADAPT_REFERENCE), "
        "clahe (CLAHE on L*). E.g. whitepatch+clahe.",
    )
    preprocess_adapt_reference: Path | None = Field(
        None,
        description="Reference photo whose YCrCb histogram match / match-chroma pull each "
        "photo's towards (read once at start).",
    )

    @field_validator("engine_parallel")
    @classmethod
    def _parallel_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError("VITRINE_ENGINE_PARALLEL must be auto or 1..256 (llama.cpp's limit)")
        return value

    @field_validator("preprocess_adapt")
    @classmethod
    def _adapt_known(cls, value: str) -> str:
        if value.strip().lower() == "off":
            return "off"  # without importing OpenCV: vitrine's own commands read these settings
        from services.inference.image.adapt import canonical_adapt

        return canonical_adapt(value)  # a typo fails at start, with what is accepted

    @model_validator(mode="after")
    def _adapt_reference(self) -> EngineSettings:
        if self.preprocess_adapt != "off" or self.preprocess_adapt_reference is not None:
            from services.inference.image.adapt import adapt_mode

            # A missing reference, or one that cannot be read, fails at start, not mid-card.
            adapt_mode(self.preprocess_adapt, self.preprocess_adapt_reference)
        return self

    @property
    def adapt_mode(self) -> AdaptMode:
        """The parsed adaptation, its reference histogram loaded once per process."""
        from services.inference.image.adapt import adapt_mode

        return adapt_mode(self.preprocess_adapt, self.preprocess_adapt_reference)

    @field_validator("grammar_backend", mode="before")
    @classmethod
    def _backend_alias(cls, value: object) -> object:
        return "gbnf" if value == "llama" else value  # the backend's name before llguidance

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # VITRINE_CHAT_TEMPLATE= (empty) means unset
        from services.inference.engine.chat_templates import load_chat_template

        load_chat_template(value)  # a bad name, file or template fails here, not mid-card
        return value

    @model_validator(mode="after")
    def _check(self) -> EngineSettings:
        if (self.model_path is None) != (self.mmproj_path is None):
            raise ValueError("set both VITRINE_MODEL_PATH and VITRINE_MMPROJ_PATH, or neither")
        return self

    @property
    def profile(self) -> LanguageProfile:
        return profile_for(self.language)

    def prompt(self, schema: dict[str, Any]) -> Prompt:
        """The prompt these settings render for a card schema."""
        return build_prompt(
            schema,
            self.tree(),
            self.profile,
            self.min_description_words,
            prompt_language=self.language if self.prompt_language == "output" else "en",
            tree_chars=self.taxonomy_prompt_chars,
            order=self.prompt_order,
        )

    def card_type(self, *, word_pattern: bool = True) -> type[ProductCard]:
        """The card model these settings generate (see :meth:`CardContract.card_type`)."""
        return self.card_contract().card_type(word_pattern=word_pattern)

    def tree(self) -> Taxonomy:
        """The configured category tree (see :meth:`CardContract.tree`)."""
        return self.card_contract().tree()

    def categories(self) -> tuple[str, ...]:
        """The tree's leaf paths (for a flat list: its names)."""
        return self.card_contract().categories()


REVOKE_MARGIN_S = 60.0
"""What one job may take beyond the engine's budget (``job_timeout_s``): fetching the image,
preparing it, publishing the result and committing.  A rebalance waits for each revoked
partition's running job (one per engine slot, all at once) inside the revoke callback, so the
rebalance timeout the consumer announces is the job's budget plus this."""

KAFKA_MAX_TIMEOUT_MS = 2**31 - 1
"""Kafka's timeouts are int32 milliseconds (24.8 days)."""


class InferenceSettings(EngineSettings, KafkaSettings, InferenceGroup, S3Settings):
    """Everything the inference service reads from the environment."""

    engine: str = Field(
        "llama",
        description="The engine by name (services/inference/worker/engines.py): llama, the model; "
        "benchmarks and tests register their stand-ins in their own processes.",
    )
    product_max_photos: int = product_max_photos_field(
        "each adds its image tokens to the prompt (the context must hold them); ingest "
        "rejects a manifest naming more."
    )
    product_photo_wait_s: float = Field(
        30.0,
        ge=0,
        description="How long a product's job waits for a photo its manifest names that is not "
        "in the bucket yet, before the product fails product_incomplete.",
    )
    inference_batch_max: int = Field(
        64,
        ge=1,
        description="Most jobs one poll may take; only a fast engine takes more than one "
        "(see inference_batch_target_ms).",
    )
    inference_batch_target_ms: float = Field(
        100.0,
        gt=0,
        description="Jobs per poll are sized to take about this long at the recent pace; a "
        "model slower than this per card always takes one job at a time.",
    )
    session_timeout_ms: int = Field(
        30_000, ge=6_000, description="Kafka group session: a silent worker is dropped after it."
    )
    max_poll_interval_ms: int = Field(
        900_000,
        ge=10_000,
        description="How long the poll loop may go without polling before Kafka drops the "
        "worker. It does not bound a job: with every slot busy the worker still polls each "
        "second. What bounds a job is VITRINE_JOB_TIMEOUT_S, and the rebalance timeout the "
        "worker derives from it (the job budget + 60 s).",
    )
    shutdown_grace_s: float = Field(
        60.0,
        ge=0,
        description="Time to finish the jobs in flight on SIGTERM; past it they are handed back "
        "(redelivered, not counted as a death), the engine stops its generations, and the "
        "process exits a few seconds later (the engine's current step, an image being decoded).",
    )
    max_deliveries: int = Field(
        3,
        ge=1,
        description="Deliveries of one job that may end in a dead worker before the "
        "job is parked on the dead-letter topic (poison message).",
    )

    @property
    def rebalance_timeout_ms(self) -> int:
        """How long the broker waits for this worker to rejoin a rebalance: one job's budget
        and the margin (``REVOKE_MARGIN_S``), which the revoke callback may spend finishing it."""
        return int((self.job_timeout_s + REVOKE_MARGIN_S) * 1000)

    @model_validator(mode="after")
    def _job_fits_a_rebalance(self) -> InferenceSettings:
        """The job budget and the rebalance timeout agree, or the worker does not start: a
        job the timeout cannot cover gets its worker dropped from the group mid-job, its
        commit refused, and the job run a second time elsewhere."""
        if self.job_timeout_s == 0:
            raise ValueError(
                "VITRINE_JOB_TIMEOUT_S=0 (no limit) is refused by the worker: a rebalance waits "
                "for the running job, and Kafka drops a member that has not rejoined within its "
                "rebalance timeout, which must be finite; set a budget (default 900 s)"
            )
        if self.rebalance_timeout_ms > KAFKA_MAX_TIMEOUT_MS:
            raise ValueError(
                f"VITRINE_JOB_TIMEOUT_S={self.job_timeout_s:g} needs a rebalance timeout of "
                f"{self.rebalance_timeout_ms} ms (the budget + {REVOKE_MARGIN_S:g} s), over "
                f"Kafka's limit of {KAFKA_MAX_TIMEOUT_MS} ms"
            )
        return self
