"""The card contract: bounds, enums, closed objects, and the exported JSON Schema file."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas.card import (
    DESCRIPTION_MAX_CHARS,
    ProductCard,
    bounded_description_pattern,
    card_json_schema,
    card_model,
    description_pattern,
)
from schemas.contract import CardContract
from schemas.export import JSON_DIR, render, stale_files, write_all
from schemas.language import EN, PT_BR, colour_pattern, profile_for
from schemas.messages import ImageJob, ObjectRef
from services.inference.card.checks import count_words, is_known_colour
from services.inference.settings import EngineSettings

GOOD = {
    "product_name": "Cadeira de escritório ergonômica",
    "category_standard": "Móveis",
    "category_path": "Móveis",
    "category_id": "moveis",
    "description_long": "palavra " * 160,
    "color_primary": "preto",
    "features_list": ["Encosto com apoio lombar", "Rodízios silenciosos", "Altura regulável"],
}


DESCRIPTION_WORDS = (
    "A caneca de cerâmica azul tem alça confortável, acabamento brilhante e boca larga. " * 20
)


def test_exported_schema_file_is_current() -> None:
    assert stale_files() == [], "run: python -m schemas.export"


def test_stale_detection_notices_a_changed_file(tmp_path) -> None:
    write_all(tmp_path)
    assert stale_files(tmp_path) == []
    (tmp_path / "product_card.schema.json").write_text(render({"old": True}), encoding="utf-8")
    (tmp_path / "image_job.schema.json").unlink()
    assert stale_files(tmp_path) == ["product_card.schema.json", "image_job.schema.json"]


def test_committed_schema_carries_the_default_taxonomy_as_enum() -> None:
    schema = json.loads((JSON_DIR / "product_card.schema.json").read_text(encoding="utf-8"))
    assert schema["properties"]["category_standard"]["enum"] == list(PT_BR.taxonomy)
    assert schema["additionalProperties"] is False


def test_every_string_is_bounded() -> None:
    schema = card_json_schema()
    props = schema["properties"]
    for name in ("product_name", "description_long", "color_primary"):
        assert 0 < props[name]["maxLength"] <= 2000, name
    assert props["features_list"]["items"]["maxLength"] <= 2000
    assert props["features_list"]["minItems"] == props["features_list"]["maxItems"] == 3
    assert props["description_long"]["maxLength"] == DESCRIPTION_MAX_CHARS


def test_category_outside_taxonomy_is_rejected() -> None:
    model = card_model(["Móveis", "Eletrônicos"])
    assert model.model_validate(GOOD).category_standard == "Móveis"
    with pytest.raises(ValidationError):
        model.model_validate({**GOOD, "category_standard": "Carros"})
    with pytest.raises(ValidationError):
        model.model_validate({**GOOD, "category_path": "Carros", "category_id": "carros"})
    assert issubclass(model, ProductCard)


def test_extra_fields_and_wrong_feature_count_are_rejected() -> None:
    model = card_model(PT_BR.taxonomy)
    with pytest.raises(ValidationError):
        model.model_validate({**GOOD, "price": "R$ 10"})
    with pytest.raises(ValidationError):
        model.model_validate({**GOOD, "features_list": GOOD["features_list"][:2]})


def test_enforced_colours_become_an_enum() -> None:
    schema = card_model(PT_BR.taxonomy, PT_BR.colours).model_json_schema()
    assert "preto" in schema["properties"]["color_primary"]["enum"]
    with pytest.raises(ValidationError):
        card_model(PT_BR.taxonomy, PT_BR.colours).model_validate({**GOOD, "color_primary": "x"})


def test_empty_or_oversized_taxonomy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        card_model([" ", ""])
    with pytest.raises(ValueError, match="longer than"):
        card_model(["x" * 200])


def test_taxonomy_from_environment_json_semicolons_and_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VITRINE_TAXONOMY", "Cama, Mesa e Banho; Móveis")
    assert EngineSettings().categories() == ("Cama, Mesa e Banho", "Móveis")
    monkeypatch.setenv("VITRINE_TAXONOMY", '["A", "B"]')
    assert EngineSettings().categories() == ("A", "B")
    monkeypatch.delenv("VITRINE_TAXONOMY")
    path = tmp_path / "tax.txt"
    path.write_text("# categories\nSofás\n\nMesas  # tables\n", encoding="utf-8")
    monkeypatch.setenv("VITRINE_TAXONOMY_FILE", str(path))
    assert EngineSettings().categories() == ("Sofás", "Mesas")


def test_language_selects_default_taxonomy(monkeypatch) -> None:
    monkeypatch.setenv("VITRINE_LANGUAGE", "en")
    assert EngineSettings().categories() == EN.taxonomy
    with pytest.raises(ValueError, match="unsupported output language"):
        profile_for("xx")


def test_the_description_pattern_counts_words() -> None:
    model = card_model(PT_BR.taxonomy)
    pattern = re.compile(description_pattern(150))
    words = DESCRIPTION_WORDS.split()
    assert pattern.fullmatch(" ".join(words[:150])) and not pattern.fullmatch(" ".join(words[:149]))
    assert pattern.fullmatch("\n\n".join(words[:150]) + "\n")  # paragraphs, a final newline
    assert not pattern.fullmatch(" ".join(["—"] * 10 + words[:145]))  # a dash is no word
    with pytest.raises(ValidationError, match="pattern"):
        model.model_validate({**GOOD, "description_long": " ".join(words[:149])})
    assert card_model(PT_BR.taxonomy, min_words=20).model_validate(
        {**GOOD, "description_long": " ".join(words[:80])}
    )


def test_every_word_the_pattern_counts_is_a_word_for_the_checks() -> None:
    for pattern in (
        re.compile(description_pattern(3)),
        re.compile(bounded_description_pattern(3, 3)),
    ):
        for text in ("«Caneca» (azul), 350ml!", "a b c", "—a— 1 ...z", "azul,verde x y"):
            assert pattern.fullmatch(text), text
            assert count_words(text) >= 3, text
        assert not pattern.fullmatch("— a b"), "a dash is no word"


def test_what_the_grammar_generates_is_in_the_contract() -> None:
    contract, bounded = (
        re.compile(description_pattern(5)),
        re.compile(bounded_description_pattern(5)),
    )
    for text in ("a b c d e", "\n  um, dois; três —quatro cinco\n", "x " * 300):
        assert not bounded.fullmatch(text) or contract.fullmatch(text), text
    assert contract.fullmatch("x " * 300) and not bounded.fullmatch("x " * 300)  # 300 > 250


def test_the_colour_pattern_is_the_vocabulary_check_as_a_grammar() -> None:
    for profile in (PT_BR, EN):
        pattern = re.compile(colour_pattern(profile))
        connectors = profile.colour_connectors
        modifiers = sorted(profile.colour_modifiers - connectors)
        bases = sorted(c for c in profile.colours if "-" not in c and " " not in c)
        for base in bases:
            for mod in modifiers:
                for text in (base, f"{base}-{mod}", f"{base} {mod}", f"{base} {mod} {mod}"):
                    assert pattern.fullmatch(text) and is_known_colour(text, profile), text
        for joined in (f"{bases[0]} {c} {bases[1]}" for c in connectors):
            assert pattern.fullmatch(joined) and is_known_colour(joined, profile), joined
    pt = re.compile(colour_pattern(PT_BR))
    assert pt.fullmatch("azul-marinho") and pt.fullmatch("off-white")
    for bad in ("yellow-marinho", "160", "Dominant colour of the product", "azul e", "azul "):
        assert not pt.fullmatch(bad), bad


def test_the_published_schema_carries_both_patterns() -> None:
    props = card_json_schema()["properties"]
    assert props["description_long"]["pattern"] == description_pattern(150)
    assert props["color_primary"]["pattern"] == colour_pattern(PT_BR)
    assert props["description_long"]["maxLength"] == DESCRIPTION_MAX_CHARS  # both still apply


def test_empty_variables_are_unset_as_compose_passes_them(monkeypatch) -> None:
    for name in ("VITRINE_HANDLER", "VITRINE_CPU_REPACK", "VITRINE_COLOUR_VOCABULARY"):
        monkeypatch.setenv(name, "")
    settings = EngineSettings()
    assert settings.handler is None and settings.cpu_repack == "auto"
    assert settings.colour_vocabulary == "grammar"


def contract(**changes) -> CardContract:
    given = {
        "language": "pt-BR",
        "colour_vocabulary": "grammar",
        "min_description_words": 150,
        "word_minimum": "grammar",
        **changes,
    }
    return CardContract(**given)


def test_the_default_contract_is_the_published_card() -> None:
    assert contract().card_type().model_json_schema() == card_json_schema()
    assert contract().tree() is contract().tree()  # the shipped tree, loaded once


def test_the_contract_holds_colour_and_word_rules_as_configured() -> None:
    props = contract(colour_vocabulary="enforce").card_type().model_json_schema()["properties"]
    assert "preto" in props["color_primary"]["enum"] and "pattern" not in props["color_primary"]
    props = contract(colour_vocabulary="check").card_type().model_json_schema()["properties"]
    assert "enum" not in props["color_primary"] and "pattern" not in props["color_primary"]
    props = contract(min_description_words=60).card_type().model_json_schema()["properties"]
    assert props["description_long"]["pattern"] == description_pattern(60)
    for unpatterned in (
        contract(word_minimum="check").card_type(),
        contract().card_type(word_pattern=False),
    ):
        props = unpatterned.model_json_schema()["properties"]
        assert "pattern" not in props["description_long"]


def test_the_contracts_tree_is_the_flat_list_else_the_file_else_the_language(tmp_path) -> None:
    path = tmp_path / "tree.txt"
    path.write_text("Sofás\nMesas\n", encoding="utf-8")
    assert contract(taxonomy=("A", "B"), taxonomy_file=path).categories() == ("A", "B")
    from_file = contract(taxonomy_file=path)
    assert from_file.categories() == ("Sofás", "Mesas")
    assert from_file.tree() is from_file.tree()  # read once per version of the file
    stamp = path.stat().st_mtime_ns
    path.write_text("Camas\n", encoding="utf-8")
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    assert from_file.categories() == ("Camas",)
    assert contract(language="en").categories() == EN.taxonomy
    with pytest.raises(ValueError, match="cannot read the category tree"):
        contract(taxonomy_file=tmp_path / "missing.txt").tree()


def test_the_engine_settings_card_is_the_contracts(monkeypatch) -> None:
    monkeypatch.setenv("VITRINE_TAXONOMY", "A; B")
    monkeypatch.setenv("VITRINE_WORD_MINIMUM", "check")
    settings = EngineSettings()
    expected = contract(taxonomy=("A", "B"), word_minimum="check")
    assert settings.card_contract() == expected
    assert settings.card_type() is expected.card_type()
    assert settings.categories() == ("A", "B")


ROW = {
    "bucket": "incoming",
    "object_key": "a/caneca.jpg",
    "version_id": "v1",
    "etag": "abc",
    "size_bytes": 1234,
    "content_type": "image/jpeg",
    "sequencer": Decimal(0x17F00000000000AB),
    "event_time": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    "status": "done",
}


def test_an_object_ref_from_a_row_carries_the_sequencer_as_hex() -> None:
    ref = ObjectRef.from_row(ROW)
    assert (ref.bucket, ref.key, ref.version_id, ref.etag, ref.size) == (
        "incoming",
        "a/caneca.jpg",
        "v1",
        "abc",
        1234,
    )
    assert ref.sequencer == "17F00000000000AB" and ref.sequence == 0x17F00000000000AB
    bare = ObjectRef.from_row(
        {k: ROW[k] for k in ("bucket", "object_key", "sequencer", "event_time")}
    )
    assert (bare.version_id, bare.etag, bare.size, bare.content_type) == (None,) * 4


def test_a_reprocessed_job_keeps_the_events_job_id_with_a_new_trace() -> None:
    ref = ObjectRef.from_row(ROW)
    first, second = ImageJob.reprocess(ref), ImageJob.reprocess(ref)
    assert first.job_id == second.job_id == ImageJob.job_id_for(ref)
    assert first.object == ref and first.attempt == 2
    assert re.fullmatch(r"[0-9a-f]{32}", first.trace_id) and first.trace_id != second.trace_id


# -- what PostgreSQL can keep: no NUL, no lone surrogate, finite numbers (F7, F8) ---------------

MUG_PATH = "Casa e Cozinha > Potes e Garrafas > Garrafas Térmicas e Squeezes"


def mug_card(**fields: object) -> dict[str, object]:
    from schemas.card import default_taxonomy

    leaf = default_taxonomy(PT_BR).leaf(MUG_PATH)
    assert leaf is not None
    return {
        **GOOD,
        "category_standard": leaf.top,
        "category_path": leaf.path_text,
        "category_id": leaf.id,
        "description_long": DESCRIPTION_WORDS,
        "color_primary": "azul",
        **fields,
    }


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_a_card_number_must_be_finite(number: float) -> None:
    """F8: ``1e999`` in an edit is ``inf`` to Python's json and was stored as ``null``."""
    strict = card_model(colour_regex=colour_pattern(PT_BR), min_words=60)
    attributes = {"capacidade": {"value": number, "unit": "L"}}
    for card_type in (ProductCard, strict):
        with pytest.raises(ValidationError) as refused:
            card_type.model_validate(mug_card(attributes=attributes))
        [error] = refused.value.errors()
        assert error["loc"] == ("attributes",) and "finite number" in error["msg"]
    assert strict.model_validate(mug_card(attributes={"capacidade": {"value": 0.5, "unit": "L"}}))


