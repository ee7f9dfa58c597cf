"""The desk's pieces without servers: edits under the contract, filters and cursors, the login
limit, passwords and tokens, upload checks, and the templates' escaping."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from PIL import Image

from schemas.api import CardView
from schemas.card import ProductCard, card_model, default_taxonomy
from schemas.language import PT_BR, colour_pattern
from services.inference.settings import EngineSettings
from services.review import accounts, listing, uploads
from services.review.edits import EditRefused, apply_edit, changed_fields, form_changes
from services.review.pages import templates
from services.review.settings import ReviewSettings
from tests.support.card_text import DESCRIPTION, MUG
from tests.support.review_desk import card

TREE = default_taxonomy(PT_BR)
CARD = card_model(TREE, colour_regex=colour_pattern(PT_BR), min_words=60)


def test_an_edit_is_validated_by_the_deployments_card_contract() -> None:
    current = card("Garrafa térmica")
    with pytest.raises(EditRefused) as refused:
        apply_edit(CARD, current, {"description_long": "Curta demais para um card de loja."})
    assert set(refused.value.fields) == {"description_long"}
    with pytest.raises(EditRefused) as refused:
        apply_edit(CARD, current, {"features_list": ["um", "dois"]})
    assert "features_list" in refused.value.fields
    with pytest.raises(EditRefused) as refused:
        apply_edit(CARD, current, {"category_path": "Não > Existe"})
    assert "category_path" in refused.value.fields
    with pytest.raises(EditRefused) as refused:
        apply_edit(CARD, current, {"color_primary": "<b>"})
    assert "color_primary" in refused.value.fields
    with pytest.raises(EditRefused):
        apply_edit(CARD, current, {"price": "10"})
    fine = apply_edit(CARD, current, {"product_name": "Garrafa térmica azul 500 ml"})
    assert isinstance(fine, ProductCard) and fine.product_name == "Garrafa térmica azul 500 ml"
    assert changed_fields(current, fine.model_dump()) == ["product_name"]


def test_the_desk_reads_the_workers_card_contract_from_the_same_variables(
    monkeypatch, tmp_path
) -> None:
    tree = tmp_path / "tree.txt"
    tree.write_text("Sofás\nMesas\n", encoding="utf-8")
    for name, value in {
        "VITRINE_LANGUAGE": "en",
        "VITRINE_TAXONOMY_FILE": str(tree),
        "VITRINE_COLOUR_VOCABULARY": "enforce",
        "VITRINE_MIN_DESCRIPTION_WORDS": "60",
        "VITRINE_WORD_MINIMUM": "check",
    }.items():
        monkeypatch.setenv(name, value)
    desk, workers = ReviewSettings().card_contract(), EngineSettings().card_contract()
    assert desk == workers and desk.categories() == ("Sofás", "Mesas")
    assert desk.card_type() is EngineSettings().card_type()
    monkeypatch.setenv("VITRINE_TAXONOMY", '["A", "B"]')
    assert ReviewSettings().card_contract().categories() == ("A", "B")
    monkeypatch.setenv("VITRINE_LANGUAGE", "xx")
    with pytest.raises(ValueError, match="unsupported output language"):
        ReviewSettings()


def test_a_new_category_brings_its_root_and_id_and_drops_foreign_attributes() -> None:
    running = "Calçados > Tênis > Tênis de Corrida"
    leaf = TREE.leaf(running)
    assert leaf is not None
    current = card("Garrafa", path=MUG)
    required = {a.name: a for a in leaf.attributes if a.required}
    changes: dict[str, object] = {"category_path": running}
    if required:
        with pytest.raises(EditRefused) as refused:
            apply_edit(CARD, current, changes)
        assert "category_path" in refused.value.fields or "attributes" in refused.value.fields
    attrs = {
        a.name: (
            a.values[0]
            if a.type == "enum"
            else {"value": 1, "unit": a.unit}
            if a.type == "number"
            else True
            if a.type == "boolean"
            else "x"
        )
        for a in leaf.attributes
        if a.required
    }
    moved = apply_edit(CARD, current, {**changes, "attributes": attrs})
    assert (moved.category_standard, moved.category_id) == (leaf.top, leaf.id)


def test_a_form_submitted_unchanged_changes_nothing() -> None:
    current = card("Garrafa térmica")
    form = {
        "product_name": current["product_name"],
        "category_path": current["category_path"],
        "description_long": current["description_long"].replace(" ", " ", 1),
        "color_primary": current["color_primary"],
        **{f"feature_{i + 1}": f for i, f in enumerate(current["features_list"])},
    }
    changes = form_changes(CARD, current, form)
    after = apply_edit(CARD, current, changes).model_dump()
    assert changed_fields(current, after) == []
    crlf = {**form, "description_long": DESCRIPTION.replace(". ", ".\r\n", 1)}
    assert changed_fields(
        current, apply_edit(CARD, current, form_changes(CARD, current, crlf)).model_dump()
    ) == ["description_long"]


def test_filters_refuse_unknown_statuses_and_cursors_round_trip() -> None:
    with pytest.raises(ValueError):
        listing.Filters.parse({"status": "bogus"})
    with pytest.raises(ValueError):
        listing.Filters.parse({"review": "maybe"})
    filters = listing.Filters.parse({"status": "done", "q": " couro ", "flagged": "1", "x": "y"})
    assert filters == listing.Filters(status="done", q="couro", flagged=True)
    assert filters.query_params() == {"status": "done", "q": "couro", "flagged": "1"}
    at = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)
    cursor = listing.encode_cursor(at, "incoming", "a/b ç.jpg")
    assert listing.decode_cursor(cursor) == (at, "incoming", "a/b ç.jpg")
    for bad in ("garbage", "", "bm90IGpzb24"):
        with pytest.raises(listing.BadCursor):
            listing.decode_cursor(bad)


def test_a_category_filter_escapes_like_wildcards() -> None:
    _, params = listing.Filters(category="Casa_e%Cozinha").where()
    assert params == ["Casa_e%Cozinha", "Casa\\_e\\%Cozinha > %"]


def test_the_login_limit_counts_failures_per_key_within_its_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(accounts.time, "monotonic", lambda: now[0])
    limiter = accounts.LoginLimiter(attempts=3, window=60, per_address=5)
    for _ in range(3):
        assert limiter.retry_after("user:a", "addr:1") == 0
        limiter.failed("user:a", "addr:1")
    assert limiter.retry_after("user:a", "addr:2") == pytest.approx(60)
    assert limiter.retry_after("user:b", "addr:1") == 0  # the address has budget left
    limiter.failed("user:b", "addr:1")
    limiter.failed("user:c", "addr:1")
    assert limiter.retry_after("user:d", "addr:1") == pytest.approx(60)  # now it has not
    assert limiter.retry_after("user:b", "addr:2") == 0
    now[0] += 61
    assert limiter.retry_after("user:a", "addr:1") == 0


def test_passwords_are_argon2id_and_tokens_are_stored_hashed() -> None:
    hashed = accounts.hash_password("correct-horse-battery")
    assert hashed.startswith("$argon2id$")
    assert accounts.verify_password(hashed, "correct-horse-battery")
    assert not accounts.verify_password(hashed, "wrong-password-here")
    assert not accounts.verify_password(None, "anything-at-all")
    assert not accounts.verify_password("not a hash", "anything-at-all")
    with pytest.raises(ValueError):
        accounts.hash_password("short")
    token = accounts.new_token()
    assert len(token) >= 40 and accounts.token_hash(token) != token.encode()
    assert len(accounts.token_hash(token)) == 32


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(out, "JPEG")
    return out.getvalue()


def test_uploads_are_held_to_ingests_limits() -> None:
    assert uploads.check(jpeg(), "image/jpeg", "a.jpg", 10_000) == "image/jpeg"
    assert uploads.check(jpeg(), "application/octet-stream", "a", 10_000) == "image/jpeg"
    cases = [
        (jpeg(), "image/jpeg", "a.jpg", 100, 413),
        (b"hello", "text/plain", "a.txt", 10_000, 415),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", "a.svg", 10_000, 415),
        (b"%PDF-1.7", "image/jpeg", "a.jpg", 10_000, 415),
        (b"", "image/jpeg", "a.jpg", 10_000, 422),
    ]
    for data, kind, name, limit, status in cases:
        with pytest.raises(uploads.UploadRefused) as refused:
            uploads.check(data, kind, name, limit)
        assert refused.value.status == status, (kind, name)


@pytest.mark.parametrize("key", ["../x.jpg", "/abs.jpg", "a//b.jpg", "a/./b.jpg", "a\nb.jpg", ""])
def test_an_upload_key_is_a_clean_relative_path(key: str) -> None:
    with pytest.raises(uploads.UploadRefused):
        uploads.object_key("x.jpg", "uploads", key or " ")


def test_a_generated_upload_key_keeps_a_safe_file_name() -> None:
    key = uploads.object_key("../../Foto da Caneca (1).JPG", "shop-7", None)
    assert key.startswith("shop-7/2") and key.endswith("-Foto-da-Caneca-1-.JPG")
    assert ".." not in key


def test_templates_escape_model_output_in_text_and_attributes() -> None:
    hostile = "\"><script>alert(1)</script>' onmouseover='x"
    values = card(f"Nome {hostile}", description_long=f"{DESCRIPTION} {hostile}")
    view = CardView(
        bucket="incoming",
        key=f"k{hostile}.jpg",
        status="done",
        review_state="pending",
        card=ProductCard.model_validate(values),
    )
    html = templates.get_template("card.html").render(
        user=None,
        csrf="t",
        view=view,
        card=values,
        form={},
        approved={},
        model_card=values,
        attributes=(),
        leaves=[MUG],
        errors={"product_name": hostile},
        message=hostile,
        params={},
        back_url="/",
        prev_url=None,
        next_url=None,
        can_review=True,
        colour=None,
    )
    assert "<script>alert" not in html
    assert "' onmouseover='" not in html and '"><script>' not in html
    assert "&lt;script&gt;" in html


def test_the_desks_connections_send_small_responses_without_nagles_delay() -> None:
    """asyncio turns TCP_NODELAY on only for sockets created as IPPROTO_TCP."""
    import asyncio
    import socket

    from services.review.server import listening_socket

    async def accepted_nodelay() -> int:
        sock = listening_socket("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                raw = transport.get_extra_info("socket")
                seen.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) == 1


def test_a_login_takes_its_place_in_the_budgets_before_its_password_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(accounts.time, "monotonic", lambda: now[0])
    limiter = accounts.LoginLimiter(attempts=3, window=60, per_address=4)
    # three logins in flight at once, none of them answered yet: the fourth is refused
    stamps = [limiter.reserve("user:a", "addr:1") for _ in range(3)]
    assert all(s is not None for s in stamps)
    assert limiter.reserve("user:a", "addr:1") is None
    assert limiter.retry_after("user:a", "addr:1") == pytest.approx(60)
    # one succeeds: the user's count is forgotten, its place at the address given back
    limiter.succeeded("user:a", "addr:1", at=stamps[0])
    assert limiter.reserve("user:b", "addr:1") is not None  # 2 failures + this one
    assert limiter.reserve("user:c", "addr:1") is not None  # the address's 4th place
    assert limiter.reserve("user:d", "addr:1") is None  # failures keep theirs
    now[0] += 61
    assert limiter.reserve("user:d", "addr:1") is not None


def test_password_checks_run_off_the_event_loop_at_most_n_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import threading
    import time

    running, most, threads = [0], [0], set()
    lock = threading.Lock()

    def slow_verify(stored: str | None, password: str) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return password == "right"

    monkeypatch.setattr(accounts, "verify_password", slow_verify)
    checks = accounts.PasswordChecks(2)

    async def burst() -> list[bool]:
        loop_thread = threading.current_thread().name
        found = await asyncio.gather(*(checks.verify("h", p) for p in ["right"] + ["no"] * 7))
        assert loop_thread not in threads
        return list(found)

    try:
        assert asyncio.run(burst()) == [True] + [False] * 7
    finally:
        checks.close()
    assert most[0] == 2
    assert all(name.startswith("password-check") for name in threads)


def test_a_body_over_the_limit_is_refused_declared_or_chunked() -> None:
    """Behind a 1 KiB limit (``/upload`` exempt), an app that reads its whole body."""
    from collections.abc import Iterator

    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.testclient import TestClient
    from starlette.types import Receive, Scope, Send

    from services.review.body_limit import BodyLimit

    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await Request(scope, receive).body()
        seen.append(len(body))
        await PlainTextResponse(f"read {len(body)}")(scope, receive, send)

    def too_large(path: str, limit: int) -> Response:
        return PlainTextResponse(f"{path} over {limit}", status_code=413)

    client = TestClient(BodyLimit(app, 1024, frozenset({("POST", "/upload")}), too_large))
    assert client.post("/x", content=b"a" * 1024).text == "read 1024"
    declared = client.post("/x", content=b"a" * 1025)
    assert declared.status_code == 413 and declared.text == "/x over 1024"
    assert declared.headers["connection"] == "close"
    assert seen == [1024]  # the app never ran for the declared one

    def pieces() -> Iterator[bytes]:  # no length: sent chunked
        for _ in range(100):
            yield b"a" * 512

    streamed = client.post("/x", content=pieces())
    assert streamed.status_code == 413 and seen == [1024]
    assert client.post("/upload", content=b"a" * 5000).text == "read 5000"  # its own cap


def test_the_api_still_documents_the_bodies_it_reads_itself() -> None:
    from services.review.app import create_app

    spec = create_app(ReviewSettings()).openapi()
    body = spec["paths"]["/v1/cards/{bucket}/{key}"]["patch"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CardEdit"
    }
    reject = spec["paths"]["/v1/cards/{bucket}/{key}/reject"]["post"]["requestBody"]
    assert reject["content"]["application/json"]["schema"]["$ref"].endswith("/Decision")
    approve = spec["paths"]["/v1/cards/{bucket}/{key}/approve"]["post"]["requestBody"]
    assert not approve.get("required")
    schemas = spec["components"]["schemas"]
    assert "expected_rev" in schemas["CardEdit"]["properties"]
    assert schemas["Decision"]["properties"]["note"]["anyOf"][0]["maxLength"] == 2000
