"""Category trees in ``product_cards``, against the real PostgreSQL: what the sink writes for a
leaf card (path, id, attributes, colour check) and the SQL a catalogue reads it back with.

Like tests/stack/test_sink_store.py: the database the dev stack / CI starts (``VITRINE_PG_DSN``,
default the dev stack's DSN) with ``infra/migrations`` applied; an unreachable database is an
error, never a skip.  Each test writes under its own bucket name and deletes its rows afterwards.
Cards come from the shipped pt-BR tree (``schemas.card.default_taxonomy``), validated by the
configured card type, so every path, id and attribute here is one a real worker could write.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from schemas.card import ProductCard, card_model, default_taxonomy
from schemas.language import PT_BR
from schemas.messages import (
    CardResult,
    CardStatus,
    Checks,
    ColourCheck,
    ImageJob,
    ObjectRef,
    Timings,
)
from services.sink.store import upsert_batch
from tests.support.card_text import DESCRIPTION, FEATURES

REPO = Path(__file__).resolve().parents[2]
DSN = os.environ.get("VITRINE_PG_DSN") or "postgresql://vitrine:vitrine@127.0.0.1:25432/vitrine"
TREE = default_taxonomy(PT_BR)
CARD = card_model(TREE, min_words=None)  # the tree's leaves and attribute schemas, enforced
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


RUNNING = "Calçados > Tênis > Tênis de Corrida"
BOOTS = "Calçados > Botas > Coturnos"
SANDALS = "Calçados > Sandálias > Rasteirinhas"
AIR_FRYER = "Eletrodomésticos > Eletroportáteis > Air Fryers"
BOTTLE = "Casa e Cozinha > Potes e Garrafas > Garrafas Térmicas e Squeezes"
PHONE_CASE = "Celulares e Smartphones > Capas e Películas > Capas para Celular"


def leaf_card(path: str, attributes: dict[str, Any], colour: str = "azul") -> ProductCard:
    leaf = TREE.leaf(path)
    assert leaf is not None, f"{path!r} is not a leaf of the shipped tree"
    return CARD(
        product_name=f"{leaf.name} {colour}",
        category_standard=leaf.top,
        category_path=leaf.path_text,
        category_id=leaf.id,
        attributes=attributes,
        description_long=DESCRIPTION,
        color_primary=colour,
        features_list=FEATURES,
    )


def agreeing(colour: str, estimate: str, distance: float) -> Checks:
    return Checks(
        colour=ColourCheck(model=colour, estimate=estimate, distance=distance, agrees=True)
    )


def disagreeing(colour: str, estimate: str, distance: float) -> Checks:
    return Checks(
        colour=ColourCheck(
            model=colour,
            estimate=estimate,
            distance=distance,
            agrees=False,
            policy="flag",
            action="flagged",
        )
    )


def done(
    bucket: str,
    key: str,
    card: ProductCard,
    checks: Checks | None = None,
    *,
    at: float = 0.0,
    sequencer: str = "18EB8B3948595CE8",
) -> CardResult:
    ref = ObjectRef(
        bucket=bucket,
        key=key,
        etag="c6f3ac6367e8af5f979ee83ba321e085",
        size=20_000,
        content_type="image/jpeg",
        sequencer=sequencer,
        event_time=T0,
    )
    return CardResult(
        job_id=ImageJob.job_id_for(ref),
        trace_id=uuid.uuid4().hex,
        object=ref,
        status=CardStatus.done,
        card=card,
        model_id="qwen2.5-vl-3b-q4_k_m",
        prompt_version="card-v4+test",
        attempts=1,
        timings=Timings(generate_ms=1000.0, completion_tokens=300, total_ms=1500.0),
        checks=checks,
        producer="inference",
        produced_at=T0 + timedelta(seconds=at),
    )


# -- database plumbing ----------------------------------------------------------------------------


def upsert(dsn: str, *batches: Sequence[CardResult]) -> list[int]:
    """``services/sink/store.upsert_batch``, one batch after another on one connection."""

    async def go() -> list[int]:
        conn = await AsyncConnection.connect(dsn, connect_timeout=5, application_name="test-tree")
        try:
            return [await upsert_batch(conn, batch) for batch in batches]
        finally:
            await conn.close()

    return asyncio.run(go())


def query(sql: str, *params: Any, dsn: str = DSN) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def keys(sql_where: str, bucket: str, *params: Any) -> set[str]:
    """The object keys of ``bucket`` matching a WHERE clause (a literal of this file)."""
    rows = query(
        "SELECT object_key FROM product_cards WHERE bucket = %s AND (" + sql_where + ")",
        bucket,
        *params,
    )
    return {r["object_key"] for r in rows}


def role_dsns() -> dict[str, str]:
    """The sink's and the reader's DSNs as infra/dev.env defines them (the environment wins,
    as with infra/stack)."""
    out = subprocess.run(
        ["bash", "-c", "set -a; . infra/dev.env; env -0"],
        cwd=REPO,
        env=dict(os.environ),
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {"sink": env["VITRINE_SINK_PG_DSN"], "reader": env["VITRINE_READER_PG_DSN"]}


def new_bucket() -> Iterator[str]:
    name = f"vitrine-tree-{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(DSN, connect_timeout=5, autocommit=True) as conn:
        conn.execute("DELETE FROM product_cards WHERE bucket = %s", (name,))


@pytest.fixture
def bucket() -> Iterator[str]:
    yield from new_bucket()


@pytest.fixture(scope="module")
def catalogue() -> Iterator[str]:
    """One bucket of cards across the tree, shared by the read-only query tests."""
    for name in new_bucket():
        results = [
            done(
                name,
                "tenis-couro.jpg",
                leaf_card(RUNNING, {"material": "couro", "genero": "masculino"}),
                agreeing("azul", "azul-marinho", 8.1),
            ),
            done(
                name,
                "tenis-malha.jpg",
                leaf_card(RUNNING, {"material": "malha"}, "vermelho"),
                disagreeing("vermelho", "azul", 41.2),
            ),
            done(
                name,
                "coturno.jpg",
                leaf_card(BOOTS, {"material": "couro", "altura_cano": "médio"}, "preto"),
                agreeing("preto", "preto", 1.5),
            ),
            done(name, "rasteirinha.jpg", leaf_card(SANDALS, {"material": "couro sintético"})),
            done(
                name,
                "capa.jpg",
                leaf_card(PHONE_CASE, {"material": "couro", "tipo_capa": "carteira"}, "marrom"),
                disagreeing("marrom", "preto", 22.4),
            ),
            done(
                name,
                "air-fryer.jpg",
                leaf_card(AIR_FRYER, {"capacidade": {"value": 4.5, "unit": "L"}}, "preto"),
            ),
            done(
                name,
                "garrafa.jpg",
                leaf_card(
                    BOTTLE,
                    {"material": "aço inox", "capacidade": {"value": 0.75, "unit": "L"}},
                    "prata",
                ),
            ),
            # Outside the shipped tree (the generic card type reads any deployment's): a root
            # whose name starts like 'Calçados', and names holding LIKE's metacharacters.
            done(name, "calcados-infantis.jpg", other_card("Calçados Infantis > Tênis")),
            done(name, "kit-festa.jpg", other_card("Kit_Festa > Balões")),
            done(name, "kitxfesta.jpg", other_card("KitXFesta > Balões")),
            done(name, "promo-50.jpg", other_card("Promo 50% > Camisetas")),
            done(name, "promo-50-e-tal.jpg", other_card("Promo 50 e tal > Camisetas")),
        ]
        assert upsert(DSN, results) == [len(results)]
        yield name


def other_card(path: str) -> ProductCard:
    root = path.split(" > ")[0]
    return ProductCard(
        product_name=f"Produto de {root}",
        category_standard=root,
        category_path=path,
        category_id=path.lower().replace(" > ", "."),
        description_long=DESCRIPTION,
        color_primary="azul",
        features_list=FEATURES,
    )


# -- what lands in the row ------------------------------------------------------------------------


def test_a_leaf_card_lands_with_its_path_id_attributes_and_colour_check(bucket: str) -> None:
    card = leaf_card(
        BOTTLE, {"material": "aço inox", "capacidade": {"value": 0.75, "unit": "L"}}, "prata"
    )
    checks = disagreeing("prata", "cinza-escuro", 12.37)
    assert upsert(DSN, [done(bucket, "g.jpg", card, checks)]) == [1]
    [row] = query(
        "SELECT category_standard, category_path, category_id, attributes, color_primary, "
        "color_estimate, color_distance, checks, card FROM product_cards WHERE bucket = %s",
        bucket,
    )
    assert row["category_standard"] == "Casa e Cozinha"
    assert row["category_path"] == BOTTLE
    assert row["category_id"] == "casa-e-cozinha.potes-e-garrafas.garrafas-termicas-e-squeezes"
    assert row["attributes"] == {"material": "aço inox", "capacidade": {"value": 0.75, "unit": "L"}}
    assert row["color_primary"] == "prata" and row["color_estimate"] == "cinza-escuro"
    assert row["color_distance"] == pytest.approx(12.37, abs=1e-4)  # real: float4 precision
    assert row["checks"] == {
        "colour": {
            "model": "prata",
            "estimate": "cinza-escuro",
            "distance": 12.37,
            "agrees": False,
            "checkable": True,
            "policy": "flag",
            "action": "flagged",
        }
    }
    assert row["card"]["category_path"] == BOTTLE and row["card"]["attributes"] == card.attributes


def test_a_newer_result_replaces_path_attributes_and_checks(bucket: str) -> None:
    first = done(
        bucket, "x.jpg", leaf_card(RUNNING, {"material": "couro"}), agreeing("azul", "azul", 2)
    )
    second = done(
        bucket,
        "x.jpg",
        leaf_card(BOOTS, {"material": "camurça"}, "marrom"),
        at=60,
        sequencer="18EB8B5B00000001",
    )
    assert upsert(DSN, [first], [second]) == [1, 1]
    [row] = query(
        "SELECT category_path, category_id, attributes, color_estimate, color_distance, checks "
        "FROM product_cards WHERE bucket = %s",
        bucket,
    )
    # The newer card has no colour check: nothing of the older one's is left behind.
    assert row == {
        "category_path": BOOTS,
        "category_id": "calcados.botas.coturnos",
        "attributes": {"material": "camurça"},
        "color_estimate": None,
        "color_distance": None,
        "checks": None,
    }


def test_an_old_flat_card_lands_as_a_one_level_path(bucket: str) -> None:
    """A message written before category trees (still on the topic, or from an older worker):
    its card names only category_standard; the row's path is that root."""
    current = done(bucket, "velho.jpg", other_card("Calçados > X"))
    message = json.loads(current.model_dump_json())
    for field in ("category_path", "category_id", "attributes"):
        del message["card"][field]
    message["card"]["category_standard"] = "Calçados"
    message.pop("checks")
    old = CardResult.model_validate_json(json.dumps(message))
    assert upsert(DSN, [old]) == [1]
    [row] = query(
        "SELECT category_standard, category_path, category_id, attributes, checks "
        "FROM product_cards WHERE bucket = %s",
        bucket,
    )
    assert row["category_standard"] == row["category_path"] == "Calçados"
    assert row["category_id"] == "calcados"
    assert row["attributes"] == {} and row["checks"] is None
    assert keys("category_path = 'Calçados' OR category_path LIKE 'Calçados > %%'", bucket) == {
        "velho.jpg"
    }


