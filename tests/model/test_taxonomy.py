"""Category trees: loading, errors, grouping, the prompt's outline, the card contract, both
grammar backends and the engine on a 6,000-leaf tree.

The trees here are the shipped pt-BR tree (``schemas/taxonomies/pt-BR.yaml``), small trees
written inline, and ``tests/support/big_tree.py``'s generated tree the size of Google's Product
Taxonomy (20 roots x 10 branches x 30 leaves, attributes on every root and every third branch).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from llama_cpp import Llama
from llguidance import LLMatcher, LLTokenizer
from llguidance.llamacpp import lltokenizer_from_vocab
from pydantic import ValidationError

from schemas.card import (
    DERIVED,
    ProductCard,
    card_fields,
    card_model,
    category_schema,
    default_taxonomy,
    generation_schema,
    parse_generated,
)
from schemas.language import PT_BR, colour_pattern
from schemas.taxonomy import Taxonomy, TaxonomyError, slug
from services.inference.card.errors import GenerationError
from services.inference.engine.decoding import JSON_OPTIONS
from services.inference.engine.grammar import grammar_schema, json_schema_to_gbnf
from services.inference.settings import EngineSettings
from tests.support import big_tree
from tests.support.card_text import LONG_DESCRIPTION
from tests.support.engines import load_engine
from tests.support.images import image_bytes
from tests.support.llama_grammar import accepted_by_llama_cpp, gbnf_accepts

FEATURES = ["Alça confortável", "Cerâmica resistente", "Boca larga e lisa"]
COLOUR = "azul-marinho"


# -- trees ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return big_tree.write("yaml", tmp_path_factory.mktemp("big-tree") / "big.yaml")


@pytest.fixture(scope="module")
def big_google(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return big_tree.write("google", tmp_path_factory.mktemp("big-tree") / "big.txt")


@pytest.fixture(scope="module")
def big(big_yaml: Path) -> Taxonomy:
    return Taxonomy.load(big_yaml)


@pytest.fixture(scope="module")
def shipped() -> Taxonomy:
    return default_taxonomy(PT_BR)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def derived_id(path: tuple[str, ...]) -> str:
    return ".".join(slug(p) for p in path)


def assert_inherited_first(tree: Taxonomy) -> None:
    """Every child's attributes start with its parent's, in the parent's order."""
    for node in tree.nodes:
        for child in node.children:
            assert child.attributes[: len(node.attributes)] == node.attributes, child.path_text


SMALL_YAML = """\
version: 1
name: loja
categories:
  - name: Calçados
    attributes:
      - name: material
        description: material do cabedal
        type: enum
        values: [couro, tecido, sintético]
        required: true
    children:
      - name: Tênis
        attributes:
          - {name: cano, description: altura do cano, type: enum, values: [baixo, alto]}
        children:
          - name: Tênis de Corrida
            attributes:
              - {name: amortecimento, description: amortecimento visível, type: boolean}
              - {name: peso, description: peso do par, type: number, unit: g}
              - {name: modelo, description: nome do modelo, type: string, max_length: 30}
          - Tênis Casual
      - name: Sandálias
        id: S-42
  - Outros
"""


def check_small_tree(tree: Taxonomy) -> None:
    assert tree.name == "loja"
    assert [(n.id, n.path_text) for n in tree.nodes] == [
        ("calcados", "Calçados"),
        ("calcados.tenis", "Calçados > Tênis"),
        ("calcados.tenis.tenis-de-corrida", "Calçados > Tênis > Tênis de Corrida"),
        ("calcados.tenis.tenis-casual", "Calçados > Tênis > Tênis Casual"),
        ("S-42", "Calçados > Sandálias"),
        ("outros", "Outros"),
    ]
    assert [leaf.id for leaf in tree.leaves] == [
        "calcados.tenis.tenis-de-corrida",
        "calcados.tenis.tenis-casual",
        "S-42",
        "outros",
    ]
    running = tree.by_id["calcados.tenis.tenis-de-corrida"]
    # inherited first (root, then branch), then its own, in declared order
    assert [a.name for a in running.attributes] == [
        "material",
        "cano",
        "amortecimento",
        "peso",
        "modelo",
    ]
    material, cano, amortecimento, peso, modelo = running.attributes
    assert (material.type, material.values, material.required) == (
        "enum",
        ("couro", "tecido", "sintético"),
        True,
    )
    assert (cano.type, cano.required) == ("enum", False)
    assert amortecimento.type == "boolean"
    assert (peso.type, peso.unit) == ("number", "g")
    assert (modelo.type, modelo.max_length) == ("string", 30)
    assert [a.name for a in tree.by_id["calcados.tenis.tenis-casual"].attributes] == [
        "material",
        "cano",
    ]
    assert [a.name for a in tree.by_id["S-42"].attributes] == ["material"]
    assert tree.by_id["outros"].attributes == ()
    assert tree.leaf("Calçados > Tênis") is None  # a branch is not a leaf
    assert tree.leaf("Calçados > Tênis > Tênis Casual") is tree.by_id["calcados.tenis.tenis-casual"]
    assert tree.leaf("Calçados > Chinelos") is None
    assert not tree.flat
    assert_inherited_first(tree)


