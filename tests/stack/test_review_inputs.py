"""Hostile input to the review desk, against the real stack: the attacks of the security review
(issue 22, F4–F9) kept as tests.  Each answer is an exact 4xx in the documented shape (a
``Problem`` for ``/v1``, a page for the browser routes), never a 5xx, never Python's own text.

* F4: an upload's ``prefix`` held to the key rule (CR/LF, ``../x``).
* F5: ``Location``/``status_url`` percent-encoded and built from the desk's public URL, never
  from the Host header (a key with ``€`` was a 500 after it was stored).
* F6: create-only-if-absent is one conditional write: N concurrent uploads, one 202.
* F7: NUL bytes, odd keys and hostile cursors in every filter, path and body.
* F8: numbers in a card are finite (``1e999`` was stored as null).
* F9: the page's note bounded as the API's; ``?msg=`` shows only the desk's own codes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from minio import Minio
from minio.error import S3Error

from tests.support.pipeline import (
    Pipeline,
    ensure_stack,
    new_namespace,
    rows,
    s3_client,
    wait_for,
)
from tests.support.review_desk import Desk, card, iter_desk, photo

pytestmark = pytest.mark.pipeline

PROBLEM_KEYS = {"error", "message", "fields"}
INTERNAL = ("Traceback", "codec", "Internal Server Error", "invalid literal", "errors.pydantic")


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(tmp_path_factory.mktemp("review-inputs"))


@pytest.fixture(scope="module")
def api(desk: Desk) -> Iterator[httpx.Client]:
    with desk.api("reviewer") as client:
        yield client


@pytest.fixture(scope="module")
def page(desk: Desk) -> Iterator[httpx.Client]:
    client = desk.login("reviewer")
    yield client
    client.close()


def problem(answer: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    """The answer is ``status`` with a Problem body (``error`` its code), and says nothing of
    the desk's internals."""
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    body = answer.json()
    assert set(body) == PROBLEM_KEYS, body
    assert error is None or body["error"] == error, body
    assert not any(word in answer.text for word in INTERNAL), body
    return dict(body)