# -- reading the catalogue back ---------------------------------------------------------------


def test_a_subtree_is_its_root_and_everything_below(catalogue: str) -> None:
    shoes = {"tenis-couro.jpg", "tenis-malha.jpg", "coturno.jpg", "rasteirinha.jpg"}
    # The form migration 0004 documents; 'Calçados Infantis' shares the prefix, not the path.
    like = keys(
        "category_path = %s OR category_path LIKE %s || ' > %%'", catalogue, *["Calçados"] * 2
    )
    assert like == shoes
    # What `vitrine cards --subtree` runs (vitrine/cards.py): the same answer without LIKE.
    starts = "category_path = %s OR starts_with(category_path, %s::text || ' > ')"
    assert keys(starts, catalogue, "Calçados", "Calçados") == shoes
    assert keys(starts, catalogue, "Calçados > Tênis", "Calçados > Tênis") == {
        "tenis-couro.jpg",
        "tenis-malha.jpg",
    }
    assert keys(starts, catalogue, RUNNING, RUNNING) == {"tenis-couro.jpg", "tenis-malha.jpg"}
    assert keys(starts, catalogue, "Calçados > Tên", "Calçados > Tên") == set()  # names, whole
    assert keys("category_standard = 'Calçados'", catalogue) == shoes  # the root column agrees


