"""The sink's upsert against the real PostgreSQL: one row per object, the newest event wins.

These tests need the database the dev stack / CI starts (``VITRINE_PG_DSN``, default the dev
stack's DSN) with ``infra/migrations`` applied.  An unreachable database is an error, never a skip.
Each test writes under its own bucket name and deletes its rows afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from aiokafka.structs import ConsumerRecord
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import ValidationError

from schemas.card import ProductCard
from schemas.messages import CardResult, CardStatus, ImageJob
from services.runtime.dead_letters import InvalidMessage
from services.sink.service import parse
from services.sink.store import UPSERT, row, upsert_batch
from tests.support.messages import (
    SEQ_PUT,
    SNEAKER_DESCRIPTION,
    make_card,
    make_ref,
    make_result,
)

DSN = os.environ.get("VITRINE_PG_DSN") or "postgresql://vitrine:vitrine@127.0.0.1:25432/vitrine"

SEQ_OLDER = "18EB8B3000000000"
SEQ_DELETE = "18EB8B4A11C0FFEE"
SEQ_PUT_AGAIN = "18EB8B5B00000001"

# -- database plumbing ----------------------------------------------------------------------------


def apply(*batches: Sequence[CardResult]) -> list[int]:
    """Run each batch through ``upsert_batch`` on one fresh connection, like the sink does."""

    async def go() -> list[int]:
        conn = await AsyncConnection.connect(DSN, connect_timeout=5, application_name="test-sink")
        try:
            return [await upsert_batch(conn, batch) for batch in batches]
        finally:
            await conn.close()

    return asyncio.run(go())


def query(sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(DSN, connect_timeout=5, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def execute(sql: str, *params: Any) -> None:
    with psycopg.connect(DSN, connect_timeout=5, autocommit=True) as conn:
        conn.execute(sql, params)


def rows_of(bucket: str) -> dict[str, dict[str, Any]]:
    found = query("SELECT * FROM product_cards WHERE bucket = %s ORDER BY object_key", bucket)
    return {r["object_key"]: r for r in found}


def the_row(bucket: str, key: str = "photos/Tênis azul 01.jpg") -> dict[str, Any]:
    found = rows_of(bucket)
    assert key in found, f"no row for {bucket}/{key}; rows: {sorted(found)}"
    return found[key]


@pytest.fixture
def bucket() -> Iterator[str]:
    """A bucket name no other run uses; its rows are deleted afterwards.

    Connecting here first makes an unreachable database (or a missing table) an error of every
    test, not a skip.
    """
    name = "t-sink-" + uuid.uuid4().hex[:8]
    assert query("SELECT to_regclass('product_cards') AS t")[0]["t"] == "product_cards", (
        "table product_cards is missing: run infra/migrate.sh"
    )
    yield name
    execute("DELETE FROM product_cards WHERE bucket = %s", name)


def assert_done(r: dict[str, Any], card: ProductCard, result: CardResult) -> None:
    assert r["status"] == "done"
    assert r["status_rank"] == 1
    assert r["product_name"] == card.product_name
    assert r["category_standard"] == card.category_standard
    assert r["description_long"] == card.description_long
    assert r["color_primary"] == card.color_primary
    assert r["features_list"] == card.features_list
    assert r["card"] == card.model_dump()
    assert ProductCard.model_validate(r["card"]) == card
    assert r["reason"] is None and r["detail"] is None
    assert r["model_id"] == result.model_id
    assert r["prompt_version"] == result.prompt_version
    assert r["attempts"] == result.attempts
    assert result.timings is not None
    assert r["timings"] == result.timings.model_dump()
    assert r["job_id"] == result.job_id
    assert r["trace_id"] == result.trace_id
    assert r["produced_at"] == result.produced_at
    assert r["sequencer"] == result.object.sequence


CARD_COLUMNS = (
    "product_name",
    "category_standard",
    "description_long",
    "color_primary",
    "features_list",
    "card",
    "model_id",
    "prompt_version",
    "timings",
)


# -- tests ----------------------------------------------------------------------------------------


def test_queued_then_done_fills_the_card(bucket: str) -> None:
    ref = make_ref(bucket)
    queued = make_result(ref, CardStatus.queued)
    card = make_card()
    done = make_result(ref, CardStatus.done, at=5.2, card=card)

    assert apply([queued]) == [1]
    r = the_row(bucket)
    assert r["status"] == "queued" and r["status_rank"] == 0
    assert all(r[c] is None for c in CARD_COLUMNS)
    assert r["etag"] == ref.etag and r["size_bytes"] == 19_000
    assert r["content_type"] == "image/jpeg"
    assert r["event_time"] == ref.event_time
    assert r["results_applied"] == 1
    assert r["job_id"] == queued.job_id
    created = r["created_at"]

    assert apply([done]) == [1]
    r = the_row(bucket)
    assert_done(r, card, done)
    assert r["job_id"] == queued.job_id  # same event, same job
    assert r["results_applied"] == 2
    assert r["created_at"] == created
    assert r["updated_at"] >= created
    assert r["etag"] == ref.etag and r["size_bytes"] == 19_000
    assert r["version_id"] is None


def test_queued_and_done_in_one_batch(bucket: str) -> None:
    ref = make_ref(bucket)
    card = make_card()
    done = make_result(ref, CardStatus.done, at=4.0, card=card)
    assert apply([make_result(ref, CardStatus.queued), done]) == [2]
    r = the_row(bucket)
    assert_done(r, card, done)
    assert r["results_applied"] == 2


def test_replaying_a_batch_changes_nothing(bucket: str) -> None:
    ref = make_ref(bucket)
    other = make_ref(bucket, key="photos/outro.png", sequencer="18EB8B3948595D00")
    batch = [
        make_result(ref, CardStatus.queued),
        make_result(other, CardStatus.queued, at=0.1),
        make_result(ref, CardStatus.done, at=5.0),
        make_result(other, CardStatus.rejected, at=6.0, reason="bad_image"),
    ]
    assert apply(batch) == [4]
    before = rows_of(bucket)
    assert len(before) == 2

    assert apply(batch, batch) == [0, 0]
    after = rows_of(bucket)
    assert after == before  # every column, updated_at and results_applied included
    assert after[ref.key]["results_applied"] == 2
    assert after[ref.key]["status"] == "done"
    assert after[other.key]["status"] == "rejected"
    assert after[other.key]["reason"] == "bad_image"


def test_replaying_single_results_out_of_order_changes_nothing(bucket: str) -> None:
    ref = make_ref(bucket)
    queued = make_result(ref, CardStatus.queued)
    done = make_result(ref, CardStatus.done, at=5.0)
    apply([queued, done])
    before = rows_of(bucket)
    # Kafka redelivers after a crash: the same messages, in any order, any number of times.
    assert apply([done], [queued], [done, queued]) == [0, 0, 0]
    assert rows_of(bucket) == before


def test_late_queued_of_the_same_event_does_not_hide_done(bucket: str) -> None:
    ref = make_ref(bucket)
    card = make_card()
    done = make_result(ref, CardStatus.done, at=5.0, card=card)
    apply([done])
    before = the_row(bucket)

    late = make_result(ref, CardStatus.queued, at=0.0)  # produced before done, delivered after
    replayed = make_result(ref, CardStatus.queued, at=60.0)  # MinIO replayed the event later
    assert apply([late], [replayed]) == [0, 0]
    r = the_row(bucket)
    assert_done(r, card, done)
    assert r == before


def test_result_of_an_older_version_is_ignored(bucket: str) -> None:
    new_ref = make_ref(bucket, sequencer=SEQ_PUT)
    old_ref = make_ref(bucket, sequencer=SEQ_OLDER)
    new_card = make_card("Tênis de corrida azul novo")
    new_done = make_result(new_ref, CardStatus.done, at=5.0, card=new_card)
    apply([make_result(new_ref, CardStatus.queued), new_done])
    before = the_row(bucket)

    # The older version's results arrive afterwards, even produced later (slow inference).
    old_batch = [
        make_result(old_ref, CardStatus.queued, at=1.0),
        make_result(old_ref, CardStatus.done, at=90.0, card=make_card("Tênis velho")),
        make_result(old_ref, CardStatus.failed, at=91.0, reason="generation"),
        make_result(old_ref, CardStatus.deleted, at=92.0),
    ]
    assert apply(old_batch) == [0]
    r = the_row(bucket)
    assert r == before
    assert_done(r, new_card, new_done)


def test_newer_final_status_of_the_same_event_replaces_done(bucket: str) -> None:
    # Reprocessing an event (same sequencer, a later final result) is allowed to win.
    ref = make_ref(bucket)
    apply([make_result(ref, CardStatus.done, at=5.0)])
    failed = make_result(ref, CardStatus.failed, at=50.0, reason="generation")
    assert apply([failed]) == [1]
    r = the_row(bucket)
    assert r["status"] == "failed" and r["reason"] == "generation"
    assert r["card"] is None and r["product_name"] is None


def test_delete_replaces_done_and_clears_the_card(bucket: str) -> None:
    put = make_ref(bucket, sequencer=SEQ_PUT)
    apply([make_result(put, CardStatus.queued), make_result(put, CardStatus.done, at=5.0)])

    removed = make_ref(bucket, sequencer=SEQ_DELETE, removed=True)
    deleted = make_result(removed, CardStatus.deleted, at=120.0)
    assert apply([deleted]) == [1]
    r = the_row(bucket)
    assert r["status"] == "deleted" and r["status_rank"] == 1
    assert all(r[c] is None for c in CARD_COLUMNS), {c: r[c] for c in CARD_COLUMNS}
    assert r["reason"] is None and r["detail"] is None
    assert r["attempts"] == 0
    assert r["sequencer"] == removed.sequence
    assert r["event_time"] == removed.event_time
    assert r["job_id"] == deleted.job_id
    assert r["results_applied"] == 3
    # The removal names no etag/size/type: the row keeps those of the last version it knew.
    assert r["etag"] == put.etag and r["size_bytes"] == put.size
    assert r["content_type"] == put.content_type
    # Full-text search no longer finds a deleted product.
    hits = query(
        "SELECT object_key FROM product_cards WHERE bucket = %s "
        "AND search @@ websearch_to_tsquery('portuguese', 'tênis corrida')",
        bucket,
    )
    assert hits == []

    # A late done for the deleted version cannot bring the card back.
    assert apply([make_result(put, CardStatus.done, at=200.0)]) == [0]
    assert the_row(bucket)["status"] == "deleted"


def test_new_upload_after_delete_brings_the_object_back(bucket: str) -> None:
    put = make_ref(bucket, sequencer=SEQ_PUT)
    apply([make_result(put, CardStatus.queued), make_result(put, CardStatus.done, at=5.0)])
    apply([make_result(make_ref(bucket, sequencer=SEQ_DELETE, removed=True), CardStatus.deleted)])
    assert the_row(bucket)["status"] == "deleted"

    again = make_ref(bucket, sequencer=SEQ_PUT_AGAIN)
    queued = make_result(again, CardStatus.queued, at=300.0)
    assert apply([queued]) == [1]
    r = the_row(bucket)
    assert r["status"] == "queued" and r["status_rank"] == 0
    assert r["sequencer"] == again.sequence
    assert r["job_id"] == queued.job_id != ImageJob.job_id_for(put)

    card = make_card("Tênis de corrida azul reenviado", colour="azul-marinho")
    done = make_result(again, CardStatus.done, at=305.0, card=card)
    assert apply([done]) == [1]
    r = the_row(bucket)
    assert_done(r, card, done)
    assert r["results_applied"] == 5
    hits = query(
        "SELECT object_key FROM product_cards WHERE bucket = %s "
        "AND search @@ websearch_to_tsquery('portuguese', 'tênis reenviado')",
        bucket,
    )
    assert hits == [{"object_key": again.key}]


def test_a_queued_for_a_new_version_replaces_done_of_the_old(bucket: str) -> None:
    # An overwrite: the old card goes away at once, the new one arrives when inference is done.
    old = make_ref(bucket, sequencer=SEQ_PUT)
    apply([make_result(old, CardStatus.done, at=5.0)])
    new = make_ref(bucket, sequencer=SEQ_PUT_AGAIN)
    assert apply([make_result(new, CardStatus.queued, at=1.0)]) == [1]  # produced_at is older
    r = the_row(bucket)
    assert r["status"] == "queued" and r["card"] is None
    assert r["sequencer"] == new.sequence


def test_several_keys_in_one_batch(bucket: str) -> None:
    a = make_ref(bucket, key="a/tênis.jpg", sequencer="18EB8B3948595C01")
    b = make_ref(bucket, key="b/blusa de lã.png", sequencer="18EB8B3948595C02")
    c = make_ref(bucket, key="c/nota.txt", sequencer="18EB8B3948595C03")
    d = make_ref(bucket, key="d/removida.jpg", sequencer="18EB8B3948595C04", removed=True)
    card_a = make_card("Tênis de corrida azul A")
    card_b = make_card("Blusa de lã tricotada", colour="vermelho")
    done_a = make_result(a, CardStatus.done, at=9.0, card=card_a)
    done_b = make_result(b, CardStatus.done, at=8.0, card=card_b)
    batch = [
        make_result(a, CardStatus.queued, at=0.1),
        make_result(b, CardStatus.queued, at=0.2),
        make_result(c, CardStatus.rejected, at=0.3, reason="not_an_image"),
        make_result(d, CardStatus.deleted, at=0.4),
        done_b,
        done_a,
    ]
    assert apply(batch) == [6]
    rows = rows_of(bucket)
    assert sorted(rows) == [a.key, b.key, c.key, d.key]
    assert_done(rows[a.key], card_a, done_a)
    assert_done(rows[b.key], card_b, done_b)
    assert rows[c.key]["status"] == "rejected"
    assert rows[c.key]["reason"] == "not_an_image"
    assert rows[c.key]["detail"]
    assert rows[c.key]["card"] is None
    assert rows[d.key]["status"] == "deleted"  # a removal of an object the table never saw
    assert rows[d.key]["size_bytes"] is None and rows[d.key]["etag"] is None
    assert {k: r["results_applied"] for k, r in rows.items()} == {
        a.key: 2,
        b.key: 2,
        c.key: 1,
        d.key: 1,
    }


def test_same_key_twice_in_one_batch_applies_in_order(bucket: str) -> None:
    ref = make_ref(bucket)
    card = make_card()
    done = make_result(ref, CardStatus.done, at=5.0, card=card)
    late_queued = make_result(ref, CardStatus.queued, at=0.0)
    # done first, then the (older) queued of the same event: the queued is refused.
    assert apply([done, late_queued]) == [1]
    assert_done(the_row(bucket), card, done)

    # Within one batch, an overwrite then its card: both apply, the last one stands.
    newer = make_ref(bucket, sequencer=SEQ_PUT_AGAIN)
    card2 = make_card("Tênis de corrida azul versão dois")
    done2 = make_result(newer, CardStatus.done, at=400.0, card=card2)
    assert apply([make_result(newer, CardStatus.queued, at=300.0), done2]) == [2]
    r = the_row(bucket)
    assert_done(r, card2, done2)
    assert r["results_applied"] == 3

    # And the other way round in one batch: a newer version, then a stale result of the old one.
    newest = make_ref(bucket, sequencer="18EB8B6C00000000", removed=True)
    assert apply([make_result(newest, CardStatus.deleted), done]) == [1]
    assert the_row(bucket)["status"] == "deleted"


def test_keys_are_stored_exactly(bucket: str) -> None:
    keys = [
        "photos/Tênis azul 01.jpg",
        "a+b.jpg",
        "a b.jpg",
        "../../etc/passwd.jpg",
        "日本/靴.webp",
    ]
    refs = [make_ref(bucket, key=k, sequencer=f"18EB8B39485950{i:02X}") for i, k in enumerate(keys)]
    assert apply([make_result(r, CardStatus.queued) for r in refs]) == [len(keys)]
    assert sorted(rows_of(bucket)) == sorted(keys)


def test_large_sequencers_keep_their_order(bucket: str) -> None:
    # The contract allows up to 32 hex digits; numeric(40) holds them and orders them as numbers.
    small = make_ref(bucket, sequencer="F" * 16)  # above bigint's range already
    big = make_ref(bucket, sequencer="1" + "0" * 31)
    biggest = make_ref(bucket, sequencer="F" * 32)
    assert apply([make_result(big, CardStatus.queued), make_result(small, CardStatus.done)]) == [1]
    r = the_row(bucket)
    assert r["status"] == "queued" and r["sequencer"] == int("1" + "0" * 31, 16)
    assert apply([make_result(biggest, CardStatus.deleted)]) == [1]
    assert the_row(bucket)["sequencer"] == int("F" * 32, 16)


def test_hex_case_of_the_sequencer_does_not_matter(bucket: str) -> None:
    upper = make_ref(bucket, sequencer="18EB8B3948595CE8")
    lower = make_ref(bucket, sequencer="18eb8b3948595ce8")
    apply([make_result(upper, CardStatus.done, at=5.0)])
    # The same event spelt in lower case is the same event: its queued does not hide done.
    assert apply([make_result(lower, CardStatus.queued, at=9.0)]) == [0]
    assert the_row(bucket)["status"] == "done"


def test_empty_batch_is_a_no_op(bucket: str) -> None:
    assert apply([]) == [0]
    assert rows_of(bucket) == {}


def test_inconsistent_results_cannot_be_built() -> None:
    ref = make_ref("t-sink-model")
    with pytest.raises(ValidationError, match="a done result needs a card"):
        CardResult(
            job_id=ImageJob.job_id_for(ref),
            trace_id=uuid.uuid4().hex,
            object=ref,
            status=CardStatus.done,
            producer="inference",
        )
    with pytest.raises(ValidationError, match="carries no card"):
        CardResult(
            job_id=ImageJob.job_id_for(ref),
            trace_id=uuid.uuid4().hex,
            object=ref,
            status=CardStatus.queued,
            card=make_card(),
            producer="ingest",
        )
    for status in (CardStatus.rejected, CardStatus.failed):
        with pytest.raises(ValidationError, match="needs a reason"):
            CardResult(
                job_id=ImageJob.job_id_for(ref),
                trace_id=uuid.uuid4().hex,
                object=ref,
                status=status,
                producer="ingest",
            )
    with pytest.raises(ValidationError):
        ProductCard.model_validate({**make_card().model_dump(), "description_long": "curta"})
    with pytest.raises(ValidationError):
        ProductCard.model_validate({**make_card().model_dump(), "features_list": ["só uma"]})


def test_table_checks_back_the_model_up(bucket: str) -> None:
    """Should a writer bypass the model, the table itself refuses a done without a card."""
    ref = make_ref(bucket)
    params = row(make_result(ref, CardStatus.queued))
    done_without_card = {**params, "status": "done", "status_rank": 1}
    rejected_without_reason = {**params, "status": "rejected", "status_rank": 1}
    unknown_status = {**params, "status": "archived"}
    with psycopg.connect(DSN, connect_timeout=5, autocommit=True) as conn:
        for bad in (done_without_card, rejected_without_reason, unknown_status):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(UPSERT, bad)
    assert rows_of(bucket) == {}


# -- results that break the contract -----------------------------------------------------------


def record_of(payload: bytes, offset: int = 7) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic="vitrine.results",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=payload,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(payload),
        headers=(),
    )


def test_a_deployments_own_word_minimum_is_not_part_of_the_wire_contract(bucket: str) -> None:
    """A worker run with VITRINE_MIN_DESCRIPTION_WORDS=20 publishes 20-word cards; the sink
    reads them with the shared type, which must not impose the default 150-word pattern."""
    short = " ".join(SNEAKER_DESCRIPTION.split()[:70])
    assert 20 <= len(short.split()) < 150 and len(short) >= 400
    card = make_card().model_copy(update={"description_long": short})
    done = make_result(make_ref(bucket), CardStatus.done, card=card)
    parsed = parse(record_of(done.model_dump_json().encode()))
    assert parsed == done
    apply([parsed])
    assert the_row(bucket)["description_long"] == short


def test_a_result_that_breaks_the_contract_ends_as_a_failed_row(bucket: str) -> None:
    ref = make_ref(bucket)
    done = json.loads(make_result(ref, CardStatus.done).model_dump_json())
    done["card"]["category_standard"] = "x" * 200  # a producer on another contract
    with pytest.raises(InvalidMessage) as parked:
        parse(record_of(json.dumps(done).encode()))
    assert parked.value.reason == "invalid_result"
    assert "card.category_standard" in parked.value.detail
    parsed = parked.value.fallback
    assert isinstance(parsed, CardResult)
    assert parsed.status is CardStatus.failed and parsed.card is None
    assert parsed.reason == "invalid_result"
    assert parsed.detail is not None and "card.category_standard" in parsed.detail
    apply([make_result(ref, CardStatus.queued), parsed])
    r = the_row(bucket)
    assert r["status"] == "failed" and r["reason"] == "invalid_result"
    assert r["trace_id"] == done["trace_id"]


@pytest.mark.parametrize(
    "payload", [b"", b"not json", b"[1, 2]", b'{"status": "done", "card": null}']
)
def test_a_result_that_names_no_object_is_parked_with_no_row_invented(payload: bytes) -> None:
    with pytest.raises(InvalidMessage) as parked:
        parse(record_of(payload))
    assert parked.value.fallback is None
