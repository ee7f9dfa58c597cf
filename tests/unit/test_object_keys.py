"""The one rule for object keys and prefixes (services/runtime/object_keys.py), as ingest, the
desk and ``vitrine put`` apply it, and the URL path a key takes in the desk's links."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.messages import ObjectRef, S3Record
from schemas.reasons import Reason
from services.ingest.rules import decide
from services.review import uploads
from services.runtime.object_keys import MAX_KEY_BYTES, key_problem, object_path, prefix_problem

GOOD_KEYS = [
    "a.jpg",
    "dir/preço-€.jpg",
    "dir/☕.jpg",
    "日本/靴.webp",
    "a b/c d.jpg",
    "a\\b.jpg",  # a backslash is an ordinary character of an S3 key (MinIO stores it)
    "dir/%2e%2e/x.jpg",  # percent signs are characters too: the key is not a URL
    "q?x=1#frag.jpg",
    "...jpg",
    ".hidden/x.jpg",
    "é" * (MAX_KEY_BYTES // 2),  # 1,024 bytes of UTF-8 exactly
    "family/👨‍👩‍👧.jpg",  # zero-width joiners make emoji sequences: allowed
]

BAD_KEYS = [
    ("", "empty"),
    ("/a.jpg", "starts with '/'"),
    ("a//b.jpg", "segment"),
    ("a/", "segment"),
    (".", "segment"),
    ("..", "segment"),
    ("../x.jpg", "segment"),
    ("a/./b.jpg", "segment"),
    ("a/../b.jpg", "segment"),
    ("x" * (MAX_KEY_BYTES + 1), "1025 bytes"),
    ("é" * (MAX_KEY_BYTES // 2 + 1), "1026 bytes"),
    ("a\x00b.jpg", "U+0000"),
    ("a\r\nX-Injected: yes.jpg", "U+000D"),
    ("a\tb.jpg", "U+0009"),
    ("a\x1b[31mred.jpg", "U+001B"),
    ("a\x7fb.jpg", "U+007F"),
    ("a\x85b.jpg", "U+0085"),  # C1: NEL, a line break to some terminals and log viewers
    ("a\x9bb.jpg", "U+009B"),  # C1: CSI, a terminal escape
    ("gpj.\u202eexe.jpg", "U+202E"),  # right-to-left override: shows another name
    ("a\u2066b.jpg", "U+2066"),
    ("a\u200fb.jpg", "U+200F"),
    ("a\u061cb.jpg", "U+061C"),
    ("a\u2028b.jpg", "U+2028"),  # line separator: a line break to JavaScript and logs
    ("a\ud800b.jpg", "surrogate"),
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_keys_people_use_are_accepted(key: str) -> None:
    assert key_problem(key) is None


@pytest.mark.parametrize(("key", "why"), BAD_KEYS)
def test_keys_that_hide_control_characters_or_walk_paths_are_refused(key: str, why: str) -> None:
    problem = key_problem(key)
    assert problem is not None and why in problem
    assert key not in problem or len(key) <= 2  # names the character, never echoes the key


@pytest.mark.parametrize("prefix", ["", "shop-42", "shop-42/", "a/b/", "preço/€"])
def test_prefixes_may_end_with_a_slash(prefix: str) -> None:
    assert prefix_problem(prefix) is None


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("/", "starts with '/'"),
        ("/x", "starts with '/'"),
        ("../x", "segment"),
        ("x//", "segment"),
        ("a/./b", "segment"),
        ("x\r\nX-Injected: yes", "U+000D"),
        ("\u202ex", "U+202E"),
        ("x" * 1025, "1025 bytes"),
    ],
)
def test_prefixes_follow_the_key_rule(prefix: str, why: str) -> None:
    problem = prefix_problem(prefix)
    assert problem is not None and why in problem and "prefix" in problem


@pytest.mark.parametrize(
    ("bucket", "key", "path"),
    [
        ("incoming", "dir/preço-€.jpg", "incoming/dir/pre%C3%A7o-%E2%82%AC.jpg"),
        ("incoming", "dir/☕.jpg", "incoming/dir/%E2%98%95.jpg"),
        ("incoming", "dir/%2e%2e/x.jpg", "incoming/dir/%252e%252e/x.jpg"),
        ("incoming", "q?x=1#frag.jpg", "incoming/q%3Fx%3D1%23frag.jpg"),
        ("incoming", "a b+c&d;e.jpg", "incoming/a%20b%2Bc%26d%3Be.jpg"),
        ("incoming", "a\\b~c_d-e.jpg", "incoming/a%5Cb~c_d-e.jpg"),
        ("odd/bucket", "k", "odd%2Fbucket/k"),
    ],
)
def test_a_keys_url_path_quotes_every_segment_and_keeps_the_slashes(
    bucket: str, key: str, path: str
) -> None:
    assert object_path(bucket, key) == path
    assert path.isascii()


# -- the desk's uploads -----------------------------------------------------------------------


@pytest.mark.parametrize(("key", "why"), BAD_KEYS[1:])
def test_the_desk_refuses_a_given_key_as_the_rule_does(key: str, why: str) -> None:
    with pytest.raises(uploads.UploadRefused) as refused:
        uploads.object_key("m.jpg", "uploads", key)
    assert refused.value.status == 422 and refused.value.code == "bad_key"
    assert why in str(refused.value) and refused.value.fields == {"key": str(refused.value)}


@pytest.mark.parametrize(
    "prefix", ["x\r\nX-Injected: yes", "../x", "/x", "a//b", "\u202eevil", "p" * 1000]
)
def test_the_desk_refuses_a_prefix_that_breaks_the_rule(prefix: str) -> None:
    """F4: the prefix was not checked (CR/LF reached the bucket and the pipeline; ``../x`` made
    a 500).  A prefix short enough on its own but too long with the date and id is refused
    too: the generated key is checked as well."""
    with pytest.raises(uploads.UploadRefused) as refused:
        uploads.object_key("m.jpg", prefix, None)
    assert refused.value.status == 422 and refused.value.code == "bad_prefix"
    assert set(refused.value.fields) == {"prefix"}


@pytest.mark.parametrize("name", ["caneca.jpg", "\r\n.jpg", "..", "a\u202eb.jpg", "☕" * 300])
def test_a_generated_key_always_passes_the_rule(name: str) -> None:
    key = uploads.object_key(name, "shop-42/", None)
    assert key_problem(key) is None and key.startswith("shop-42/")


# -- ingest -----------------------------------------------------------------------------------


def record(key: str) -> S3Record:
    ref = ObjectRef(
        bucket="incoming",
        key="placeholder.jpg",
        size=1234,
        content_type="image/jpeg",
        sequencer="18EB8B3948595CE8",
        event_time=datetime(2026, 11, 26, tzinfo=UTC),
    )
    return S3Record.model_validate(
        {
            "eventName": "s3:ObjectCreated:Put",
            "eventTime": ref.event_time.isoformat(),
            "s3": {
                "bucket": {"name": ref.bucket},
                "object": {
                    "key": key,
                    "size": ref.size,
                    "eTag": "c6f3ac6367e8af5f979ee83ba321e085",
                    "contentType": ref.content_type,
                    "sequencer": ref.sequencer,
                },
            },
        }
    )


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        ("x%0D%0AX-Injected%3A+yes%2F2026%2Fm.jpg", "U+000D"),
        ("a%1B%5B31mred.jpg", "U+001B"),
        ("gpj.%E2%80%AEexe.jpg", "U+202E"),
        ("a%C2%85b.jpg", "U+0085"),
    ],
)
def test_ingest_rejects_a_key_that_breaks_the_rule_with_its_reason(encoded: str, why: str) -> None:
    """Keys come from any S3 client: one with CR/LF was queued and reached the worker's log."""
    decision = decide(record(encoded), 30 * 1024 * 1024)
    assert decision.job is None and decision.sniff is None
    assert decision.result is not None
    assert decision.result.reason == Reason.bad_key
    assert decision.result.detail is not None and why in decision.result.detail


