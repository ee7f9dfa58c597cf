"""`vitrine show / cards / status` on a catalogue of leaf cards: category paths, attributes and
the pixel colour check, as a user runs the commands.

The formatting helpers are tested on their own first; then against the real PostgreSQL of the
native stack (infra/stack, as tests/stack/test_cli_ops.py): rows are written by the sink's own
upsert (``services/sink/store.upsert_batch``) into a bucket of this module's, the commands run as
subprocesses, and the rows are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from rich.console import Console

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
from tests.support.pipeline import DEFAULT_DSN, READER_DSN, REPO, ensure_stack
from vitrine.cards import AttributeFilter, attribute_filter, subtree_path
from vitrine.listing import attribute_text, colour_text, short_path

VITRINE = [sys.executable, "-m", "vitrine.cli"]
TREE = default_taxonomy(PT_BR)
CARD = card_model(TREE, min_words=None)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

RUNNING = "Calçados > Tênis > Tênis de Corrida"
CASUAL = "Calçados > Tênis > Tênis Casual"
BOOTS = "Calçados > Botas > Coturnos"
AIR_FRYER = "Eletrodomésticos > Eletroportáteis > Air Fryers"
BOTTLE = "Casa e Cozinha > Potes e Garrafas > Garrafas Térmicas e Squeezes"
HEADPHONES = "Eletrônicos > Áudio > Fones de Ouvido"
BABY = "Bebês > Roupas de Bebê"


def plain(renderable: Any, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


# -- formatting and parsing, without servers --------------------------------------------------


def test_a_long_path_keeps_its_leaf() -> None:
    assert short_path("Calçados > Tênis", 32) == "Calçados > Tênis"
    assert short_path(RUNNING, 32) == "Calçados > … > Tênis de Corrida"
    assert short_path(RUNNING, 25) == "… > Tênis de Corrida"
    assert short_path(BOTTLE, 32) == "… > Garrafas Térmicas e Squeezes"
    assert short_path(BOTTLE, 30) == "Garrafas Térmicas e Squeezes"
    assert short_path(BOTTLE, 12) == "Garrafas Té…"
    assert all(len(short_path(leaf.path_text, 32)) <= 32 for leaf in TREE.leaves)


def test_attribute_values_for_people() -> None:
    assert attribute_text({"value": 2.5, "unit": "L"}) == "2.5 L"
    assert attribute_text({"value": 2.0, "unit": "L"}) == "2 L"
    assert attribute_text({"value": 1500, "unit": "W"}) == "1500 W"
    assert attribute_text(True) == "yes" and attribute_text(False) == "no"
    assert attribute_text("couro sintético") == "couro sintético"


def colour(**check: Any) -> str:
    full = {"model": "azul", "estimate": "azul", "agrees": True, **check}
    return plain(colour_text(full["model"], {"colour": ColourCheck(**full).model_dump()})).strip()


def test_the_colour_check_line() -> None:
    assert (
        colour(model="azul", estimate="azul-marinho", distance=8.1)
        == "cor: azul · pixels: azul-marinho (ΔE 8.1) ✓"
    )
    flagged = colour(
        model="vermelho", estimate="azul", distance=41.2, agrees=False, action="flagged"
    )
    assert (
        flagged
        == "cor: vermelho · pixels: azul (ΔE 41.2) ⚠ disagrees: kept as written (policy flag)"
    )
    replaced = colour(
        model="azul",
        generated="vermelho",
        estimate="azul",
        distance=41.2,
        agrees=False,
        policy="replace",
        action="replaced",
    )
    assert replaced.startswith("cor: azul (the model wrote vermelho) · pixels: azul (ΔE 41.2) ⚠")
    assert "replaced by the pixels' colour (policy replace)" in replaced
    retried = colour(distance=3.0, policy="retry", action="retried")
    assert "✓" in retried and "after a corrective attempt" in retried
    unchecked = colour(model="multicolorido", estimate="azul", checkable=False)
    assert "a colour the pixels cannot check" in unchecked and "✓" not in unchecked
    assert "not checked" in plain(colour_text("azul", None))


def test_attribute_filters_read_values_every_way_they_may_be_stored() -> None:
    assert attribute_filter(["material=couro", "genero= masculino "]) == AttributeFilter(
        {"material": "couro", "genero": "masculino"}, {}
    )
    wanted = attribute_filter(["capacidade=2,5 L", "sem_fio=true", "tamanho_roupa=2 anos"])
    assert wanted.certain == {}
    assert wanted.either == {
        "capacidade": [{"capacidade": "2,5 L"}, {"capacidade": {"value": 2.5, "unit": "L"}}],
        "sem_fio": [{"sem_fio": "true"}, {"sem_fio": True}],
        "tamanho_roupa": [
            {"tamanho_roupa": "2 anos"},
            {"tamanho_roupa": {"value": 2, "unit": "anos"}},
        ],
    }
    assert attribute_filter(["capacidade=4"]).either["capacidade"][1] == {
        "capacidade": {"value": 4}
    }
    assert attribute_filter(["tipo_notebook=2 em 1"]).certain == {"tipo_notebook": "2 em 1"}
    for bad in ("material", "material=", "Material=couro", "=couro", "cor-primaria=azul"):
        with pytest.raises(ValueError):
            attribute_filter([bad])
    with pytest.raises(ValueError, match="twice"):
        attribute_filter(["material=couro", "material=lona"])
    # Every value the shipped tree declares is found as itself, whatever else it may read as.
    for node in TREE.nodes:
        for attribute in node.attributes:
            for value in attribute.values:
                found = attribute_filter([f"{attribute.name}={value}"])
                readings = found.either.get(attribute.name, [found.certain])
                assert {attribute.name: value} in readings


def test_subtree_paths_are_normalised() -> None:
    assert subtree_path("Calçados>Tênis") == "Calçados > Tênis"
    assert subtree_path("  Calçados  >   Tênis de  Corrida ") == "Calçados > Tênis de Corrida"
    for bad in ("Calçados >", "> Tênis", "A >> B", " "):
        with pytest.raises(ValueError):
            subtree_path(bad)


# -- on the real stack ------------------------------------------------------------------------


def leaf_card(path: str, attributes: dict[str, Any], colour: str = "azul") -> ProductCard:
    leaf = TREE.leaf(path)
    assert leaf is not None, path
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


def check(model: str, estimate: str, distance: float | None, agrees: bool, **more: Any) -> Checks:
    action = "none" if agrees else "flagged"
    return Checks(
        colour=ColourCheck(
            model=model,
            estimate=estimate,
            distance=distance,
            agrees=agrees,
            **{"action": action, **more},
        )
    )


def result(bucket: str, key: str, card: ProductCard | None, checks: Checks | None) -> CardResult:
    ref = ObjectRef(
        bucket=bucket,
        key=key,
        etag="c6f3ac6367e8af5f979ee83ba321e085",
        size=20_000,
        content_type="image/jpeg",
        sequencer="18EB8B3948595CE8",
        event_time=T0,
    )
    return CardResult(
        job_id=ImageJob.job_id_for(ref),
        trace_id=uuid.uuid4().hex,
        object=ref,
        status=CardStatus.done if card else CardStatus.failed,
        card=card,
        reason=None if card else "semantic_check",
        model_id="qwen2.5-vl-3b-q4_k_m",
        prompt_version="card-v4+test",
        attempts=1,
        timings=Timings(generate_ms=1000.0, completion_tokens=300, total_ms=1500.0),
        checks=checks,
        producer="inference",
        produced_at=datetime.now(UTC) - timedelta(seconds=5),
    )


def old_flat_card(bucket: str, key: str) -> CardResult:
    """A card written before category trees: only category_standard."""
    message = json.loads(
        result(bucket, key, leaf_card(BOOTS, {"material": "couro"}), None).model_dump_json()
    )
    for name in ("category_path", "category_id", "attributes"):
        del message["card"][name]
    return CardResult.model_validate_json(json.dumps(message))


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


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    ensure_stack()
    bucket = f"vitrine-cat-{uuid.uuid4().hex[:8]}"
    rows = [
        result(
            bucket,
            "tenis-couro.jpg",
            leaf_card(RUNNING, {"material": "couro", "genero": "masculino"}),
            check("azul", "azul-marinho", 8.1, True),
        ),
        result(
            bucket,
            "tenis-lona.jpg",
            leaf_card(CASUAL, {"material": "lona", "genero": "unissex"}, "vermelho"),
            check("vermelho", "azul", 41.2, False),
        ),
        result(
            bucket,
            "coturno.jpg",
            leaf_card(BOOTS, {"material": "couro", "altura_cano": "médio"}, "preto"),
            check("preto", "preto", 1.5, True),
        ),
        result(
            bucket,
            "air-fryer.jpg",
            leaf_card(AIR_FRYER, {"capacidade": {"value": 4.5, "unit": "L"}}, "azul"),
            check(
                "azul",
                "azul",
                38.0,
                False,
                generated="vermelho",
                policy="replace",
                action="replaced",
            ),
        ),
        result(
            bucket,
            "garrafa.jpg",
            leaf_card(BOTTLE, {"material": "aço inox", "capacidade": {"value": 0.75, "unit": "L"}}),
            check("multicolorido", "azul", None, True, checkable=False),
        ),
        result(
            bucket,
            "fone.jpg",
            leaf_card(HEADPHONES, {"sem_fio": True, "tipo_fone": "circum-auricular"}, "preto"),
            None,
        ),
        result(bucket, "body.jpg", leaf_card(BABY, {"tamanho_roupa": "2 anos"}, "branco"), None),
        old_flat_card(bucket, "velho.jpg"),
        result(bucket, "falhou.jpg", None, None),
        # Another deployment's tree (the generic card type reads any): LIKE's metacharacters.
        result(bucket, "kit-festa.jpg", other_card("Kit_Festa > Balões"), None),
        result(bucket, "kitxfesta.jpg", other_card("KitXFesta > Balões"), None),
        result(bucket, "promo.jpg", other_card("Promo 50% > Camisetas"), None),
        result(bucket, "promo-e-tal.jpg", other_card("Promo 50 e tal > Camisetas"), None),
    ]

    async def seed() -> None:
        conn = await AsyncConnection.connect(DEFAULT_DSN, connect_timeout=5)
        try:
            assert await upsert_batch(conn, rows) == len(rows)
        finally:
            await conn.close()

    asyncio.run(seed())
    yield {**os.environ, "VITRINE_BUCKET": bucket, "VITRINE_PG_DSN": DEFAULT_DSN}
    with psycopg.connect(DEFAULT_DSN, connect_timeout=5, autocommit=True) as conn:
        conn.execute("DELETE FROM product_cards WHERE bucket = %s", (bucket,))


def run(env: dict[str, str], *args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VITRINE, *args],
        cwd=REPO,
        env={**env, "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(env: dict[str, str], *args: str) -> list[str]:
    """The keys `vitrine cards --json ARGS` lists, sorted."""
    done = run(env, "cards", "--json", *args)
    assert done.returncode == 0, done.stderr
    return sorted(json.loads(line)["object_key"] for line in done.stdout.splitlines())


def test_show_prints_the_path_the_attributes_and_the_colour_check(env: dict[str, str]) -> None:
    shown = run(env, "show", "air-fryer.jpg")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert re.search(rf"^category +{AIR_FRYER} *$", text, re.M), text
    assert re.search(r"^category id +eletrodomesticos\.eletroportateis\.air-fryers *$", text, re.M)
    assert "capacidade: 4.5 L" in text
    assert "cor: azul (the model wrote vermelho) · pixels: azul (ΔE 38.0) ⚠" in text
    assert "replaced by the pixels' colour (policy replace)" in " ".join(text.split())
    agreeing = run(env, "show", "tenis-couro.jpg").stdout
    assert RUNNING in agreeing
    assert "genero: masculino" in agreeing and "material: couro" in agreeing
    assert "cor: azul · pixels: azul-marinho (ΔE 8.1) ✓" in agreeing
    flagged = " ".join(run(env, "show", "tenis-lona.jpg").stdout.split())
    assert "cor: vermelho · pixels: azul (ΔE 41.2) ⚠ disagrees: kept as written (policy flag)" in (
        flagged
    )
    bottle = run(env, "show", "garrafa.jpg").stdout
    assert "a colour the pixels cannot check" in bottle and "✓" not in bottle
    headphones = run(env, "show", "fone.jpg").stdout
    assert "sem_fio: yes" in headphones and "not checked against the pixels" in headphones
    old = run(env, "show", "velho.jpg").stdout
    assert re.search(r"^category +Calçados *$", old, re.M)  # the flat card: a one-level path
    assert re.search(r"^category id +calcados *$", old, re.M)


def test_show_json_carries_the_new_columns(env: dict[str, str]) -> None:
    shown = run(env, "show", "tenis-lona.jpg", "--json")
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert row["category_path"] == CASUAL and row["category_id"] == "calcados.tenis.tenis-casual"
    assert row["attributes"] == {"material": "lona", "genero": "unissex"}
    assert row["color_estimate"] == "azul" and row["color_distance"] == pytest.approx(41.2)
    assert row["checks"]["colour"]["agrees"] is False


def test_cards_by_subtree(env: dict[str, str]) -> None:
    assert listed(env, "--subtree", "Calçados > Tênis") == ["tenis-couro.jpg", "tenis-lona.jpg"]
    assert listed(env, "--subtree", "Calçados>Tênis") == ["tenis-couro.jpg", "tenis-lona.jpg"]
    assert listed(env, "--subtree", RUNNING) == ["tenis-couro.jpg"]
    shoes = ["coturno.jpg", "tenis-couro.jpg", "tenis-lona.jpg", "velho.jpg"]
    assert listed(env, "--subtree", "Calçados") == shoes  # the flat card is the root itself
    assert listed(env, "--subtree", "Calçados > Tên") == []  # whole names only
    assert listed(env, "--category", "calçados") == shoes  # the top-level filter, as before
    assert listed(env, "--subtree", "Calçados", "--status", "failed") == []
    # '_' and '%' in a name are that character, not a LIKE wildcard.
    assert listed(env, "--subtree", "Kit_Festa") == ["kit-festa.jpg"]
    assert listed(env, "--subtree", "Promo 50%") == ["promo.jpg"]
    assert listed(env, "--subtree", "Promo 50% > Camisetas") == ["promo.jpg"]


def test_cards_by_attribute(env: dict[str, str]) -> None:
    assert listed(env, "--attribute", "material=couro") == ["coturno.jpg", "tenis-couro.jpg"]
    assert listed(env, "--attribute", "material=couro", "--attribute", "genero=masculino") == [
        "tenis-couro.jpg"
    ]
    assert listed(env, "--attribute", "material=couro", "--subtree", "Calçados > Botas") == [
        "coturno.jpg"
    ]
    assert listed(env, "--attribute", "capacidade=4.5 L") == ["air-fryer.jpg"]
    assert listed(env, "--attribute", "capacidade=4,5") == ["air-fryer.jpg"]  # any unit
    assert listed(env, "--attribute", "capacidade=4.5 ml") == []
    assert listed(env, "--attribute", "capacidade=0.75") == ["garrafa.jpg"]
    assert listed(env, "--attribute", "sem_fio=true") == ["fone.jpg"]
    assert listed(env, "--attribute", "sem_fio=false") == []
    assert listed(env, "--attribute", "tamanho_roupa=2 anos") == ["body.jpg"]  # an enum's text
    assert listed(env, "--attribute", "material=couro'; DROP TABLE product_cards; --") == []


def test_cards_flagged(env: dict[str, str]) -> None:
    assert listed(env, "--flagged") == ["air-fryer.jpg", "tenis-lona.jpg"]
    assert listed(env, "--flagged", "--subtree", "Calçados") == ["tenis-lona.jpg"]
    rows = run(env, "cards", "--json", "--prefix", "tenis-").stdout.splitlines()
    flags = {json.loads(line)["object_key"]: json.loads(line)["colour_flag"] for line in rows}
    assert flags == {"tenis-couro.jpg": False, "tenis-lona.jpg": True}


def test_bad_filters_are_usage_errors(env: dict[str, str]) -> None:
    for args in (
        ("--attribute", "material"),
        ("--attribute", "Material=couro"),
        ("--attribute", "material=couro", "--attribute", "material=lona"),
        ("--subtree", "Calçados >"),
    ):
        failed = run(env, "cards", *args)
        assert failed.returncode == 2, (args, failed.stderr)
        assert failed.stderr.startswith("vitrine: error: "), failed.stderr
        assert "Traceback" not in failed.stderr


def table_lines(env: dict[str, str], columns: int) -> dict[str, str]:
    table = run(env, "cards", "--status", "done", columns=columns)
    assert table.returncode == 0, table.stderr
    assert all(len(line) <= columns for line in table.stdout.splitlines())
    return {line.split()[0]: line for line in table.stdout.splitlines() if ".jpg" in line}


def test_the_table_shows_the_leaf_path_and_the_flag(env: dict[str, str]) -> None:
    wide = table_lines(env, 200)
    assert RUNNING in wide["tenis-couro.jpg"] and CASUAL in wide["tenis-lona.jpg"]
    assert "… > Garrafas Térmicas e Squeezes" in wide["garrafa.jpg"]
    assert "⚠ vermelho" in wide["tenis-lona.jpg"] and "⚠" not in wide["tenis-couro.jpg"]
    narrow = table_lines(env, 100)  # keys whole, paths shortened to keep their leaf
    assert set(narrow) == set(wide)
    assert "… > Tênis de Corrida" in narrow["tenis-couro.jpg"]
    assert "Calçados > Botas > Coturnos" not in narrow["coturno.jpg"]
    assert "… > Coturnos" in narrow["coturno.jpg"]
    flags = {key for key, line in narrow.items() if "⚠" in line}  # the flag before the colour
    assert flags == {"tenis-lona.jpg", "air-fryer.jpg"}


def test_csv_has_the_category_columns(env: dict[str, str]) -> None:
    done = run(env, "cards", "--csv", "--subtree", "Eletrodomésticos")
    assert done.returncode == 0, done.stderr
    [row] = list(csv.DictReader(io.StringIO(done.stdout)))
    assert row["category_path"] == AIR_FRYER
    assert json.loads(row["attributes"]) == {"capacidade": {"value": 4.5, "unit": "L"}}
    assert row["color_estimate"] == "azul" and row["colour_flag"] == "True"


def test_status_counts_colour_flags(env: dict[str, str]) -> None:
    status = run(env, "status", "--json")
    assert status.returncode in (0, 3), status.stderr  # 3: services of the dev stack not running
    cards = json.loads(status.stdout)["cards"]
    assert cards["counts"]["done"] == 12
    assert (cards["colour_flagged"], cards["colour_checked"]) == (2, 5)
    screen = run(env, "status", columns=120)
    assert "colour flags: 2 of 12 done (16.7 %); 7 without a colour check" in screen.stdout


def test_the_reader_role_is_enough(env: dict[str, str]) -> None:
    reader = {**env, "VITRINE_PG_DSN": READER_DSN}
    assert (
        listed(reader, "--subtree", "Calçados", "--attribute", "material=couro", "--flagged") == []
    )
    assert listed(reader, "--flagged") == ["air-fryer.jpg", "tenis-lona.jpg"]
    shown = run(reader, "show", "tenis-couro.jpg")
    assert shown.returncode == 0 and "material: couro" in shown.stdout, shown.stderr
    status = json.loads(run(reader, "status", "--json").stdout)
    assert status["cards_error"] is None and status["cards"]["colour_flagged"] == 2
