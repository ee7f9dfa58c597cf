"""Unit tests of the semantic checks the grammar cannot express."""

from __future__ import annotations

from schemas.card import card_model
from schemas.language import EN, PT_BR
from services.inference.checks import check_card, count_words, is_known_colour

VOCAB = [
    "cadeira",
    "escritório",
    "ergonômica",
    "encosto",
    "apoio",
    "lombar",
    "assento",
    "espuma",
    "densidade",
    "tecido",
    "malha",
    "respirável",
    "braços",
    "reguláveis",
    "altura",
    "rodízios",
    "silenciosos",
    "base",
    "nylon",
    "reforçada",
    "pistão",
    "gás",
    "classe",
    "conforto",
    "jornada",
    "trabalho",
    "longa",
    "postura",
    "correta",
    "coluna",
    "costas",
    "pescoço",
    "ombros",
    "ambiente",
    "home",
    "office",
    "estúdio",
    "design",
    "moderno",
    "linhas",
    "retas",
    "acabamento",
    "preto",
    "fosco",
    "limpeza",
    "fácil",
    "pano",
    "úmido",
    "montagem",
    "simples",
    "manual",
    "incluso",
    "garantia",
    "fabricante",
    "durabilidade",
    "uso",
    "diário",
    "produtividade",
    "foco",
    "bem",
    "estar",
]
DESCRIPTION = " ".join(VOCAB[i % len(VOCAB)] for i in range(160))


def card(**overrides: object):
    values = {
        "product_name": "Cadeira de escritório ergonômica",
        "category_standard": "Móveis",
        "description_long": DESCRIPTION,
        "color_primary": "preto",
        "features_list": ["Encosto com apoio lombar", "Rodízios silenciosos", "Altura regulável"],
    }
    values.update(overrides)
    return card_model().model_validate(values)


def names(failures) -> list[str]:
    return [f.check for f in failures]


def test_a_good_card_passes() -> None:
    assert check_card(card(), PT_BR, 150) == []


def test_word_count_counts_compounds_and_numbers_once() -> None:
    assert count_words("guarda-roupa de 3 portas, 1,5 m — lindo!") == 7
    assert count_words("") == 0


def test_short_description_fails_with_the_count() -> None:
    failures = check_card(card(description_long="curta " * 80), PT_BR, 150)
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
    failures = check_card(card(color_primary="xyz", description_long="curta " * 80), PT_BR, 150)
    assert set(names(failures)) == {"description_min_words", "color_vocabulary"}
