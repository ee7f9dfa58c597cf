"""JSON Schema → GBNF for llama.cpp's grammar sampler, written for vitrine's contracts.

Why not ``LlamaGrammar.from_json_schema``: llama-cpp-python's converter spells ``maxLength: N`` as N
nested optional groups, and llama.cpp's parser rejects that beyond about 1000 characters — the
card's 2000-character description then gets *no* grammar at all (the sampler is silently dropped).
llama.cpp's own parser accepts counted repetition ``char{m,n}`` directly, but silently turns any
bound above 2000 into "unbounded".  This converter emits ``{m,n}`` and refuses bounds above 2000
and every keyword it does not implement, so a schema is either enforced exactly or rejected at
start-up — never decoded unconstrained.

Supported: objects (all properties required, in declared order, no extra keys), strings with
min/max length, string enums and consts, arrays with ``items`` and min/max items, integers,
numbers, booleans, null, and local ``$ref`` to ``$defs``.
"""

from __future__ import annotations

import json
from typing import Any

MAX_REPETITION = 2000
"""llama.cpp treats a larger upper bound as unbounded (MAX_REPETITION_THRESHOLD)."""

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
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            self._only(keys, {"enum", "const", "type"}, name)
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


def json_schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF text whose language is exactly the JSON documents valid under ``schema``."""
    converter = _Converter(schema)
    converter.visit(schema, "root")
    lines = [f"{name} ::= {body}" for name, body in converter.rules.items()]
    lines += [f"{p} ::= {PRIMITIVES[p]}" for p in sorted(converter.used_primitives)]
    return "\n".join(lines) + "\n"
