"""The card contract: bounds, enums, closed objects, and the exported JSON Schema file."""

from __future__ import annotations

import json
import re

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
from schemas.export import JSON_DIR, render, stale_files, write_all
from schemas.language import EN, PT_BR, colour_pattern, profile_for
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
