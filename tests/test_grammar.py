"""The JSON Schema → GBNF converter: exact where it works, loud where it cannot be exact."""

from __future__ import annotations

import json

import llama_cpp
import pytest
from llama_cpp import Llama, LlamaGrammar

from schemas.card import card_json_schema
from services.inference.grammar import SchemaNotSupported, json_schema_to_gbnf


@pytest.fixture(scope="module")
def vocab_model(tiny_pairs) -> Llama:
    llm = Llama(model_path=str(tiny_pairs["llava"].model), n_ctx=256, verbose=False)
    yield llm
    llm.close()


def accepted_by_llama_cpp(llm: Llama, gbnf: str) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def test_card_grammar_uses_counted_repetition_and_is_accepted(vocab_model) -> None:
    gbnf = json_schema_to_gbnf(card_json_schema())
    assert "char{400,2000}" in gbnf
    assert '"\\"Móveis\\""' in gbnf
    assert accepted_by_llama_cpp(vocab_model, gbnf)


def test_llama_cpp_python_converter_cannot_carry_the_card_schema(vocab_model) -> None:
    """Why the project has its own converter: the bundled one nests 2000 optionals, which
    llama.cpp refuses, and llama-cpp-python would then sample with no grammar at all."""
    nested = LlamaGrammar.from_json_schema(json.dumps(card_json_schema()), verbose=False)
    assert not accepted_by_llama_cpp(vocab_model, nested._grammar)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string"}, "unbounded string"),
        ({"type": "string", "maxLength": 2001}, "exceeds 2000"),
        ({"type": "string", "maxLength": 10, "pattern": "a+"}, "pattern"),
        ({"anyOf": [{"type": "string", "maxLength": 3}]}, "unsupported schema"),
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