def test_like_metacharacters_in_a_name_widen_a_like_subtree_but_not_starts_with(
    catalogue: str,
) -> None:
    """Category names may hold '_' and '%' (the tree format allows any text but '>').  Put into
    a LIKE pattern unescaped they match other names; starts_with() has no metacharacters, which
    is why the listing uses it rather than an escaping helper."""
    like = "category_path = %s OR category_path LIKE %s || ' > %%'"
    starts = "category_path = %s OR starts_with(category_path, %s::text || ' > ')"
    assert keys(like, catalogue, "Kit_Festa", "Kit_Festa") == {"kit-festa.jpg", "kitxfesta.jpg"}
    assert keys(starts, catalogue, "Kit_Festa", "Kit_Festa") == {"kit-festa.jpg"}
    assert keys(like, catalogue, "Promo 50%", "Promo 50%") == {"promo-50.jpg", "promo-50-e-tal.jpg"}
    assert keys(starts, catalogue, "Promo 50%", "Promo 50%") == {"promo-50.jpg"}


def test_attribute_containment(catalogue: str) -> None:
    leather = keys("attributes @> %s::jsonb", catalogue, json.dumps({"material": "couro"}))
    assert leather == {"tenis-couro.jpg", "coturno.jpg", "capa.jpg"}  # not 'couro sintético'
    assert (
        keys('attributes @> \'{"material": "couro"}\'', catalogue) == leather
    )  # the literal form the migration documents
    both = json.dumps({"material": "couro", "genero": "masculino"})
    assert keys("attributes @> %s::jsonb", catalogue, both) == {"tenis-couro.jpg"}
    shoes_in_leather = (
        "(category_path = 'Calçados' OR category_path LIKE 'Calçados > %%') "
        'AND attributes @> \'{"material": "couro"}\''
    )
    assert keys(shoes_in_leather, catalogue) == {"tenis-couro.jpg", "coturno.jpg"}
    # A number attribute is an object: containment matches on its parts.
    litres = json.dumps({"capacidade": {"value": 4.5}})
    assert keys("attributes @> %s::jsonb", catalogue, litres) == {"air-fryer.jpg"}


