"""Unit tests of the semantic checks the grammar cannot express."""

from __future__ import annotations

from schemas.card import ProductCard, card_model
from schemas.language import EN, PT_BR
from services.inference.card.checks import check_card, count_words, is_known_colour
from tests.support.card_text import LONG_DESCRIPTION


def card(**overrides: object) -> ProductCard:
    """A card as the model wrote it: the checks see it whether or not a grammar held it."""
    values = {
        "product_name": "Cadeira de escritório ergonômica",
        "category_standard": "Móveis",
        "description_long": LONG_DESCRIPTION,
        "color_primary": "preto",
        "features_list": ["Encosto com apoio lombar", "Rodízios silenciosos", "Altura regulável"],
    }
    values.update(overrides)
    return ProductCard.model_construct(**values)


def names(failures) -> list[str]:
    return [f.check for f in failures]


def test_a_good_card_passes() -> None:
    assert check_card(card(), PT_BR, 150) == []


def test_word_count_counts_compounds_and_numbers_once() -> None:
    assert count_words("guarda-roupa de 3 portas, 1,5 m — lindo!") == 7
    assert count_words("") == 0


def test_short_description_fails_with_the_count() -> None:
    failures = check_card(
        card(description_long=" ".join(LONG_DESCRIPTION.split()[:80])), PT_BR, 150
    )
    assert names(failures) == ["description_min_words"]
    assert "80 words" in failures[0].detail


def test_repetition_loop_is_not_prose() -> None:
    looped = "muito bom " * 200
    assert names(check_card(card(description_long=looped[:2000]), PT_BR, 150)) == [
        "description_repetitive"
    ]


def test_colour_vocabulary_accepts_compounds_accents_and_gender() -> None:
    for colour in (
        "azul-marinho",
        "Verde oliva",
        "preta",
        "bordô",
        "BORDO",
        "off-white",
        "azul claro",
        "rosé",
        "cinza chumbo",
        "preto e branco",
    ):
        assert is_known_colour(colour, PT_BR), colour
    for colour in ("sky", "azul muito muito muito claro", "", "42", "blue"):
        assert not is_known_colour(colour, PT_BR), colour
    assert is_known_colour("navy blue", EN) and not is_known_colour("azul", EN)


def test_unknown_colour_fails() -> None:
    assert names(check_card(card(color_primary="furta-cor"), PT_BR, 150)) == ["color_vocabulary"]


def test_features_must_be_distinct_ignoring_case_accents_and_punctuation() -> None:
    dup = ["Altura regulável", "altura regulavel!", "Rodízios silenciosos"]
    assert names(check_card(card(features_list=dup), PT_BR, 150)) == ["features_distinct"]
    blank = ["-----------", "Altura regulável", "Rodízios silenciosos"]
    assert names(check_card(card(features_list=blank), PT_BR, 150)) == ["features_blank"]


def test_several_failures_are_all_reported() -> None:
    failures = check_card(
        card(color_primary="xyz", description_long=" ".join(LONG_DESCRIPTION.split()[:80])),
        PT_BR,
        150,
    )
    assert set(names(failures)) == {"description_min_words", "color_vocabulary"}


def test_a_valid_card_passes_the_contract_too() -> None:
    assert card_model(PT_BR.taxonomy).model_validate(card().model_dump()).description_long == (
        LONG_DESCRIPTION
    )


def test_an_english_description_fails_the_language_check() -> None:
    english = (
        "This ergonomic office chair is designed for people who sit for long hours and need "
        "comfort with a correct posture. The breathable mesh back follows the curve of the spine "
        "and has an adjustable lumbar support that relieves tension in the back, the neck and "
        "the shoulders. "
    ) * 4
    failures = [f for f in check_card(card(description_long=english), PT_BR, 150)]
    assert "language" in names(failures)
    detail = next(f.detail for f in failures if f.check == "language")
    assert "English" in detail and "description_long" in detail


def test_english_names_and_features_fail_the_language_check() -> None:
    failures = check_card(
        card(
            features_list=[
                "Back with lumbar support",
                "Quiet and smooth wheels",
                "Height of the seat",
            ]
        ),
        PT_BR,
        150,
    )
    assert names(failures) == ["language"]
    assert "features_list" in failures[0].detail


def test_a_portuguese_card_passes_the_language_check_and_an_english_profile_rejects_it() -> None:
    assert check_card(card(), PT_BR, 150) == []
    assert "language" in names(check_card(card(), EN, 150))


def test_a_description_that_copies_the_instructions_fails() -> None:
    """Measured on Gemma 3 270M: cards that passed every other rule opened with the field
    guide's own sentence; a copied run of 8 words is an echo, a shared phrase is not."""
    prompt = (
        "- description_long: Descrição rica e boa para SEO, em prosa corrida: o que é o "
        "produto, materiais e acabamento visíveis, como e onde é usado."
    )
    echoed = (
        "descrição rica e boa para SEO, em prosa corrida: o que é o produto. " + LONG_DESCRIPTION
    )
    failures = check_card(card(description_long=echoed[:2000]), PT_BR, 150, prompt=prompt)
    assert names(failures) == ["description_echoes_prompt"]
    assert "rica e boa para SEO" in failures[0].detail
    # the same words in another order, or a short shared phrase, are the product's own prose
    assert check_card(card(), PT_BR, 150, prompt=prompt) == []
    assert check_card(card(), PT_BR, 150, prompt=LONG_DESCRIPTION[:40]) == []