def test_yaml_tree_with_attributes_loads(tmp_path) -> None:
    check_small_tree(Taxonomy.load(write(tmp_path / "loja.yaml", SMALL_YAML)))
    check_small_tree(Taxonomy.load(write(tmp_path / "loja.YML", SMALL_YAML)))


def test_json_tree_loads_the_same_tree(tmp_path) -> None:
    import yaml

    data = yaml.safe_load(SMALL_YAML)
    from_json = Taxonomy.load(write(tmp_path / "loja.json", json.dumps(data)))
    check_small_tree(from_json)
    assert from_json == Taxonomy.load(write(tmp_path / "loja.yaml", SMALL_YAML))
    # just the list of roots: the file's name names the tree
    bare = Taxonomy.load(write(tmp_path / "roots.json", json.dumps(data["categories"])))
    assert bare.name == "roots.json"
    assert [n.path_text for n in bare.nodes] == [n.path_text for n in from_json.nodes]


def test_google_lines_with_ids_comments_and_implicit_parents(tmp_path) -> None:
    text = (
        "# Google_Product_Taxonomy_Version: 2021-09-21\n"
        "1 - Animais\n"
        "3237 - Animais > Pet Shop   # a trailing comment\n"
        "\n"
        "   # an indented comment line\n"
        "2 - Animais > Pet Shop > Coleiras\n"
        "505 - Brinquedos > Bonecas > Bonecas de Pano\n"  # neither parent has a line
        "10 - Casa > Cozinha\n"
        "9 - Casa\n"  # the parent's line after its child's: its id still wins
    )
    tree = Taxonomy.load(write(tmp_path / "taxonomy-with-ids.pt-BR.txt", text))
    assert tree.name == "taxonomy-with-ids.pt-BR.txt"
    assert [(n.id, n.path_text) for n in tree.nodes] == [
        ("1", "Animais"),
        ("3237", "Animais > Pet Shop"),
        ("2", "Animais > Pet Shop > Coleiras"),
        ("brinquedos", "Brinquedos"),
        ("brinquedos.bonecas", "Brinquedos > Bonecas"),
        ("505", "Brinquedos > Bonecas > Bonecas de Pano"),
        ("9", "Casa"),
        ("10", "Casa > Cozinha"),
    ]
    assert [leaf.path_text for leaf in tree.leaves] == [
        "Animais > Pet Shop > Coleiras",
        "Brinquedos > Bonecas > Bonecas de Pano",
        "Casa > Cozinha",
    ]
    assert all(n.attributes == () for n in tree.nodes)
    assert not tree.flat


def test_path_lines_without_ids_and_plain_names(tmp_path) -> None:
    paths = Taxonomy.load(
        write(
            tmp_path / "paths.txt",
            "Casa > Cozinha > Panelas\nCasa > Cozinha > Talheres\nCasa > Banho\nOutros\n",
        )
    )
    assert [(n.id, n.path_text) for n in paths.nodes] == [
        ("casa", "Casa"),
        ("casa.cozinha", "Casa > Cozinha"),
        ("casa.cozinha.panelas", "Casa > Cozinha > Panelas"),
        ("casa.cozinha.talheres", "Casa > Cozinha > Talheres"),
        ("casa.banho", "Casa > Banho"),
        ("outros", "Outros"),
    ]
    names = Taxonomy.load(
        write(tmp_path / "flat.txt", "Móveis\nCama, Mesa e Banho\n\n  Pet   Shop  \nOutros\n")
    )
    assert [(n.id, n.path_text) for n in names.nodes] == [
        ("moveis", "Móveis"),
        ("cama-mesa-e-banho", "Cama, Mesa e Banho"),
        ("pet-shop", "Pet Shop"),  # whitespace folded
        ("outros", "Outros"),
    ]
    assert names.flat and names.leaves == names.roots
    flat = Taxonomy.flat_list(["Móveis", "Cama, Mesa e Banho", "Pet Shop", "Outros"])
    assert [(n.id, n.path_text) for n in flat.nodes] == [(n.id, n.path_text) for n in names.nodes]


def test_big_tree_reads_alike_from_google_lines_and_yaml(big, big_google) -> None:
    google = Taxonomy.load(big_google)
    assert (len(big.nodes), len(big.leaves), len(big.roots)) == (6220, 6000, 20)
    assert [n.path_text for n in google.nodes] == [n.path_text for n in big.nodes]
    assert [n.id for n in google.nodes] == [str(i) for i in range(1, 6221)]  # ids given
    assert all(n.id == derived_id(n.path) for n in big.nodes)  # ids derived
    assert len(google.attribute_groups()) == 1  # no attributes
    assert_inherited_first(big)


