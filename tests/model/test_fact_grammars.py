"""The shop's facts through the engine: the grammar forces them, the card carries them."""

from __future__ import annotations

import pytest

from schemas.facts import ProductFacts
from services.inference.card.errors import GenerationError
from services.inference.card.facts import bind
from tests.support.engines import load_engine
from tests.support.images import image_bytes

pytestmark = pytest.mark.model

FACTS = ProductFacts(
    sku="PAN-45",
    brand="Tramontina",
    gtin="7891000315507",
    color="azul",
    attributes={"material": "couro"},
)
RULES = {
    "colour_vocabulary": "enforce",
    "min_description_words": 20,
    "language_check": False,  # random weights write no language at all
}


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["slots", "one-at-a-time"])
def test_the_grammar_forces_the_brand_and_colour_and_the_card_carries_the_ids(
    tiny_pairs, shared_prefix: bool
) -> None:
    """Random weights cannot know the brand or the colour: only the grammar can put them on
    the card.  Both llguidance paths (the batched engine's slots and llama-cpp-python's own
    loop) use the variant; a second card with the same facts reuses its compiled grammar."""
    engine = load_engine(tiny_pairs["llava"], shared_prefix=shared_prefix, **RULES)
    try:
        outcomes = []
        for seed in (3, 4):
            try:
                outcomes.append(engine.card_for_bytes(image_bytes("JPEG"), seed=seed, facts=FACTS))
            except GenerationError as exc:  # a random card may break another rule
                assert exc.attempts
        assert engine.fact_grammars.compiled == 1
        plain = engine.generate(engine.prepare(image_bytes("JPEG")), seed=3)
    finally:
        engine.close()
    assert outcomes, "no card came out of two tries"
    for outcome in outcomes:
        card = outcome.card
        assert "Tramontina" in card.product_name and card.color_primary == "azul"
        assert (card.sku, card.brand, card.gtin) == ("PAN-45", "Tramontina", "7891000315507")
        record = outcome.checks.facts if outcome.checks else None
        assert record is not None and record.copied == ["sku", "brand", "gtin"]
        assert record.forced["color_primary"] == "azul"
        leaf = engine.tree.leaf(card.category_path)
        assert leaf is not None
        material = next((a for a in leaf.attributes if a.name == "material"), None)
        if material is not None and "couro" in material.values:  # forced in this category
            assert card.attributes["material"] == "couro"
            assert record.forced["attributes.material"] == "couro"
        else:  # the category has no such attribute, or not that value: said so
            assert [u.fact for u in record.unused] == ["material"]
    assert "Tramontina" not in plain.text  # without facts, the engine's own grammar


def test_gbnf_compiles_its_own_variant_of_the_grammar(tiny_pairs) -> None:
    """llama.cpp's grammar sampler gets the forced schema as GBNF, parsed and proven by
    llama.cpp as the engine's own grammar was at start."""
    engine = load_engine(tiny_pairs["llava"], grammar_backend="gbnf", **RULES)
    try:
        binding = bind(FACTS, engine.schema, engine.tree, engine.settings.profile)
        constraint = engine.fact_grammars.for_binding(binding)
        assert constraint.grammar is not None and constraint.grammar is not engine.grammar
        assert constraint.guidance is None
        assert engine.fact_grammars.for_binding(binding) is constraint
        assert (
            engine.fact_grammars.for_binding(
                bind(None, engine.schema, engine.tree, engine.settings.profile)
            ).grammar
            is engine.grammar
        )
    finally:
        engine.close()
