"""What an object key (and a key prefix) may be: one rule for ingest, the desk and ``vitrine put``.

S3 takes almost any UTF-8 as a key, and keys come from any S3 client, not only from vitrine.  A
key is refused when it:

* is empty, or longer than 1,024 bytes of UTF-8 (S3's and MinIO's own limit), or is not UTF-8 at
  all (a lone surrogate);
* starts with ``/`` or has an empty, ``.`` or ``..`` segment: such a key turns into another
  path once it is part of a URL (``/v1/cards/incoming/a/../b`` is ``/v1/cards/incoming/b`` to
  every HTTP client), so its status URL and card page would show another object;
* holds a control character: C0 (U+0000–U+001F: CR/LF split log lines and headers, ESC drives
  terminals), DEL, C1 (U+0080–U+009F: NEL is a line break and CSI a terminal escape to some
  readers), the bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A–U+202E,
  U+2066–U+2069: "Trojan Source", a key that displays as another key in the desk, the logs and
  a terminal) and the Unicode line and paragraph separators (U+2028, U+2029).  No product photo
  needs one, and each can make a key look like something else to the person reading it.

Everything else is an ordinary character of a key, however it looks in a URL: ``%``, ``?``,
``#``, a backslash, spaces, accents, emoji (zero-width joiners included).  Such keys are quoted
wherever they become part of a URL (:func:`object_path`).
"""

from __future__ import annotations

from urllib.parse import quote

MAX_KEY_BYTES = 1024
INVISIBLE = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)


def _control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in INVISIBLE


def key_problem(key: str, what: str = "key") -> str | None:
    """Why ``key`` cannot be an object key of the pipeline, or None.  The message names the
    offending character by its code point and never repeats the key (it may be what hides)."""
    if not key:
        return f"the {what} is empty"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return f"the {what} is not valid UTF-8 (it holds a lone surrogate)"
    if size > MAX_KEY_BYTES:
        return f"the {what} is {size} bytes of UTF-8, over the limit of {MAX_KEY_BYTES}"
    bad = next((c for c in key if _control(c)), None)
    if bad is not None:
        return f"the {what} holds the control character U+{ord(bad):04X}"
    if key.startswith("/"):
        return f"the {what} starts with '/'"
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        return f"the {what} has an empty, '.' or '..' segment"
    return None


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot begin object keys, or None.  Empty means no prefix; one trailing
    ``/`` ends it (``shop-42/``); otherwise it is held to the key rule."""
    if not prefix:
        return None
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if not body:
        return "the prefix starts with '/'"
    return key_problem(body, "prefix")


def object_path(bucket: str, key: str) -> str:
    """``bucket/key`` as a URL path (RFC 3986): the bucket one quoted segment, each segment of
    the key quoted, its slashes kept, so that ``?``, ``#``, ``%`` and non-ASCII letters of a key
    stay part of it and the result is plain ASCII (a ``Location`` header can carry it)."""
    return f"{quote(bucket, safe='')}/{quote(key, safe='/')}"