def test_the_shipped_tree(shipped) -> None:
    assert len(shipped.roots) == 26
    assert [r.name for r in shipped.roots] == list(PT_BR.taxonomy)  # today's flat list
    assert [r.top for r in shipped.roots] == list(PT_BR.taxonomy)
    assert max(len(leaf.attributes) for leaf in shipped.leaves) <= 6
    assert len(shipped.leaves) > len(shipped.roots)
    running = shipped.by_id["calcados.tenis.tenis-de-corrida"]
    assert running.path_text == "Calçados > Tênis > Tênis de Corrida"
    assert running.is_leaf and running.top == "Calçados"
    assert all(n.id == derived_id(n.path) for n in shipped.nodes)
    assert_inherited_first(shipped)
    for leaf in shipped.leaves:  # every attribute name once per leaf
        names = [a.name for a in leaf.attributes]
        assert len(names) == len(set(names)), leaf.path_text


def test_settings_choose_the_tree(monkeypatch, tmp_path, big_yaml, big, shipped) -> None:
    monkeypatch.delenv("VITRINE_TAXONOMY", raising=False)
    monkeypatch.delenv("VITRINE_TAXONOMY_FILE", raising=False)
    monkeypatch.setenv("VITRINE_LANGUAGE", "pt-BR")
    assert EngineSettings().tree() == shipped
    monkeypatch.setenv("VITRINE_TAXONOMY_FILE", str(big_yaml))
    assert EngineSettings().tree() == big
    assert len(EngineSettings().categories()) == 6000
    monkeypatch.setenv("VITRINE_TAXONOMY", "Casa; Moda")  # the explicit list wins
    assert [n.path_text for n in EngineSettings().tree().nodes] == ["Casa", "Moda"]
    monkeypatch.delenv("VITRINE_TAXONOMY")
    monkeypatch.setenv("VITRINE_TAXONOMY_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(TaxonomyError, match="cannot read the category tree"):
        EngineSettings().tree()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("tree.txt", "# Google_Product_Taxonomy_Version: 2021-09-21\n1 - Casa\n2 - Casa > Banho\n"),
        ("tree.json", json.dumps({"categories": [{"name": "Casa", "children": ["Banho"]}]})),
    ],
    ids=["google-lines", "json"],
)
def test_a_byte_order_mark_is_not_part_of_the_tree(tmp_path, name, text) -> None:
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert [n.path_text for n in Taxonomy.load(path).nodes] == ["Casa", "Casa > Banho"]


# -- clear errors -----------------------------------------------------------------------------


def attr(**fields: Any) -> dict[str, Any]:
    return {"name": "cor", "description": "a cor", "type": "boolean", **fields}


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        (
            [{"name": "Casa", "children": ["Banho", "Cozinha", "Banho"]}],
            r"categories\[0\] \(Casa\): child 'Banho' appears twice",
        ),
        (["Casa", "Moda", "Casa"], r"root category 'Casa' appears twice"),
        (
            [{"name": "Casa", "children": ["Banho > Toalhas"]}],
            r"categories\[0\] \(Casa\) children\[0\]: name 'Banho > Toalhas' contains '>'",
        ),
        (
            [
                {
                    "name": "Casa",
                    "attributes": [attr()],
                    "children": [{"name": "Banho", "attributes": [attr()]}],
                }
            ],
            r"\(Casa > Banho\): attribute cor is already declared above",
        ),
        ([{"name": "Casa", "attributes": [attr(name="Cor")]}], r"'Cor' must be lowercase ASCII"),
        ([{"name": "Casa", "attributes": [attr(name="tipo-fone")]}], r"snake_case"),
        ([{"name": "Casa", "attributes": [attr(name="1cor")]}], r"snake_case"),
        ([{"name": "Casa", "attributes": [attr(name="c" * 41)]}], r"snake_case"),
        (
            [{"name": "Casa", "attributes": [attr(type="enum", values=["azul"])]}],
            r"attribute cor: an enum needs a list of at least two values",
        ),
        (
            [{"name": "Casa", "attributes": [attr(type="enum", values=["azul", " azul"])]}],
            r"enum values repeat",
        ),
        (
            [{"name": "Casa", "attributes": [attr(name="peso", type="number")]}],
            r"attribute peso: a number needs its unit",
        ),
        (
            [{"name": "Casa", "attributes": [attr(name="peso", type="number", unit=" ")]}],
            r"a number needs its unit",
        ),
        ([{"name": "Casa", "cor": "azul"}], r"categories\[0\]: unknown keys \['cor'\]"),
        (
            [{"name": "Casa", "attributes": [attr(default=True)]}],
            r"unknown attribute keys \['default'\]",
        ),
        (
            [{"name": "Casa", "attributes": [attr(type="date")]}],
            r"attribute cor: type must be enum, string, number or boolean, not 'date'",
        ),
        ([{"name": "Casa", "attributes": [attr(description="")]}], r"needs a description"),
        (
            [{"name": "Casa", "children": ["Tênis", "Tenis"]}],
            r"'Casa > Tenis' and 'Casa > Tênis' have the same id 'casa.tenis'",
        ),
        (
            [{"name": "Casa", "children": ["Banho"]}, {"name": "Moda", "id": "casa.banho"}],
            r"'Moda' and 'Casa > Banho' have the same id 'casa.banho'",
        ),
        (
            [{"name": "Casa", "id": "2"}, {"name": "Moda", "id": "2"}],
            r"'Moda' and 'Casa' have the same id '2'; give one of them an explicit id",
        ),
        ([], r"the tree has no categories"),
        ([{"name": "  "}], r"a category needs a non-empty name"),
        ([{"name": "Casa", "children": "Banho"}], r"children is a list"),
    ],
)
def test_a_bad_tree_is_a_clear_error(categories, message) -> None:
    with pytest.raises(TaxonomyError, match=message):
        Taxonomy.from_data({"name": "t", "categories": categories}, "t.yaml")


