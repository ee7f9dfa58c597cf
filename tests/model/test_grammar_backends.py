"""Both grammar backends enforce the same schema rules, proven on generated output.

The tiny random-weight models write gibberish and almost never close a string on their own, so
with a card whose bounds are small every string runs into its ``maxLength``: the bounds are
actually exercised, not just declared.  Each output is checked three independent ways: JSON
parsing, the ``jsonschema`` validator and the Pydantic model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from pydantic import ConfigDict, Field, StringConstraints

from schemas.card import ProductCard, parse_generated
from schemas.taxonomy import Taxonomy
from services.inference.card.errors import GrammarError
from services.inference.engine.card_engine import CardEngine
from services.inference.engine.decoding import Decoder
from services.inference.settings import EngineSettings
from tests.support.engines import load_engine
from tests.support.images import image_bytes

pytestmark = pytest.mark.model

BACKENDS = ("llguidance", "gbnf")
SMALL_TAXONOMY = ("Casa", "Moda e Acessórios", "Brinquedos e Jogos")
SHORT = Annotated[str, StringConstraints(min_length=2, max_length=12)]


class SmallCard(ProductCard):
    """A product card with tight bounds, so random weights hit every one of them."""

    product_name: str = Field(min_length=3, max_length=16, description="Name.")
    category_standard: Literal[SMALL_TAXONOMY] = Field(description="Category.")  # type: ignore[valid-type]
    description_long: str = Field(min_length=5, max_length=40, description="Description.")
    color_primary: str = Field(min_length=3, max_length=10, description="Colour.")
    features_list: list[SHORT] = Field(min_length=3, max_length=3, description="Features.")

    taxonomy = Taxonomy.flat_list(SMALL_TAXONOMY)  # the model writes {"path": <a name>}


def engine_for(pair: Any, card: type[ProductCard], **overrides: object) -> CardEngine:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EngineSettings, "card_type", lambda _self, **_kw: card)
        return load_engine(pair, **overrides)


@pytest.fixture(scope="module", params=[(b, h) for b in BACKENDS for h in ("llava", "mtmd")])
def small_engine(request, tiny_pairs) -> Iterator[CardEngine]:
    backend, handler = request.param
    engine = engine_for(tiny_pairs[handler], SmallCard, grammar_backend=backend, max_tokens=400)
    yield engine
    engine.close()


def assert_schema_holds(engine: CardEngine, text: str) -> dict:
    doc = json.loads(text)
    jsonschema.validate(doc, engine.schema)
    parse_generated(text, engine.card_type)
    props = engine.schema["properties"]
    assert list(doc) == list(props)  # every field, in order, nothing else
    tree = engine.card_type.taxonomy
    assert tree is not None and tree.leaf(doc["category"]["path"]) is not None
    assert len(doc["features_list"]) == 3
    for name in ("product_name", "description_long", "color_primary"):
        assert len(doc[name]) <= props[name]["maxLength"]
    return doc


def bound_hits(engine: CardEngine, doc: dict) -> int:
    props = engine.schema["properties"]
    hits = sum(
        len(doc[name]) == props[name]["maxLength"]
        for name in ("product_name", "description_long", "color_primary")
    )
    return hits + sum(len(f) == 12 for f in doc["features_list"])


def test_schema_rules_hold_on_generated_output(small_engine) -> None:
    image = small_engine.prepare(image_bytes("JPEG"))
    # llama.cpp's GBNF sampler is ~10x slower per token: fewer seeds keep the suite quick.
    seeds = 8 if small_engine.settings.grammar_backend == "llguidance" else 4
    hits = 0
    for seed in range(seeds):
        raw = small_engine.generate(image, seed=seed)
        assert raw.finish_reason == "stop", raw.text
        hits += bound_hits(small_engine, assert_schema_holds(small_engine, raw.text))
        assert raw.timings.completion_tokens > 0
    assert hits >= seeds, "the length bounds were never reached: the test would not catch overruns"


def test_llguidance_fast_forwards_forced_tokens(small_engine) -> None:
    image = small_engine.prepare(image_bytes("PNG"))
    t = small_engine.generate(image, seed=3).timings
    if small_engine.settings.grammar_backend == "gbnf":
        assert t.forced_tokens == 0 and t.mask_ms == 0
        return
    # '{"product_name": "' alone is several forced tokens; every key and separator adds more.
    assert t.forced_tokens >= 10
    assert t.completion_tokens > t.forced_tokens
    assert t.mask_ms > 0


def test_same_seed_same_card_other_seed_other_card(small_engine) -> None:
    image = small_engine.prepare(image_bytes("JPEG"))
    first = small_engine.generate(image, seed=11).text
    assert small_engine.generate(image, seed=11).text == first
    assert small_engine.generate(image, seed=12).text != first


def test_mask_only_llguidance_holds_the_schema_without_forcing(tiny_pairs) -> None:
    engine = engine_for(tiny_pairs["llava"], SmallCard, grammar_fast_forward=False, max_tokens=400)
    try:
        image = engine.prepare(image_bytes("JPEG"))
        for seed in range(4):
            raw = engine.generate(image, seed=seed)
            assert raw.finish_reason == "stop"
            assert_schema_holds(engine, raw.text)
            assert raw.timings.forced_tokens == 0
    finally:
        engine.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_card_schema_holds_under_each_backend(tiny_pairs, backend) -> None:
    engine = load_engine(tiny_pairs["llava"], grammar_backend=backend)
    try:
        image = engine.prepare(image_bytes("JPEG"))
        for seed in range(2):
            raw = engine.generate(image, seed=50 + seed)
            assert raw.finish_reason == "stop"
            doc = assert_schema_holds(engine, raw.text)
            assert len(doc["description_long"]) >= 400  # minLength holds too
    finally:
        engine.close()


def test_token_budget_counts_forced_tokens(tiny_pairs) -> None:
    engine = engine_for(tiny_pairs["llava"], SmallCard, max_tokens=64)
    try:
        raw = engine.generate(engine.prepare(image_bytes("JPEG")), seed=1)
    finally:
        engine.close()
    assert raw.finish_reason == "length"
    assert raw.timings.completion_tokens == 64
    assert raw.timings.forced_tokens > 0


class LookaheadCard(SmallCard):
    """A schema rule neither backend can enforce: a regex with look-ahead."""

    model_config = ConfigDict(regex_engine="python-re")

    product_name: str = Field(
        min_length=3, max_length=20, pattern=r"^(?=[A-Z])\w+$", description="Name."
    )


class UniqueFeaturesCard(SmallCard):
    """``uniqueItems``: llguidance does not implement it, the GBNF converter neither."""

    features_list: list[SHORT] = Field(
        min_length=3, max_length=3, json_schema_extra={"uniqueItems": True}
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("card", [LookaheadCard, UniqueFeaturesCard])
def test_unenforceable_schema_fails_at_start_up(tiny_pairs, backend, card) -> None:
    with pytest.raises(GrammarError):
        engine_for(tiny_pairs["llava"], card, grammar_backend=backend)


def test_own_loop_samples_exactly_like_llama_cpp_python(tiny_pairs) -> None:
    """Without a grammar, the decoder and llama-cpp-python's loop use the same sampler chain and
    seed on the same logits, so they must write the same text: the llguidance backend's
    temperature / top-p / penalty / seed mean what they mean for the GBNF backend."""
    stock = load_engine(tiny_pairs["llava"], grammar_backend="none", max_tokens=80)
    own = load_engine(tiny_pairs["llava"], grammar_backend="none", max_tokens=80)
    own.decoder = Decoder(own.llm, None, fast_forward=False)
    try:
        image = stock.prepare(image_bytes("JPEG"))
        for seed in (1, 2, 3):
            expected = stock.generate(image, seed=seed)
            got = own.generate(image, seed=seed)
            assert got.text == expected.text
            assert got.finish_reason == expected.finish_reason
            assert got.timings.completion_tokens == expected.timings.completion_tokens
    finally:
        stock.close()
        own.close()


def test_backend_setting(monkeypatch) -> None:
    assert EngineSettings().grammar_backend == "llguidance"
    monkeypatch.setenv("VITRINE_GRAMMAR_BACKEND", "gbnf")
    assert EngineSettings().grammar_backend == "gbnf"
    monkeypatch.setenv("VITRINE_GRAMMAR_BACKEND", "llama")  # the fallback's earlier name
    assert EngineSettings().grammar_backend == "gbnf"
    monkeypatch.setenv("VITRINE_GRAMMAR_BACKEND", "xgrammar")
    with pytest.raises(ValueError):
        EngineSettings()


def test_decoder_is_scoped_to_generate(tiny_pairs) -> None:
    """Outside ``generate`` the engine's Llama is stock llama-cpp-python (no hidden grammar)."""
    engine = engine_for(tiny_pairs["llava"], SmallCard, max_tokens=64)
    try:
        image = engine.prepare(image_bytes("JPEG"))
        engine.generate(image, seed=1)
        assert engine.llm.decoder is None
        response = engine.llm.create_chat_completion(
            messages=engine.prompt.messages(image.data_uri()), max_tokens=16, seed=1
        )
        text = response["choices"][0]["message"]["content"]
        assert not text.startswith('{"product_name": "')
    finally:
        engine.close()