def test_a_tree_attribute_number_must_be_finite() -> None:
    from schemas.card import default_taxonomy

    leaf = default_taxonomy(PT_BR).leaf(MUG_PATH)
    assert leaf is not None
    problems = leaf.attribute_problems({"capacidade": {"value": float("inf"), "unit": "L"}})
    assert problems and "finite" in problems[0]
    assert leaf.attribute_problems({"capacidade": {"value": 10**400, "unit": "L"}}) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("product_name", "Garrafa\x00térmica"),
        ("color_primary", "az\x00ul"),
        ("description_long", DESCRIPTION_WORDS + "\x00"),
        ("features_list", ["Encosto com apoio lombar", "Rodízios\x00silenciosos", "Altura ok!"]),
        ("attributes", {"material": "aço\x00inox"}),
        ("attributes", {"mate\x00rial": "aço inox"}),
        ("product_name", "Garrafa \ud800 térmica"),
    ],
)
def test_card_text_with_nul_or_a_lone_surrogate_is_refused(field: str, value: object) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000: an edit with one was a 500."""
    strict = card_model(colour_regex=colour_pattern(PT_BR), min_words=60)
    for card_type in (ProductCard, strict):
        with pytest.raises(ValidationError) as refused:
            card_type.model_validate(mug_card(**{field: value}))
        assert any(e["loc"][:1] == (field,) for e in refused.value.errors())


def test_a_value_nested_too_deep_is_refused_without_recursion() -> None:
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValidationError, match="nested more than"):
        ProductCard.model_validate(mug_card(attributes={"x": deep}))


@pytest.mark.parametrize(
    "body",
    [
        {"product_name": "a\x00b"},
        {"attributes": {"capacidade": {"value": float("inf"), "unit": "L"}}},
        {"features_list": ["ok ok ok ok", "b\ud800"]},
    ],
)
def test_an_edit_request_refuses_what_the_card_cannot_store(body: dict[str, object]) -> None:
    from schemas.api import CardEdit

    with pytest.raises(ValidationError):
        CardEdit.model_validate(body)
    parsed = CardEdit.model_validate_json('{"product_name": "Garrafa térmica"}')
    assert parsed.changes() == {"product_name": "Garrafa térmica"}


def test_a_decision_note_is_bounded_and_storable() -> None:
    from schemas.api import NOTE_MAX, Decision

    assert Decision(note="x" * NOTE_MAX).note
    for note in ("x" * (NOTE_MAX + 1), "a\x00b", "a\udfffb"):
        with pytest.raises(ValidationError):
            Decision(note=note)