def test_bad_files_are_clear_errors(tmp_path) -> None:
    cases = [
        ("empty.yaml", "", r"empty.yaml: expected a list of categories"),
        ("top.yaml", "categorias: [Casa]\n", r"unknown top-level keys \['categorias'\]"),
        ("version.yaml", "version: 2\ncategories: [Casa]\n", r"version 2 \(this reads 1\)"),
        ("broken.yaml", "categories: [Casa\n", r"broken.yaml: not valid YAML"),
        ("broken.json", '{"categories": ', r"broken.json: not valid JSON"),
        ("comments.txt", "# only a header\n\n   \n", r"comments.txt: the tree has no categories"),
        ("gap.txt", "Casa\nCasa >  > Banho\n", r"gap.txt:2: a category needs a non-empty name"),
        ("twice.txt", "1 - Casa\n2 - Moda\n1 - Casa\n", r"twice.txt:3: 'Casa' appears twice"),
        ("ids.txt", "7 - Casa\n7 - Moda\n", r"'Moda' and 'Casa' have the same id '7'"),
        (
            "fold.txt",
            "Casa > Tênis\nCasa > Tenis\n",
            r"'Casa > Tenis' and 'Casa > Tênis' have the same id 'casa.tenis'",
        ),
    ]
    for name, text, message in cases:
        with pytest.raises(TaxonomyError, match=message):
            Taxonomy.load(write(tmp_path / name, text))
    with pytest.raises(TaxonomyError, match="cannot read the category tree"):
        Taxonomy.load(tmp_path / "missing.txt")
    with pytest.raises(TaxonomyError, match="no categories"):
        Taxonomy.flat_list([])
    with pytest.raises(TaxonomyError, match="same id 'tenis'"):
        Taxonomy.flat_list(["Tênis", "Tenis"])


# -- groups and the outline -------------------------------------------------------------------


def test_attribute_groups_of_the_generated_tree(big) -> None:
    groups = big.attribute_groups()
    assert len(groups) == 90
    seen = [leaf.id for _, leaves in groups for leaf in leaves]
    assert len(seen) == len(set(seen)) == 6000  # each leaf in exactly one group
    assert set(seen) == {leaf.id for leaf in big.leaves}
    keys = [attributes for attributes, _ in groups]
    assert len(set(keys)) == len(keys)
    for attributes, leaves in groups:
        assert all(leaf.attributes == attributes for leaf in leaves)
        assert [a.name for a in attributes][:2] == ["material", "tamanho"]
        # in tree order within a group
        order = [big.leaves.index(leaf) for leaf in leaves]
        assert order == sorted(order)


def test_attribute_groups_of_the_shipped_tree(shipped) -> None:
    groups = shipped.attribute_groups()
    seen = [leaf.id for _, leaves in groups for leaf in leaves]
    assert sorted(seen) == sorted(leaf.id for leaf in shipped.leaves)
    assert len(seen) == len(set(seen))
    assert len({a for a, _ in groups}) == len(groups)


