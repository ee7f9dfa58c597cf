"""The review desk over HTTP, against the real stack: pages, /v1, sessions, CSRF, roles, the
outbox to vitrine.cards.approved, regeneration back to pending, uploads, escaping."""

from __future__ import annotations

import io
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
from PIL import Image

from schemas.facts import FactsCheck, facts_from_metadata
from schemas.messages import CardStatus
from schemas.products import read_manifest
from services.runtime.s3 import make_minio
from services.runtime.settings import S3Settings
from tests.support.card_text import DESCRIPTION
from tests.support.pipeline import REPO, ensure_stack
from tests.support.review_desk import Desk, card, iter_desk, photo, result, upsert

pytestmark = pytest.mark.pipeline

HOSTILE = '"><script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(tmp_path_factory.mktemp("review"), VITRINE_IMAGE_MAX_BYTES="300000")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def test_pages_need_a_session_and_login_sets_strict_httponly_cookies(desk: Desk) -> None:
    with httpx.Client(base_url=desk.url) as anonymous:
        assert anonymous.get("/").status_code == 303
        assert anonymous.get("/").headers["location"] == "/login"
        assert anonymous.get("/v1/cards").status_code == 401
    name, password = desk.user("viewer")
    with httpx.Client(base_url=desk.url) as client:
        page = client.get("/login")
        assert "vitrine_login_csrf" in page.headers["set-cookie"]
        answer = client.post(
            "/login", data={"csrf": csrf_of(page.text), "username": name, "password": password}
        )
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "vitrine_session=" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback; behind TLS it is set
        listing = client.get("/")
        assert listing.status_code == 200
        assert "default-src 'self'" in listing.headers["content-security-policy"]
        assert name in listing.text


def test_behind_a_tls_proxy_the_session_cookie_is_secure(desk: Desk) -> None:
    name, password = desk.user("viewer")
    headers = {"X-Forwarded-Proto": "https"}  # as a TLS-terminating proxy on loopback sends
    with httpx.Client(base_url=desk.url, headers=headers) as client:
        page = client.get("/login")
        login_cookie = page.headers["set-cookie"]
        assert "Secure" in login_cookie
        # the client talks plain HTTP to the desk, so it would not send a Secure cookie back
        # itself: the proxy's browser would, over TLS
        cookie = login_cookie.split(";")[0]
        answer = client.post(
            "/login",
            data={"csrf": csrf_of(page.text), "username": name, "password": password},
            headers={"Cookie": cookie},
        )
        assert answer.status_code == 303
        assert "Secure" in answer.headers["set-cookie"]
        assert "strict-transport-security" in answer.headers


def test_login_without_csrf_or_with_a_wrong_password_is_refused(desk: Desk) -> None:
    name, password = desk.user("reviewer")
    with httpx.Client(base_url=desk.url) as client:
        client.get("/login")
        forged = client.post("/login", data={"username": name, "password": password})
        assert forged.status_code == 403
        page = client.get("/login")
        wrong = client.post(
            "/login", data={"csrf": csrf_of(page.text), "username": name, "password": "nope-nope"}
        )
        assert wrong.status_code == 401
        assert "Wrong username or password" in wrong.text
        assert "vitrine_session" not in wrong.headers.get("set-cookie", "")


def test_logins_are_rate_limited_per_user(desk: Desk) -> None:
    name, password = desk.user("admin", f"limited-{desk.ns.name}")
    with httpx.Client(base_url=desk.url) as client:
        codes = []
        for _ in range(6):
            page = client.get("/login")
            codes.append(
                client.post(
                    "/login",
                    data={"csrf": csrf_of(page.text), "username": name, "password": "wrong-pass"},
                ).status_code
            )
        assert codes[:5] == [401] * 5
        assert codes[5] == 429
        page = client.get("/login")
        # even the right password waits out the window: guessing cannot go on
        limited = client.post(
            "/login", data={"csrf": csrf_of(page.text), "username": name, "password": password}
        )
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) > 0


