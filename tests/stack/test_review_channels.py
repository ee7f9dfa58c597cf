"""The desk and the channels (issue 26): each card's verdict from Google Merchant Center,
Shopify and schema.org on its page and in ``/v1``, and the exports page with its downloads
from the exports bucket (no bucket yet, objects put straight into a test's own bucket, names
that try to leave it), against a real desk on the running stack."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from schemas.facts import GivenFacts, ProductFacts
from tests.support.card_text import FEATURES
from tests.support.desk_attacks import head, send
from tests.support.pipeline import ensure_stack, s3_client
from tests.support.review_desk import Desk, card, iter_desk

pytestmark = pytest.mark.pipeline

LONG_POINT = (
    "Mantém bebidas quentes por até doze horas e geladas por vinte e quatro horas, graças à "
    "parede dupla de aço inox com isolamento a vácuo e a tampa com rosca."
)
PRODUCT_URL = "https://loja.example/p/{sku}"
EXPORTS = f"exports-{uuid.uuid4().hex[:8]}"
STAMP = "20261201T100000.000000Z"


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(
        tmp_path_factory.mktemp("review-channels"),
        VITRINE_SHOP_PRODUCT_URL=PRODUCT_URL,
        VITRINE_EXPORTS_BUCKET=EXPORTS,
    )


@pytest.fixture()
def exports(desk: Desk) -> Iterator[Any]:
    """The desk's exports bucket, made for one test and removed after it."""
    s3 = s3_client(desk.ns.env)
    s3.create_bucket(Bucket=EXPORTS)
    try:
        yield s3
    finally:
        listed = s3.list_objects_v2(Bucket=EXPORTS).get("Contents", [])
        for item in listed:
            s3.delete_object(Bucket=EXPORTS, Key=item["Key"])
        s3.delete_bucket(Bucket=EXPORTS)


def full_facts(sku: str) -> GivenFacts:
    return GivenFacts(
        facts=ProductFacts(price="129.90", sku=sku, brand="Termo", availability="in_stock")
    )