def test_a_number_attribute_compares_as_a_number(catalogue: str) -> None:
    assert keys("(attributes->'capacidade'->>'value')::numeric > 2", catalogue) == {"air-fryer.jpg"}
    assert keys("(attributes->'capacidade'->>'value')::numeric < 1", catalogue) == {"garrafa.jpg"}
    assert keys("attributes->'capacidade'->>'unit' = 'L'", catalogue) == {
        "air-fryer.jpg",
        "garrafa.jpg",
    }


def test_colour_flags(catalogue: str) -> None:
    flagged = keys("checks->'colour'->>'agrees' = 'false'", catalogue)
    assert flagged == {"tenis-malha.jpg", "capa.jpg"}
    assert keys("checks->'colour'->>'agrees' = 'true'", catalogue) == {
        "tenis-couro.jpg",
        "coturno.jpg",
    }
    [row] = query(
        "SELECT color_primary, color_estimate, color_distance FROM product_cards "
        "WHERE bucket = %s AND object_key = 'tenis-malha.jpg'",
        catalogue,
    )
    assert (row["color_primary"], row["color_estimate"]) == ("vermelho", "azul")
    assert row["color_distance"] == pytest.approx(41.2, abs=1e-4)
    near = keys("color_distance < 10", catalogue)
    assert near == {"tenis-couro.jpg", "coturno.jpg"}


# -- the indexes ----------------------------------------------------------------------------------


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(sql: str, *params: Any, seqscan: bool) -> list[dict[str, Any]]:
    with psycopg.connect(DSN, connect_timeout=5) as conn, conn.transaction():
        if not seqscan:
            conn.execute("SET LOCAL enable_seqscan = off")
        [(document,)] = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchall()
    return list(plan_nodes(document[0]["Plan"]))


