"""JSON Schema → GBNF for llama.cpp's grammar sampler, written for vitrine's contracts.

Why not ``LlamaGrammar.from_json_schema``: llama-cpp-python's converter spells ``maxLength: N`` as N
nested optional groups, and llama.cpp's parser rejects that beyond about 1000 characters — the
card's 2000-character description then gets *no* grammar at all (the sampler is silently dropped).
llama.cpp's own parser accepts counted repetition ``char{m,n}`` directly, but silently turns any
bound above 2000 into "unbounded".  This converter emits ``{m,n}`` and refuses bounds above 2000
and every keyword it does not implement, so a schema is either enforced exactly or rejected at
start-up — never decoded unconstrained.

Supported: objects (all properties required, in declared order, no extra keys), strings with
min/max length or an anchored ``pattern``, string enums and consts (long enums as a radix tree),
``anyOf`` (the category tree's attribute groups, nullable attributes), arrays with ``items``
and min/max items, integers, numbers, booleans, null, and local ``$ref`` to ``$defs``.

Patterns are translated from Python's own parse of the regex (literals, classes, groups,
alternation, counted repetition, ``^``/``$`` at the ends), character sets computed exactly, and
emitted as the JSON-encoded text of the matching strings (a newline in the value is ``\\n`` in
the document).  Every repetition in a pattern must be counted, so generation terminates.

Neither backend can intersect a pattern with a length bound (GBNF has no intersection;
llguidance 1.9 reports "unable to determine if regex is empty" for the pair, and a Lark lexeme
``/words/ & /.{400,2000}/`` runs out of expressions), so :func:`grammar_schema` is what they
compile.  For GBNF, ``minLength``/``maxLength`` are dropped where a ``pattern`` stands beside
them: the pattern bounds the string on its own (the description's word pattern counts words),
and Pydantic still checks the character bounds.  For llguidance the description keeps its exact
character bounds and loses its word pattern, which vitrine's decoder enforces instead by
masking the closing quote until the words are there (a regex lexeme would also cost about 3 ms
of mask per token at a 262k vocabulary, against 0.04 ms for a plain bounded string).
"""

from __future__ import annotations

import json
import os
import re
import re._parser as sre_parse  # the stdlib's regex parser: patterns mean what Python says
from collections.abc import Callable
from re._constants import MAXREPEAT
from typing import Any

from schemas.card import MIN_WORDS_KEY, bounded_description_pattern

MAX_REPETITION = 2000
"""llama.cpp treats a larger upper bound as unbounded (MAX_REPETITION_THRESHOLD)."""

TRIE_MIN = 16
"""Enums longer than this are emitted as a radix tree of their values (see ``_trie``)."""

ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id"})

PRIMITIVES = {
    "space": '" "?',
    "char": r'[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt/] | "u" [0-9a-fA-F]{4})',
    "integer": '"-"? ("0" | [1-9] [0-9]{0,15}) space',
    "number": '"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})? space',
    "boolean": '("true" | "false") space',
    "null": '"null" space',
}


class SchemaNotSupported(ValueError):
    """The schema uses something this converter cannot enforce exactly."""


def _literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly (UTF-8 passes through)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _json_literal(value: Any) -> str:
    return _literal(json.dumps(value, ensure_ascii=False))


def _bounds(lo: int, hi: int | None, what: str) -> str:
    if hi is not None and hi > MAX_REPETITION:
        raise SchemaNotSupported(
            f"{what} upper bound {hi} exceeds {MAX_REPETITION}; llama.cpp would treat it as "
            "unbounded"
        )
    if lo > MAX_REPETITION:
        raise SchemaNotSupported(f"{what} lower bound {lo} exceeds {MAX_REPETITION}")
    if hi is None:
        return f"{{{lo},}}"
    if hi < lo:
        raise SchemaNotSupported(f"{what} bounds are empty: {lo} > {hi}")
    return f"{{{lo},{hi}}}"