def test_ingest_still_queues_the_keys_people_use() -> None:
    decision = decide(record("dir%2Fpre%C3%A7o-%E2%82%AC.jpg"), 30 * 1024 * 1024)
    assert decision.job is not None and decision.job.object.key == "dir/preço-€.jpg"


# -- vitrine put ------------------------------------------------------------------------------


def test_vitrine_put_refuses_a_bad_prefix_or_file_name_before_uploading(tmp_path: Path) -> None:
    from vitrine.commands.catalogue import key_problems
    from vitrine.upload import plan

    (tmp_path / "ok.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "bad\nname.jpg").write_bytes(b"\xff\xd8\xff")
    todo = plan([tmp_path], "shop-42/")
    problems = key_problems("shop-42/", todo)
    assert len(problems) == 1 and "U+000A" in problems[0] and "bad" in problems[0]
    assert key_problems("../x/", plan([tmp_path / "ok.jpg"], "../x/"))[0].startswith("--prefix")
    assert key_problems("shop-42/", plan([tmp_path / "ok.jpg"], "shop-42/")) == []


# -- the desk's status URL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public", "host", "url"),
    [
        ("", "127.0.0.1", "http://127.0.0.1:29080/v1/cards/incoming/dir/pre%C3%A7o%3F.jpg"),
        ("", "::1", "http://[::1]:29080/v1/cards/incoming/dir/pre%C3%A7o%3F.jpg"),
        # a wildcard bind (compose's 0.0.0.0) is no address a client can use
        ("", "0.0.0.0", "http://127.0.0.1:29080/v1/cards/incoming/dir/pre%C3%A7o%3F.jpg"),
        ("", "::", "http://127.0.0.1:29080/v1/cards/incoming/dir/pre%C3%A7o%3F.jpg"),
        (
            "https://desk.example.com/review/",
            "0.0.0.0",
            "https://desk.example.com/review/v1/cards/incoming/dir/pre%C3%A7o%3F.jpg",
        ),
    ],
)
def test_the_status_url_is_the_configured_public_url_and_the_quoted_key(
    public: str, host: str, url: str
) -> None:
    from types import SimpleNamespace
    from typing import Any

    from services.review.desk import status_url

    settings: Any = SimpleNamespace(review_public_url=public, review_host=host, review_port=29080)
    assert status_url(settings, "incoming", "dir/preço?.jpg") == url


@pytest.mark.parametrize("prefix", ["../x/", "x\r\nX-Injected: yes/", "/abs/"])
def test_vitrine_put_with_a_bad_prefix_is_a_usage_error_and_sends_nothing(
    tmp_path: Path, prefix: str
) -> None:
    """The key check comes before the bucket is reached: the endpoint here is closed."""
    import os
    import subprocess
    import sys

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0")
    done = subprocess.run(
        [sys.executable, "-m", "vitrine.cli", "put", str(photo), "--prefix", prefix],
        env={**os.environ, "VITRINE_S3_ENDPOINT": "http://127.0.0.1:9", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2, done.stderr
    assert "--prefix: the prefix" in done.stderr and "nothing was uploaded" in done.stderr
    assert "Traceback" not in done.stderr