@pytest.mark.parametrize("budget", [700, 1000, 2000, 3200 * 5 // 8, 6000, 20000, 100_000])
def test_outline_respects_its_budget_and_lists_every_root(big, budget) -> None:
    outline = big.outline(budget)
    assert len(outline) <= budget
    lines = outline.split("\n")
    assert len(lines) == len(big.roots)
    for line, root in zip(lines, big.roots, strict=True):
        assert line.startswith(f"- {root.name} (")
    if budget >= 2000:  # room for some children of every root
        for root in big.roots:
            assert root.children[0].name in outline


def test_outline_lists_roots_even_past_a_tiny_budget(big, shipped) -> None:
    for tree in (big, shipped):
        outline = tree.outline(50)
        assert [line.split(" (")[0] for line in outline.split("\n")] == [
            f"- {r.name}" for r in tree.roots
        ]


def test_outline_grows_with_its_budget(big) -> None:
    sizes = [len(big.outline(b)) for b in (1000, 2000, 6000, 20000, 100_000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    full = big.outline(10**7)
    assert "…" not in full
    assert all(leaf.name in full for leaf in big.leaves)


def test_full_shipped_outline_names_every_node(shipped) -> None:
    full = shipped.outline(10**6)
    assert "…" not in full
    for node in shipped.nodes:
        assert node.name in full, node.path_text
    assert len(shipped.outline(len(full))) == len(full)
    partial = shipped.outline(len(full) - 1)
    assert len(partial) < len(full) and "…" in partial


def test_prompt_carries_the_outline_within_the_tree_budget(monkeypatch, big_yaml, big) -> None:
    monkeypatch.delenv("VITRINE_TAXONOMY", raising=False)
    settings = EngineSettings(taxonomy_file=big_yaml, taxonomy_prompt_chars=3200)
    prompt = settings.prompt(generation_schema(settings.card_type()))
    outline = big.outline(3200 * 5 // 8)
    assert outline in prompt.user
    guide = big.attribute_guide(3200 - len(outline))
    assert guide and guide in prompt.user
    assert len(outline) + len(guide) <= 3200


# -- the card contract ------------------------------------------------------------------------

SMART_TV = "Eletrônicos > TV e Vídeo > Smart TVs"
FONES = "Eletrônicos > Áudio > Fones de Ouvido"


def card(path: str, tree: Taxonomy, **overrides: Any) -> dict[str, Any]:
    leaf = tree.by_path[path]
    return {
        "product_name": "Smart TV de tela plana",
        "category_standard": leaf.top,
        "category_path": path,
        "category_id": leaf.id,
        "attributes": {},
        "description_long": LONG_DESCRIPTION,
        "color_primary": "preto",
        "features_list": FEATURES,
        **overrides,
    }


def test_a_card_naming_a_leaf_with_valid_attributes_is_accepted(shipped) -> None:
    model = card_model(shipped)
    tv = model.model_validate(
        card(
            SMART_TV,
            shipped,
            attributes={"tamanho_tela": {"value": 55, "unit": "polegadas"}, "tipo_tela": "oled"},
        )
    )
    assert (tv.category_id, tv.category_standard) == (
        "eletronicos.tv-e-video.smart-tvs",
        "Eletrônicos",
    )
    model.model_validate(card(SMART_TV, shipped))  # both optional
    model.model_validate(
        card(FONES, shipped, attributes={"tipo_fone": "auricular", "sem_fio": True})
    )
    model.model_validate(
        card(SMART_TV, shipped, attributes={"tamanho_tela": {"value": 32.5, "unit": "polegadas"}})
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {
                "category_path": "Eletrônicos > TV e Vídeo",
                "category_id": "eletronicos.tv-e-video",
            },
            "is not a leaf",
        ),
        (
            {
                "category_path": "Eletrônicos > TV e Vídeo > Televisores de Tubo",
                "category_id": "eletronicos.tv-e-video.televisores-de-tubo",
            },
            "is not a leaf",
        ),
        ({"category_path": "Carros", "category_id": "carros"}, "is not a leaf"),
        ({"category_id": "eletronicos.tv-e-video.projetores"}, "category_id/category_standard"),
        ({"category_standard": "Informática"}, "category_id/category_standard"),
        ({"attributes": {"cor": "preto"}}, "cor: not an attribute of"),
        ({"attributes": {"tipo_tela": "plasma"}}, "tipo_tela: must be one of"),
        ({"attributes": {"tamanho_tela": {"value": 55}}}, "tamanho_tela: must be"),
        ({"attributes": {"tamanho_tela": {"value": 55, "unit": "cm"}}}, "tamanho_tela: must be"),
        ({"attributes": {"tamanho_tela": 55}}, "tamanho_tela: must be"),
        (
            {"attributes": {"tamanho_tela": {"value": True, "unit": "polegadas"}}},
            "tamanho_tela: must be",
        ),
        (
            {"attributes": {"tamanho_tela": {"value": 55, "unit": "polegadas", "x": 1}}},
            "tamanho_tela: must be",
        ),
    ],
    ids=[
        "branch",
        "not-in-tree",
        "flat-name",
        "wrong-id",
        "wrong-standard",
        "undeclared",
        "wrong-enum",
        "no-unit",
        "wrong-unit",
        "bare-number",
        "bool-number",
        "extra-key",
    ],
)
def test_a_card_outside_the_contract_is_refused(shipped, overrides, message) -> None:
    with pytest.raises(ValidationError, match=message):
        card_model(shipped).model_validate(card(SMART_TV, shipped, **overrides))


def test_required_and_typed_attributes(shipped) -> None:
    model = card_model(shipped)
    with pytest.raises(ValidationError, match=r"tipo_fone: required for"):
        model.model_validate(card(FONES, shipped, attributes={"sem_fio": True}))
    with pytest.raises(ValidationError, match=r"sem_fio: must be true or false"):
        model.model_validate(
            card(FONES, shipped, attributes={"tipo_fone": "auricular", "sem_fio": "sim"})
        )
    # an attribute of another leaf's group (Caixas de Som's) on a Fones de Ouvido card
    with pytest.raises(ValidationError, match=r"resistente_agua: not an attribute"):
        model.model_validate(
            card(FONES, shipped, attributes={"tipo_fone": "auricular", "resistente_agua": True})
        )


def test_the_big_tree_contract(big) -> None:
    model = card_model(big)
    branch0, branch3 = big.roots[0].children[0], big.roots[0].children[3]
    leaf = branch0.children[0]
    material = leaf.attributes[0]
    good = {
        "material": material.values[0],
        "tamanho": "grande",
        "acabamento_0": "liso",
    }
    model.model_validate(card(leaf.path_text, big, attributes=good))
    with pytest.raises(ValidationError, match="acabamento_3: not an attribute"):
        model.model_validate(
            card(
                leaf.path_text,
                big,
                attributes={"material": material.values[0], "acabamento_3": "liso"},
            )
        )
    assert "acabamento_3" in [a.name for a in branch3.children[0].attributes]
    with pytest.raises(ValidationError, match="material: required"):
        model.model_validate(card(leaf.path_text, big, attributes={"tamanho": "grande"}))
    with pytest.raises(ValidationError, match="is not a leaf"):
        model.model_validate(
            card(leaf.path_text, big, category_path=branch0.path_text, category_id=branch0.id)
        )


def generated(path: str, attributes: dict[str, Any] | None) -> dict[str, Any]:
    category: dict[str, Any] = {"path": path}
    if attributes is not None:
        category["attributes"] = attributes
    return {
        "product_name": "Caneca de cerâmica",
        "category": category,
        "description_long": LONG_DESCRIPTION,
        "color_primary": COLOUR,
        "features_list": FEATURES,
    }


def test_card_fields_derive_the_category_and_strip_nulls(shipped) -> None:
    doc = generated(SMART_TV, {"tamanho_tela": None, "tipo_tela": "qled"})
    fields = card_fields(doc, shipped)
    assert "category" not in fields
    assert fields["category_path"] == SMART_TV
    assert fields["category_id"] == "eletronicos.tv-e-video.smart-tvs"
    assert fields["category_standard"] == "Eletrônicos"
    assert fields["attributes"] == {"tipo_tela": "qled"}
    assert doc["category"]["attributes"] == {"tamanho_tela": None, "tipo_tela": "qled"}
    assert card_fields(generated(SMART_TV, None), shipped)["attributes"] == {}
    card_type = card_model(shipped, colour_regex=colour_pattern(PT_BR))
    parsed = parse_generated(json.dumps(doc, ensure_ascii=False), card_type)
    assert parsed.attributes == {"tipo_tela": "qled"}
    with pytest.raises(ValueError, match="not a leaf"):
        card_fields(generated("Eletrônicos > TV e Vídeo", {}), shipped)
    with pytest.raises(ValueError, match="expected an object with a path"):
        card_fields({"product_name": "x"}, shipped)
    with pytest.raises(ValueError, match="expected an object"):
        card_fields(generated(SMART_TV, ["oled"]), shipped)  # type: ignore[arg-type]


def test_the_generic_card_reads_an_old_flat_card() -> None:
    old = {
        "product_name": "Cadeira de escritório",
        "category_standard": "Móveis",
        "description_long": LONG_DESCRIPTION,
        "color_primary": "preto",
        "features_list": FEATURES,
    }
    card_ = ProductCard.model_validate(old)
    assert (card_.category_path, card_.category_id, card_.attributes) == ("Móveis", "moveis", {})
    assert ProductCard.model_validate_json(json.dumps(old)).category_path == "Móveis"
    kept = ProductCard.model_validate({**old, "category_id": "1604"})
    assert kept.category_id == "1604"
    # the generic type holds no tree: any path reads
    assert ProductCard.model_validate({**old, "category_path": "A > B", "category_id": "a.b"})


def test_category_schema_has_one_alternative_per_group(shipped) -> None:
    schema = category_schema(shipped)
    groups = shipped.attribute_groups()
    assert len(schema["anyOf"]) == len(groups)
    for alternative, (attributes, leaves) in zip(schema["anyOf"], groups, strict=True):
        assert alternative["properties"]["path"]["enum"] == [leaf.path_text for leaf in leaves]
        spec = alternative["properties"]["attributes"]
        assert list(spec["properties"]) == spec["required"] == [a.name for a in attributes]
        for a in attributes:
            nullable = "anyOf" in spec["properties"][a.name]
            assert nullable == (not a.required)
    flat = category_schema(Taxonomy.flat_list(["Casa", "Moda"]))
    assert "anyOf" not in flat and list(flat["properties"]) == ["path"]
    gen = generation_schema(card_model(shipped))
    assert list(gen["properties"]) == [
        "product_name",
        "category",
        "description_long",
        "color_primary",
        "features_list",
    ]
    assert not set(DERIVED) & set(gen["properties"])


# -- both grammar backends --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab_model(tiny_pairs) -> Iterator[Llama]:
    llm = Llama(model_path=str(tiny_pairs["llava"].model), n_ctx=256, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def guidance_tokenizer(vocab_model) -> LLTokenizer:
    with warnings.catch_warnings():  # it calls a deprecated alias once per token
        warnings.simplefilter("ignore", DeprecationWarning)
        return lltokenizer_from_vocab(vocab_model._model.vocab)


def documents(tree: Taxonomy, which: str) -> tuple[list[dict], list[dict], list[dict]]:
    """Documents of the generation schema for ``tree``: cards of the tree (accepted by the
    contract and both grammars); documents outside it (refused by all three); and documents
    the contract reads but the grammar's fixed layout refuses (every attribute present, in
    the declared order)."""
    if which == "shipped":
        good = [
            generated(
                SMART_TV, {"tamanho_tela": {"value": 55, "unit": "polegadas"}, "tipo_tela": "oled"}
            ),
            generated(
                SMART_TV, {"tamanho_tela": {"value": -0.5, "unit": "polegadas"}, "tipo_tela": None}
            ),
            generated(SMART_TV, {"tamanho_tela": None, "tipo_tela": None}),
            generated(FONES, {"sem_fio": True, "tipo_fone": "auricular"}),
            generated(FONES, {"sem_fio": None, "tipo_fone": "condução óssea"}),
            generated("Outros", {}),
        ]
        bad = [
            generated("Eletrônicos > TV e Vídeo", {}),  # a branch
            generated("Eletrônicos", {}),  # a root with children
            generated("Eletrônicos > TV e Vídeo > Smart", {}),  # a leaf's prefix
            # a real leaf's name under another branch: not a path of the tree
            generated("Eletrônicos > TV e Vídeo > Fones de Ouvido", {"tamanho_tela": None}),
            generated("Eletrônicos > Televisores", {}),
            generated(FONES, {"sem_fio": True, "resistente_agua": True}),  # Caixas de Som's
            generated(FONES, {"sem_fio": True, "tipo_fone": None}),  # required
            generated(SMART_TV, {"tamanho_tela": None, "tipo_tela": "plasma"}),
            generated(SMART_TV, {"tamanho_tela": {"value": 55, "unit": "cm"}, "tipo_tela": None}),
            generated(SMART_TV, {"tamanho_tela": 55, "tipo_tela": None}),
        ]
        layout = [
            generated(SMART_TV, {"tipo_tela": None}),
            generated(SMART_TV, {"tipo_tela": "oled", "tamanho_tela": None}),
        ]
        return good, bad, layout
    root = tree.roots[0]
    branch0, branch1 = root.children[0], root.children[1]
    leaf0, leaf1 = branch0.children[0], branch1.children[-1]
    assert [a.name for a in leaf0.attributes] == ["material", "tamanho", "acabamento_0"]
    assert [a.name for a in leaf1.attributes] == ["material", "tamanho"]
    material = leaf0.attributes[0].values[0]
    stranger = next(
        leaf.name
        for leaf in branch1.children
        if leaf.name not in {c.name for c in branch0.children}
    )
    last = tree.leaves[-1]  # the last root's last branch: another group
    last_values = dict.fromkeys(a.name for a in last.attributes)
    last_values["material"] = last.attributes[0].values[-1]
    good = [
        generated(leaf0.path_text, {"material": material, "tamanho": None, "acabamento_0": "liso"}),
        generated(leaf1.path_text, {"material": material, "tamanho": "médio"}),
        generated(last.path_text, last_values),
    ]
    bad = [
        generated(branch0.path_text, {"material": material, "tamanho": None}),
        generated(root.path_text, {"material": material, "tamanho": None}),
        generated(
            f"{branch0.path_text} > {stranger}",
            {"material": material, "tamanho": None, "acabamento_0": None},
        ),
        # acabamento_3 is the attribute of another group
        generated(leaf0.path_text, {"material": material, "tamanho": None, "acabamento_3": "liso"}),
        generated(leaf1.path_text, {"material": material, "tamanho": None, "acabamento_0": "liso"}),
        generated(leaf0.path_text, {"material": None, "tamanho": None, "acabamento_0": None}),
        generated(leaf0.path_text, {"material": "ouro", "tamanho": None, "acabamento_0": None}),
    ]
    layout = [
        generated(leaf0.path_text, {"material": material}),
        generated(leaf1.path_text, {"tamanho": None, "material": material}),
    ]
    return good, bad, layout


@pytest.fixture(scope="module", params=["big", "shipped"])
def tree_case(request, big, shipped) -> tuple[str, Taxonomy, dict[str, Any]]:
    tree = big if request.param == "big" else shipped
    schema = generation_schema(card_model(tree, colour_regex=colour_pattern(PT_BR)))
    return request.param, tree, schema


def test_the_test_documents_mean_what_they_say(tree_case) -> None:
    """The accepted documents are cards of the tree, the refused ones are not: the grammar
    tests below compare the backends with the contract itself."""
    which, tree, _ = tree_case
    card_type = card_model(tree, colour_regex=colour_pattern(PT_BR))
    good, bad, layout = documents(tree, which)
    for doc in good + layout:
        parse_generated(json.dumps(doc, ensure_ascii=False), card_type)
    for doc in bad:
        with pytest.raises(ValueError):
            parse_generated(json.dumps(doc, ensure_ascii=False), card_type)


def test_gbnf_holds_the_tree(vocab_model, tree_case) -> None:
    which, tree, schema = tree_case
    gbnf = json_schema_to_gbnf(grammar_schema(schema))
    assert accepted_by_llama_cpp(vocab_model, gbnf)
    good, bad, layout = documents(tree, which)
    for doc in good:
        assert gbnf_accepts(vocab_model, gbnf, json.dumps(doc, ensure_ascii=False)), doc["category"]
    for doc in bad + layout:
        assert not gbnf_accepts(vocab_model, gbnf, json.dumps(doc, ensure_ascii=False)), doc[
            "category"
        ]


def guidance_run(tokenizer: LLTokenizer, grammar: str, text: str) -> tuple[bool, bool]:
    """(every token consumed, the grammar accepting at the end) for ``text``'s tokens."""
    tokens = tokenizer.tokenize_str(text)
    assert tokenizer.decode_bytes(tokens) == text.encode()  # the vocabulary's own tokens
    matcher = LLMatcher(tokenizer, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    consumed = matcher.consume_tokens(tokens) and not matcher.is_error()
    return consumed, consumed and matcher.is_accepting()


def test_llguidance_holds_the_tree(guidance_tokenizer, tree_case) -> None:
    which, tree, schema = tree_case
    grammar = LLMatcher.grammar_from_json_schema(
        grammar_schema(schema, words_by_decoder=True), overrides=JSON_OPTIONS
    )
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, guidance_tokenizer)
    assert not is_error and messages == []
    good, bad, layout = documents(tree, which)
    for doc in good:
        text = json.dumps(doc, ensure_ascii=False)  # JSON_OPTIONS' separators
        assert guidance_run(guidance_tokenizer, grammar, text) == (True, True), doc["category"]
    for doc in bad + layout:
        consumed, _ = guidance_run(guidance_tokenizer, grammar, json.dumps(doc, ensure_ascii=False))
        assert not consumed, doc["category"]


# -- the engine on tiny random models ---------------------------------------------------------


@pytest.fixture(scope="module", params=[("llava", 1), ("mtmd", None)], ids=["llava-1", "mtmd-auto"])
def big_engine(request, tiny_pairs, big_yaml) -> Iterator[Any]:
    handler, parallel = request.param
    overrides: dict[str, Any] = {"taxonomy_file": big_yaml}
    if parallel is not None:
        overrides["engine_parallel"] = parallel
    engine = load_engine(tiny_pairs[handler], **overrides)
    yield engine
    engine.close()


@pytest.mark.model
def test_engine_generations_stay_in_the_big_tree(big_engine, big) -> None:
    engine = big_engine
    assert engine.card_type.taxonomy == big
    assert big.outline(engine.settings.taxonomy_prompt_chars * 5 // 8) in engine.prompt.user
    image = engine.prepare(image_bytes("JPEG"))
    finished = 0
    for seed in range(3):
        raw = engine.generate(image, seed=300 + seed)
        if raw.finish_reason != "stop":
            continue
        finished += 1
        doc = json.loads(raw.text)
        jsonschema.validate(doc, engine.schema)
        leaf = big.leaf(doc["category"]["path"])
        assert leaf is not None, doc["category"]["path"]
        values = doc["category"]["attributes"]
        assert list(values) == [a.name for a in leaf.attributes]  # exactly its group's
        for a in leaf.attributes:
            if values[a.name] is None:
                assert not a.required, a.name
            else:
                assert a.problem(values[a.name]) is None, (a.name, values[a.name])
        try:
            parsed = engine.parse(raw)
        except GenerationError:
            continue  # typed: random weights may break a rule the grammar does not hold
        assert isinstance(parsed, ProductCard)
        assert (parsed.category_path, parsed.category_id, parsed.category_standard) == (
            leaf.path_text,
            leaf.id,
            leaf.top,
        )
        assert parsed.attributes == {k: v for k, v in values.items() if v is not None}
    assert finished >= 1, "no generation finished: the test checked nothing"
