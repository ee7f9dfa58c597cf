"""What PostgreSQL can keep of a JSON value: the rule every text and number of a card obeys.

A card lands in ``text`` and ``jsonb`` columns, and neither holds U+0000 (PostgreSQL refuses the
whole statement), nor can a string with a lone surrogate be encoded as UTF-8 to send it.  JSON
has no infinity or NaN, but Python's ``json`` reads ``1e999`` as ``inf`` and ``NaN`` as nan,
and Pydantic writes both back as ``null``: a card with one was stored with ``"value": null``,
which the contract refuses on every later edit, yet was approved and published.  So the
contract refuses them where a value enters (an edit, a decision, a model's card), with a
message of its own, instead of a database error later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 16
"""Deepest nesting a card value may have (an attribute is two levels): the walk below is
iterative, and anything deeper is refused rather than walked."""


def text_problem(text: str) -> str | None:
    """Why PostgreSQL could not store ``text``, or None."""
    if "\x00" in text:
        return "must not contain a NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    return None


def _where(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def value_problem(value: Any) -> str | None:
    """Why a JSON value could not be stored as it is, or None: a text (or a key) with NUL or a
    lone surrogate, a number that is not finite, or nesting deeper than :data:`MAX_DEPTH`.
    The message starts with where in the value the problem is (``capacidade.value: ...``)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{where}: nested more than {MAX_DEPTH} levels deep"
        problem: str | None = None
        if isinstance(item, str):
            problem = text_problem(item)
        elif isinstance(item, float) and not math.isfinite(item):
            problem = f"must be a finite number, not {item}"
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                name = str(key)
                if text_problem(name):
                    return f"{where or 'a name'}: a name {text_problem(name)}"
                stack.append((inner, _where(where, name), depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((inner, _where(where, str(i)), depth + 1) for i, inner in enumerate(item))
        if problem:
            return f"{where}: {problem}" if where else problem
    return None