def test_a_forged_post_without_the_csrf_token_changes_nothing(desk: Desk) -> None:
    ref = desk.seed("forged/one.jpg", card("Garrafa térmica forjada"))
    client = desk.login("reviewer")
    url = f"/cards/{desk.bucket}/{ref.key}"
    assert client.get(url).status_code == 200
    forged = client.post(url, data={"action": "approve"})
    assert forged.status_code == 403
    wrong = client.post(url, data={"action": "approve", "csrf": "x" * 32})
    assert wrong.status_code == 403
    cross_site = client.post(
        url,
        data={"action": "approve", "csrf": csrf_of(client.get(url).text)},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert desk.row(ref.key)["review_state"] == "pending"
    assert desk.reviews(ref.key) == []
    # the session's own token is accepted
    ok = client.post(url, data={"action": "approve", "csrf": csrf_of(client.get(url).text)})
    assert ok.status_code == 303
    assert desk.row(ref.key)["review_state"] == "approved"


def test_a_viewer_reads_but_cannot_edit_or_approve(desk: Desk) -> None:
    ref = desk.seed("viewer/one.jpg", card("Garrafa térmica do visitante"))
    client = desk.login("viewer")
    url = f"/cards/{desk.bucket}/{ref.key}"
    page = client.get(url)
    assert page.status_code == 200
    assert 'id="approve"' not in page.text  # no buttons
    assert "<fieldset disabled>" in page.text
    refused = client.post(url, data={"action": "approve", "csrf": csrf_of(page.text)})
    assert refused.status_code == 403
    with desk.api("viewer") as api:
        assert api.get(f"/v1/cards/{desk.bucket}/{ref.key}").status_code == 200
        assert api.post(f"/v1/cards/{desk.bucket}/{ref.key}/approve", json={}).status_code == 403
        patch = api.patch(f"/v1/cards/{desk.bucket}/{ref.key}", json={"product_name": "Outro"})
        assert patch.status_code == 403
    assert desk.row(ref.key)["review_state"] == "pending"
    assert desk.reviews(ref.key) == []


def test_an_invalid_edit_is_refused_per_field_and_a_valid_one_kept_beside_the_model_card(
    desk: Desk,
) -> None:
    ref = desk.seed("edit/one.jpg", card("Garrafa térmica original"))
    with desk.api("reviewer") as api:
        url = f"/v1/cards/{desk.bucket}/{ref.key}"
        short = api.patch(url, json={"description_long": "Texto curto demais para um card."})
        assert short.status_code == 422
        assert "description_long" in short.json()["fields"]
        bad_category = api.patch(url, json={"category_path": "Nada > Disso"})
        assert bad_category.status_code == 422
        assert "category_path" in bad_category.json()["fields"]
        unknown = api.patch(url, json={"price": 10})
        assert unknown.status_code == 422
        assert desk.reviews(ref.key) == []
        rev = api.get(url).json()["rev"]
        edited = api.patch(
            url, json={"product_name": "Garrafa térmica azul 500 ml", "expected_rev": rev}
        )
        assert edited.status_code == 200, edited.text
        body = edited.json()
        assert body["card"]["product_name"] == "Garrafa térmica azul 500 ml"
        assert body["model_card"]["product_name"] == "Garrafa térmica original"
        assert body["edited"] is True and body["edited_fields"] == ["product_name"]
        stale = api.patch(url, json={"product_name": "Outra", "expected_rev": rev})
        assert stale.status_code == 409
    row = desk.row(ref.key)
    assert row["card"]["product_name"] == "Garrafa térmica original"  # the model's, untouched
    assert row["product_name"] == "Garrafa térmica original"
    assert row["edited_card"]["product_name"] == "Garrafa térmica azul 500 ml"
    [event] = desk.reviews(ref.key)
    assert event["decision"] == "edit" and event["fields"] == ["product_name"]
    assert event["before"]["product_name"] == "Garrafa térmica original"
    assert event["after"]["product_name"] == "Garrafa térmica azul 500 ml"
    assert event["reviewer"].startswith("reviewer-")


def test_approval_is_published_with_ai_generated_and_the_edit_flag(desk: Desk) -> None:
    plain = desk.seed("approve/plain.jpg", card("Garrafa térmica simples"))
    edited = desk.seed("approve/edited.jpg", card("Garrafa térmica a editar"))
    with desk.api("reviewer") as api:
        api.patch(f"/v1/cards/{desk.bucket}/{edited.key}", json={"color_primary": "verde"})
        for ref in (plain, edited):
            answer = api.post(f"/v1/cards/{desk.bucket}/{ref.key}/approve", json={"note": "ok"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["review_state"] == "approved"
    messages = {m["key"]: m for m in desk.approved_messages(keys=[plain.key, edited.key])}
    one = messages[f"{desk.bucket}/{plain.key}"]
    two = messages[f"{desk.bucket}/{edited.key}"]
    schema = json.loads((REPO / "schemas/json/approved_card.schema.json").read_text())
    for message in (one, two):  # consumers validate against the exported contract
        jsonschema.validate({k: v for k, v in message.items() if k != "key"}, schema)
    assert one["ai_generated"] is True and two["ai_generated"] is True
    assert one["edited"] is False and one["edited_fields"] == []
    assert two["edited"] is True and two["edited_fields"] == ["color_primary"]
    assert two["card"]["color_primary"] == "verde"
    assert two["approved_by"].startswith("reviewer-")
    assert two["object"]["etag"] == edited.etag
    row = desk.row(edited.key)
    assert row["review_state"] == "approved" and row["reviewed_by"].startswith("reviewer-")
    assert row["approved_card"]["color_primary"] == "verde"
    approvals = [r for r in desk.reviews(edited.key) if r["decision"] == "approve"]
    assert approvals[0]["published_at"] is not None


def test_a_rejection_needs_a_note(desk: Desk) -> None:
    ref = desk.seed("reject/one.jpg", card("Garrafa térmica rejeitada"))
    with desk.api("reviewer") as api:
        url = f"/v1/cards/{desk.bucket}/{ref.key}/reject"
        assert api.post(url, json={}).status_code == 422
        answer = api.post(url, json={"note": "a foto mostra outro produto"})
        assert answer.status_code == 200
        assert answer.json()["review_note"] == "a foto mostra outro produto"
    assert desk.row(ref.key)["review_state"] == "rejected"


def test_a_card_regenerated_after_approval_goes_back_to_pending_with_a_diff(desk: Desk) -> None:
    values = card("Garrafa térmica aprovada")
    ref = desk.seed("regen/one.jpg", values)
    with desk.api("reviewer") as api:
        url = f"/v1/cards/{desk.bucket}/{ref.key}"
        assert api.post(f"{url}/approve", json={}).status_code == 200
        # the pipeline writes a new card for the same object (reprocess): newer produced_at
        upsert([result(ref, {**values, "product_name": "Garrafa térmica regenerada"}, at=60)])
        body = api.get(url).json()
    assert body["review_state"] == "pending"
    assert body["changed_since_approval"] == ["product_name"]
    row = desk.row(ref.key)
    assert row["approved_card"]["product_name"] == "Garrafa térmica aprovada"
    assert [r["decision"] for r in desk.reviews(ref.key)] == ["approve", "reset"]
    page = desk.login("viewer").get(f"/cards/{desk.bucket}/{ref.key}")
    assert 'id="diff"' in page.text
    assert "Garrafa térmica aprovada" in page.text and "Garrafa térmica regenerada" in page.text


def test_list_filters_search_and_keyset_pagination(desk: Desk) -> None:
    for i in range(7):
        desk.seed(f"list/item-{i}.jpg", card(f"Garrafa listada número {i}"), flagged=i == 3)
    desk.seed("list/failed.jpg", None, status=CardStatus.failed)
    with desk.api("viewer") as api:
        seen: list[str] = []
        cursor = None
        while True:
            params = {"prefix": "list/", "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = api.get("/v1/cards", params=params).json()
            seen += [item["key"] for item in page["items"]]
            cursor = page["next"]
            if not cursor:
                break
        assert sorted(seen) == sorted(
            [f"list/item-{i}.jpg" for i in range(7)] + ["list/failed.jpg"]
        )
        assert len(seen) == len(set(seen))
        failed = api.get("/v1/cards", params={"prefix": "list/", "status": "failed"}).json()
        assert [i["key"] for i in failed["items"]] == ["list/failed.jpg"]
        found = api.get("/v1/cards", params={"q": "número", "prefix": "list/"}).json()
        assert len(found["items"]) == 7
        flagged = api.get("/v1/cards", params={"prefix": "list/", "flagged": True}).json()
        assert [i["key"] for i in flagged["items"]] == ["list/item-3.jpg"]
        subtree = api.get("/v1/cards", params={"prefix": "list/", "category": "Casa e Cozinha"})
        assert len(subtree.json()["items"]) == 7
        other = api.get("/v1/cards", params={"prefix": "list/", "category": "Calçados"}).json()
        assert other["items"] == []
        assert api.get("/v1/cards", params={"cursor": "garbage"}).status_code == 422
        assert api.get("/v1/cards", params={"status": "nonsense"}).status_code == 422
    page = desk.login("viewer").get("/", params={"prefix": "list/", "flagged": "1"})
    assert "list/item-3.jpg" in page.text and "list/item-4.jpg" not in page.text


def test_thumbnails_are_generated_cached_and_need_a_session(desk: Desk) -> None:
    ref = desk.seed("thumb/one.jpg", card("Garrafa com miniatura"))
    path = f"/images/thumb/{desk.bucket}/{ref.key}"
    with httpx.Client(base_url=desk.url) as anonymous:
        assert anonymous.get(path).status_code == 303
    client = desk.login("viewer")
    first = client.get(path)
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(first.content))
    assert max(image.size) == 160
    assert client.get(path).content == first.content
    assert client.get(f"/images/large/{desk.bucket}/{ref.key}").status_code == 200


def test_upload_answers_202_with_a_status_url_and_keeps_ingest_limits(desk: Desk) -> None:
    with desk.api("reviewer") as api:
        answer = api.post(
            "/v1/images",
            files={"file": ("mug.jpg", photo((200, 30, 30)), "image/jpeg")},
            data={"prefix": "uploads-test"},
        )
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["key"].startswith("uploads-test/") and body["key"].endswith("mug.jpg")
        status = api.get(body["status_url"])
        assert status.status_code == 200 and status.json()["status"] == "uploaded"
        text = api.post("/v1/images", files={"file": ("notes.txt", b"hello", "text/plain")})
        assert text.status_code == 415
        lying = api.post(
            "/v1/images", files={"file": ("x.jpg", b"%PDF-1.7 not a photo", "image/jpeg")}
        )
        assert lying.status_code == 415 and lying.json()["error"] == "not_an_image"
        big = api.post(
            "/v1/images",
            files={
                "file": ("big.jpg", photo((1, 2, 3), (3000, 3000)) + b"\0" * 300_000, "image/jpeg")
            },
        )
        assert big.status_code == 413
        given = api.post(
            "/v1/images",
            files={"file": ("a.jpg", photo((9, 9, 9)), "image/jpeg")},
            data={"key": body["key"]},
        )
        assert given.status_code == 409
        sneaky = api.post(
            "/v1/images",
            files={"file": ("a.jpg", photo((9, 9, 9)), "image/jpeg")},
            data={"key": "../etc/passwd.jpg"},
        )
        assert sneaky.status_code == 422
    with desk.api("viewer") as api:
        refused = api.post("/v1/images", files={"file": ("m.jpg", photo((1, 1, 1)), "image/jpeg")})
        assert refused.status_code == 403


def test_an_upload_carries_the_shop_s_facts_and_a_bad_one_is_a_422(desk: Desk) -> None:
    """The facts of ``POST /v1/images`` are checked by ingest's rules before anything is
    stored, then written as the object's S3 user metadata (non-ASCII as RFC 2047 words),
    which is where ingest reads them from for any upload."""
    with desk.api("reviewer") as api:
        answer = api.post(
            "/v1/images",
            files={"file": ("cafe.jpg", photo((120, 60, 20)), "image/jpeg")},
            data={
                "prefix": "facts-up",
                "sku": "CAF-1",
                "brand": "Nestlé",
                "gtin": "7891000315507",
                "attr.material": "aço inox",
            },
        )
        assert answer.status_code == 202, answer.text
        stat = make_minio(S3Settings()).stat_object(desk.bucket, answer.json()["key"])
        given = facts_from_metadata(dict(stat.metadata))
        assert given.problems == []
        assert (given.facts.sku, given.facts.brand) == ("CAF-1", "Nestlé")
        assert given.facts.attributes == {"material": "aço inox"}
        bad = api.post(
            "/v1/images",
            files={"file": ("cafe.jpg", photo((120, 60, 20)), "image/jpeg")},
            data={"gtin": "7891000315508", "title": "x" * 200},
        )
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_facts"
        assert set(bad.json()["fields"]) == {"gtin", "title"}


def test_a_product_upload_stores_its_photos_then_the_manifest_that_commits_them(
    desk: Desk,
) -> None:
    """``POST /v1/products``: the photos in a folder of their own, in the form's order, then
    ``product.json`` naming them, the main one and the facts (what ingest turns into one
    card); each photo held to the upload's limits, the facts to their rules, the count to
    VITRINE_PRODUCT_MAX_PHOTOS."""
    files = [("file", (f"IMG_{i}.jpg", photo((40 * i, 90, 30)), "image/jpeg")) for i in range(3)]
    with desk.api("reviewer") as api:
        answer = api.post(
            "/v1/products",
            files=files,
            data={"prefix": "prod-test", "main": "2", "sku": "P-1", "brand": "Tramontina"},
        )
        assert answer.status_code == 202, answer.text
        body = answer.json()
        folder = body["key"].removesuffix("product.json")
        assert body["key"].startswith("prod-test/") and body["key"].endswith("/product.json")
        assert body["photos"] == [f"{folder}{i + 1:02d}-IMG_{i}.jpg" for i in range(3)]
        assert answer.headers["location"] == body["status_url"]
        minio = make_minio(S3Settings())
        stored = minio.get_object(desk.bucket, body["key"])
        manifest = read_manifest(stored.read())[0]
        stored.close()
        assert manifest is not None
        assert [folder + n for n in manifest.photos] == body["photos"]
        assert manifest.main == manifest.photos[1] and manifest.facts["sku"] == "P-1"
        for key in body["photos"]:
            assert minio.stat_object(desk.bucket, key).size > 0
        too_many = api.post(
            "/v1/products",
            files=[("file", (f"{i}.jpg", photo((i, i, i)), "image/jpeg")) for i in range(7)],
        )
        assert too_many.status_code == 413 and too_many.json()["error"] == "too_many_photos"
        lying = api.post(
            "/v1/products",
            files=[files[0], ("file", ("x.jpg", b"%PDF-1.7 not a photo", "image/jpeg"))],
        )
        assert lying.status_code == 415
        bad_fact = api.post("/v1/products", files=files, data={"gtin": "123"})
        assert bad_fact.status_code == 422 and bad_fact.json()["error"] == "invalid_facts"
        bad_main = api.post("/v1/products", files=files, data={"main": "9"})
        assert bad_main.status_code == 422
    with desk.api("viewer") as api:
        assert api.post("/v1/products", files=files).status_code == 403


def test_model_output_is_escaped_everywhere(desk: Desk) -> None:
    hostile = card(
        f"Garrafa {HOSTILE}",
        description_long=f"{DESCRIPTION} {HOSTILE}",
        features_list=[f"Ponto {HOSTILE}", "Segundo ponto de venda", "Terceiro ponto de venda"],
        color_primary="azul",
    )
    ref = desk.seed('hostile/"quoted" <key>.jpg', hostile)
    client = desk.login("reviewer")
    for page in (
        client.get("/", params={"prefix": "hostile"}),
        client.get(f"/cards/{desk.bucket}/{ref.key}"),
    ):
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        assert '"><script>' not in page.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
        assert "<img src=x" not in page.text


def test_openapi_documents_the_v1_contract(desk: Desk) -> None:
    spec = httpx.get(f"{desk.url}/openapi.json").json()
    paths = spec["paths"]
    assert {"/v1/images", "/v1/cards", "/v1/cards/{bucket}/{key}"} <= set(paths)
    assert (
        "/v1/cards/{bucket}/{key}/approve" in paths and "/v1/cards/{bucket}/{key}/reject" in paths
    )
    schemas = spec["components"]["schemas"]
    assert {"CardView", "CardPage", "UploadAccepted", "CardEdit", "ProductCard"} <= set(schemas)
    assert httpx.get(f"{desk.url}/docs").status_code == 200


def jobs_for(desk: Desk, key: str, timeout: float = 20) -> list[dict[str, object]]:
    """ImageJobs on the namespace's jobs topic for ``key``."""
    from aiokafka import AIOKafkaConsumer

    from tests.support.review_desk import run_async

    async def read() -> list[dict[str, object]]:
        consumer = AIOKafkaConsumer(
            desk.ns.env["VITRINE_TOPIC_JOBS"],
            bootstrap_servers="127.0.0.1:29092",
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        found: list[dict[str, object]] = []
        try:
            deadline = time.monotonic() + timeout
            while not found and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [
                        json.loads(r.value)
                        for r in records
                        if r.key == f"{desk.bucket}/{key}".encode()
                    ]
        finally:
            await consumer.stop()
        return found

    return run_async(read)


def test_regenerate_sends_the_object_back_to_the_workers(desk: Desk) -> None:
    ref = desk.seed("regen-send/one.jpg", card("Garrafa para gerar de novo"))
    client = desk.login("reviewer")
    url = f"/cards/{desk.bucket}/{ref.key}"
    answer = client.post(
        url,
        data={"action": "regenerate", "note": "cor errada", "csrf": csrf_of(client.get(url).text)},
    )
    assert answer.status_code == 303
    [job] = jobs_for(desk, ref.key)
    assert job["object"]["etag"] == ref.etag and job["attempt"] == 2
    [event] = desk.reviews(ref.key)
    assert event["decision"] == "regenerate" and event["note"] == "cor errada"


def test_the_card_page_shows_what_came_from_the_shop_and_regenerating_keeps_it(
    desk: Desk,
) -> None:
    given = facts_from_metadata(
        {
            "X-Amz-Meta-Sku": "PAN-45",
            "X-Amz-Meta-Brand": "Tramontina",
            "X-Amz-Meta-Cor": "azul",
            "X-Amz-Meta-Gtin": "7891000315508",
        }
    )
    bound = FactsCheck(copied=["sku", "brand"], forced={"color_primary": "azul"})
    values = card("Garrafa Tramontina azul", sku="PAN-45", brand="Tramontina")
    ref = desk.seed("facts/pan-45.jpg", values, facts=given, bound=bound)
    client = desk.login("reviewer")
    url = f"/cards/{desk.bucket}/{ref.key}"
    page = client.get(url)
    assert page.status_code == 200
    html = page.text
    assert 'id="shop-facts"' in html and 'id="fact-sku">PAN-45' in html
    assert "copied onto the card" in html and 'id="colour-from-shop"' in html
    assert 'id="dropped-gtin"' in html and "should be 7" in html
    view = desk.api("viewer").get(f"/v1/cards/{desk.bucket}/{ref.key}").json()
    assert view["facts"]["facts"]["brand"] == "Tramontina"
    assert view["card"]["sku"] == "PAN-45"
    answer = client.post(
        url, data={"action": "regenerate", "note": "", "csrf": csrf_of(client.get(url).text)}
    )
    assert answer.status_code == 303
    [job] = jobs_for(desk, ref.key)
    assert job["facts"]["facts"]["sku"] == "PAN-45"  # the worker binds the new card to them


def test_bulk_approval_is_for_admins_and_approves_only_the_pending_matches(desk: Desk) -> None:
    refs = [desk.seed(f"bulk/item-{i}.jpg", card(f"Garrafa em lote {i}")) for i in range(4)]
    desk.seed("bulk/failed.jpg", None, status=CardStatus.failed)
    with desk.api("reviewer") as api:
        api.post(f"/v1/cards/{desk.bucket}/{refs[0].key}/reject", json={"note": "não"})
    reviewer = desk.login("reviewer")
    page = reviewer.get("/", params={"prefix": "bulk/"})
    assert 'id="bulk-approve"' not in page.text
    refused = reviewer.post("/bulk-approve", data={"csrf": csrf_of(page.text), "prefix": "bulk/"})
    assert refused.status_code == 403
    admin = desk.login("admin")
    page = admin.get("/", params={"prefix": "bulk/", "bucket": desk.bucket})
    assert 'id="bulk-approve"' in page.text
    done = admin.post(
        "/bulk-approve",
        data={"csrf": csrf_of(page.text), "prefix": "bulk/", "bucket": desk.bucket},
    )
    assert done.status_code == 303 and "Approved+3+cards" in done.headers["location"]
    states = {r.key: desk.row(r.key)["review_state"] for r in refs}
    assert states == {
        refs[0].key: "rejected",  # decided already: not approved blind
        refs[1].key: "approved",
        refs[2].key: "approved",
        refs[3].key: "approved",
    }
    assert desk.row("bulk/failed.jpg")["review_state"] == "pending"
    keys = {m["key"] for m in desk.approved_messages(keys=[r.key for r in refs[1:]])}
    assert {f"{desk.bucket}/{r.key}" for r in refs[1:]} <= keys


def test_a_revoked_token_and_a_removed_user_lose_access(desk: Desk) -> None:
    from tests.support.review_desk import DEFAULT_DSN
    from vitrine import users

    name, _ = desk.user("viewer", f"leaving-{desk.ns.name}")
    token = users.create_token(DEFAULT_DSN, name, "ci")
    session = desk.login("viewer")
    with httpx.Client(base_url=desk.url, headers={"Authorization": f"Bearer {token}"}) as api:
        assert api.get("/v1/cards", params={"limit": 1}).status_code == 200
        users.revoke_token(DEFAULT_DSN, name, "ci")
        assert api.get("/v1/cards", params={"limit": 1}).status_code == 401
    assert session.get("/").status_code == 200
    users.remove(DEFAULT_DSN, f"viewer-{desk.ns.name}")
    assert session.get("/").status_code == 303  # the session went with the account
    desk.user("viewer")  # put it back for the tests after this one


def test_an_upload_body_is_read_only_after_the_caller_and_only_up_to_the_limit(
    desk: Desk,
) -> None:
    jpeg = photo((200, 30, 30))
    with httpx.Client(base_url=desk.url, timeout=30) as anonymous:
        refused = anonymous.post("/v1/images", files={"file": ("m.jpg", jpeg, "image/jpeg")})
        assert refused.status_code == 401
    with desk.api("reviewer") as api:
        token = api.headers["authorization"]
        host, port = desk.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(  # 50 MB declared, none of it sent: the answer comes anyway
                f"POST /v1/images HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
            )
            assert raw.recv(200).startswith(b"HTTP/1.1 413")

        def endless() -> Iterator[bytes]:  # chunked, no length: cut off at the limit
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
            yield b"Content-Type: image/jpeg\r\n\r\n"
            for _ in range(100):
                yield b"\0" * 65536

        streamed = api.post(
            "/v1/images",
            content=endless(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert streamed.status_code == 413


def test_reviewers_upload_from_the_list_page(desk: Desk) -> None:
    client = desk.login("reviewer")
    page = client.get("/")
    assert 'id="upload"' in page.text
    files = {"file": ("caneca.jpg", photo((10, 40, 200)), "image/jpeg")}
    forged = client.post("/upload", files=files, data={"prefix": "page-upload"})
    assert forged.status_code == 403
    answer = client.post(
        "/upload", files=files, data={"prefix": "page-upload", "csrf": csrf_of(page.text)}
    )
    assert answer.status_code == 303 and "Uploaded" in answer.headers["location"]
    key = re.search(r"prefix=([^&]+)", answer.headers["location"]).group(1)  # type: ignore[union-attr]
    from urllib.parse import unquote_plus

    from tests.support.pipeline import s3_client

    head = s3_client(desk.ns.env).head_object(Bucket=desk.bucket, Key=unquote_plus(key))
    assert head["ContentType"] == "image/jpeg"
    text = client.post(
        "/upload",
        files={"file": ("notes.txt", b"hello", "text/plain")},
        data={"csrf": csrf_of(page.text)},
    )
    assert text.status_code == 303 and "error=1" in text.headers["location"]
    several = [("file", (f"p{i}.jpg", photo((10 * i, 40, 200)), "image/jpeg")) for i in range(2)]
    product = client.post(
        "/upload",
        files=several,
        data={"prefix": "page-product", "sku": "PG-1", "csrf": csrf_of(page.text)},
    )
    assert product.status_code == 303 and "Uploaded" in product.headers["location"]
    manifest = unquote_plus(re.search(r"prefix=([^&]+)", product.headers["location"]).group(1))  # type: ignore[union-attr]
    assert manifest.startswith("page-product/") and manifest.endswith("/product.json")
    body = s3_client(desk.ns.env).get_object(Bucket=desk.bucket, Key=manifest)["Body"].read()
    assert json.loads(body)["facts"] == {"sku": "PG-1"}
    viewer = desk.login("viewer")
    assert 'id="upload"' not in viewer.get("/").text


def test_an_approval_that_makes_no_valid_message_does_not_hold_back_the_others(
    desk: Desk,
) -> None:
    import psycopg

    from tests.support.review_desk import DEFAULT_DSN

    broken = desk.seed("outbox/broken.jpg", card("Garrafa que quebra a mensagem"))
    good = desk.seed("outbox/good.jpg", card("Garrafa que segue"))
    with psycopg.connect(DEFAULT_DSN) as conn:  # an approval whose card was mangled by hand
        conn.execute(
            "INSERT INTO card_reviews (bucket, object_key, reviewer, decision, after) "
            "VALUES (%s, %s, 'someone', 'approve', '{\"product_name\": 1}')",
            (desk.bucket, broken.key),
        )
    with desk.api("reviewer") as api:
        assert api.post(f"/v1/cards/{desk.bucket}/{good.key}/approve", json={}).status_code == 200
    keys = {m["key"] for m in desk.approved_messages(keys=[good.key])}
    assert f"{desk.bucket}/{good.key}" in keys
    assert f"{desk.bucket}/{broken.key}" not in keys
    [stuck] = desk.reviews(broken.key)
    assert stuck["published_at"] is None  # still there, to be seen and fixed
    assert any(e.get("event") == "review.unpublishable" for e in desk.service.events())


def test_vitrine_show_prints_the_review_as_the_read_only_role(desk: Desk) -> None:
    import subprocess
    import sys

    from tests.support.pipeline import READER_DSN

    ref = desk.seed("show/one.jpg", card("Garrafa mostrada no terminal"))
    with desk.api("reviewer") as api:
        api.patch(f"/v1/cards/{desk.bucket}/{ref.key}", json={"color_primary": "verde"})
        api.post(f"/v1/cards/{desk.bucket}/{ref.key}/approve", json={"note": "visto"})
    shown = subprocess.run(
        [sys.executable, "-m", "vitrine.cli", "show", ref.key, "--bucket", desk.bucket, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**desk.ns.env, "VITRINE_PG_DSN": READER_DSN},
    )
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert row["review_state"] == "approved" and row["review_note"] == "visto"
    assert row["edited"] is True
    assert [e["decision"] for e in row["reviews"]] == ["approve", "edit"]
    assert row["reviews"][1]["fields"] == ["color_primary"]
