"""The hostile review's desk findings (issue 22, F1-F3), kept as attacks against a real desk.

* F1: a burst of simultaneous logins checks no more passwords than the login limits allow, for
  one user and for unknown names from one address; the rest are refused (429, Retry-After).
* F2: the password check runs off the event loop, so ``/healthz`` is answered while a burst of
  logins is being checked (shown by the order answers come in, not by a clock).
* F3: a body over VITRINE_REVIEW_BODY_MAX_BYTES is refused with 413, declared or chunked, with or
  without credentials, before it is read (the desk's peak memory does not grow by it); the API
  checks the caller before it parses a JSON body.

Requests go over raw sockets (tests/support/desk_attacks.py): the order of a burst on the wire
and the bytes the desk took before answering are what these tests are about.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.desk_attacks import (
    MB,
    Answer,
    burst,
    chunked,
    filler,
    head,
    login_csrf,
    login_request,
    peak_growth_mb,
    reset_peak,
    send,
)
from tests.support.pipeline import ensure_stack
from tests.support.review_desk import PASSWORD, Desk, iter_desk

pytestmark = pytest.mark.pipeline

USER_LIMIT = 5  # VITRINE_REVIEW_LOGIN_ATTEMPTS (default)
ADDRESS_LIMIT = 20  # VITRINE_REVIEW_LOGIN_ATTEMPTS_PER_ADDRESS (default)
BIG = 50 * MB
GROWTH_MB = 20  # the desk's peak memory may grow by this much during one oversized body
FILE_PART = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(tmp_path_factory.mktemp("attacks"))


def new_address() -> str:
    """A client address of its own for each attack: the per-address budget is not shared."""
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2] or 1}"


def statuses(answers: list[Answer]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for answer in answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    return counts


# --- F1: concurrent logins ---------------------------------------------------------------------


def test_a_burst_for_one_user_checks_no_more_passwords_than_the_limit(desk: Desk) -> None:
    name, password = desk.user("admin", f"burst-{desk.ns.name}")
    csrf, client = login_csrf(desk.url), new_address()
    wrong = [login_request(desk.url, csrf, name, f"wrong-{i:02d}-guess", client) for i in range(29)]
    right = login_request(desk.url, csrf, name, password, client)
    answers = burst(desk.url, [*wrong, right])  # all 30 on the wire before an answer is read
    counts = statuses(answers)
    assert counts.get(401, 0) <= USER_LIMIT, counts
    assert counts.get(401, 0) + counts.get(429, 0) == 30, counts
    assert answers[-1].status == 429  # the right password came after the limit was reached
    assert all(int(a.headers["retry-after"]) > 0 for a in answers if a.status == 429)
    again = burst(desk.url, [login_request(desk.url, csrf, name, password, new_address())])
    assert again[0].status == 429  # the user's budget is spent, from any address


def test_a_burst_of_unknown_names_from_one_address_checks_no_more_than_its_limit(
    desk: Desk,
) -> None:
    csrf, client = login_csrf(desk.url), new_address()
    names = [f"ghost-{i:02d}-{desk.ns.name}" for i in range(60)]
    answers = burst(desk.url, [login_request(desk.url, csrf, n, PASSWORD, client) for n in names])
    counts = statuses(answers)
    assert counts.get(401, 0) <= ADDRESS_LIMIT, counts
    assert counts.get(401, 0) + counts.get(429, 0) == 60, counts


def test_a_successful_login_gives_its_place_back(desk: Desk) -> None:
    """A success does not use up the address's budget: a reservation that logs in is released."""
    name, password = desk.user("viewer", f"ok-{desk.ns.name}")
    csrf, client = login_csrf(desk.url), new_address()
    for _ in range(ADDRESS_LIMIT + 2):
        [answer] = burst(desk.url, [login_request(desk.url, csrf, name, password, client)])
        assert answer.status == 303


# --- F2: the password check off the event loop ------------------------------------------------


def test_healthz_is_answered_while_a_burst_of_logins_is_checked(desk: Desk) -> None:
    """40 logins from 40 addresses (all checked: no limit applies).  While they run, /healthz
    is asked again and again.  With argon2 on the event loop each probe waits behind the
    checks the loop is busy with: a handful of probes in the whole burst (2 here), logins
    finishing during each.  Off the loop a probe is answered between two checks: hundreds of
    probes, few of them seeing a login finish."""
    csrf = login_csrf(desk.url)
    requests = [
        login_request(desk.url, csrf, f"nobody-{i:02d}-{desk.ns.name}", PASSWORD, new_address())
        for i in range(40)
    ]
    events: list[str] = []
    first = threading.Event()

    def finished(i: int, answer: Answer) -> None:
        events.append("login")
        first.set()

    answers: list[Answer] = []
    runner = threading.Thread(target=lambda: answers.extend(burst(desk.url, requests, finished)))
    runner.start()
    assert first.wait(120)
    with httpx.Client(base_url=desk.url, timeout=60) as probe:
        while runner.is_alive() and events.count("login") < len(requests):
            events.append("sent")
            assert probe.get("/healthz").status_code == 200
            events.append("answered")
    runner.join()
    assert statuses(answers) == {401: 40}
    overtaken, probes, inside = 0, 0, None
    for event in events:
        if event == "sent":
            inside, probes = 0, probes + 1
        elif event == "login" and inside is not None:
            inside += 1
        elif event == "answered":
            overtaken += bool(inside)
            inside = None
    assert probes >= 10, events
    assert overtaken <= probes // 2, (overtaken, probes)


