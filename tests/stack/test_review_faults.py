"""The desk through a Kafka outage: an approval made while the broker is down is kept in the
outbox (card_reviews.published_at IS NULL) and published once it is back; nothing is lost and
the desk keeps serving meanwhile."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pipeline import ensure_stack, stop_server, wait_for
from tests.support.review_desk import Desk, card, iter_desk

pytestmark = [pytest.mark.pipeline, pytest.mark.faults]


@pytest.fixture
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(tmp_path_factory.mktemp("review-faults"))


def test_an_approval_during_a_kafka_outage_is_published_after_it(desk: Desk) -> None:
    ref = desk.seed("outage/one.jpg", card("Garrafa aprovada sem Kafka"))
    with desk.api("reviewer") as api:
        stop_server("kafka")
        try:
            answer = api.post(f"/v1/cards/{desk.bucket}/{ref.key}/approve", json={})
            assert answer.status_code == 200  # the decision needs PostgreSQL only
            assert api.get("/v1/cards", params={"limit": 1}).status_code == 200
            [approval] = [r for r in desk.reviews(ref.key) if r["decision"] == "approve"]
            assert approval["published_at"] is None
        finally:
            ensure_stack()
    wait_for(
        lambda: desk.reviews(ref.key)[-1]["published_at"] is not None,
        180,
        "the approval published after Kafka came back",
        interval=1,
    )
    [message] = [m for m in desk.approved_messages(keys=[ref.key]) if m["object"]["key"] == ref.key]
    assert message["review_id"] == desk.reviews(ref.key)[-1]["id"]
    assert desk.service.proc is not None and desk.service.proc.poll() is None