class _Converter:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        self.used_primitives: set[str] = {"space"}

    def add(self, name: str, body: str) -> str:
        key = name.replace("_", "-") or "root"
        base, n = key, 1
        while key in self.rules and self.rules[key] != body:
            n += 1
            key = f"{base}-{n}"
        self.rules[key] = body
        return key

    def visit(self, schema: dict[str, Any], name: str) -> str:
        if "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/$defs/"):
                raise SchemaNotSupported(f"only local $defs references are supported, got {ref}")
            return self.visit(self.root["$defs"][ref.removeprefix("#/$defs/")], name)
        keys = set(schema) - ANNOTATIONS - {"$defs"}
        if "anyOf" in schema:
            self._only(keys, {"anyOf"}, name)
            merged = self._discriminated(schema["anyOf"], name)
            if merged is not None:
                return merged
            alternatives = [
                self.visit(sub, f"{name}-{i + 1}") for i, sub in enumerate(schema["anyOf"])
            ]
            return self.add(name, "(" + " | ".join(alternatives) + ")")
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            self._only(keys, {"enum", "const", "type"}, name)
            if len(values) > TRIE_MIN:
                texts = [json.dumps(v, ensure_ascii=False) for v in values]
                return self.add(name, f"{self._trie(texts, name)} space")
            return self.add(
                name,
                " | ".join(_json_literal(v) for v in values) + " space"
                if len(values) == 1
                else "(" + " | ".join(_json_literal(v) for v in values) + ") space",
            )
        kind = schema.get("type")
        if kind == "object":
            return self._object(schema, keys, name)
        if kind == "array":
            return self._array(schema, keys, name)
        if kind == "string" and "pattern" in schema:
            self._only(keys, {"type", "pattern"}, name)
            body = _PatternTranslator(schema["pattern"], name, self.add).translate()
            return self.add(name, f'"\\"" {body} "\\"" space')
        if kind == "string":
            self._only(keys, {"type", "minLength", "maxLength"}, name)
            lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
            if hi is None:
                raise SchemaNotSupported(
                    f"{name}: unbounded string; give it a maxLength so generation terminates"
                )
            self.used_primitives.add("char")
            return self.add(name, f'"\\"" char{_bounds(lo, int(hi), name)} "\\"" space')
        if kind in ("integer", "number", "boolean", "null"):
            self._only(keys, {"type"}, name)
            self.used_primitives.add(kind)
            return kind
        raise SchemaNotSupported(f"{name}: unsupported schema {json.dumps(schema)[:120]}")

    def _trie(self, texts: list[str], name: str, then: list[str] | None = None) -> str:
        """An alternation of many literals as a radix tree: one rule per branching point.

        llama.cpp's grammar sampler keeps one stack per open alternative and checks every
        candidate token against each, so 6,000 flat alternatives cost 6,000 checks per token
        (a category enum of a large tree); factored by common prefix, only the branches that
        share what has been written so far are open (tens at most).  ``then[i]``, when given,
        is what follows ``texts[i]`` (a rule sequence): the tree's leaves carry their own
        continuations."""
        follow = dict(zip(texts, then or [""] * len(texts), strict=True))
        counter = [0]

        def tail(text: str) -> str:
            return f" {follow[text]}" if follow[text] else ""

        def build(suffixes: list[tuple[str, str]]) -> str:
            ended = [whole for rest, whole in suffixes if not rest]
            groups: dict[str, list[tuple[str, str]]] = {}
            for rest, whole in suffixes:
                if rest:
                    groups.setdefault(rest[0], []).append((rest, whole))
            alternatives = []
            for members in groups.values():
                rests = [r for r, _ in members]
                prefix = os.path.commonprefix(rests)  # noqa: RUF071 (characters meant)
                if len(members) == 1:
                    alternatives.append(f"{_literal(prefix)}{tail(members[0][1])}")
                else:
                    deeper = [(r[len(prefix) :], w) for r, w in members]
                    alternatives.append(f"{_literal(prefix)} {build(deeper)}")
            optional = False
            for whole in ended:
                if follow[whole]:
                    alternatives.append(follow[whole])
                else:
                    optional = True
            counter[0] += 1
            body = " | ".join(alternatives)
            return self.add(f"{name}-t{counter[0]}", f"({body})?" if optional else body)

        return build([(t, t) for t in dict.fromkeys(texts)])

    def _discriminated(self, alternatives: list[Any], name: str) -> str | None:
        """``anyOf`` objects told apart by their first property's enum (the category tree's
        groups: the leaf path decides the attributes), as one radix tree of every value with
        each alternative's remaining properties after its values; None if not that shape.

        As plain alternatives, GBNF would keep one stack per group open while the path is
        written (129 groups: 380 ms per token at a 262k vocabulary); merged, only the paths
        still possible are open."""
        first_key: str | None = None
        entries: list[tuple[str, str]] = []
        for i, alt in enumerate(alternatives):
            if not (
                isinstance(alt, dict)
                and alt.get("type") == "object"
                and alt.get("additionalProperties") is False
                and alt.get("properties")
                and set(alt.get("required", [])) == set(alt["properties"])
                and set(alt) - ANNOTATIONS
                <= {"type", "properties", "required", "additionalProperties"}
            ):
                return None
            props = list(alt["properties"].items())
            key, spec = props[0]
            if first_key not in (None, key) or not isinstance(spec, dict):
                return None
            first_key = key
            values = spec.get("enum")
            if set(spec) - ANNOTATIONS - {"type", "enum"} or not values:
                return None
            rest = "".join(
                f' "," space {_literal(json.dumps(prop))} space ":" space '
                f"{self.visit(sub, f'{name}-{i + 1}-{prop}')}"
                for prop, sub in props[1:]
            )
            cont = self.add(f"{name}-{i + 1}-rest", f'space{rest} "}}" space')
            entries += [(json.dumps(v, ensure_ascii=False), cont) for v in values]
        texts = [t for t, _ in entries]
        if len(set(texts)) != len(texts):
            return None  # a value in two alternatives: not a discriminator
        assert first_key is not None
        tree = self._trie(texts, f"{name}-{first_key}", [c for _, c in entries])
        return self.add(
            name, f'"{{" space {_literal(json.dumps(first_key))} space ":" space {tree}'
        )

    def _only(self, keys: set[str], allowed: set[str], name: str) -> None:
        extra = keys - allowed
        if extra:
            raise SchemaNotSupported(f"{name}: unsupported keyword(s) {sorted(extra)}")

    def _object(self, schema: dict[str, Any], keys: set[str], name: str) -> str:
        self._only(keys, {"type", "properties", "required", "additionalProperties"}, name)
        props: dict[str, Any] = schema.get("properties", {})
        if schema.get("additionalProperties", True) is not False:
            raise SchemaNotSupported(f"{name}: objects must forbid additionalProperties")
        if set(schema.get("required", [])) != set(props):
            raise SchemaNotSupported(f"{name}: every property must be required")
        parts = []
        for prop, sub in props.items():
            rule = self.visit(sub, f"{name}-{prop}" if name != "root" else prop)
            parts.append(f'{_literal(json.dumps(prop))} space ":" space {rule}')
        body = ' "," space '.join(parts)
        return self.add(name, f'"{{" space {body} "}}" space' if parts else '"{" space "}" space')

    def _array(self, schema: dict[str, Any], keys: set[str], name: str) -> str:
        self._only(keys, {"type", "items", "minItems", "maxItems"}, name)
        if "items" not in schema:
            raise SchemaNotSupported(f"{name}: arrays need an items schema")
        lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
        if hi is None:
            raise SchemaNotSupported(f"{name}: unbounded array; give it maxItems")
        item = self.visit(schema["items"], f"{name}-item")
        hi = int(hi)
        if hi == 0:
            return self.add(name, '"[" space "]" space')
        tail = f'("," space {item}){_bounds(max(lo - 1, 0), hi - 1, name)}'
        body = f'"[" space {item} {tail} "]" space'
        if lo == 0:
            body = f'"[" space ({item} {tail})? "]" space'
        return self.add(name, body)