def html(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    assert answer.headers["content-type"].startswith("text/html")
    assert not any(word in answer.text for word in INTERNAL)
    return answer.text


def csrf_of(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text[:300]
    return found.group(1)


def raw_get(desk: Desk, path: str, token: str) -> tuple[int, dict[str, Any]]:
    """GET a path exactly as written: httpx resolves ``.`` and ``..`` segments first."""
    parts = urlsplit(desk.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def jpeg(seed: int = 0) -> bytes:
    return photo((seed % 256, 40, 200 - seed % 150))


def upload(api: httpx.Client, **fields: str) -> httpx.Response:
    return api.post("/v1/images", files={"file": ("m.jpg", jpeg(), "image/jpeg")}, data=fields)


def bucket_keys(desk: Desk) -> list[str]:
    listed = s3_client(desk.ns.env).list_objects_v2(Bucket=desk.bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


# -- F4: the upload's prefix --------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["x\r\nX-Injected: yes", "../x", "/x", "a//b", "x\u202e"])
def test_an_upload_prefix_that_breaks_the_key_rule_is_refused(
    desk: Desk, api: httpx.Client, prefix: str
) -> None:
    body = problem(upload(api, prefix=prefix), 422, "bad_prefix")
    assert set(body["fields"]) == {"prefix"}
    assert not any("\r" in k or "\u202e" in k or k.startswith("x/") for k in bucket_keys(desk))


def test_the_pages_upload_refuses_a_bad_prefix_with_its_own_message(
    desk: Desk, page: httpx.Client
) -> None:
    csrf = csrf_of(page.get("/").text)
    files = {"file": ("m.jpg", jpeg(), "image/jpeg")}
    answer = page.post("/upload", files=files, data={"prefix": "../x", "csrf": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/?msg=NotUploaded-bad_prefix&error=1"
    shown = html(page.get(answer.headers["location"]), 200)
    assert "Not uploaded: the prefix breaks the key rule" in shown


def test_ingest_rejects_a_key_with_cr_lf_that_any_s3_client_wrote(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The pipeline queued such a key (the worker's log showed it): ingest now ends it
    ``rejected``/``bad_key`` at once, and an ordinary key beside it still becomes a job."""
    ns = new_namespace({})
    pipeline = Pipeline(ns, tmp_path_factory.mktemp("ingest-keys"))
    pipeline.add("ingest", "services.ingest")
    pipeline.add("sink", "services.sink")
    pipeline.start_all()
    try:
        s3 = s3_client(ns.env)
        bad, good = "x\r\nX-Injected: yes/m.jpg", "keys/caneca-€.jpg"
        for key in (bad, good):
            s3.put_object(Bucket=ns.bucket, Key=key, Body=jpeg(), ContentType="image/jpeg")
        found = wait_for(
            lambda: len(rows(ns.dsn, ns.bucket)) == 2 and rows(ns.dsn, ns.bucket), 120, "2 rows"
        )
        by_key = {row["object_key"]: row for row in found}
        assert (by_key[bad]["status"], by_key[bad]["reason"]) == ("rejected", "bad_key")
        assert by_key[bad]["detail"] == "the key holds the control character U+000D"
        assert by_key[good]["status"] == "queued"
    finally:
        pipeline.close()


# -- F5: status URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("dir/preço-€.jpg", "dir/pre%C3%A7o-%E2%82%AC.jpg"),
        ("dir/☕.jpg", "dir/%E2%98%95.jpg"),
        ("dir/%2e%2e/x.jpg", "dir/%252e%252e/x.jpg"),
        ("dir/q?x=1.jpg", "dir/q%3Fx%3D1.jpg"),
        ("dir/h#f.jpg", "dir/h%23f.jpg"),
    ],
)
def test_a_status_url_is_percent_encoded_and_leads_to_the_key(
    desk: Desk, api: httpx.Client, key: str, path: str
) -> None:
    key = f"{uuid.uuid4().hex[:6]}/{key}"
    answer = upload(api, key=key)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    expected = f"{desk.url}/v1/cards/{desk.bucket}/{key.split('/')[0]}/{path}"
    assert body["status_url"] == answer.headers["location"] == expected
    assert body["key"] == key
    status = api.get(body["status_url"])
    assert status.status_code == 200 and status.json()["key"] == key
    problem(upload(api, key=key), 409, "exists")


def test_a_key_with_a_bidi_override_is_refused_before_it_is_stored(
    desk: Desk, api: httpx.Client
) -> None:
    body = problem(upload(api, key="dir/gpj.\u202eexe.jpg"), 422, "bad_key")
    assert body["fields"] == {"key": "the key holds the control character U+202E"}
    assert not any("\u202e" in k for k in bucket_keys(desk))


def test_the_status_url_ignores_the_host_header(desk: Desk, api: httpx.Client) -> None:
    answer = api.post(
        "/v1/images",
        files={"file": ("m.jpg", jpeg(), "image/jpeg")},
        headers={"Host": "evil.example"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"].startswith(f"{desk.url}/v1/cards/")
    assert "evil.example" not in answer.text


# -- F6: create only if absent, atomically ------------------------------------------------------


def test_concurrent_uploads_of_one_new_key_store_exactly_one(desk: Desk, api: httpx.Client) -> None:
    key = f"race/{uuid.uuid4().hex}.jpg"
    photos = [jpeg(seed * 37) for seed in range(8)]

    def send(index: int) -> httpx.Response:
        files = {"file": ("m.jpg", photos[index], "image/jpeg")}
        return api.post("/v1/images", files=files, data={"key": key})

    with concurrent.futures.ThreadPoolExecutor(len(photos)) as pool:
        answers = list(pool.map(send, range(len(photos))))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] + [409] * (len(photos) - 1), codes
    for answer in answers:
        if answer.status_code == 409:
            problem(answer, 409, "exists")
    [winner] = [i for i, a in enumerate(answers) if a.status_code == 202]
    stored = s3_client(desk.ns.env).get_object(Bucket=desk.bucket, Key=key)["Body"].read()
    assert stored == photos[winner]


def test_the_put_only_upload_user_gets_the_conditional_write_too() -> None:
    """The desk's MinIO user may only put: MinIO still answers 412 for a key that exists (on
    the pipeline's bucket, the one its policy names, as test_review_grants does)."""
    uploader = Minio(
        "127.0.0.1:29000",
        "vitrine-upload",
        "vitrine-upload-dev-secret",
        secure=False,
        region="us-east-1",
    )
    key = f"inputs-test/{uuid.uuid4().hex}.jpg"
    data = jpeg(7)
    headers: dict[str, str | list[str] | tuple[str]] = {
        "Content-Type": "image/jpeg",
        "If-None-Match": "*",
    }
    try:
        uploader._put_object("incoming", key, data, headers=headers)
        with pytest.raises(S3Error) as refused:
            uploader._put_object("incoming", key, jpeg(8), headers=headers)
        assert refused.value.code == "PreconditionFailed"
    finally:
        s3_client({}).delete_object(Bucket="incoming", Key=key)


# -- F7: filters, paths, cursors, bodies ----------------------------------------------------------


@pytest.mark.parametrize("name", ["q", "category", "prefix", "model", "prompt", "status", "review"])
def test_a_nul_in_a_list_filter_is_a_422(api: httpx.Client, page: httpx.Client, name: str) -> None:
    body = problem(api.get(f"/v1/cards?{name}=%00"), 422, "invalid")
    assert set(body["fields"]) == {name}
    assert body["message"] == f"{name} must not contain a NUL character (U+0000)"
    assert body["message"] in html(page.get(f"/?{name}=a%00b"), 422)


@pytest.mark.parametrize(
    "path",
    [
        "{b}/a%00b.jpg",
        "a%00b/x.jpg",
        "{b}/",
        "{b}/.",
        "{b}/..",
        "{b}/a/../b.jpg",
        "{b}/%5C",
        "{b}/" + "k" * 1100,
        "{b}/a%0Ab.jpg",
        "{b}/a%0D%0AX-Injected:%20yes.jpg",
    ],
)
def test_a_key_that_cannot_exist_is_a_404_problem(desk: Desk, path: str) -> None:
    status, body = raw_get(desk, "/v1/cards/" + path.format(b=desk.bucket), desk.token("viewer"))
    assert status == 404 and set(body) == PROBLEM_KEYS and body["error"] == "not_found", body


def test_a_nul_in_the_bucket_or_key_of_a_change_is_a_404(
    desk: Desk, api: httpx.Client, page: httpx.Client
) -> None:
    for where in (f"{desk.bucket}/a%00b.jpg", "a%00b/x.jpg"):
        problem(api.patch(f"/v1/cards/{where}", json={"product_name": "Garrafa"}), 404)
        problem(api.post(f"/v1/cards/{where}/approve", json={}), 404)
        problem(api.post(f"/v1/cards/{where}/reject", json={"note": "no"}), 404)
        html(page.get(f"/cards/{where}"), 404)
        assert page.get(f"/images/thumb/{where}").status_code == 404


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSORS = {
    "nul": cursor_of(b'["2026-12-01T10:00:00+00:00", "b", "a\\u0000"]'),
    "nested": cursor_of(b"[" * 3000 + b"]" * 3000),
    "surrogate": cursor_of(b'["2026-12-01T10:00:00+00:00", "\\ud800", "k"]'),
    "shape": cursor_of(b'{"at": 1}'),
    "time": cursor_of(b'["yesterday", "b", "k"]'),
    "not base64": "%%%é",
    "long": "A" * 9000,  # over the list's 8,192, under the server's line limit
}


@pytest.mark.parametrize("name", sorted(CURSORS))
def test_a_hostile_cursor_is_a_422_with_the_desks_own_message(
    api: httpx.Client, page: httpx.Client, name: str
) -> None:
    body = problem(api.get("/v1/cards", params={"cursor": CURSORS[name]}), 422, "invalid")
    assert set(body["fields"]) == {"cursor"}
    assert body["message"].startswith("not a cursor of this list")
    assert "not a cursor of this list" in html(page.get("/", params={"cursor": CURSORS[name]}), 422)


@pytest.mark.parametrize(
    ("suffix", "body"),
    [
        ("", b'{"product_name": "Garrafa\\u0000t\\u00e9rmica"}'),
        ("", b'{"features_list": ["Tampa com rosca", "Boca\\u0000larga", "Alca firme"]}'),
        ("/approve", b'{"note": "a\\u0000b"}'),
        ("/reject", b'{"note": "a\\u0000b"}'),
        ("/reject", b'{"note": "a\\ud800b"}'),
    ],
)
def test_a_nul_or_lone_surrogate_in_json_text_is_a_422(
    desk: Desk, api: httpx.Client, suffix: str, body: bytes
) -> None:
    ref = desk.seed(f"nul/{uuid.uuid4().hex[:8]}.jpg", card("Garrafa térmica para NUL"))
    send = api.patch if not suffix else api.post
    answer = send(
        f"/v1/cards/{desk.bucket}/{ref.key}{suffix}",
        content=body,
        headers={"content-type": "application/json"},
    )
    problem(answer, 422)
    row = desk.row(ref.key)
    assert row["review_state"] == "pending" and row["edited_card"] is None


# -- F8: numbers are finite ---------------------------------------------------------------------


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"NaN", b"Infinity"])
def test_an_infinite_or_nan_number_is_refused_not_stored_as_null(
    desk: Desk, api: httpx.Client, number: bytes
) -> None:
    ref = desk.seed(f"inf/{uuid.uuid4().hex[:8]}.jpg", card("Garrafa térmica infinita"))
    body = b'{"attributes": {"capacidade": {"value": ' + number + b', "unit": "L"}}}'
    answer = api.patch(
        f"/v1/cards/{desk.bucket}/{ref.key}",
        content=body,
        headers={"content-type": "application/json"},
    )
    problem(answer, 422)
    assert desk.row(ref.key)["edited_card"] is None
    fine = api.patch(
        f"/v1/cards/{desk.bucket}/{ref.key}",
        json={"attributes": {"capacidade": {"value": 0.75, "unit": "L"}}},
    )
    assert fine.status_code == 200, fine.text
    assert desk.row(ref.key)["edited_card"]["attributes"]["capacidade"]["value"] == 0.75


@pytest.mark.parametrize("typed", ["1e999", "inf", "nan"])
def test_an_infinite_number_typed_into_the_card_form_is_refused(
    desk: Desk, page: httpx.Client, typed: str
) -> None:
    ref = desk.seed(f"inf/{uuid.uuid4().hex[:8]}.jpg", card("Garrafa térmica digitada"))
    form = {**card_form(page, desk, ref.key), "action": "save", "attr.capacidade": typed}
    text = html(page.post(f"/cards/{desk.bucket}/{ref.key}", data=form), 422)
    assert "must be a finite number" in text
    assert desk.row(ref.key)["edited_card"] is None


# -- page forms ---------------------------------------------------------------------------------


def card_form(page: httpx.Client, desk: Desk, key: str) -> dict[str, str]:
    text = page.get(f"/cards/{desk.bucket}/{key}").text
    rev = re.search(r'name="rev" value="(\d+)"', text)
    assert rev, text[:300]
    return {"csrf": csrf_of(text), "rev": rev.group(1)}


@pytest.mark.parametrize("rev", ["²", "9" * 5000, "-1", "1e3", "１"])
def test_a_rev_the_desk_did_not_write_is_an_error_page(
    desk: Desk, page: httpx.Client, rev: str
) -> None:
    ref = desk.seed(f"rev/{uuid.uuid4().hex[:8]}.jpg", card("Garrafa térmica revisada"))
    form = {**card_form(page, desk, ref.key), "rev": rev, "action": "approve"}
    text = html(page.post(f"/cards/{desk.bucket}/{ref.key}", data=form), 422)
    assert "revision" in text
    assert desk.row(ref.key)["review_state"] == "pending" and desk.reviews(ref.key) == []


def test_a_bogus_list_context_on_a_card_form_is_an_error_page(
    desk: Desk, page: httpx.Client
) -> None:
    ref = desk.seed(f"ctx/{uuid.uuid4().hex[:8]}.jpg", card("Garrafa térmica de contexto"))
    form = {**card_form(page, desk, ref.key), "action": "approve"}
    for query in ("status=bogus", "q=%00"):
        answer = page.post(f"/cards/{desk.bucket}/{ref.key}?{query}", data=form)
        html(answer, 422)
    assert desk.row(ref.key)["review_state"] == "pending"


@pytest.mark.parametrize("action", ["save", "approve", "reject", "regenerate"])
def test_an_action_on_a_card_that_does_not_exist_is_a_404_page(
    desk: Desk, page: httpx.Client, action: str
) -> None:
    csrf = csrf_of(page.get("/").text)
    form = {"csrf": csrf, "action": action, "note": "por quê", "product_name": "Garrafa"}
    for where in (f"{desk.bucket}/missing/{uuid.uuid4().hex}.jpg", f"{desk.bucket}/a%00b.jpg"):
        html(page.post(f"/cards/{where}", data=form), 404)


# -- F9: the note, the flash message --------------------------------------------------------------


def test_the_pages_reject_note_is_bounded_like_the_apis(desk: Desk, page: httpx.Client) -> None:
    ref = desk.seed(f"note/{uuid.uuid4().hex[:8]}.jpg", card("Garrafa térmica anotada"))
    form = {**card_form(page, desk, ref.key), "action": "reject", "note": "x" * 2001}
    text = html(page.post(f"/cards/{desk.bucket}/{ref.key}", data=form), 422)
    assert "the note is longer than 2000 characters" in text
    assert desk.row(ref.key)["review_state"] == "pending"
    for note in ("a\x00b",):
        nul = page.post(f"/cards/{desk.bucket}/{ref.key}", data={**form, "note": note})
        html(nul, 422)
    done = page.post(f"/cards/{desk.bucket}/{ref.key}", data={**form, "note": "y" * 2000})
    assert done.status_code == 303 and done.headers["location"].endswith("msg=Rejected")
    assert desk.row(ref.key)["review_note"] == "y" * 2000


def flash(text: str) -> str | None:
    found = re.search(r'<p class="flash[^"]*" role="[a-z]+">([^<]*)</p>', text)
    return found.group(1) if found else None


def test_a_flash_message_is_one_of_the_desks_own_codes(page: httpx.Client) -> None:
    """``?msg=`` showed any text as an alert: usable for phishing, however well escaped."""
    phish = "Your session expired: sign in again at https://evil.example"
    shown = html(page.get("/", params={"msg": phish, "error": "1"}), 200)
    assert phish not in shown and flash(shown) is None
    assert flash(html(page.get("/", params={"msg": "Approved"}), 200)) == "Approved."
    counted = html(page.get("/", params={"msg": "Approved 3 cards."}), 200)
    assert flash(counted) == "Approved 3 cards."
    odd = html(page.get("/", params={"msg": "Approved 3 cards. Visit evil.example"}), 200)
    assert flash(odd) is None and "evil.example" not in odd


def test_the_routers_own_refusals_are_problems_under_v1(desk: Desk, api: httpx.Client) -> None:
    """No route (404) and a wrong method (405, with its ``Allow``) answer in the problem shape
    like every other ``/v1`` answer, not with the framework's ``{"detail": ...}``."""
    problem(api.get("/v1/no-such-thing"), 404, "not_found")
    answer = api.delete("/v1/cards")
    problem(answer, 405, "method_not_allowed")
    assert "GET" in answer.headers["allow"]
