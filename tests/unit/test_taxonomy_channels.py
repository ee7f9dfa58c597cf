"""Channel categories on a category tree: Google's product category id and Shopify's category
path, inherited by the leaves; the shipped pt-BR tree mapped; ``vitrine taxonomy show`` naming
the leaves a feed would send without a category.

No network: the pt-BR mappings checked here by value were looked up in Google's
``taxonomy-with-ids.en-US.txt`` (2021-09-21) and Shopify's ``dist/en/categories.txt`` (2025-06)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from schemas.card import default_taxonomy
from schemas.language import PT_BR
from schemas.taxonomy import Taxonomy, TaxonomyError

TREE = default_taxonomy(PT_BR)


def leaf(path: str) -> Any:
    node = TREE.leaf(path)
    assert node is not None, path
    return node


def test_every_shipped_leaf_has_a_shopify_category_and_all_but_outros_a_google_one() -> None:
    assert TREE.unmapped_leaves("shopify") == []
    # Google has no catch-all category: "Outros" is left for Google to classify itself.
    assert [n.path_text for n in TREE.unmapped_leaves("google")] == ["Outros"]
    assert leaf("Outros").shopify_category == "Uncategorized"


@pytest.mark.parametrize(
    ("path", "google", "shopify"),
    [
        (
            "Vestuário > Blusas e Camisetas > Camisetas",
            "212",
            "Apparel & Accessories > Clothing > Clothing Tops",
        ),
        ("Vestuário > Moda Praia", "211", "Apparel & Accessories > Clothing > Swimwear"),
        (
            "Calçados > Tênis > Tênis de Corrida",
            "187",
            "Apparel & Accessories > Shoes > Athletic Shoes",
        ),
        ("Calçados > Chinelos e Slides", "187", "Apparel & Accessories > Shoes > Sandals"),
        (
            "Bolsas e Acessórios > Óculos > Óculos de Sol",
            "178",
            "Apparel & Accessories > Clothing Accessories > Sunglasses",
        ),
        (
            "Bolsas e Acessórios > Bolsas > Pochetes",
            "3032",
            "Apparel & Accessories > Handbags, Wallets & Cases > Handbags",
        ),
        (
            "Joias e Relógios > Relógios > Relógios de Pulso",
            "201",
            "Apparel & Accessories > Jewelry > Watches",
        ),
        ("Livros > Literatura > Romances", "784", "Media > Books"),
        (
            "Eletrônicos > TV e Vídeo > Smart TVs",
            "404",
            "Electronics > Video > Televisions",
        ),
        (
            "Eletrodomésticos > Eletroportáteis > Air Fryers",
            "738",
            "Home & Garden > Kitchen & Dining > Kitchen Appliances > Deep Fryers",
        ),
    ],
)
def test_verified_pt_br_mappings(path: str, google: str, shopify: str) -> None:
    node = leaf(path)
    assert (node.google_category, node.shopify_category) == (google, shopify)


def test_roots_carry_their_channel_categories() -> None:
    roots = {r.name: r for r in TREE.roots}
    assert roots["Vestuário"].google_category == "1604"
    assert roots["Calçados"].google_category == "187"
    assert roots["Bolsas e Acessórios"].google_category == "166"
    assert roots["Joias e Relógios"].shopify_category == "Apparel & Accessories > Jewelry"


def test_mapping_leaves_the_digest_and_the_outline_alone() -> None:
    """The mapping is for the exports: a tree with and without it prompts the same."""
    bare = {"name": "t", "categories": [{"name": "Roupas", "children": ["Camisetas"]}]}
    mapped = {
        "name": "t",
        "categories": [
            {
                "name": "Roupas",
                "google_product_category": 1604,
                "shopify_category": "Apparel & Accessories > Clothing",
                "children": ["Camisetas"],
            }
        ],
    }
    a, b = Taxonomy.from_data(bare, "t"), Taxonomy.from_data(mapped, "t")
    assert a.digest == b.digest
    assert a.outline(500) == b.outline(500)


def test_leaves_inherit_the_nearest_mapping() -> None:
    tree = Taxonomy.from_data(
        {
            "categories": [
                {
                    "name": "Calçados",
                    "google_product_category": "187",
                    "shopify_category": "Apparel & Accessories > Shoes",
                    "children": [
                        {
                            "name": "Botas",
                            "shopify_category": "Apparel & Accessories > Shoes > Boots",
                        },
                        {"name": "Tênis", "children": ["Corrida"]},
                    ],
                },
                {"name": "Outros"},
            ]
        },
        "t",
    )
    botas = tree.by_path["Calçados > Botas"]
    corrida = tree.by_path["Calçados > Tênis > Corrida"]
    assert (botas.google_category, botas.shopify_category) == (
        "187",
        "Apparel & Accessories > Shoes > Boots",
    )
    assert (corrida.google_category, corrida.shopify_category) == (
        "187",
        "Apparel & Accessories > Shoes",
    )
    assert [n.path_text for n in tree.unmapped_leaves("google")] == ["Outros"]
    assert [n.path_text for n in tree.unmapped_leaves("shopify")] == ["Outros"]
    with pytest.raises(ValueError, match="unknown channel"):
        tree.unmapped_leaves("amazon")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("google_product_category", "Apparel & Accessories", "not a Google product category id"),
        ("google_product_category", "16 04", "not a Google product category id"),
        ("google_product_category", 12345678901, "not a Google product category id"),
        ("google_product_category", True, "not a Google product category id"),
        ("google_product_category", -5, "not a Google product category id"),
        ("shopify_category", "", "non-empty category path"),
        ("shopify_category", 42, "non-empty category path"),
        ("shopify_category", "A > " + "b" * 400, "longer than 400"),
        ("shopify_category", "Apparel\x00 > Shoes", "control character"),
        ("shopify_category", "Apparel >  > Shoes", "empty level"),
        ("shopify_category_id", "aa-1", "unknown keys"),
    ],
)
def test_bad_channel_values_are_refused_naming_the_node(
    key: str, value: object, message: str
) -> None:
    data = {"categories": [{"name": "Roupas", "children": [{"name": "Camisetas", key: value}]}]}
    with pytest.raises(TaxonomyError, match=message) as caught:
        Taxonomy.from_data(data, "loja.yaml")
    # an unknown key is refused before the node's name is read: the message names its parent
    assert ("Roupas" if key == "shopify_category_id" else "Roupas > Camisetas") in str(caught.value)


def test_a_google_text_tree_maps_itself(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy-with-ids.en-US.txt"
    path.write_text(
        "# Google_Product_Taxonomy_Version: 2021-09-21\n"
        "166 - Apparel & Accessories\n"
        "1604 - Apparel & Accessories > Clothing\n"
        "212 - Apparel & Accessories > Clothing > Shirts & Tops\n"
        "Apparel & Accessories > Clothing > Ponchos\n",
        encoding="utf-8",
    )
    tree = Taxonomy.load(path)
    shirts = tree.by_path["Apparel & Accessories > Clothing > Shirts & Tops"]
    ponchos = tree.by_path["Apparel & Accessories > Clothing > Ponchos"]
    assert (shirts.id, shirts.google_category, shirts.shopify_category) == ("212", "212", None)
    assert ponchos.google_category == "1604"  # no id of its own: its parent's
    assert tree.unmapped_leaves("google") == []
    assert len(tree.unmapped_leaves("shopify")) == 2


def test_lines_without_ids_and_flat_lists_map_nothing() -> None:
    lines = Taxonomy.from_lines("Roupas > Camisetas\nCalçados\n", "t")
    flat = Taxonomy.flat_list(["Roupas", "Calçados"])
    for tree in (lines, flat):
        assert all(n.google_category is None and n.shopify_category is None for n in tree.nodes)


def _show(tmp_path: Path, text: str) -> Any:
    from vitrine.cli import app

    tree = tmp_path / "arvore.yaml"
    tree.write_text(text, encoding="utf-8")
    return CliRunner().invoke(app, ["taxonomy", "show", "--file", str(tree), "--chars", "400"])


def test_taxonomy_show_names_the_unmapped_leaves(tmp_path: Path) -> None:
    result = _show(
        tmp_path,
        "categories:\n"
        "  - name: Roupas\n"
        "    google_product_category: 1604\n"
        "    shopify_category: Apparel & Accessories > Clothing\n"
        "    children: [Camisetas, Vestidos]\n"
        "  - name: Calçados\n"
        "    shopify_category: Apparel & Accessories > Shoes\n"
        "    children: [Tênis]\n",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index(
        "Google: 1 leaf unmapped (feeds leave their cards without google_product_category):"
    )
    assert lines[at + 1] == "  Calçados > Tênis"
    assert "Shopify: every leaf mapped" in lines


def test_taxonomy_show_cuts_a_long_unmapped_list(tmp_path: Path) -> None:
    names = ", ".join(f"Item {i:02d}" for i in range(25))
    result = _show(tmp_path, f"categories:\n  - name: Loja\n    children: [{names}]\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for label, column in (("Google", "google_product_category"), ("Shopify", "Product category")):
        at = lines.index(f"{label}: 25 leaves unmapped (feeds leave their cards without {column}):")
        assert lines[at + 1 : at + 21] == [f"  Loja > Item {i:02d}" for i in range(20)]
        assert lines[at + 21] == "  … and 5 more"
