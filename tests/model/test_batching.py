"""The batched engine (``slots.py``): several generations in one llama.cpp context, each its own.

On the tiny f32 models a sequence's logits do not depend on its batch-mates (each output row of
an f32 matrix product is the same dot product whatever the batch), so "intact" can be checked
exactly: a card generated beside others is the card generated alone.  The real-weight version
of the single-sequence check is in ``test_real_weights.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.inference.card.errors import (
    CardError,
    ContextOverflow,
    InferenceError,
    JobTimeout,
    ModelLoadError,
)
from services.inference.card.outcome import CardOutcome, RawGeneration
from services.inference.engine.capacity import check_kv_fits, choose_slots, kv_shape
from services.inference.engine.card_engine import CardEngine
from services.inference.engine.native import submit_native
from services.inference.image.preprocess import PreparedImage
from services.inference.worker import engines as worker_engines
from tests.support.engines import load_engine, tiny_settings
from tests.support.images import photo
from tests.support.rss import rss_mb

pytestmark = [pytest.mark.model]


@pytest.fixture(scope="module")
def engines(tiny_pairs) -> Iterator[tuple[CardEngine, CardEngine]]:
    """The same model twice: one generation at a time, each prefilling its whole prompt
    (llama-cpp-python's own path), and four slots sharing the prompt's prefix."""
    alone = load_engine(tiny_pairs["llava"], engine_parallel=1, shared_prefix=False, max_tokens=256)
    batched = load_engine(tiny_pairs["llava"], engine_parallel=4, max_tokens=256)
    yield alone, batched
    alone.close()
    batched.close()


@pytest.fixture(scope="module")
def images(engines) -> list[PreparedImage]:
    return [engines[0].prepare(photo(i)) for i in range(6)]


def together(engine: CardEngine, calls: list) -> list:  # type: ignore[type-arg]
    """Run the calls from as many threads at once; each result or the exception it raised."""
    barrier = threading.Barrier(len(calls))

    def run(call):  # type: ignore[no-untyped-def]
        barrier.wait()
        try:
            return call()
        except CardError as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.parametrize("pair", ["llava", "mtmd"])
def test_concurrent_cards_are_each_a_card_or_a_typed_error(tiny_pairs, pair: str) -> None:
    # the settings under which random weights can end with a card (tests/support/pipeline.py)
    engine = load_engine(
        tiny_pairs[pair],
        engine_parallel=4,
        max_attempts=2,
        colour_vocabulary="enforce",
        min_description_words=20,
        language_check=False,
    )
    try:
        assert engine.parallel == 4 and engine.slots is not None
        data = [photo(i) for i in range(8)]
        results = together(
            engine, [lambda d=d, i=i: engine.card_for_bytes(d, seed=i) for i, d in enumerate(data)]
        )
        assert all(isinstance(r, (CardOutcome, CardError)) for r in results), results
        assert any(isinstance(r, CardOutcome) for r in results)
        for r in results:
            if isinstance(r, CardError):
                assert r.reason  # a stable reason code, never a bare exception
        assert engine.slots.peak_occupancy == 4  # they really were decoded together
        tokens = sum(r.timings.completion_tokens for r in results if isinstance(r, CardOutcome))
        assert engine.slots.steps < tokens
    finally:
        engine.close()


def test_a_lone_generation_in_a_slot_is_the_sequential_one(engines, images) -> None:
    """At occupancy 1 the batched engine makes the same decode calls as the single-sequence
    path, except that the prompt's text before the image is copied from the shared prefix
    (evaluated once) instead of evaluated: the same seed gives the same tokens, byte for byte."""
    alone, batched = engines
    assert batched.slots is not None and batched.slots.prefix is not None
    for seed in (1, 2, 3):
        a = alone.generate(images[seed], seed=seed)
        b = batched.generate(images[seed], seed=seed)
        assert (b.text, b.finish_reason) == (a.text, a.finish_reason)
        assert b.timings.completion_tokens == a.timings.completion_tokens
        assert b.timings.forced_tokens == a.timings.forced_tokens
        assert b.timings.prompt_tokens == a.timings.prompt_tokens
        assert a.timings.cached_tokens == 0
        assert b.timings.cached_tokens == len(batched.slots.prefix.tokens) > 100
    assert batched.slots.prefix.evaluations == 1


def test_batch_mates_do_not_change_a_card(engines, images) -> None:
    alone, batched = engines
    reference = [alone.generate(images[i], seed=10 + i) for i in range(6)]
    # six generations for four slots: two wait, then take the slots the first ones free
    got = together(
        batched, [lambda i=i: batched.generate(images[i], seed=10 + i) for i in range(6)]
    )
    assert [g.text for g in got] == [r.text for r in reference]


def test_a_retry_keeps_its_image_and_is_the_full_prefill_retry(engines, images) -> None:
    """Within a card's lease a retry truncates its slot back to just after the image and
    evaluates only the task line and the note: no second image encode, and the same tokens as
    the same retry prefilled whole."""
    alone, batched = engines
    assert batched.slots is not None
    note = ["a descrição tem 12 palavras; o mínimo é 40"]
    reference = alone.generate(images[4], seed=31, retry_problems=note)
    with batched.slots.lease() as lease:
        first = batched.generate(images[4], seed=30, lease=lease)
        retry = batched.generate(images[4], seed=31, retry_problems=note, lease=lease)
        other = batched.generate(images[5], seed=31, retry_problems=note, lease=lease)
    assert retry.text == reference.text
    assert first.timings.image_encode_ms > 0 and other.timings.image_encode_ms > 0
    assert retry.timings.image_encode_ms == 0
    evaluated = retry.timings.prompt_tokens - retry.timings.cached_tokens
    assert 0 < evaluated < first.timings.prompt_tokens - first.timings.cached_tokens
    # another image in the same slot is encoded, and is that image's card
    assert other.text == alone.generate(images[5], seed=31, retry_problems=note).text
    # the lease is over: the slot is free for anyone, and clean
    assert batched.generate(images[4], seed=31, retry_problems=note).text == reference.text


def test_a_timeout_or_an_overflow_leaves_its_batch_mates_intact(engines, images) -> None:
    alone, batched = engines
    reference = {i: alone.generate(images[i], seed=20 + i).text for i in (0, 1)}
    too_long = ["palavra " * 6000]  # a retry note no slot of 4096 tokens can hold

    def timed_out() -> RawGeneration:
        # 50 ms is less than this generation alone (a prefill, then 256 tokens): it ends as a
        # timeout wherever the budget runs out (in the queue, its prefill, or between steps)
        return batched.generate(images[2], seed=22, deadline=time.monotonic() + 0.05)

    got = together(
        batched,
        [
            lambda: batched.generate(images[0], seed=20),
            timed_out,
            lambda: batched.generate(images[3], seed=23, retry_problems=too_long),
            lambda: batched.generate(images[1], seed=21),
        ],
    )
    assert isinstance(got[1], JobTimeout)
    assert isinstance(got[2], ContextOverflow) and "VITRINE_N_CTX" in str(got[2])
    assert got[0].text == reference[0] and got[3].text == reference[1]
    # and the slots they left are clean: the next generation there is the lone one again
    assert batched.generate(images[0], seed=20).text == reference[0]


def test_a_new_prompt_is_decoded_in_the_same_step_as_its_batch_mates_tokens(
    engines, images
) -> None:
    """The prompt's text after the image is not decoded alone while the batch-mates wait: it
    goes into a shared step, in the same ``llama_decode`` as the other sequences' next
    tokens (llama-server's order), and the cards are still those generated alone."""
    alone, batched = engines
    assert batched.slots is not None
    reference = [alone.generate(images[i], seed=50 + i).text for i in range(6)]
    mixed = 0  # decodes that ended a prompt beside another sequence's next token
    slots, step = batched.slots, batched.slots._decode

    def watched(rows: list) -> None:  # type: ignore[type-arg]
        nonlocal mixed
        kinds = {slot.prompting for slot, _ in rows}
        mixed += kinds == {True, False}
        step(rows)

    slots._decode = watched  # type: ignore[method-assign]
    try:
        got = together(
            batched, [lambda i=i: batched.generate(images[i], seed=50 + i) for i in range(6)]
        )
    finally:
        del slots._decode
    assert [g.text for g in got] == reference
    assert mixed >= 1  # six for four slots: the last two start while others decode


def test_the_prefix_warmed_at_start_serves_the_first_card_and_steps_can_be_off(
    tiny_pairs, engines, images
) -> None:
    """``warm_prefix`` evaluates the shared prefix before any card (the first card then copies
    it like every other); with ``prefill_in_steps`` off the prompt's last text is decoded in
    the card's own prefill, and the card is the same."""
    alone, _ = engines
    engine = load_engine(
        tiny_pairs["llava"], engine_parallel=2, prefill_in_steps=False, max_tokens=256
    )
    try:
        assert engine.slots is not None and engine.slots.prefix is not None
        engine.warm_prefix()
        assert engine.slots.prefix.evaluations == 1 and engine.slots.prefix.build_ms > 0
        got = engine.generate(images[2], seed=60)
        assert engine.slots.prefix.evaluations == 1
        assert got.timings.cached_tokens == len(engine.slots.prefix.tokens)
        assert got.text == alone.generate(images[2], seed=60).text
    finally:
        engine.close()


def test_the_worker_s_engine_has_its_prefix_before_it_takes_a_job(tiny_pairs) -> None:
    """``VITRINE_ENGINE=llama`` (what the worker loads before joining its group) evaluates
    the shared prefix at start, so the first job does not pay for it."""
    settings = tiny_settings(tiny_pairs["llava"], engine_parallel=2, max_tokens=64)
    engine = worker_engines.load_engine("llama", settings)
    try:
        assert isinstance(engine, CardEngine)
        assert engine.slots is not None and engine.slots.prefix.evaluations == 1
    finally:
        engine.close()


def test_a_generation_asked_on_the_llama_thread_is_refused(engines, images) -> None:
    """The llama.cpp thread runs the ticks that decode every slot: a generation asked there
    would wait for a tick queued behind itself.  It is refused at once instead; should that
    regress, the wait is cut short here (its request failed) so the thread is not lost."""
    _, batched = engines
    slots = batched.slots
    assert slots is not None
    messages = batched.prompt.messages(images[0].data_uri())
    refused: list[BaseException] = []

    def ask() -> None:
        try:
            slots.generate(messages, batched._sampling(1), deadline=None, budget_s=0)
        except InferenceError as exc:
            refused.append(exc)

    asked = submit_native(ask)
    try:
        asked.result(timeout=30)
    except TimeoutError:
        with slots._lock:
            while slots._queue:
                slots._queue.popleft().future.set_exception(InferenceError("gave up"))
        asked.result(timeout=30)
        pytest.fail("generate on the llama.cpp thread waited for its own tick")
    assert len(refused) == 1 and "llama.cpp thread" in str(refused[0])
    assert batched.generate(images[0], seed=20).finish_reason  # the engine is whole


def test_slots_whose_kv_cache_does_not_fit_are_refused_at_start(tiny_pairs) -> None:
    model = tiny_pairs["llava"].model
    shape = kv_shape(model)
    assert shape is not None and shape.bytes_per_token() > 0
    with pytest.raises(ModelLoadError, match="lower VITRINE_ENGINE_PARALLEL or VITRINE_N_CTX"):
        check_kv_fits(model, 8, 4096, on_gpu=False, available=shape.bytes_per_token() * 4096)
    assert check_kv_fits(model, 8, 4096, on_gpu=False, available=2**40) > 0
    # and through a real start: more cells than this machine has memory, before allocating
    n_ctx = 2**40 // (shape.bytes_per_token() * 256) + 512
    with pytest.raises(ModelLoadError, match=r"256 slots and the shared prefix x \d+ tokens need"):
        load_engine(tiny_pairs["llava"], engine_parallel=256, n_ctx=n_ctx)


def test_the_slot_count_rule() -> None:
    assert choose_slots("auto", grammar_backend="llguidance", n_gpu_layers=0, gpu=True)[0] == 8
    assert choose_slots("auto", grammar_backend="llguidance", n_gpu_layers=-1, gpu=True)[0] == 16
    assert choose_slots("auto", grammar_backend="llguidance", n_gpu_layers=-1, gpu=False)[0] == 8
    assert choose_slots(3, grammar_backend="llguidance", n_gpu_layers=0)[0] == 3
    assert choose_slots("auto", grammar_backend="gbnf", n_gpu_layers=0)[0] == 1
    with pytest.raises(ModelLoadError, match="llguidance"):
        choose_slots(4, grammar_backend="gbnf", n_gpu_layers=0)


@pytest.mark.slow
def test_rss_is_flat_over_500_cards_at_8_slots(tiny_pairs) -> None:
    engine = load_engine(tiny_pairs["mtmd"], engine_parallel=8, max_tokens=64, max_attempts=1)
    data = [photo(i) for i in range(10)]
    samples: dict[int, float] = {}
    try:
        with ThreadPoolExecutor(8) as pool:
            for block in range(10):  # 10 x 50 cards, 8 at a time
                futures = [
                    pool.submit(lambda i=i: together_one(engine, data[i % 10], i))
                    for i in range(block * 50, (block + 1) * 50)
                ]
                assert all(isinstance(f.result(), CardError) for f in futures)
                samples[(block + 1) * 50] = rss_mb()
        assert engine.slots is not None and engine.slots.peak_occupancy == 8
    finally:
        engine.close()
    growth = samples[500] - samples[100]
    print(f"8 slots: RSS after 100: {samples[100]:.1f} MB, after 500: {samples[500]:.1f} MB")
    assert growth < 50, f"RSS grew {growth:.1f} MB between card 100 and 500"


def together_one(engine: CardEngine, data: bytes, seed: int) -> object:
    try:
        return engine.card_for_bytes(data, seed=seed)
    except CardError as exc:  # 64 tokens cannot hold a card: truncated, every time
        return exc
