"""The three channels' formats and rules, on listings made here (no services).

Each channel's feed is read back with the standard reader a channel's own tools stand for
(``csv`` with tabs for Google Merchant Center, ``csv`` for Shopify, ``json`` and the JSON-LD
processor ``pyld`` for schema.org) and every record read back passes the
same ``problems()`` that judged it: what the validator passes is what the file holds.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from services.export.channels import CHANNELS, Problem, build_feed, entry_for
from services.export.channels.gmc import GMC, split_highlights, unstructured
from services.export.channels.jsonld import JSONLD
from services.export.channels.rules import APPAREL_CATEGORIES, CURRENCIES
from services.export.channels.shopify import SHOPIFY
from tests.support.card_text import FEATURES
from tests.support.listings import APPAREL, GTIN, listing, shop

SHOP = shop()
INJECTION = 'Garrafa <script>alert("x")</script> térmica'
LONG_FEATURE = "Parede dupla de aço inox que mantém bebidas quentes ou geladas " * 3  # > 150
LONG_FEATURE = LONG_FEATURE[:160]


def gmc_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8")), delimiter="\t"))


def shopify_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def fields(problems: list[Problem]) -> list[str]:
    return [p.field for p in problems]


def gmc_record(**changes: Any) -> dict[str, Any]:
    record = GMC.records(listing(), SHOP)[0]
    record.update(changes)
    return record


# --- every channel ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gmc", "shopify", "jsonld"])
def test_a_good_listing_breaks_no_rule_of_any_channel(name: str) -> None:
    channel = CHANNELS[name]
    for item in (listing(), listing("loja/b.jpg", photos=3, ai_generated=False)):
        entry = entry_for(channel, item, SHOP)
        assert entry.ok, entry.problems


def test_each_feed_parses_with_its_standard_reader_and_every_record_read_back_passes() -> None:
    listings = [
        listing("loja/a.jpg", photos=4),
        listing("loja/b.jpg", facts={"sku": "B-2", "gtin": None, "brand": None}),
        listing(  # quotes, commas, a tab and line breaks in the text
            "loja/c.jpg",
            facts={"sku": "C-3"},
            product_name='Garrafa "Clássica", 750 ml',
            features_list=['Tampa "click", rosca e alça', *FEATURES[1:]],
            description_long="Primeiro parágrafo,\tcom tab.\n\nSegundo " + "texto " * 70,
        ),
        listing("loja/d.jpg", facts={"sku": "D-4"}, ai_generated=False),
    ]
    gmc = build_feed(GMC, listings, SHOP)
    assert not gmc.left_out
    rows = gmc_rows(gmc.body)
    assert [r["id"] for r in rows] == ["GT-500", "B-2", "C-3", "D-4"]
    assert GMC.problems(rows) == []
    assert rows == [{k: v for k, v in r.items()} for e in gmc.listed for r in e.records]
    assert split_highlights(rows[2]["product_highlight"])[0] == 'Tampa "click", rosca e alça'
    assert unstructured(rows[2]["structured_title"]) == (
        "trained_algorithmic_media",
        'Garrafa "Clássica", 750 ml',
    )
    assert len(gmc.body.decode().splitlines()) == 5  # a header and one line per product

    shopify = build_feed(SHOPIFY, listings, SHOP)
    rows = shopify_rows(shopify.body)
    assert len(rows) == 4 + 3  # the first has 4 photos: 3 more image rows
    assert SHOPIFY.problems(rows) == []

    jsonld = build_feed(JSONLD, listings, SHOP)
    document = json.loads(jsonld.body)
    assert document["@context"] == "https://schema.org"
    assert JSONLD.problems(document["@graph"]) == []
    for name, body in jsonld.extra.items():
        item = json.loads(body)
        assert item["@context"] == "https://schema.org" and JSONLD.problems([item]) == []
        assert name == f"items/{quote(item['sku'], safe='')}.jsonld"


def test_the_json_ld_feed_is_what_a_json_ld_processor_reads_as_schema_org_products() -> None:
    from pyld import jsonld  # a dev dependency: this check must run, never skip

    document = json.loads(build_feed(JSONLD, [listing(), listing("loja/b.jpg")], SHOP).body)
    # schema.org's context served from memory: the test makes no request
    context = {"@context": {"@vocab": "https://schema.org/"}}

    def loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"contextUrl": None, "documentUrl": url, "document": context}

    expanded = jsonld.expand(document, {"documentLoader": loader})
    products = [n for n in expanded if "https://schema.org/Product" in n.get("@type", [])]
    assert len(products) == 2
    names = [p["https://schema.org/name"][0]["@value"] for p in products]
    assert names == ["Garrafa térmica de aço inox 500 ml"] * 2


# --- Google Merchant Center ----------------------------------------------------------------


def test_gmc_row_carries_google_s_attributes() -> None:
    row = gmc_record()
    assert row["id"] == "GT-500"
    assert row["price"] == "129.90 BRL"
    assert row["link"] == "https://loja.example/p/GT-500"
    assert row["image_link"] == "https://cdn.loja.example/incoming/loja/garrafa.jpg"
    assert row["availability"] == "in_stock" and row["condition"] == "new"
    assert row["gtin"] == GTIN and row["brand"] == "Termix" and row["identifier_exists"] == ""
    assert row["google_product_category"] == "3809"
    assert row["product_type"].startswith("Casa e Cozinha > ")
    assert split_highlights(row["product_highlight"]) == FEATURES


def test_ai_written_text_goes_only_in_the_structured_attributes() -> None:
    row = gmc_record()
    assert row["title"] == "" and row["description"] == ""
    assert (
        row["structured_title"] == 'trained_algorithmic_media:"Garrafa térmica de aço inox 500 ml"'
    )
    assert row["structured_description"].startswith('trained_algorithmic_media:"Produto ')
    plain = GMC.records(listing(ai_generated=False), SHOP)[0]
    assert plain["title"] == "Garrafa térmica de aço inox 500 ml"
    assert plain["structured_title"] == "" and plain["structured_description"] == ""


def test_gmc_refuses_a_highlight_over_150_characters() -> None:
    entry = entry_for(GMC, listing(features_list=[LONG_FEATURE, *FEATURES[1:]]), SHOP)
    assert entry.problems == [
        Problem("gmc", "product_highlight", "item 1: at most 150 characters (has 160)")
    ]


@pytest.mark.parametrize(
    ("colour", "rule"),
    [
        ("#1E90FF", "a colour name, not a code or a number ('#1E90FF')"),
        ("azul/verde/preto/branco", "at most 3 colours joined by '/' (has 4)"),
        ("cor 42", "a colour name, not a code or a number ('cor 42')"),
    ],
)
def test_gmc_refuses_a_colour_that_is_not_up_to_three_names(colour: str, rule: str) -> None:
    entry = entry_for(GMC, listing(color_primary=colour), SHOP)
    assert entry.problems == [Problem("gmc", "color", rule)]


def test_gmc_takes_up_to_three_colour_names() -> None:
    assert entry_for(GMC, listing(color_primary="azul/verde/azul-marinho"), SHOP).ok


def test_colour_is_required_in_apparel_and_accessories_only() -> None:
    assert GMC.problems([gmc_record(color="", google_product_category="3809")]) == []
    for category in (APPAREL, "166", "Apparel & Accessories > Clothing > Shirts & Tops"):
        assert fields(GMC.problems([gmc_record(color="", google_product_category=category)])) == [
            "color"
        ]


def test_the_apparel_categories_are_google_s_branch_166() -> None:
    assert len(APPAREL_CATEGORIES) == 240  # taxonomy 2021-09-21: 166 and its descendants
    assert {"166", "1604", "212", "187", "5122"} <= APPAREL_CATEGORIES
    assert "3809" not in APPAREL_CATEGORIES and "1" not in APPAREL_CATEGORIES


def test_an_apparel_card_of_the_shipped_tree_is_checked_for_colour() -> None:
    shirt = listing(
        path="Vestuário > Blusas e Camisetas > Camisetas",
        attributes={"genero": "unissex"},
        google_category="212",
    )
    record = GMC.records(shirt, SHOP)[0]
    assert record["google_product_category"] == "212" and record["color"] == "azul"
    assert GMC.problems([record]) == []
    assert GMC.problems([{**record, "color": ""}]) == [
        Problem("gmc", "color", "required for Apparel & Accessories ('212')")
    ]


def test_gmc_refuses_a_listing_without_a_price_and_shopify_takes_it() -> None:
    free = listing(facts={"price": None})
    assert entry_for(GMC, free, SHOP).problems == [
        Problem("gmc", "price", "required: give the product a price fact (price=129.90)")
    ]
    assert fields(entry_for(JSONLD, free, SHOP).problems) == ["offers.price"]
    shopify = entry_for(SHOPIFY, free, SHOP)
    assert shopify.ok and shopify.records[0]["Price"] == ""


def test_gmc_refuses_more_than_ten_additional_images() -> None:
    entry = entry_for(GMC, listing(photos=12), SHOP)
    assert entry.problems == [Problem("gmc", "additional_image_link", "at most 10 images (has 11)")]
    assert entry_for(GMC, listing(photos=11), SHOP).ok


def test_gmc_needs_the_product_link_template() -> None:
    entry = entry_for(GMC, listing(), shop(shop_product_url=""))
    assert entry.problems == [
        Problem(
            "gmc",
            "link",
            "required: set VITRINE_SHOP_PRODUCT_URL (e.g. https://loja.example/p/{sku})",
        )
    ]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "x" * 51}, "id"),
        ({"id": ""}, "id"),
        ({"structured_title": 'trained_algorithmic_media:"' + "t" * 151 + '"'}, "structured_title"),
        ({"structured_title": "", "title": "t" * 151}, "title"),
        ({"structured_title": "", "title": ""}, "title"),
        ({"structured_description": "generated:text"}, "structured_description"),
        ({"link": "ftp://loja.example/p/1"}, "link"),
        ({"image_link": ""}, "image_link"),
        ({"image_link": "https://cdn.example/" + "a" * 2000}, "image_link"),
        ({"availability": "available"}, "availability"),
        ({"price": "129,90 BRL"}, "price"),
        ({"price": "129.90 XYZ"}, "price"),
        ({"price": "0.00 BRL"}, "price"),
        ({"condition": "mint"}, "condition"),
        ({"brand": "b" * 71}, "brand"),
        ({"gtin": "7891234567890"}, "gtin"),
        ({"color": "azul/" + "x" * 41}, "color"),
        ({"color": "a" * 101}, "color"),
        ({"identifier_exists": "no"}, "identifier_exists"),
        ({"identifier_exists": "maybe"}, "identifier_exists"),
        ({"google_product_category": "Garrafas"}, "google_product_category"),
        ({"product_highlight": '"só um destaque"'}, "product_highlight"),
    ],
)
def test_gmc_rules_on_records(changes: dict[str, str], field: str) -> None:
    assert fields(GMC.problems([gmc_record(**changes)])) == [field]


def test_a_title_over_150_characters_is_measured() -> None:
    problems = GMC.problems([gmc_record(structured_title="", title="t" * 163)])
    assert problems == [Problem("gmc", "title", "at most 150 characters (has 163)")]


def test_identifier_exists_is_no_without_the_identifiers_google_asks() -> None:
    bare = GMC.records(listing(facts={"gtin": None, "brand": None}), SHOP)[0]
    assert bare["identifier_exists"] == "no" and bare["gtin"] == "" and bare["brand"] == ""
    assert GMC.problems([bare]) == []
    branded = GMC.records(listing(facts={"gtin": None}), SHOP)[0]
    assert branded["identifier_exists"] == "no"  # outside apparel a brand alone is not enough
    shirt = listing(facts={"gtin": None}, google_category=APPAREL)
    assert GMC.records(shirt, SHOP)[0]["identifier_exists"] == ""  # apparel: the brand is


def test_the_merchant_api_products_carry_the_same_data() -> None:
    feed = build_feed(GMC, [listing(photos=3), listing("loja/b.jpg", ai_generated=False)], SHOP)
    products = json.loads(feed.extra["products.json"])
    first = products[0]
    assert first["offerId"] == "GT-500"
    assert first["contentLanguage"] == "pt" and first["feedLabel"] == "BR"
    attributes = first["productAttributes"]
    assert attributes["price"] == {"amountMicros": "129900000", "currencyCode": "BRL"}
    assert attributes["availability"] == "IN_STOCK" and attributes["condition"] == "NEW"
    assert attributes["structuredTitle"] == {
        "digitalSourceType": "TRAINED_ALGORITHMIC_MEDIA",
        "content": "Garrafa térmica de aço inox 500 ml",
    }
    assert attributes["structuredDescription"]["digitalSourceType"] == "TRAINED_ALGORITHMIC_MEDIA"
    assert "title" not in attributes and "description" not in attributes
    assert attributes["productHighlights"] == FEATURES
    assert len(attributes["additionalImageLinks"]) == 2
    assert attributes["gtins"] == [GTIN] and attributes["googleProductCategory"] == "3809"
    assert attributes["productTypes"] == [
        "Casa e Cozinha > Potes e Garrafas > Garrafas Térmicas e Squeezes"
    ]
    assert products[1]["productAttributes"]["title"] == "Garrafa térmica de aço inox 500 ml"


# --- Shopify -------------------------------------------------------------------------------


def test_shopify_rows_one_product_and_one_row_per_further_photo() -> None:
    rows = SHOPIFY.records(listing(photos=3), SHOP)
    first, *images = rows
    assert first["Title"] == "Garrafa térmica de aço inox 500 ml"
    assert first["URL handle"] == "garrafa-termica-de-aco-inox-500-ml-gt-500"
    assert first["Vendor"] == "Termix" and first["SKU"] == "GT-500" and first["Barcode"] == GTIN
    assert first["Price"] == "129.90" and first["Status"] == "active"
    assert first["Type"] == "Garrafas Térmicas e Squeezes"
    assert first["Product category"].startswith("Home & Garden")
    assert "azul" in first["Tags"].split(", ")
    assert first["Image position"] == "1"
    assert [r["Image position"] for r in images] == ["2", "3"]
    for row in images:
        assert row["URL handle"] == first["URL handle"] and row["Image source"]
        assert row["Title"] == "" and row["Price"] == "" and row["Description"] == ""


def test_shopify_vendor_falls_back_on_the_shop() -> None:
    rows = SHOPIFY.records(listing(facts={"brand": None}), SHOP)
    assert rows[0]["Vendor"] == "Loja Exemplo"


def test_shopify_description_escapes_every_card_text() -> None:
    hostile = listing(
        description_long=f"{INJECTION} e mais texto.\n" + "palavra " * 60,
        features_list=["<img src=x onerror=alert(1)> alça", *FEATURES[1:]],
    )
    body = SHOPIFY.render(SHOPIFY.records(hostile, SHOP))
    description = shopify_rows(body)[0]["Description"]
    assert "<script>" not in description and "<img" not in description
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in description
    assert description.startswith("<p>") and description.endswith("</li></ul>")
    assert description.count("<li>") == 3


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"Title": ""}, "Title"),
        ({"Title": "t" * 256}, "Title"),
        ({"URL handle": "Garrafa Térmica"}, "URL handle"),
        ({"URL handle": "a" * 256}, "URL handle"),
        ({"SEO title": "s" * 71}, "SEO title"),
        ({"SEO description": "s" * 321}, "SEO description"),
        ({"Price": "-1.00"}, "Price"),
        ({"Price": "12,90"}, "Price"),
        ({"Image source": "javascript:alert(1)"}, "Image source"),
        ({"Status": "published"}, "Status"),
        ({"Vendor": "v" * 256}, "Vendor"),
        ({"Image position": "0"}, "Image position"),
    ],
)
def test_shopify_rules_on_records(changes: dict[str, str], field: str) -> None:
    row = SHOPIFY.records(listing(), SHOP)[0]
    assert fields(SHOPIFY.problems([{**row, **changes}])) == [field]


def test_shopify_seo_fields_are_cut_to_their_limits() -> None:
    row = SHOPIFY.records(listing(product_name="Garrafa térmica " * 7), SHOP)[0]
    assert len(row["SEO title"]) <= 70 and len(row["SEO description"]) <= 320
    assert SHOPIFY.problems([row]) == []


# --- schema.org JSON-LD --------------------------------------------------------------------


def test_json_ld_product_as_google_s_merchant_listing_reads_it() -> None:
    product = JSONLD.records(listing(photos=2), SHOP)[0]
    assert product["@context"] == "https://schema.org" and product["@type"] == "Product"
    assert product["name"] == "Garrafa térmica de aço inox 500 ml"
    assert len(product["image"]) == 2
    assert product["gtin13"] == GTIN and product["sku"] == "GT-500"
    assert product["brand"] == {"@type": "Brand", "name": "Termix"}
    assert product["color"] == "azul" and product["category"].startswith("Casa e Cozinha")
    assert product["offers"] == {
        "@type": "Offer",
        "price": 129.9,
        "priceCurrency": "BRL",
        "availability": "https://schema.org/InStock",
        "itemCondition": "https://schema.org/NewCondition",
        "url": "https://loja.example/p/GT-500",
    }


def test_json_ld_names_the_gtin_by_its_length() -> None:
    product = JSONLD.records(listing(facts={"gtin": "96385074"}), SHOP)[0]
    assert product["gtin8"] == "96385074" and "gtin13" not in product


def test_json_ld_cannot_close_the_script_element_that_embeds_it() -> None:
    hostile = listing(product_name=INJECTION)
    feed = build_feed(JSONLD, [hostile], SHOP)
    (item,) = feed.extra.values()
    for body in (feed.body, item):
        assert b"</script" not in body.lower() and b"<" not in body
        assert b"\\u003c/script>" in body
    assert json.loads(item)["name"] == INJECTION


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.pop("name"), "name"),
        (lambda p: p.update(image=[]), "image"),
        (lambda p: p.update(image=["data:image/png;base64,AAAA"]), "image"),
        (lambda p: p["offers"].update(price=-1), "offers.price"),
        (lambda p: p["offers"].update(price="129,90"), "offers.price"),
        (lambda p: p["offers"].update(priceCurrency="XYZ"), "offers.priceCurrency"),
        (lambda p: p["offers"].update(availability="InStock"), "offers.availability"),
        (lambda p: p.update(gtin13="7891234567890"), "gtin13"),
        (lambda p: p.update(gtin12=GTIN), "gtin12"),
    ],
)
def test_json_ld_rules_on_records(change: Any, field: str) -> None:
    product = JSONLD.records(listing(), SHOP)[0]
    change(product)
    assert fields(JSONLD.problems([product])) == [field]


def test_a_price_given_as_text_is_taken_too() -> None:
    product = JSONLD.records(listing(), SHOP)[0]
    product["offers"]["price"] = "129.90"
    assert JSONLD.problems([product]) == []


# --- feeds and settings --------------------------------------------------------------------


def test_a_refused_listing_is_left_out_of_that_channel_s_feed_only() -> None:
    good = listing("loja/a.jpg", facts={"sku": "A-1"})
    free = listing("loja/b.jpg", facts={"sku": "B-2", "price": None})
    loud = listing("loja/c.jpg", facts={"sku": "C-3"}, color_primary="#1E90FF")
    gmc = build_feed(GMC, [good, free, loud], SHOP)
    assert [r["id"] for r in gmc_rows(gmc.body)] == ["A-1"]
    assert [e.listing.sku for e in gmc.left_out] == ["B-2", "C-3"]
    assert [r["offerId"] for r in json.loads(gmc.extra["products.json"])] == ["A-1"]

    shopify = build_feed(SHOPIFY, [good, free, loud], SHOP)
    assert [r["SKU"] for r in shopify_rows(shopify.body)] == ["A-1", "B-2", "C-3"]

    jsonld = build_feed(JSONLD, [good, free, loud], SHOP)
    assert [p["sku"] for p in json.loads(jsonld.body)["@graph"]] == ["A-1", "C-3"]
    assert sorted(jsonld.extra) == ["items/A-1.jsonld", "items/C-3.jsonld"]


def test_an_empty_feed_is_still_a_readable_file() -> None:
    assert gmc_rows(build_feed(GMC, [], SHOP).body) == []
    header = build_feed(SHOPIFY, [], SHOP).body.decode().splitlines()[0]
    assert next(csv.reader([header]))[0] == "Title"
    assert json.loads(build_feed(JSONLD, [], SHOP).body)["@graph"] == []


def test_the_shop_currency_is_an_iso_4217_code() -> None:
    assert shop(shop_currency="eur").shop_currency == "EUR"
    with pytest.raises(ValidationError, match="ISO 4217"):
        shop(shop_currency="XYZ")
    assert {"BRL", "EUR", "USD", "XCG", "ZWG"} <= CURRENCIES
    assert not {"ANG", "HRK", "ZWL", "XXX"} & CURRENCIES
    assert 170 <= len(CURRENCIES) <= 185


def test_the_price_takes_the_shop_s_currency() -> None:
    euro = shop(shop_currency="EUR")
    assert GMC.records(listing(), euro)[0]["price"] == "129.90 EUR"
    assert JSONLD.records(listing(), euro)[0]["offers"]["priceCurrency"] == "EUR"
