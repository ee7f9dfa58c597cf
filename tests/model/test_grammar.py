"""The JSON Schema → GBNF converter: exact where it works, loud where it cannot be exact."""

from __future__ import annotations

import json

import pytest
from llama_cpp import Llama, LlamaGrammar

from schemas.card import card_json_schema, card_model, generation_schema
from schemas.language import PT_BR, colour_pattern
from services.inference.engine.grammar import (
    SchemaNotSupported,
    grammar_schema,
    json_schema_to_gbnf,
)
from tests.support.llama_grammar import accepted_by_llama_cpp, gbnf_accepts


@pytest.fixture(scope="module")
def vocab_model(tiny_pairs) -> Llama:
    llm = Llama(model_path=str(tiny_pairs["llava"].model), n_ctx=256, verbose=False)
    yield llm
    llm.close()


def generated_flat() -> dict:
    """What the model writes for the flat pt-BR list (category = {"path": <name>})."""
    return generation_schema(card_model(PT_BR.taxonomy, colour_regex=colour_pattern(PT_BR)))


def test_card_grammar_uses_counted_repetition_and_is_accepted(vocab_model) -> None:
    gbnf = json_schema_to_gbnf(grammar_schema(generated_flat()))
    assert "char{3,120}" in gbnf and "{149,249}" in gbnf
    assert '"Móveis\\""' in gbnf and '"ônicos\\"" | "odomésticos\\""' in gbnf  # a radix tree
    assert accepted_by_llama_cpp(vocab_model, gbnf)


def test_the_card_grammar_holds_the_word_minimum_and_the_colour_names(vocab_model) -> None:
    gbnf = json_schema_to_gbnf(grammar_schema(generated_flat()))
    words = ("Caneca de cerâmica azul com alça e acabamento brilhante. " * 30).split()

    def card(description: str, colour: str) -> str:
        doc = {
            "product_name": "Caneca de cerâmica",
            "category": {"path": "Casa e Cozinha"},
            "description_long": description,
            "color_primary": colour,
            "features_list": ["Alça confortável", "Cerâmica resistente", "Boca larga e lisa"],
        }
        return json.dumps(doc, ensure_ascii=False)

    assert gbnf_accepts(vocab_model, gbnf, card(" ".join(words[:150]), "azul-marinho"))
    assert gbnf_accepts(vocab_model, gbnf, card("\n\n".join(words[:160]), "verde claro"))
    assert not gbnf_accepts(vocab_model, gbnf, card(" ".join(words[:149]), "azul"))
    assert not gbnf_accepts(vocab_model, gbnf, card(" ".join(words[:150]), "yellow-marinho"))


def test_a_pattern_is_translated_exactly(vocab_model) -> None:
    schema = {
        "type": "object",
        "properties": {"c": {"type": "string", "pattern": '^(?:a"b|[^\\sx]{2,3})(?:[ -]z)?$'}},
        "required": ["c"],
        "additionalProperties": False,
    }
    gbnf = json_schema_to_gbnf(schema)
    for value in ('a"b', "yy", "yyy-z", "qq z", "é\\é"):
        assert gbnf_accepts(vocab_model, gbnf, json.dumps({"c": value}, ensure_ascii=False)), value
    for value in ("x1", "y", "yyyy", "a b", "qq  z", "xy", "yy -"):
        assert not gbnf_accepts(vocab_model, gbnf, json.dumps({"c": value}, ensure_ascii=False)), (
            value
        )


def test_llama_cpp_python_converter_cannot_carry_the_card_schema(vocab_model) -> None:
    """Why the project has its own converter: the bundled one nests 2000 optionals, which
    llama.cpp refuses, and llama-cpp-python would then sample with no grammar at all; and it
    cannot read the card's patterns at all."""
    lengths_only = {
        **card_json_schema(),
        "properties": {
            name: {k: v for k, v in spec.items() if k != "pattern"}
            for name, spec in card_json_schema()["properties"].items()
        },
    }
    nested = LlamaGrammar.from_json_schema(json.dumps(lengths_only), verbose=False)
    assert not accepted_by_llama_cpp(vocab_model, nested._grammar)
    with pytest.raises(AssertionError, match="Unsupported pattern syntax"):
        LlamaGrammar.from_json_schema(json.dumps(card_json_schema()), verbose=False)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string"}, "unbounded string"),
        ({"type": "string", "maxLength": 2001}, "exceeds 2000"),
        ({"type": "string", "maxLength": 10, "pattern": "^a{1,3}$"}, "maxLength"),
        ({"type": "string", "pattern": "a{1,3}"}, "anchored"),
        ({"type": "string", "pattern": "^a+$"}, "unbounded repetition"),
        ({"type": "string", "pattern": "^(?=a)a$"}, "unsupported in pattern"),
        ({"oneOf": [{"type": "string", "maxLength": 3}]}, "unsupported schema"),
        ({"type": "array", "items": {"type": "integer"}}, "unbounded array"),
        (
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            "additionalProperties",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "additionalProperties": False,
            },
            "required",
        ),
    ],
)
def test_unenforceable_schemas_are_refused(schema, message) -> None:
    with pytest.raises(SchemaNotSupported, match=message):
        json_schema_to_gbnf(schema)


def test_refs_consts_and_primitives(vocab_model) -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"const": "card"},
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}, "maxItems": 2},
        },
        "required": ["kind", "n", "x", "ok", "tags"],
        "additionalProperties": False,
        "$defs": {"Tag": {"type": "string", "maxLength": 5}},
    }
    gbnf = json_schema_to_gbnf(schema)
    assert accepted_by_llama_cpp(vocab_model, gbnf)
    assert '("," space tags-item){0,1}' in gbnf
