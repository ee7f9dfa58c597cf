"""``vitrine eval export-reviewed`` against the real PostgreSQL: cards written by the sink's own
upsert, decided by the desk's own code (services/review/decisions.py, as the desk's role), then
exported and read back with ``read_set``: verdicts, the person's values as the truth, the
negative's refused card, photo and folder forms, the filters, and the one-line errors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from schemas.card import card_model, default_taxonomy
from schemas.facts import facts_from_metadata
from schemas.language import PT_BR, colour_pattern
from schemas.messages import CardResult, CardStatus, ObjectRef
from schemas.products import ProductSpec
from services.review import decisions
from services.review.accounts import Role, User
from tests.support.card_text import DESCRIPTION, MUG
from tests.support.pipeline import DEFAULT_DSN, ensure_stack
from tests.support.review_desk import (
    MIN_WORDS,
    REVIEW_DSN,
    T0,
    card,
    query,
    result,
    run_async,
    upsert,
)
from vitrine.commands.eval_export import export_reviewed as export_command
from vitrine.config import OpsSettings
from vitrine.eval.export import ExportSummary, NothingToExport, export_reviewed
from vitrine.eval.labels import LabelledItem, read_set

pytestmark = pytest.mark.pipeline

CARD_TYPE = card_model(
    default_taxonomy(PT_BR), colour_regex=colour_pattern(PT_BR), min_words=MIN_WORDS
)
REVIEWER = User("export-reviewer", Role.reviewer)
LEAF_ID = "casa-e-cozinha.potes-e-garrafas.garrafas-termicas-e-squeezes"

PLAIN = "shop/mug-plain.jpg"
EDITED = "shop/mug-edited.jpg"
REJECTED = "shop/mug-rejected.jpg"
PRODUCT = "shop/123/product.json"
OTHER_MODEL = "shop/other-model.jpg"
PENDING = "shop/pending.jpg"
FAILED = "shop/failed.jpg"


@dataclass
class Decided:
    bucket: str
    model: str
    other_model: str
    between: datetime
    """A time after the first decisions (PLAIN, OTHER_MODEL) and before the others."""

    def row(self, key: str) -> dict[str, Any]:
        rows = query(
            "SELECT * FROM product_cards WHERE bucket = %s AND object_key = %s", self.bucket, key
        )
        assert rows, key
        return rows[0]

    def item_id(self, key: str) -> str:
        return f"{self.bucket}/{key}"


def _result(
    bucket: str, key: str, values: dict[str, Any] | None, model: str, **kw: Any
) -> CardResult:
    ref = ObjectRef(
        bucket=bucket,
        key=key,
        etag=uuid.uuid4().hex,
        size=1000,
        content_type="application/json" if key.endswith(".json") else "image/jpeg",
        sequencer=format(time.time_ns(), "X"),
        event_time=T0,
    )
    return result(ref, values, **kw).model_copy(update={"model_id": model})


def _decide(call: Any) -> Any:
    async def go() -> Any:
        conn = await psycopg.AsyncConnection.connect(REVIEW_DSN, connect_timeout=5)
        try:
            return await call(conn)
        finally:
            await conn.close()

    return run_async(go)


def approve(bucket: str, key: str, changes: Mapping[str, Any] | None = None) -> None:
    _decide(lambda conn: decisions.approve(conn, CARD_TYPE, REVIEWER, bucket, key, changes=changes))


def edit(bucket: str, key: str, changes: Mapping[str, Any]) -> None:
    _decide(lambda conn: decisions.edit(conn, CARD_TYPE, REVIEWER, bucket, key, changes))


def reject(bucket: str, key: str, note: str) -> None:
    _decide(lambda conn: decisions.reject(conn, REVIEWER, bucket, key, note=note))


@pytest.fixture(scope="module")
def decided() -> Iterator[Decided]:
    ensure_stack()
    tag = uuid.uuid4().hex[:10]
    bucket, model, other = f"evx-{tag}", f"export-model-{tag}", f"export-other-{tag}"
    facts = facts_from_metadata({"sku": "CAN-1", "brand": "Tramontina", "material": "aço inox"})
    upsert(
        [
            _result(bucket, PLAIN, card("Garrafa térmica azul"), model, facts=facts),
            _result(bucket, EDITED, card("Garrafa térmica"), model),
            _result(bucket, REJECTED, card("Caneca qualquer"), model),
            _result(bucket, PRODUCT, card("Garrafa térmica inox"), model).model_copy(
                update={
                    "product": ProductSpec(
                        photos=["shop/123/front.jpg", "shop/123/back.jpg"], main=1
                    )
                }
            ),
            _result(bucket, OTHER_MODEL, card("Squeeze de alumínio"), other),
            _result(bucket, PENDING, card("Ainda por rever"), model),
            _result(bucket, FAILED, None, model, status=CardStatus.failed),
        ]
    )
    approve(bucket, PLAIN)
    approve(bucket, OTHER_MODEL)
    between = query("SELECT clock_timestamp() AS t")[0]["t"]
    approve(
        bucket,
        EDITED,
        {
            "color_primary": "vermelho",
            "attributes": {"material": "aço inox", "capacidade": {"value": 0.5, "unit": "L"}},
        },
    )
    edit(bucket, REJECTED, {"product_name": "Caneca corrigida"})
    reject(bucket, REJECTED, "não é uma garrafa")
    approve(bucket, PRODUCT)
    try:
        yield Decided(bucket, model, other, between)
    finally:
        with psycopg.connect(DEFAULT_DSN) as conn:
            conn.execute("DELETE FROM card_reviews WHERE bucket = %s", (bucket,))
            conn.execute("DELETE FROM product_cards WHERE bucket = %s", (bucket,))


def export(decided: Decided, out: Path, **kw: Any) -> tuple[ExportSummary, list[LabelledItem]]:
    kw.setdefault("bucket", decided.bucket)
    summary = export_reviewed(OpsSettings(), out, **kw)
    return summary, read_set(out)


def source(decided: Decided, key: str, **more: Any) -> dict[str, Any]:
    row = decided.row(key)
    return {
        "bucket": decided.bucket,
        "key": key,
        "model_id": row["model_id"],
        "prompt_version": "card-v3+test",
        "reviewed_by": REVIEWER.username,
        "reviewed_at": row["reviewed_at"].astimezone(UTC).isoformat(),
        **more,
    }


def test_every_decision_becomes_an_item_in_decision_order(decided: Decided, tmp_path: Path) -> None:
    summary, items = export(decided, tmp_path / "set.jsonl")
    assert [i.id for i in items] == [
        decided.item_id(k) for k in (PLAIN, OTHER_MODEL, EDITED, REJECTED, PRODUCT)
    ]  # pending, failed: no decision, not exported
    assert (summary.approved, summary.edited, summary.rejected, summary.skipped) == (3, 1, 1, [])
    assert summary.path == tmp_path / "set.jsonl"
    by_id = {i.id: i for i in items}

    plain = decided.row(PLAIN)
    assert by_id[decided.item_id(PLAIN)].model_dump(exclude_defaults=True) == {
        "id": decided.item_id(PLAIN),
        "photos": [f"s3://{decided.bucket}/{PLAIN}"],
        "facts": {"sku": "CAN-1", "brand": "Tramontina", "material": "aço inox"},
        "category": MUG,
        "category_id": LEAF_ID,
        "color": "azul",
        "attributes": {},
        "description": DESCRIPTION,
        "card": plain["card"],
        "model_card": plain["card"],
        "verdict": "approved",
        "source": source(decided, PLAIN),
    }

    edited_row = decided.row(EDITED)
    edited = by_id[decided.item_id(EDITED)]
    assert edited.verdict == "edited"
    assert edited.card is not None and edited.card == edited_row["approved_card"]
    assert edited.card["color_primary"] == "vermelho" and edited.color == "vermelho"
    assert edited.model_card is not None and edited.model_card == edited_row["card"]
    assert edited.model_card["color_primary"] == "azul"  # what the model wrote, kept beside it
    assert edited.attributes == {"material": "aço inox", "capacidade": {"value": 0.5, "unit": "L"}}
    assert edited.expected_color == "vermelho"
    assert edited.source == source(decided, EDITED, edited_fields=["attributes", "color_primary"])
    assert edited.facts == {}

    rejected_row = decided.row(REJECTED)
    assert by_id[decided.item_id(REJECTED)].model_dump(exclude_defaults=True) == {
        "id": decided.item_id(REJECTED),
        "photos": [f"s3://{decided.bucket}/{REJECTED}"],
        "model_card": rejected_row["card"],
        "verdict": "rejected",
        "rejected_card": rejected_row["edited_card"],
        "source": source(decided, REJECTED, note="não é uma garrafa"),
    }
    negative = by_id[decided.item_id(REJECTED)]
    assert negative.rejected_card is not None
    assert negative.rejected_card["product_name"] == "Caneca corrigida"  # the person's, refused
    assert negative.card is None and negative.expected_category is None

    product = by_id[decided.item_id(PRODUCT)]
    assert product.folder == f"s3://{decided.bucket}/shop/123/"
    assert product.photos == [] and product.facts == {}
    assert product.verdict == "approved" and product.card == decided.row(PRODUCT)["card"]


def test_the_same_decisions_export_to_the_same_bytes(decided: Decided, tmp_path: Path) -> None:
    export(decided, tmp_path / "a.jsonl")
    export(decided, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"]  # no temp left


def test_filters_model_since_no_rejected_limit(decided: Decided, tmp_path: Path) -> None:
    out = tmp_path / "set.jsonl"
    # by model alone (every bucket): the model is this test's, so only its rows
    _, items = export(decided, out, bucket=None, model=decided.model)
    assert [i.id for i in items] == [decided.item_id(k) for k in (PLAIN, EDITED, REJECTED, PRODUCT)]
    _, items = export(decided, out, model=decided.other_model)
    assert [i.id for i in items] == [decided.item_id(OTHER_MODEL)]
    summary, items = export(decided, out, since=decided.between)
    assert [i.id for i in items] == [decided.item_id(k) for k in (EDITED, REJECTED, PRODUCT)]
    assert (summary.approved, summary.edited, summary.rejected) == (1, 1, 1)
    summary, items = export(decided, out, include_rejected=False)
    assert [i.verdict for i in items] == ["approved", "approved", "edited", "approved"]
    assert summary.rejected == 0
    _, items = export(decided, out, limit=2)
    assert [i.id for i in items] == [decided.item_id(k) for k in (PLAIN, OTHER_MODEL)]


def test_nothing_to_export_leaves_the_file_as_it_was(decided: Decided, tmp_path: Path) -> None:
    out = tmp_path / "set.jsonl"
    out.write_text("kept\n")
    with pytest.raises(NothingToExport):
        export_reviewed(OpsSettings(), out, bucket=decided.bucket, model="no-such-model")
    assert out.read_text() == "kept\n"
    assert [p.name for p in tmp_path.iterdir()] == ["set.jsonl"]


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(export_command)
    return app


def test_the_command_prints_the_counts_and_the_path(decided: Decided, tmp_path: Path) -> None:
    out = tmp_path / "reviewed.jsonl"
    answer = CliRunner().invoke(
        cli(),
        [str(out), "--bucket", decided.bucket, "--model", decided.model, "--no-rejected"],
        env={"VITRINE_PG_DSN": DEFAULT_DSN},
    )
    assert answer.exit_code == 0, answer.output
    assert answer.stdout.splitlines() == [
        "approved\t2",
        "edited\t1",
        "skipped\t0",
        f"wrote 3 item(s) to {out}",
    ]
    assert [i.id for i in read_set(out)] == [decided.item_id(k) for k in (PLAIN, EDITED, PRODUCT)]

    answer = CliRunner().invoke(
        cli(),
        [str(out), "--bucket", decided.bucket, "--since", decided.between.isoformat()],
        env={"VITRINE_PG_DSN": DEFAULT_DSN},
    )
    assert answer.exit_code == 0, answer.output
    assert answer.stdout.splitlines()[:4] == [
        "approved\t1",
        "edited\t1",
        "rejected\t1",
        "skipped\t0",
    ]


def test_the_command_says_what_is_wrong_in_one_line(decided: Decided, tmp_path: Path) -> None:
    out = tmp_path / "set.jsonl"
    runner = CliRunner()
    bad = runner.invoke(cli(), [str(out), "--since", "last tuesday"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("vitrine: error: --since takes an ISO 8601 date")
    assert len(bad.stderr.splitlines()) == 1

    down = runner.invoke(
        cli(),
        [str(out), "--bucket", decided.bucket],
        env={"VITRINE_PG_DSN": "postgresql://vitrine:vitrine@127.0.0.1:1/vitrine"},
    )
    assert down.exit_code == 1
    assert down.stderr.startswith("vitrine: error: cannot connect to PostgreSQL: ")
    assert len(down.stderr.splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no temporary file left

    none = runner.invoke(
        cli(),
        [str(out), "--bucket", decided.bucket, "--since", "2999-01-01"],
        env={"VITRINE_PG_DSN": DEFAULT_DSN},
    )
    assert none.exit_code == 1
    assert none.stderr.splitlines() == [
        f"vitrine: error: no approved or rejected card to export (--since 2999-01-01, "
        f"--bucket {decided.bucket}): {out} was not written"
    ]
    assert not out.exists()


def test_eval_run_accepts_the_exported_set(
    decided: Decided, tmp_path: Path, tiny_pairs: dict[str, Any]
) -> None:
    """The export's s3:// photos and product folder are what ``eval run`` reads: fetched once
    with the operator's S3 settings, the folder through its product.json; the reviewed set's
    own statistics lead the report."""
    import json
    import os
    import subprocess
    import sys

    from tests.support.eval_set import photo
    from tests.support.pipeline import s3_client

    s3 = s3_client(dict(os.environ))
    s3.create_bucket(Bucket=decided.bucket)
    try:
        for i, key in enumerate(
            (PLAIN, EDITED, REJECTED, OTHER_MODEL, "shop/123/front.jpg", "shop/123/back.jpg")
        ):
            image = photo(i)[0]
            import io

            buf = io.BytesIO()
            image.save(buf, "JPEG")
            s3.put_object(Bucket=decided.bucket, Key=key, Body=buf.getvalue())
        manifest = {"photos": ["front.jpg", "back.jpg"], "main": "back.jpg"}
        s3.put_object(Bucket=decided.bucket, Key=PRODUCT, Body=json.dumps(manifest).encode())
        labelled = tmp_path / "reviewed.jsonl"
        export(decided, labelled)
        pair = tiny_pairs["mtmd"]
        candidate = (
            f"tiny=model_path={pair.model},mmproj_path={pair.mmproj},handler=mtmd,"
            "max_tokens=64,max_attempts=1,engine_parallel=2,n_threads=2"
        )
        out = tmp_path / "out"
        run = subprocess.run(
            [sys.executable, "-m", "vitrine.cli", "eval", "run", str(labelled), "--out",
             str(out), "-c", candidate],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads((out / "report.json").read_text())
        assert report["reviewed_set"]["verdicts"] == {"approved": 3, "edited": 1, "rejected": 1}
        assert report["reviewed_set"]["edit_distance"]["color_primary"] > 0
        (tiny,) = report["candidates"]
        assert tiny["generations"] == 5 and tiny["complete"]
        resolved = json.loads((out / "run.json").read_text())["resolved"]
        product = next(r for r in resolved if r["id"].endswith(PRODUCT))
        assert len(product["photos"]) == 2 and product["main"] == 1
        # every object fetched once: six photos and the product.json
        assert len(list((out / "photos").iterdir())) == 7
        # the tiny model's 64 tokens never finish a card: every reviewed label counts it wrong
        assert tiny["accuracy"]["approved_unchanged"]["value"] == 0.0
        assert tiny["failure_reasons"] == {"truncated": 5}
    finally:
        for item in s3.list_objects_v2(Bucket=decided.bucket).get("Contents", []):
            s3.delete_object(Bucket=decided.bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=decided.bucket)