_JSON_ESCAPES = {
    0x22: '"\\\\\\""',
    0x5C: '"\\\\\\\\"',
    0x0A: '"\\\\n"',
    0x09: '"\\\\t"',
    0x0D: '"\\\\r"',
    0x08: '"\\\\b"',
    0x0C: '"\\\\f"',
}
"""How JSON spells the characters a string cannot hold raw, as GBNF literals."""

MAX_CODEPOINT = 0x10FFFF
_SPACE = [c for c in range(0x3000 + 1) if chr(c).isspace()]
"""Python's ``\\s`` for str patterns (every whitespace code point is below U+3001)."""


def _ranges(codepoints: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(set(codepoints)):
        if out and c == out[-1][1] + 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for lo, hi in _merge(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODEPOINT:
        out.append((start, MAX_CODEPOINT))
    return out


def _cp(c: int) -> str:
    return f"\\u{c:04X}" if c <= 0xFFFF else f"\\U{c:08X}"


class _PatternTranslator:
    """One anchored regex → a GBNF expression for the JSON-encoded strings it matches."""

    def __init__(self, pattern: str, name: str, add: Callable[[str, str], str]) -> None:
        self.pattern, self.name, self._add = pattern, name, add
        self._rules: dict[str, str] = {}

    def _rule(self, body: str) -> str:
        """A named rule for ``body``: llama.cpp copies a repeated group once per repetition,
        and refuses a group of many symbols repeated hundreds of times; one symbol it takes."""
        if body not in self._rules:
            self._rules[body] = self._add(f"{self.name}-{len(self._rules) + 1}", body)
        return self._rules[body]

    def translate(self) -> str:
        try:
            parsed = list(sre_parse.parse(self.pattern))
        except re.error as exc:
            raise SchemaNotSupported(f"{self.name}: invalid pattern: {exc}") from None
        at = sre_parse.AT
        if (
            len(parsed) < 2
            or parsed[0] != (at, sre_parse.AT_BEGINNING)
            or parsed[-1] != (at, sre_parse.AT_END)
        ):
            raise SchemaNotSupported(
                f"{self.name}: only patterns anchored with ^ and $ are enforced exactly"
            )
        return self._sequence(parsed[1:-1])

    def _fail(self, what: object) -> SchemaNotSupported:
        return SchemaNotSupported(f"{self.name}: unsupported in pattern {self.pattern!r}: {what}")

    def _sequence(self, items: list[Any]) -> str:
        return " ".join(self._item(op, av) for op, av in items) or '""'

    def _item(self, op: Any, av: Any) -> str:
        if op is sre_parse.LITERAL:
            return self._charset([(av, av)])
        if op is sre_parse.NOT_LITERAL:
            return self._charset(_complement([(av, av)]))
        if op is sre_parse.IN:
            return self._charset(self._class(av))
        if op is sre_parse.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise self._fail("inline flags")
            return f"({self._sequence(list(sub))})"
        if op is sre_parse.BRANCH:
            return "(" + " | ".join(self._sequence(list(alt)) for alt in av[1]) + ")"
        if op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
            lo, hi, sub = av
            if hi == MAXREPEAT:
                raise self._fail("an unbounded repetition (generation could run to max_tokens)")
            return f"{self._rule(self._sequence(list(sub)))}{_bounds(lo, hi, self.name)}"
        raise self._fail(op)

    def _class(self, items: list[Any]) -> list[tuple[int, int]]:
        ranges: list[tuple[int, int]] = []
        negate = False
        for op, av in items:
            if op is sre_parse.NEGATE:
                negate = True
            elif op is sre_parse.LITERAL:
                ranges.append((av, av))
            elif op is sre_parse.RANGE:
                ranges.append(av)
            elif op is sre_parse.CATEGORY and av is sre_parse.CATEGORY_SPACE:
                ranges += _ranges(_SPACE)
            elif op is sre_parse.CATEGORY and av is sre_parse.CATEGORY_NOT_SPACE:
                ranges += _complement(_ranges(_SPACE))
            else:
                raise self._fail(f"class item {op} {av}")
        return _complement(ranges) if negate else _merge(ranges)

    def _charset(self, ranges: list[tuple[int, int]]) -> str:
        """The JSON text of one character from ``ranges``: raw where JSON allows, else escaped."""
        special = set(range(0x20)) | {0x22, 0x5C, 0x7F}
        alternatives = []
        plain = _complement(_merge([(c, c) for c in special] + _complement(ranges)))
        if plain:
            body = "".join(_cp(lo) if lo == hi else f"{_cp(lo)}-{_cp(hi)}" for lo, hi in plain)
            alternatives.append(f"[{body}]")
        for c in sorted(special):
            if any(lo <= c <= hi for lo, hi in ranges):
                alternatives.append(_JSON_ESCAPES.get(c, f'"\\\\u{c:04x}"'))
        if not alternatives:
            raise self._fail("an empty character set")
        if len(alternatives) == 1:
            return alternatives[0]
        return self._rule(" | ".join(alternatives))


def grammar_schema(schema: Any, *, words_by_decoder: bool = False) -> Any:
    """``schema`` as a grammar can enforce it: a string's length bounds give way to its pattern.

    With ``words_by_decoder``, a word pattern (a string annotated with ``MIN_WORDS_KEY``) gives
    way instead: the grammar keeps the exact character bounds and the decoder holds the string
    open until it has the words (vitrine's own decode loop, llguidance backend).  A copy; the
    published schema keeps every keyword (validation applies them all)."""
    if isinstance(schema, list):
        return [grammar_schema(item, words_by_decoder=words_by_decoder) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: grammar_schema(value, words_by_decoder=words_by_decoder)
        for key, value in schema.items()
    }
    if "pattern" in out and out.get("type") == "string":
        if words_by_decoder and MIN_WORDS_KEY in out:
            out.pop("pattern")
        else:
            if MIN_WORDS_KEY in out:  # the contract's unbounded word pattern: its bounded part
                out["pattern"] = bounded_description_pattern(int(out[MIN_WORDS_KEY]))
            out.pop("minLength", None)
            out.pop("maxLength", None)
    out.pop(MIN_WORDS_KEY, None)
    return out


def word_minimums(schema: dict[str, Any]) -> dict[str, int]:
    """Top-level string fields with a word minimum, and the minimum."""
    return {
        name: int(spec[MIN_WORDS_KEY])
        for name, spec in schema.get("properties", {}).items()
        if isinstance(spec, dict) and MIN_WORDS_KEY in spec
    }


def json_schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF text whose language is exactly the JSON documents valid under ``schema``."""
    converter = _Converter(schema)
    converter.visit(schema, "root")
    lines = [f"{name} ::= {body}" for name, body in converter.rules.items()]
    lines += [f"{p} ::= {PRIMITIVES[p]}" for p in sorted(converter.used_primitives)]
    return "\n".join(lines) + "\n"