# --- F3: bodies ---------------------------------------------------------------------------------


def card_path(desk: Desk) -> str:
    return f"/cards/{desk.bucket}/attack/body.jpg"


def oversized(
    desk: Desk, target: str, how: str, signed_in: bool
) -> tuple[str, str, dict[str, str]]:
    """Method, path and headers of an attack on ``target`` (api, login, page)."""
    headers: dict[str, str] = {}
    if target == "api":
        headers["Content-Type"] = "application/json"
        if signed_in:
            headers["Authorization"] = f"Bearer {desk.token('reviewer')}"
        return "PATCH", f"/v1{card_path(desk)}", headers
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    if how == "chunked":  # a file part: what the form parser would spool to a temporary file
        headers["Content-Type"] = "multipart/form-data; boundary=b"
    if target == "login":
        headers["Cookie"] = login_csrf(desk.url)[1]
        headers["X-Forwarded-For"] = new_address()
        return "POST", "/login", headers
    if signed_in:
        session = desk.login("reviewer")
        headers["Cookie"] = f"vitrine_session={session.cookies['vitrine_session']}"
    return "POST", card_path(desk), headers


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
@pytest.mark.parametrize("how", ["declared", "chunked"])
@pytest.mark.parametrize("target", ["api", "login", "page"])
def test_an_oversized_body_is_refused_before_it_is_read(
    desk: Desk, target: str, how: str, signed_in: bool
) -> None:
    method, path, headers = oversized(desk, target, how, signed_in)
    first, last = b"csrf=x&note=", b""
    if target == "api":
        first, last = b'{"product_name": "', b'"}'
    elif how == "chunked":
        first, last = FILE_PART, b"\r\n--b--\r\n"
    body = filler(BIG, first, last)
    if how == "declared":
        headers["Content-Length"] = str(BIG)
    else:
        headers["Transfer-Encoding"] = "chunked"
        body = chunked(body)
    pid = desk.service.proc.pid  # type: ignore[union-attr]
    start = reset_peak(pid)
    answer = send(desk.url, head(desk.url, method, path, headers), body)
    grown = peak_growth_mb(pid, start)
    # a length over the limit is refused as it is declared; a chunked one as it passes the
    # limit, unless nothing reads it: the API refuses a stranger before it reads a byte (a card
    # form may too: to the login page)
    expected = {413}
    if how == "chunked" and not signed_in:
        expected = {"api": {401}, "login": {413}, "page": {303, 413}}[target]
    assert answer.status in expected, (answer.status, answer.body[:300])
    assert answer.sent < BIG // 2, answer.sent  # answered long before the body was in
    assert grown < GROWTH_MB, grown
    assert answer.headers["connection"] == "close"  # the rest of the body is not read either
    if target == "api":
        problem = json.loads(answer.body)
        assert set(problem) == {"error", "message", "fields"}
        assert problem["error"] == ("body_too_large" if answer.status == 413 else "unauthorized")


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("", b'{"product_name": '),
        ("", b'{"no_such_field": 1}'),
        ("/approve", b"[1, 2"),
        ("/reject", b'{"note": 5}'),
    ],
)
def test_the_api_checks_the_caller_before_the_body(desk: Desk, route: str, body: bytes) -> None:
    method = "PATCH" if not route else "POST"
    url = f"{desk.url}/v1{card_path(desk)}{route}"
    with httpx.Client(timeout=30) as anonymous:
        answer = anonymous.request(
            method, url, content=body, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "unauthorized"


def test_a_bad_body_from_a_reviewer_is_a_problem_with_fields(desk: Desk) -> None:
    with desk.api("reviewer") as api:
        broken = api.patch(f"/v1{card_path(desk)}", content=b'{"product_name": ')
        unknown = api.patch(f"/v1{card_path(desk)}", json={"no_such_field": 1})
        no_note = api.post(f"/v1{card_path(desk)}/reject", content=b"")
        approve = api.post(f"/v1{card_path(desk)}/approve")  # no body: approve as it stands
    assert broken.status_code == 422 and broken.json()["error"] == "invalid_request"
    assert unknown.status_code == 422 and "no_such_field" in unknown.json()["fields"]
    assert no_note.status_code == 422 and no_note.json()["error"] == "invalid_request"
    assert approve.status_code == 404  # read past the body: the card does not exist


def test_a_logout_form_is_read_only_for_a_session(desk: Desk) -> None:
    """No session cookie: the logout form is refused before its body is read."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "60000"}
    answer = send(desk.url, head(desk.url, "POST", "/logout", headers), timeout=10)
    assert answer.status == 303 and answer.headers["location"] == "/login"
