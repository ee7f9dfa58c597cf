"""The desk's ``/v1`` against its own ``/openapi.json``, fuzzed by schemathesis (issue 22).

A real desk on the running stack.  Every operation of the spec is driven by hypothesis with a
fixed seed and a fixed number of examples, in positive and negative generation, twice:

* as a reviewer (Bearer token): no 5xx, and every answer as the spec documents it (status code,
  content type, body schema, headers).  Some drawn cases are pointed at seeded cards and some
  uploads carry a real (small) photo, so the edit, decision and storage paths are reached, not
  only the 404 of a random key; about one positive case in three carries a value that broke
  servers before (NUL, dot segments, a backslash, an over-long key, text outside Latin-1, CR/LF).
  Uploads go to this test's own namespace bucket, and the desk's image limit is set low, so
  nothing large is written.
* without credentials: every answer is a refusal (401/403, or a documented 404/405), never a
  5xx and never a 422 that tells a stranger the request's schema before they are known.

A failure lists every distinct (operation, check, status) with the check's message and a curl
line that replays it.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
import requests
import schemathesis
from hypothesis import strategies as st

from tests.support.pipeline import ensure_stack
from tests.support.review_desk import Desk, card, iter_desk, photo
from tests.support.schema_fuzz import (
    Adjust,
    Findings,
    Pass,
    Verdict,
    operations,
    plant_hostile,
)

pytestmark = pytest.mark.pipeline

MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
REVIEWER_EXAMPLES = 25  # per operation and mode: at most 6 operations x 2 modes x 25 = 300
STRANGER_EXAMPLES = 10  # at most 6 x 2 x 10 = 120 requests
SEEDED = ("fuzz/garrafa.jpg", "fuzz/dir/caneca.jpg", "fuzz/rejeitar.jpg")
SMALL_PHOTO = photo((200, 40, 40), (64, 48))


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(tmp_path_factory.mktemp("review-schema"), VITRINE_IMAGE_MAX_BYTES="50000")


@pytest.fixture(scope="module")
def schema(desk: Desk) -> schemathesis.BaseSchema:
    for key in SEEDED:
        desk.seed(key, card(f"Garrafa térmica {key}"))
    return schemathesis.openapi.from_url(f"{desk.url}/openapi.json", timeout=30)


def steer_to_seeded(desk: Desk) -> Adjust:
    """About half the reviewer's positive cases name a seeded card instead of a random key, and
    half its uploads carry a real photo (random bytes are rightly refused as not an image); then
    some get a hostile value (:func:`plant_hostile`)."""

    def adjust(case: schemathesis.Case, data: st.DataObject) -> None:
        if case.meta is not None and not case.meta.generation.mode.is_positive:
            return
        if "key" in (case.path_parameters or {}) and data.draw(st.booleans()):
            case.path_parameters = {
                "bucket": desk.bucket,
                "key": data.draw(st.sampled_from(SEEDED)),
            }
        if isinstance(case.body, dict) and "file" in case.body and data.draw(st.booleans()):
            case.body = {**case.body, "file": SMALL_PHOTO}  # type: ignore[dict-item]
        plant_hostile(case, data)

    return adjust


def refused(case: schemathesis.Case, response: schemathesis.Response) -> str | None:
    """Without credentials only a refusal may come back: 401/403, or a 404/405 the spec
    documents for the operation (a path no route serves).  A 422 would describe the request's
    schema to someone the desk does not know yet."""
    documented = {int(code) for code in case.operation.definition.raw["responses"]}
    allowed = {401, 403} | ({404, 405} & documented)
    if response.status_code in allowed:
        return None
    return f"expected a refusal {sorted(allowed)} without credentials, got {response.status_code}"


def unhandled(desk: Desk, mark: int) -> list[str]:
    """The desk's own account of its 5xx: the last line of each exception its log shows."""
    found: Counter[str] = Counter()
    for line in desk.service.lines()[mark:]:
        with contextlib.suppress(ValueError, AttributeError):
            trace = json.loads(line).get("exception") or ""
            if trace.strip():
                found[trace.strip().splitlines()[-1]] += 1
    return [f"{n}x {last}" for last, n in found.most_common()]


def known_good(desk: Desk, schema: schemathesis.BaseSchema) -> list[schemathesis.Case]:
    """One request per operation that a correct desk accepts from a reviewer, so that a 2xx body
    of every operation is checked against the spec whatever the fuzzing happens to draw."""
    ops = {op.label: op for op in operations(schema)}
    item = "/v1/cards/{bucket}/{key}"
    json_body = "application/json"

    def at(key: str) -> dict[str, str]:
        return {"bucket": desk.bucket, "key": key}

    return [
        ops["POST /v1/images"].Case(
            body={"file": SMALL_PHOTO},  # type: ignore[dict-item]
            media_type="multipart/form-data",
        ),
        ops["GET /v1/cards"].Case(query={"limit": 5}),
        ops[f"GET {item}"].Case(path_parameters=at(SEEDED[0])),
        ops[f"PATCH {item}"].Case(
            path_parameters=at(SEEDED[0]),
            body={"product_name": "Garrafa térmica vermelha 750 ml"},
            media_type=json_body,
        ),
        ops[f"POST {item}/approve"].Case(
            path_parameters=at(SEEDED[1]), body={}, media_type=json_body
        ),
        ops[f"POST {item}/reject"].Case(
            path_parameters=at(SEEDED[2]),
            body={"note": "A foto mostra outro produto."},
            media_type=json_body,
        ),
    ]


def succeeded(case: schemathesis.Case, response: schemathesis.Response) -> str | None:
    if 200 <= response.status_code < 300:
        return None
    return f"a well-formed request from a reviewer was refused: {response.status_code}"


def fuzz(desk: Desk, schema: schemathesis.BaseSchema, run: Pass, known: Sequence[Verdict]) -> None:
    """The known-good requests first (judged by ``known`` too), then the fuzzing."""
    mark = len(desk.service.lines())
    with run.session:
        for case in known_good(desk, schema):
            run.exchange(case, "known-good", known)
        for operation in operations(schema):
            for mode in MODES:
                run.run(operation, mode)
    report = "\n".join([run.findings.report(), "desk log:", *unhandled(desk, mark)])
    print(report)  # the request count, also when it passes (pytest -s)
    assert not run.findings.found, report
    assert run.findings.requests > 0


def test_every_operation_answers_a_reviewer_as_the_spec_says(
    desk: Desk, schema: schemathesis.BaseSchema
) -> None:
    token = desk.token("reviewer")
    run = Pass(
        session=requests.Session(),
        headers={"Authorization": f"Bearer {token}"},
        examples=REVIEWER_EXAMPLES,
        findings=Findings(),
        adjust=steer_to_seeded(desk),
    )
    fuzz(desk, schema, run, (succeeded,))


def test_without_credentials_every_operation_refuses_before_reading_the_request(
    desk: Desk, schema: schemathesis.BaseSchema
) -> None:
    run = Pass(
        session=requests.Session(),
        headers={},
        examples=STRANGER_EXAMPLES,
        findings=Findings(),
        verdicts=(refused,),
        adjust=plant_hostile,
    )
    fuzz(desk, schema, run, ())  # ``refused`` judges every request of this pass
