"""The card engine on tiny random-weight GGUF models, through the real llama.cpp code path.

Random weights write gibberish, so these tests check what the engine guarantees regardless of
model quality: the grammar holds (schema, enum, counts, lengths), failures are typed, timings are
measured.  The unconstrained control proves the validity comes from the grammar, not from luck.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import llama_cpp.mtmd_cpp as mtmd_cpp
import pytest

from schemas.card import ProductCard
from schemas.language import PT_BR
from schemas.messages import Timings
from services.inference.card.errors import (
    CardError,
    ContextOverflow,
    GenerationError,
    InvalidOutput,
    JobTimeout,
    ModelLoadError,
    SemanticCheckFailed,
    TruncatedOutput,
)
from services.inference.card.outcome import RawGeneration
from services.inference.engine import opener
from services.inference.engine.card_engine import CardEngine
from tests.support.card_text import LONG_DESCRIPTION, card_text
from tests.support.engines import load_engine
from tests.support.images import image_bytes

pytestmark = pytest.mark.model


def assert_schema_holds(engine: CardEngine, text: str) -> dict:
    doc = json.loads(text)
    jsonschema.validate(doc, engine.schema)  # independent of Pydantic and of the grammar
    tree = engine.card_type.taxonomy
    assert tree is not None and tree.leaf(doc["category"]["path"]) is not None
    assert len(doc["features_list"]) == 3
    assert set(doc) == set(engine.schema["properties"])
    return doc


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB")])
def test_generates_a_schema_valid_card_for_each_format(llava_engine, fmt, mode) -> None:
    image = llava_engine.prepare(image_bytes(fmt, mode))
    raw = llava_engine.generate(image, seed=7)
    assert raw.finish_reason == "stop"
    assert_schema_holds(llava_engine, raw.text)
    assert isinstance(llava_engine.parse(raw), ProductCard)


def test_twenty_seeds_all_hold_the_grammar_or_fail_typed(llava_engine) -> None:
    image = llava_engine.prepare(image_bytes("JPEG"))
    finished = 0
    for seed in range(20):
        raw = llava_engine.generate(image, seed=1000 + seed)
        if raw.finish_reason == "length":
            with pytest.raises(TruncatedOutput):
                llava_engine.parse(raw)
            continue
        assert_schema_holds(llava_engine, raw.text)
        llava_engine.parse(raw)
        finished += 1
    assert finished >= 15, f"only {finished}/20 generations completed within max_tokens"


def test_mtmd_handler_pair_holds_the_grammar(mtmd_engine) -> None:
    image = mtmd_engine.prepare(image_bytes("PNG", "RGBA"))
    for seed in range(5):
        raw = mtmd_engine.generate(image, seed=seed)
        assert raw.finish_reason == "stop"
        assert_schema_holds(mtmd_engine, raw.text)


def test_full_path_returns_a_card_or_a_typed_error(tiny_pairs) -> None:
    """Every image ends as a card or as a ``GenerationError`` that carries each attempt's
    reason, and the path does end in cards: under rules random weights can meet (as the next
    tests), a run where every seed failed would be the path broken, not the model weak."""
    engine = load_engine(
        tiny_pairs["llava"],
        colour_vocabulary="enforce",
        min_description_words=20,
        language_check=False,  # random weights write no language at all
    )
    cards = 0
    try:
        for seed in range(3, 6):
            try:
                outcome = engine.card_for_bytes(image_bytes("PNG", "RGBA"), seed=seed)
            except GenerationError as exc:
                assert len(exc.attempts) == engine.settings.max_attempts
                assert all(attempt.reason and attempt.detail for attempt in exc.attempts)
            else:
                assert isinstance(outcome.card, ProductCard)
                cards += 1
    finally:
        engine.close()
    assert cards >= 1, "no seed ended in a card under reachable rules"


def test_without_grammar_the_same_model_does_not_produce_cards(tiny_pairs) -> None:
    engine = load_engine(tiny_pairs["llava"], grammar_backend="none", max_tokens=200)
    try:
        image = engine.prepare(image_bytes("JPEG"))
        for seed in range(3):
            with pytest.raises((InvalidOutput, TruncatedOutput)):
                engine.parse(engine.generate(image, seed=seed))
    finally:
        engine.close()


def test_done_card_with_timings_when_the_rules_are_reachable(tiny_pairs) -> None:
    """With the colour facet enforced by the grammar and a low word minimum, even random
    weights can satisfy every check: the whole path returns a card with its measurements."""
    engine = load_engine(
        tiny_pairs["llava"],
        colour_vocabulary="enforce",
        min_description_words=20,
        language_check=False,  # random weights write no language at all
    )
    try:
        outcome = engine.card_for_bytes(image_bytes("JPEG"), seed=3)
    finally:
        engine.close()
    assert outcome.card.color_primary in PT_BR.colours
    assert outcome.prompt_version.startswith("card-v3+")
    assert outcome.model_id == tiny_pairs["llava"].model.name
    t = outcome.timings
    assert t.image_encode_ms > 0 and t.prompt_eval_ms > 0 and t.generate_ms > 0
    assert t.prompt_tokens > 64 and t.completion_tokens > 0 and t.tokens_per_s > 0
    assert outcome.attempts >= 1 and t.preprocess_ms > 0


def test_token_budget_exhaustion_is_a_typed_error(tiny_pairs) -> None:
    engine = load_engine(tiny_pairs["llava"], max_tokens=64, max_attempts=2)
    try:
        with pytest.raises(TruncatedOutput) as info:
            engine.card_for_bytes(image_bytes("JPEG"))
    finally:
        engine.close()
    assert [a.reason for a in info.value.attempts] == ["truncated", "truncated"]


def test_prompt_larger_than_context_is_a_typed_error(tiny_pairs) -> None:
    engine = load_engine(tiny_pairs["llava"], n_ctx=512, max_tokens=64)
    try:
        with pytest.raises(ContextOverflow):
            engine.card_for_bytes(image_bytes("JPEG"))
    finally:
        engine.close()


def test_unloadable_files_are_model_load_errors(tiny_pairs, tmp_path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF but not really")
    with pytest.raises(ModelLoadError):
        load_engine(_pair(tiny_pairs, model=junk))
    with pytest.raises(ModelLoadError):
        load_engine(_pair(tiny_pairs, mmproj=junk))
    with pytest.raises(ModelLoadError, match="chat_template"):
        load_engine(_pair(tiny_pairs, handler="mtmd"))


@pytest.mark.parametrize("step", ["self_test", "SlotEngine"])
def test_a_load_refused_after_the_model_opened_closes_the_model(
    tiny_pairs, monkeypatch, step: str
) -> None:
    """A step after the model is open (the in-process self-test; the slots, the last one)
    refuses: the model is closed before the error leaves the load, not left to the GC."""
    opened: list[opener.TimedLlama] = []
    closed: list[opener.TimedLlama] = []

    class Watched(opener.TimedLlama):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            opened.append(self)  # held here, so only the load can close it during the test

        def close(self) -> None:
            closed.append(self)
            super().close()

    def refuse(*args: object, **kwargs: object) -> None:
        raise ModelLoadError(f"{step} refused")

    monkeypatch.setattr(opener, "TimedLlama", Watched)
    monkeypatch.setattr(opener, step, refuse)
    with pytest.raises(ModelLoadError, match="refused"):
        load_engine(tiny_pairs["llava"], engine_parallel=2)
    assert len(opened) == 1 and [c for c in closed if c is opened[0]] == opened


def _pair(tiny_pairs, model=None, mmproj=None, handler=None):
    from dataclasses import replace

    base = tiny_pairs["llava"]
    return replace(
        base,
        model=model or base.model,
        mmproj=mmproj or base.mmproj,
        handler=handler or base.handler,
    )


# -- retry budget: unit tests with scripted generations --------------------------------------


def scripted(monkeypatch, engine: CardEngine, outputs: list[tuple[str, str]]) -> list:
    calls: list = []

    def fake_generate(
        image, *, seed, retry_problems=None, deadline=None, lease=None, facts=None, constraint=None
    ):
        calls.append((seed, retry_problems))
        text, finish = outputs[len(calls) - 1]
        return RawGeneration(text, finish, Timings(generate_ms=10, completion_tokens=5))

    monkeypatch.setattr(engine, "generate", fake_generate)
    return calls


def test_retry_recovers_after_truncation_and_invalid_output(monkeypatch, llava_engine) -> None:
    calls = scripted(
        monkeypatch,
        llava_engine,
        [('{"product_name": "Lumi', "length"), ('{"nope": 1}', "stop"), (card_text(), "stop")],
    )
    image = llava_engine.prepare(image_bytes("PNG"))
    outcome = llava_engine.card_for_image(image, seed=10)
    assert outcome.attempts == 3 and outcome.seed == 12
    assert [f.reason for f in outcome.failures] == ["truncated", "invalid_output"]
    assert [seed for seed, _ in calls] == [10, 11, 12]
    assert calls[0][1] is None
    assert calls[1][1][0] == llava_engine.prompt.correction("truncated", "")  # "cut off"
    assert outcome.timings.generate_ms == 30  # summed over attempts


def test_semantic_failure_exhausts_budget_and_names_the_check(monkeypatch, llava_engine) -> None:
    # the colour is the grammar's now; a repeated selling point is what only a check sees
    same = ["Haste articulada", "haste articulada!", "Luz LED econômica"]
    calls = scripted(monkeypatch, llava_engine, [(card_text(features_list=same), "stop")] * 3)
    with pytest.raises(SemanticCheckFailed) as info:
        llava_engine.card_for_image(llava_engine.prepare(image_bytes("PNG")))
    assert info.value.checks == ["features_distinct"]
    assert len(info.value.attempts) == 3 == len(calls)
    assert info.value.attempts[0].checks == ("features_distinct",)
    assert "diferentes" in calls[2][1][0]  # the corrective note says what to do


def test_a_colour_outside_the_vocabulary_is_refused_by_the_card_schema(
    monkeypatch, llava_engine
) -> None:
    scripted(monkeypatch, llava_engine, [(card_text(color_primary="furta-cor"), "stop")] * 3)
    with pytest.raises(InvalidOutput, match="color_primary"):
        llava_engine.card_for_image(llava_engine.prepare(image_bytes("PNG")))


@pytest.mark.parametrize("engine_name", ["llava_engine", "mtmd_engine"])
def test_budget_spent_while_the_image_is_decoded_is_a_timeout(
    request, monkeypatch, engine_name
) -> None:
    # An abort inside the image chunk's decode comes back from the chat handler as
    # ValueError("Failed to evaluate chunk: error code 2"), not as llama_decode's RuntimeError;
    # CI once reported it as a plain InferenceError. The deadline passes exactly there.
    engine = request.getfixturevalue(engine_name)
    real = mtmd_cpp.mtmd_helper_eval_chunk_single

    def deadline_passes_now(*args):
        engine.clock.deadline = time.monotonic() - 1.0
        return real(*args)

    monkeypatch.setattr(mtmd_cpp, "mtmd_helper_eval_chunk_single", deadline_passes_now)
    image = engine.prepare(image_bytes("PNG"))
    try:
        with pytest.raises(JobTimeout) as info:
            engine.generate(image, seed=1)
        assert "error code 2" in str(info.value.__cause__)
    finally:
        engine.clock.deadline = None
    monkeypatch.undo()
    assert engine.generate(image, seed=1).finish_reason == "stop"


def test_budget_of_one_means_no_retry(monkeypatch, llava_engine) -> None:
    monkeypatch.setattr(
        llava_engine, "settings", llava_engine.settings.model_copy(update={"max_attempts": 1})
    )
    calls = scripted(monkeypatch, llava_engine, [('{"x"', "length")])
    with pytest.raises(TruncatedOutput):
        llava_engine.card_for_image(llava_engine.prepare(image_bytes("PNG")))
    assert len(calls) == 1


def test_all_engine_errors_are_card_errors() -> None:
    for error in (
        TruncatedOutput,
        InvalidOutput,
        SemanticCheckFailed,
        ModelLoadError,
        ContextOverflow,
    ):
        assert issubclass(error, CardError)


@pytest.mark.parametrize("parallel", [1, 4])
def test_processing_time_budget_ends_the_job_with_its_budget_error(
    tiny_pairs, parallel: int
) -> None:
    """0.1 s is below one attempt here (image encode + prefill + ~200 tokens), so the budget
    runs out during the job: it ends as ``JobTimeout``, and the engine is whole afterwards.

    Which decode the budget lands in (an image chunk, the prompt's text, a token step) depends
    on the CPU's speed: on an Intel Xeon the batched engine's own prefill text was aborted
    (``llama_decode returned 2``), on AMD an image chunk.  So only the behaviour is asserted;
    that a batched shared step is never the one aborted is the next tests' subject."""
    # 1: llama-cpp-python's one-at-a-time path (no shared prefix); 4: the batched engine
    engine = load_engine(
        tiny_pairs["llava"],
        job_timeout_s=0.1,
        engine_parallel=parallel,
        shared_prefix=parallel > 1,
    )
    try:
        image = engine.prepare(image_bytes("JPEG"))
        with pytest.raises(JobTimeout, match=r"0\.1s") as info:
            engine.card_for_image(image)
        if parallel == 1:  # every decode is armed: the one running when time ran out aborted
            assert isinstance(info.value.__cause__, (RuntimeError, ValueError))
        raw = engine.generate(image, seed=1)  # no deadline outside card_for_image
        assert raw.finish_reason == "stop"
        json.loads(raw.text)
    finally:
        engine.close()


class AbortWatch:
    """Records every answer of the engine's abort callback and whether a shared step (one
    decode for every live sequence) was running when it was asked."""

    def __init__(self, engine: CardEngine) -> None:
        assert engine.slots is not None
        self.in_shared_step = False
        self.answers: list[tuple[bool, bool]] = []  # (in a shared step, aborted)
        clock, slots = engine.clock, engine.slots
        expired, decode = clock.expired, slots._decode

        def watched_expired() -> bool:
            answer = expired()
            self.answers.append((self.in_shared_step, answer))
            return answer

        def watched_decode(rows: list) -> None:
            self.in_shared_step = True
            try:
                decode(rows)
            finally:
                self.in_shared_step = False

        clock.expired = watched_expired  # type: ignore[method-assign]
        slots._decode = watched_decode  # type: ignore[method-assign]

    def shared(self) -> list[bool]:
        return [aborted for shared, aborted in self.answers if shared]


def run_beside_mates(engine: CardEngine, target_seed: int) -> tuple[object, list[RawGeneration]]:
    """Three batch-mates without a deadline and the target (``target_seed``), side by side."""
    image = engine.prepare(image_bytes("JPEG"))
    with ThreadPoolExecutor(4) as pool:
        mates = [pool.submit(engine.generate, image, seed=seed) for seed in (1, 2, 3)]
        target = pool.submit(
            engine.generate, image, seed=target_seed, deadline=time.monotonic() + 600
        )
        outcome: object
        try:
            outcome = target.result()
        except CardError as exc:
            outcome = exc
        return outcome, [mate.result() for mate in mates]


def test_a_deadline_passing_during_shared_steps_ends_its_job_at_the_next_step(
    tiny_pairs,
) -> None:
    """The target's deadline passes right after its prefill, while it decodes beside three
    batch-mates: it leaves with its budget error and no aborted decode as the cause, the shared
    steps were asked (the callback runs during them) and never aborted, and every batch-mate's
    card is intact."""
    engine = load_engine(tiny_pairs["llava"], engine_parallel=4)
    try:
        assert engine.slots is not None
        watch = AbortWatch(engine)
        prefill = engine.slots._prefill

        def prefill_then_expire(slot, request) -> None:  # type: ignore[no-untyped-def]
            prefill(slot, request)
            if request.call.get("seed") == 99:
                request.deadline = time.monotonic() - 1.0

        engine.slots._prefill = prefill_then_expire  # type: ignore[method-assign]
        outcome, mates = run_beside_mates(engine, 99)
        assert isinstance(outcome, JobTimeout) and outcome.__cause__ is None, outcome
        assert watch.shared(), "the abort callback was never asked during a shared step"
        assert not any(watch.shared())
        for mate in mates:
            assert mate.finish_reason == "stop"
            assert_schema_holds(engine, mate.text)
    finally:
        engine.close()


def test_a_deadline_passing_during_its_own_prefill_aborts_only_that_prefill(tiny_pairs) -> None:
    """The one decode the budget may abort in the batched engine is the job's own prefill:
    the target's clock runs out as its prompt is evaluated, its decode is aborted (the cause),
    and the batch-mates decode on to valid cards; no shared step was aborted."""
    engine = load_engine(tiny_pairs["llava"], engine_parallel=4)
    try:
        assert engine.slots is not None
        watch = AbortWatch(engine)
        handler = engine.slots.handler

        def expire_in_prefill(**kwargs):  # type: ignore[no-untyped-def]
            if kwargs.get("seed") == 99:
                engine.clock.deadline = time.monotonic() - 1.0
            return handler(**kwargs)

        engine.slots.handler = expire_in_prefill
        outcome, mates = run_beside_mates(engine, 99)
        assert isinstance(outcome, JobTimeout), outcome
        assert isinstance(outcome.__cause__, (RuntimeError, ValueError))
        assert True in [aborted for shared, aborted in watch.answers if not shared]
        assert watch.shared() and not any(watch.shared())
        for mate in mates:
            assert mate.finish_reason == "stop"
            assert_schema_holds(engine, mate.text)
    finally:
        engine.close()


def test_a_description_short_of_words_is_the_word_check_not_a_schema_failure(
    monkeypatch, tiny_pairs
) -> None:
    """With the grammar holding the word minimum, a description that still falls short (the
    character bound came first) gets the check's count and note, not a regex in the prompt."""
    engine = load_engine(tiny_pairs["llava"], word_minimum="grammar", language_check=False)
    try:
        short = " ".join(LONG_DESCRIPTION.split()[:100])
        calls = scripted(monkeypatch, engine, [(card_text(description_long=short), "stop")] * 3)
        with pytest.raises(SemanticCheckFailed) as info:
            engine.card_for_image(engine.prepare(image_bytes("PNG")))
        assert info.value.checks == ["description_min_words"]
        assert "100 words" in calls[1][1][0]
        assert "pattern" in engine.schema["properties"]["description_long"]  # the contract's
    finally:
        engine.close()


def test_image_bitmaps_do_not_redirect_the_process_stdio(llava_engine, monkeypatch) -> None:
    """The handlers' suppress_stdout_stderr points fds 1 and 2 at /dev/null while a bitmap is
    made: another thread's log line written then is lost (a worker lost a card.done line)."""
    redirected: list[tuple[int, int]] = []
    real_dup2 = os.dup2

    def watch(fd: int, fd2: int, *args: object) -> int:
        redirected.append((fd, fd2))
        return real_dup2(fd, fd2, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "dup2", watch)
    llava_engine.generate(llava_engine.prepare(image_bytes("JPEG")), seed=3)
    assert not [pair for pair in redirected if pair[1] in (1, 2)], redirected


def red_product() -> bytes:
    """A red product on a white backdrop: the pixels say vermelho, whatever the model says."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (480, 360), (250, 250, 250))
    ImageDraw.Draw(image).ellipse((120, 60, 360, 300), fill=(200, 25, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def with_policy(monkeypatch, engine: CardEngine, policy: str) -> None:
    monkeypatch.setattr(
        engine, "settings", engine.settings.model_copy(update={"colour_check": policy})
    )


def test_the_colour_check_flags_a_colour_the_pixels_dispute(monkeypatch, llava_engine) -> None:
    scripted(monkeypatch, llava_engine, [(card_text(color_primary="branco"), "stop")])
    outcome = llava_engine.card_for_image(llava_engine.prepare(red_product()), seed=1)
    assert outcome.checks is not None and outcome.checks.colour is not None
    colour = outcome.checks.colour
    assert (colour.model, colour.estimate, colour.agrees) == ("branco", "vermelho", False)
    assert colour.action == "flagged" and colour.distance is not None and colour.distance > 15
    assert outcome.card.color_primary == "branco" and outcome.attempts == 1


def test_an_agreeing_colour_is_not_flagged(monkeypatch, llava_engine) -> None:
    scripted(monkeypatch, llava_engine, [(card_text(color_primary="vermelho"), "stop")])
    outcome = llava_engine.card_for_image(llava_engine.prepare(red_product()), seed=1)
    assert outcome.checks is not None and outcome.checks.colour is not None
    assert outcome.checks.colour.agrees and outcome.checks.colour.action == "none"


def test_replace_puts_the_pixels_colour_on_the_card(monkeypatch, llava_engine) -> None:
    with_policy(monkeypatch, llava_engine, "replace")
    scripted(monkeypatch, llava_engine, [(card_text(color_primary="branco"), "stop")])
    outcome = llava_engine.card_for_image(llava_engine.prepare(red_product()), seed=1)
    assert outcome.card.color_primary == "vermelho"
    assert outcome.checks is not None and outcome.checks.colour is not None
    colour = outcome.checks.colour
    assert (colour.generated, colour.model, colour.action) == ("branco", "vermelho", "replaced")


def test_retry_asks_again_with_the_pixels_colour(monkeypatch, llava_engine) -> None:
    with_policy(monkeypatch, llava_engine, "retry")
    calls = scripted(
        monkeypatch,
        llava_engine,
        [
            (card_text(color_primary="branco"), "stop"),
            (card_text(color_primary="vermelho"), "stop"),
        ],
    )
    outcome = llava_engine.card_for_image(llava_engine.prepare(red_product()), seed=1)
    assert outcome.attempts == 2 and outcome.card.color_primary == "vermelho"
    assert "vermelho" in calls[1][1][0]  # the corrective note names the pixels' colour
    assert outcome.checks is not None and outcome.checks.colour is not None
    assert outcome.checks.colour.agrees and outcome.checks.colour.action == "retried"


def test_retry_keeps_the_first_card_flagged_when_the_retry_disagrees_too(
    monkeypatch, llava_engine
) -> None:
    with_policy(monkeypatch, llava_engine, "retry")
    scripted(
        monkeypatch,
        llava_engine,
        [(card_text(color_primary="branco"), "stop"), (card_text(color_primary="azul"), "stop")],
    )
    outcome = llava_engine.card_for_image(llava_engine.prepare(red_product()), seed=1)
    assert outcome.card.color_primary == "branco" and outcome.attempts == 2
    assert outcome.checks is not None and outcome.checks.colour is not None
    assert not outcome.checks.colour.agrees and outcome.checks.colour.action == "retried"