def test_the_gin_index_can_serve_attribute_containment(bucket: str) -> None:
    """A few thousand rows, 1 in 100 in leather: the GIN index (jsonb_path_ops) answers the
    @> query.  What is proven is that the index *applies* (with sequential scans disabled the
    planner reaches for it and the answer is the same); whether the planner prefers it on its
    own depends on the table's size and statistics, so that is reported, not asserted."""
    with psycopg.connect(DSN, connect_timeout=5, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO product_cards (bucket, object_key, sequencer, event_time, status,
                status_rank, produced_at, product_name, category_standard, category_path,
                category_id, card, attributes)
            SELECT %(bucket)s, 'bulk/' || i, i, now(), 'done', 1, now(), 'Tênis ' || i,
                   'Calçados', %(path)s, 'calcados.tenis.tenis-casual', '{}'::jsonb,
                   jsonb_build_object(
                       'material', CASE WHEN i %% 100 = 0 THEN 'couro'
                                        ELSE (ARRAY['lona', 'malha', 'tecido'])[1 + i %% 3] END,
                       'genero', (ARRAY['masculino', 'feminino', 'unissex'])[1 + i %% 3])
            FROM generate_series(1, 3000) AS i
            """,
            {"bucket": bucket, "path": "Calçados > Tênis > Tênis Casual"},
        )
        conn.execute("ANALYZE product_cards")
    sql = "SELECT object_key FROM product_cards WHERE attributes @> %s::jsonb"
    leather = json.dumps({"material": "couro"})
    forced = explain(sql, leather, seqscan=False)
    scans = [n for n in forced if n.get("Index Name") == "product_cards_attributes_idx"]
    assert scans, f"the GIN index does not serve @>: {forced}"
    assert "@>" in scans[0]["Index Cond"]
    assert not any(n["Node Type"] == "Seq Scan" for n in forced)
    with psycopg.connect(DSN, connect_timeout=5) as conn, conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        via_index = conn.execute(sql + " AND bucket = %s", (leather, bucket)).fetchall()
    assert len(via_index) == 30
    chosen = {n.get("Index Name") or n["Node Type"] for n in explain(sql, leather, seqscan=True)}
    print(f"the planner's own choice for @> on this table: {sorted(chosen)}")


def test_the_path_index_can_serve_a_subtree(bucket: str) -> None:
    sql = (
        "SELECT object_key FROM product_cards "
        "WHERE category_path = %s OR starts_with(category_path, %s::text || ' > ')"
    )
    nodes = explain(sql, "Calçados > Tênis", "Calçados > Tênis", seqscan=False)
    used = [n for n in nodes if n.get("Index Name") == "product_cards_category_path_idx"]
    assert used, f"the text_pattern_ops index does not serve the subtree: {nodes}"
    assert any("~>=~" in (n.get("Index Cond") or "") for n in used)  # a range, not a full scan


# -- roles ------------------------------------------------------------------------------------


def test_the_sink_role_writes_the_new_columns_and_the_reader_reads_them(bucket: str) -> None:
    dsns = role_dsns()
    assert conninfo_to_dict(dsns["sink"])["user"] == "vitrine_sink"
    assert conninfo_to_dict(dsns["reader"])["user"] == "vitrine_reader"
    first = done(
        bucket,
        "s.jpg",
        leaf_card(RUNNING, {"material": "couro", "tipo_fechamento": "cadarço"}),
        agreeing("azul", "azul-marinho", 8.1),
    )
    newer = done(  # an update through ON CONFLICT: every new column rewritten
        bucket,
        "s.jpg",
        leaf_card(AIR_FRYER, {"capacidade": {"value": 3.2, "unit": "L"}}, "preto"),
        disagreeing("preto", "cinza", 15.5),
        at=30,
        sequencer="18EB8B5B00000001",
    )
    assert upsert(dsns["sink"], [first], [newer], [newer]) == [1, 1, 0]
    [row] = query(
        "SELECT category_path, category_id, attributes, color_estimate, color_distance, checks "
        "FROM product_cards WHERE bucket = %s",
        bucket,
        dsn=dsns["reader"],
    )
    assert row["category_path"] == AIR_FRYER
    assert row["category_id"] == "eletrodomesticos.eletroportateis.air-fryers"
    assert row["attributes"] == {"capacidade": {"value": 3.2, "unit": "L"}}
    assert row["color_estimate"] == "cinza"
    assert row["color_distance"] == pytest.approx(15.5)
    assert row["checks"]["colour"]["agrees"] is False
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the reader only reads
        query("UPDATE product_cards SET attributes = '{}' WHERE false", dsn=dsns["reader"])
