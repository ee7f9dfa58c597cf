"""``vitrine export --channel``: the approved cards of the bucket as a channel's feed, each card
a channel refuses left out and named on stderr with its rule; against the real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from schemas.facts import GivenFacts, ProductFacts
from schemas.messages import ObjectRef
from services.export.channels import CHANNELS
from tests.support.card_text import FEATURES
from tests.support.pipeline import DEFAULT_DSN, REPO
from tests.support.review_desk import T0, card, result, upsert

LONG_FEATURE = "Alça ergonômica " + "e confortável " * 10  # 156 characters: GMC keeps ≤ 150


@pytest.fixture
def bucket() -> Iterator[str]:
    name = f"vitrine-x{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(DEFAULT_DSN) as conn:
        conn.execute("DELETE FROM card_reviews WHERE bucket = %s", (name,))
        conn.execute("DELETE FROM product_cards WHERE bucket = %s", (name,))


def seed(bucket: str, key: str, *, approved: bool, **fields: object) -> None:
    ref = ObjectRef(
        bucket=bucket,
        key=key,
        etag="0" * 32,
        size=1000,
        content_type="image/jpeg",
        sequencer=format(time.time_ns(), "X"),
        event_time=T0,
    )
    sku = key.split("/")[-1].split(".")[0].upper()
    facts = GivenFacts(facts=ProductFacts(sku=sku, brand="Tok", price="89.90"))
    values = card(f"Garrafa térmica Tok {sku}", sku=sku, brand="Tok", **fields)
    upsert([result(ref, values, facts=facts)])
    if approved:
        with psycopg.connect(DEFAULT_DSN) as conn:
            conn.execute(
                "UPDATE product_cards SET review_state = 'approved', reviewed_by = 'ana', "
                "reviewed_at = %s, approved_card = card WHERE bucket = %s AND object_key = %s",
                (datetime.now(UTC), bucket, key),
            )


def vitrine(bucket: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VITRINE_BUCKET": bucket,
        "VITRINE_PG_DSN": DEFAULT_DSN,
        "VITRINE_SHOP_PRODUCT_URL": "https://loja.example/p/{sku}",
        "VITRINE_SHOP_IMAGE_URL": "https://cdn.loja.example/{key}",
    }
    return subprocess.run(
        [sys.executable, "-m", "vitrine.cli", "export", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_a_channel_s_feed_lists_the_approved_cards_and_names_each_one_it_leaves_out(
    bucket: str, tmp_path: Path
) -> None:
    seed(bucket, "loja/a1.jpg", approved=True)
    seed(bucket, "loja/a2.jpg", approved=True, features_list=[LONG_FEATURE, *FEATURES[1:]])
    seed(bucket, "loja/a3.jpg", approved=False)  # pending: in no feed

    gmc = vitrine(bucket, "--channel", "gmc")
    assert gmc.returncode == 0, gmc.stderr
    rows = list(csv.DictReader(io.StringIO(gmc.stdout), delimiter="\t"))
    assert [r["id"] for r in rows] == ["A1"]
    assert rows[0]["link"] == "https://loja.example/p/A1"
    assert rows[0]["price"] == "89.90 BRL"
    assert CHANNELS["gmc"].problems(rows) == []
    assert "gmc: 1 card(s) in the feed, 1 left out" in gmc.stderr
    assert f"left out s3://{bucket}/loja/a2.jpg (SKU A2)" in gmc.stderr
    assert "product_highlight" in gmc.stderr and "150" in gmc.stderr

    shopify = vitrine(bucket, "--channel", "shopify", "--out", str(tmp_path / "s.csv"))
    assert shopify.returncode == 0, shopify.stderr
    products = list(csv.DictReader((tmp_path / "s.csv").open(encoding="utf-8", newline="")))
    assert sorted({r["SKU"] for r in products if r["SKU"]}) == ["A1", "A2"]  # Shopify takes both
    assert CHANNELS["shopify"].problems(products) == []

    jsonld = vitrine(bucket, "-c", "jsonld")
    graph = json.loads(jsonld.stdout)["@graph"]
    assert sorted(p["sku"] for p in graph) == ["A1", "A2"]

    merchant = vitrine(bucket, "-c", "gmc", "--merchant-api")
    products_api = json.loads(merchant.stdout)
    assert [p["offerId"] for p in products_api] == ["A1"]

    strict = vitrine(bucket, "-c", "gmc", "--strict")
    assert strict.returncode == 1 and strict.stdout == gmc.stdout
    later = vitrine(bucket, "-c", "jsonld", "--since", "2999-01-01")
    assert json.loads(later.stdout)["@graph"] == []


def test_bad_options_are_one_line_usage_errors(bucket: str) -> None:
    wrong = vitrine(bucket, "--channel", "amazon")
    assert wrong.returncode == 2 and "amazon" in wrong.stderr
    since = vitrine(bucket, "-c", "gmc", "--since", "yesterday")
    assert since.returncode == 2 and "ISO 8601" in since.stderr
    api = vitrine(bucket, "-c", "shopify", "--merchant-api")
    assert api.returncode == 2 and "--merchant-api is for --channel gmc" in api.stderr