def channels_of(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {v["channel"]: v for v in answer.json()["channels"]}


def page_text(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text[:500]
    return html.unescape(answer.text)


def channels_box(answer: httpx.Response) -> str:
    """The card page's channels box as a person reads it: no tags, one space between words."""
    assert answer.status_code == 200, answer.text[:500]
    box = answer.text.split('id="channels"')[1].split("</div>")[0]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", box)).split())


def test_a_long_selling_point_is_a_gmc_problem_on_the_page_and_in_the_api(desk: Desk) -> None:
    key = "channels/longo.jpg"
    desk.seed(key, card("Garrafa térmica azul", features_list=[LONG_POINT, *FEATURES[1:]]))
    assert len(LONG_POINT) == 155
    with desk.api("viewer") as api:
        verdicts = channels_of(api.get(f"/v1/cards/{desk.bucket}/{key}"))
    assert set(verdicts) == {"gmc", "shopify", "jsonld"}
    gmc = verdicts["gmc"]
    assert gmc["title"] == "Google Merchant Center" and gmc["ready"] is False
    highlight = [p for p in gmc["problems"] if p["field"] == "product_highlight"]
    assert highlight and "at most 150 characters (has 155)" in highlight[0]["rule"]
    assert verdicts["shopify"] == {
        "channel": "shopify",
        "title": "Shopify",
        "ready": True,
        "problems": [],
    }
    with closing(desk.login("viewer")) as browser:
        text = channels_box(browser.get(f"/cards/{desk.bucket}/{key}"))
    assert "Pending: what each channel would make of this card" in text
    assert "Google Merchant Center: left out" in text
    assert "product_highlight: item 1: at most 150 characters (has 155)" in text
    assert "Shopify: ✓ ready" in text


def test_a_card_with_every_fact_is_ready_for_every_channel(desk: Desk) -> None:
    key = "channels/completo.jpg"
    values = card("Garrafa térmica azul 500 ml", sku="GAR-500", brand="Termo")
    desk.seed(key, values, facts=full_facts("GAR-500"))
    with desk.api("reviewer") as api:
        verdicts = channels_of(api.get(f"/v1/cards/{desk.bucket}/{key}"))
        assert {n: (v["ready"], v["problems"]) for n, v in verdicts.items()} == {
            n: (True, []) for n in ("gmc", "shopify", "jsonld")
        }
        approved = api.post(f"/v1/cards/{desk.bucket}/{key}/approve", json={})
        assert approved.status_code == 200, approved.text
        assert all(v["ready"] for v in approved.json()["channels"])
    with closing(desk.login("viewer")) as browser:
        text = channels_box(browser.get(f"/cards/{desk.bucket}/{key}"))
    for title in ("Google Merchant Center", "Shopify", "schema.org JSON-LD"):
        assert f"{title}: ✓ ready" in text
    assert "Pending:" not in text


def test_a_card_without_a_card_has_no_verdict(desk: Desk) -> None:
    from schemas.messages import CardStatus

    key = "channels/falhou.jpg"
    desk.seed(key, None, status=CardStatus.failed)
    with desk.api("viewer") as api:
        answer = api.get(f"/v1/cards/{desk.bucket}/{key}")
    assert answer.status_code == 200 and answer.json()["channels"] == []


def test_exports_without_a_bucket_say_no_feed_yet(desk: Desk) -> None:
    with closing(desk.login("viewer")) as browser:
        answer = browser.get("/exports")
        text = page_text(answer)
        assert "no feed written yet: the export service writes them after the first approval" in (
            text
        )
        assert 'href="/exports"' in browser.get("/").text  # in the navigation
        assert browser.get("/exports/gmc/full.tsv").status_code == 404
        assert browser.get("/exports/manifest.json").status_code == 404


def test_exports_list_the_approved_cards_a_channel_leaves_out(desk: Desk) -> None:
    key = "channels/recusado.jpg"
    name = "Garrafa <b>térmica</b> recusada"
    desk.seed(key, card(name, features_list=[LONG_POINT, *FEATURES[1:]]))
    with desk.api("reviewer") as api:
        assert api.post(f"/v1/cards/{desk.bucket}/{key}/approve", json={}).status_code == 200
    with closing(desk.login("viewer")) as browser:
        answer = browser.get("/exports")
    assert answer.status_code == 200
    assert "<b>térmica</b>" not in answer.text  # escaped
    section = answer.text.split('id="left-out-gmc"')[1].split("</section>")[0]
    assert "channels/recusado.jpg" in section
    assert "product_highlight: item 1: at most 150 characters (has 155)" in html.unescape(section)
    shopify = answer.text.split('id="left-out-shopify"')[1].split("</section>")[0]
    assert "channels/recusado.jpg" not in shopify


def put(s3: Any, name: str, body: bytes, content_type: str) -> None:
    s3.put_object(Bucket=EXPORTS, Key=name, Body=body, ContentType=content_type)


def test_exports_list_the_feeds_and_a_download_is_the_object(desk: Desk, exports: Any) -> None:
    tsv = "id\ttitle\nGAR-500\tGarrafa térmica azul\n".encode() + b"\xff\x00 raw bytes\n"
    tsv_type = "text/tab-separated-values; charset=utf-8"
    delta = f"gmc/delta/{STAMP}.tsv"
    manifest = {
        "generated_at": "2026-12-01T10:00:00+00:00",
        "channels": {
            "gmc": {
                "title": "Google Merchant Center",
                "full": "gmc/full.tsv",
                "delta": delta,
                "problems": "gmc/problems.json",
                "files": ["gmc/products.json", "gmc/../incoming/x.jpg", "shopify/full.csv"],
                "listed": 7,
                "left_out": 2,
                "delta_listed": 1,
            },
            "nosuch": {"full": "nosuch/full.x"},
        },
    }
    put(exports, "manifest.json", json.dumps(manifest).encode(), "application/json")
    put(exports, "gmc/full.tsv", tsv, tsv_type)
    put(exports, delta, b"id\ttitle\n", tsv_type)
    put(exports, "gmc/problems.json", b'{"left_out": []}', "application/json")
    put(exports, "gmc/products.json", b"[]", "application/json")
    put(exports, "gmc/other.json", b"{}", "application/json")  # not named by the manifest
    with closing(desk.login("viewer")) as browser:
        page = browser.get("/exports")
        assert page.status_code == 200
        row = page.text.split('id="feed-gmc"')[1].split("</tr>")[0]
        assert '<td class="listed">7</td>' in row and '<td class="left-out">2</td>' in row
        for name in ("gmc/full.tsv", delta, "gmc/problems.json", "gmc/products.json"):
            assert f'href="/exports/{name}"' in row, name
        assert "incoming" not in page.text and "nosuch" not in page.text
        assert "shopify/full.csv" not in row
        assert "no feed written yet" in page.text.split('id="feed-shopify"')[1].split("</tr>")[0]
        full = browser.get("/exports/gmc/full.tsv")
        assert full.status_code == 200 and full.content == tsv
        assert full.headers["content-type"] == tsv_type
        assert 'filename="full.tsv"' in full.headers["content-disposition"]
        assert full.headers["x-content-type-options"] == "nosniff"
        assert browser.get(f"/exports/{delta}").content == b"id\ttitle\n"
        products = browser.get("/exports/gmc/products.json")
        assert products.status_code == 200 and products.content == b"[]"
        assert products.headers["content-type"] == "application/json"
        assert browser.get("/exports/manifest.json").json() == manifest
        assert browser.get("/exports/gmc/other.json").status_code == 404
        assert browser.get("/exports/shopify/full.csv").status_code == 404  # not written


HOSTILE = [
    "/exports/gmc/../x",
    "/exports/gmc/%2e%2e/x",
    "/exports/gmc/%2E%2E/%2e%2e/manifest.json",
    "/exports/gmc/../../incoming/x",
    "/exports/../manifest.json",
    "/exports/%2e%2e/gmc/full.tsv",
    "/exports/gmc//etc/passwd",
    "/exports/gmc/%2fetc%2fpasswd",
    "/exports/gmc/full.tsv%00",
    "/exports/gmc/%00",
    "/exports/gmc/full.tsv%00.jpg",
    "/exports/gmc/..%5c..%5cx",
    "/exports/gmc/delta/..%2f..%2fmanifest.json",
    "/exports/gmc/" + "a" * 5000,
    "/exports/gmc/delta/" + "1" * 5000 + ".tsv",
    "/exports/nosuch/full.tsv",
    "/exports/vitrine/photo.jpg",
    "/exports/gmc/full.csv",
    "/exports/gmc/%C3%A9.tsv",
    "/exports/gmc/full.tsv%0d%0aSet-Cookie:%20x=1",
]


def test_hostile_names_are_never_served(desk: Desk, exports: Any) -> None:
    put(exports, "manifest.json", b'{"channels": {}}', "application/json")
    put(exports, "gmc/full.tsv", b"id\n", "text/tab-separated-values")
    with closing(desk.login("viewer")) as browser:
        cookie = f"vitrine_session={browser.cookies['vitrine_session']}"
    for path in HOSTILE:
        answer = send(desk.url, head(desk.url, "GET", path, {"Cookie": cookie}), timeout=30)
        assert answer.status in (400, 404), (path[:80], answer.status, answer.body[:200])
        assert answer.body != b"id\n"
        assert "set-cookie" not in answer.headers
    assert desk.service.proc.poll() is None


def test_strangers_are_sent_to_the_login_page_and_the_api_says_401(desk: Desk) -> None:
    key = "channels/anonimo.jpg"
    desk.seed(key, card("Garrafa térmica azul anônima"))
    with httpx.Client(base_url=desk.url, timeout=30) as anonymous:
        for path in (
            "/exports",
            "/exports/gmc/full.tsv",
            "/exports/manifest.json",
            "/exports/x/..",
        ):
            answer = anonymous.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/login", path
        api = anonymous.get(f"/v1/cards/{desk.bucket}/{quote(key)}")
        assert api.status_code == 401 and "channels" not in api.text
