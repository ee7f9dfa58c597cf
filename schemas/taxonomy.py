"""Category trees: where a card's category comes from, and which attributes it then carries.

A catalogue's categories are a tree (Google's Product Taxonomy has about 5,500 nodes, Akeneo
keeps several trees of any depth), and what a card should say depends on where it sits: a shoe
has a closure and an upper material, a saucepan a capacity.  So a :class:`Taxonomy` is a tree of
:class:`Category` nodes, each declaring :class:`Attribute` s that its descendants inherit, and a
card names one *leaf*: its path (``Calçados > Tênis > Tênis de Corrida``), the leaf's id, and the
attributes that leaf's schema asks for.

Three formats are read, all into the same tree (:meth:`Taxonomy.load`):

- Google's text format, one node per line: ``1604 - Apparel & Accessories > Clothing`` (ids
  given; ``# …`` lines are comments).  Lines without the ``id -`` prefix (``A > B``) and plain
  names (a flat list, one category per line) are the same format with ids derived.
- YAML or JSON: ``{"name": …, "categories": [{"name", "id"?, "attributes"?, "children"?}]}``,
  the only format that declares attributes (``schemas/taxonomies/pt-BR.yaml`` is the shipped
  example).
- A flat list of names (``VITRINE_TAXONOMY``): a tree of roots only, no attributes.

Ids, where a file gives none, are derived from the path (``calcados.tenis.tenis-de-corrida``):
stable while names are, readable in SQL, and refused at load time if two paths fold to the same id.

Each node may also say where it sits in the channels a card is sold on (:data:`CHANNELS`):
Google's product category id (``google_product_category``) and Shopify's Standard Product
Taxonomy category (``shopify_category``), inherited by its descendants like attributes are.  A
tree in Google's text format maps itself (its ids are Google's); a flat list maps nothing.  The
mapping only tells the exports (``services/export``) what to write; generation never reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

SEPARATOR = " > "
GOOGLE_ID = re.compile(r"^[0-9]{1,10}$")
SHOPIFY_MAX = 400
NAME_MAX = 80
PATH_MAX = 400
ID_MAX = 200
VALUE_MAX = 40
STRING_MAX = 200
DESCRIPTION_MAX = 300
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
GOOGLE_LINE = re.compile(r"^\s*(\d+)\s+-\s+(.+?)\s*$")
TAXONOMY_DIR = Path(__file__).resolve().parent / "taxonomies"

AttributeType = Literal["enum", "string", "number", "boolean"]
Channel = Literal["google", "shopify"]
CHANNELS: tuple[Channel, ...] = ("google", "shopify")


class TaxonomyError(ValueError):
    """A tree that cannot be used as it is; the message says where and why."""


@dataclass(frozen=True)
class Attribute:
    """One field a category's cards carry in ``attributes``.

    ``number`` values are ``{"value": 2.5, "unit": "L"}``: the unit travels with the number,
    so a consumer never has to know which unit a category was declared in."""

    name: str
    description: str
    type: AttributeType
    values: tuple[str, ...] = ()
    unit: str | None = None
    max_length: int = 40
    required: bool = False

    def value_schema(self) -> dict[str, Any]:
        """JSON Schema of this attribute's value."""
        schema: dict[str, Any]
        if self.type == "enum":
            schema = {"type": "string", "enum": list(self.values)}
        elif self.type == "string":
            schema = {"type": "string", "minLength": 1, "maxLength": self.max_length}
        elif self.type == "number":
            schema = {
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "unit": {"type": "string", "const": self.unit},
                },
                "required": ["value", "unit"],
                "additionalProperties": False,
            }
        else:
            schema = {"type": "boolean"}
        return {"description": self.description, **schema}

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not a value of this attribute, or None."""
        if self.type == "enum":
            ok = isinstance(value, str) and value in self.values
            return None if ok else f"must be one of {list(self.values)}"
        if self.type == "string":
            ok = isinstance(value, str) and 1 <= len(value) <= self.max_length
            return None if ok else f"must be text of 1 to {self.max_length} characters"
        if self.type == "number":
            ok = (
                isinstance(value, Mapping)
                and set(value) == {"value", "unit"}
                and isinstance(value["value"], int | float)
                and not isinstance(value["value"], bool)
                and not (isinstance(value["value"], float) and not math.isfinite(value["value"]))
                and value["unit"] == self.unit
            )
            return None if ok else f'must be {{"value": <finite number>, "unit": "{self.unit}"}}'
        return None if isinstance(value, bool) else "must be true or false"


@dataclass(frozen=True, eq=False)
class Category:
    """One node of a tree; ``attributes`` are those in effect (inherited first, then its own).

    ``google_category`` and ``shopify_category`` are in effect too: the node's own, else the
    nearest ancestor's, else None (what the feeds then leave out)."""

    id: str
    path: tuple[str, ...]
    attributes: tuple[Attribute, ...] = ()
    children: tuple[Category, ...] = ()
    google_category: str | None = None
    shopify_category: str | None = None

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def path_text(self) -> str:
        return SEPARATOR.join(self.path)

    @property
    def top(self) -> str:
        """The root it hangs from: ``category_standard``, what flat-list consumers read."""
        return self.path[0]

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def walk(self) -> Iterable[Category]:
        """This node and its descendants, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def channel_category(self, channel: Channel) -> str | None:
        """This node's category in ``channel`` (``google``: the id; ``shopify``: the path)."""
        if channel == "google":
            return self.google_category
        if channel == "shopify":
            return self.shopify_category
        raise ValueError(f"unknown channel {channel!r} (one of {', '.join(CHANNELS)})")

    def attributes_schema(self) -> dict[str, Any]:
        """The JSON Schema of ``attributes`` on a card of this category: what is exported per
        category (``schemas/json/categories``) and what a consumer validates against."""
        return {
            "title": f"Atributos: {self.path_text}",
            "type": "object",
            "properties": {a.name: a.value_schema() for a in self.attributes},
            "required": [a.name for a in self.attributes if a.required],
            "additionalProperties": False,
            "x-vitrine-category": {"id": self.id, "path": self.path_text},
        }

    def attribute_problems(self, values: Mapping[str, Any]) -> list[str]:
        """Everything wrong with ``values`` as this category's attributes."""
        declared = {a.name: a for a in self.attributes}
        problems = [
            f"{name}: not an attribute of {self.path_text}"
            for name in values
            if name not in declared
        ]
        for attribute in self.attributes:
            if attribute.name not in values:
                if attribute.required:
                    problems.append(f"{attribute.name}: required for {self.path_text}")
                continue
            problem = attribute.problem(values[attribute.name])
            if problem:
                problems.append(f"{attribute.name}: {problem}")
        return problems


def slug(text: str) -> str:
    """``Cama, Mesa e Banho`` → ``cama-mesa-e-banho``: ASCII, lowercase, hyphens."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-") or "x"


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TaxonomyError(f"{where}: a category needs a non-empty name")
    name = " ".join(name.split())
    if len(name) > NAME_MAX:
        raise TaxonomyError(f"{where}: name {name!r} is longer than {NAME_MAX} characters")
    if ">" in name:
        raise TaxonomyError(f"{where}: name {name!r} contains '>', the path separator")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise TaxonomyError(f"{where}: name {name!r} contains a control character")
    return name


def _google_category(value: object, where: str) -> str:
    """Google's product category id: the number on each line of Google's
    ``taxonomy-with-ids`` file (``1604`` is Apparel & Accessories > Clothing).  A YAML int or a
    string of digits; feeds send it as the id, which Google accepts in every language."""
    text = (
        str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    )
    if not GOOGLE_ID.match(text):
        raise TaxonomyError(
            f"{where}: google_product_category {value!r} is not a Google product category id "
            "(1 to 10 digits, e.g. 1604)"
        )
    return text


def _shopify_category(value: object, where: str) -> str:
    """A category of Shopify's Standard Product Taxonomy, as its full path in English
    (``Apparel & Accessories > Clothing > Clothing Tops``).

    That is the form Shopify's help shows for a product category and the breadcrumb text the
    product CSV's ``Product category`` column takes (in the store admin's language; the column
    also takes the category's id, e.g. ``aa-1-13``); a value Shopify does not know is imported
    with the category left empty.  The names change between taxonomy releases, so the path is
    checked here for shape only (text, no control characters, no empty level), not against a
    release."""
    if not isinstance(value, str) or not value.strip():
        raise TaxonomyError(f"{where}: shopify_category must be a non-empty category path")
    text = value.strip()
    if len(text) > SHOPIFY_MAX:
        raise TaxonomyError(f"{where}: shopify_category is longer than {SHOPIFY_MAX} characters")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise TaxonomyError(f"{where}: shopify_category {text!r} contains a control character")
    if any(not part.strip() for part in text.split(">")):
        raise TaxonomyError(
            f"{where}: shopify_category {text!r} has an empty level (levels are joined by ' > ')"
        )
    return text


def _attribute(data: object, where: str) -> Attribute:
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"{where}: an attribute is a mapping with name, description, type")
    unknown = set(data) - {
        "name",
        "description",
        "type",
        "values",
        "unit",
        "max_length",
        "required",
    }
    if unknown:
        raise TaxonomyError(f"{where}: unknown attribute keys {sorted(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not ATTRIBUTE_NAME.match(name):
        raise TaxonomyError(
            f"{where}: attribute name {name!r} must be lowercase ASCII snake_case "
            "(a letter, then letters, digits or _; at most 40)"
        )
    where = f"{where}: attribute {name}"
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        raise TaxonomyError(f"{where}: needs a description (the model reads it)")
    if len(description) > DESCRIPTION_MAX:
        raise TaxonomyError(f"{where}: description longer than {DESCRIPTION_MAX} characters")
    kind = data.get("type")
    required = data.get("required", False)
    if not isinstance(required, bool):
        raise TaxonomyError(f"{where}: required is true or false")
    if kind == "enum":
        values = data.get("values")
        if not isinstance(values, list) or len(values) < 2:
            raise TaxonomyError(f"{where}: an enum needs a list of at least two values")
        cleaned = tuple(str(v).strip() for v in values)
        if any(not v or len(v) > VALUE_MAX for v in cleaned):
            raise TaxonomyError(f"{where}: enum values are 1 to {VALUE_MAX} characters")
        if len(set(cleaned)) != len(cleaned):
            raise TaxonomyError(f"{where}: enum values repeat")
        return Attribute(name, description.strip(), "enum", values=cleaned, required=required)
    if kind == "string":
        limit = data.get("max_length", 40)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= STRING_MAX:
            raise TaxonomyError(f"{where}: max_length is 1 to {STRING_MAX}")
        return Attribute(name, description.strip(), "string", max_length=limit, required=required)
    if kind == "number":
        unit = data.get("unit")
        if not isinstance(unit, str) or not unit.strip() or len(unit) > 20:
            raise TaxonomyError(f"{where}: a number needs its unit (e.g. cm, L, W)")
        return Attribute(name, description.strip(), "number", unit=unit.strip(), required=required)
    if kind == "boolean":
        return Attribute(name, description.strip(), "boolean", required=required)
    raise TaxonomyError(f"{where}: type must be enum, string, number or boolean, not {kind!r}")


class Taxonomy:
    """A category tree, indexed for what generation and validation ask of it.

    Equal (and hashed) by content digest, so models built from it can be cached."""

    def __init__(self, name: str, roots: Sequence[Category]) -> None:
        if not roots:
            raise TaxonomyError(f"{name}: the tree has no categories")
        self.name = name
        self.roots = tuple(roots)
        self.nodes: tuple[Category, ...] = tuple(n for r in self.roots for n in r.walk())
        self.leaves: tuple[Category, ...] = tuple(n for n in self.nodes if n.is_leaf)
        self.by_path: dict[str, Category] = {}
        self.by_id: dict[str, Category] = {}
        for node in self.nodes:
            if len(node.path_text) > PATH_MAX:
                raise TaxonomyError(f"{name}: path longer than {PATH_MAX}: {node.path_text!r}")
            if node.path_text in self.by_path:
                raise TaxonomyError(f"{name}: {node.path_text!r} appears twice")
            other = self.by_id.get(node.id)
            if other is not None:
                raise TaxonomyError(
                    f"{name}: {node.path_text!r} and {other.path_text!r} have the same id "
                    f"{node.id!r}; give one of them an explicit id"
                )
            self.by_path[node.path_text] = node
            self.by_id[node.id] = node

    # -- identity -------------------------------------------------------------------------------

    @cached_property
    def digest(self) -> str:
        """Content hash: ids, paths and attribute declarations.

        The channel categories are left out on purpose: the digest names the prompt and the
        grammar (prompt versions, cached card models), and mapping a node to Google or Shopify
        changes neither, so mapping a tree must not make its cards look generated under
        another prompt."""
        h = hashlib.sha256(self.name.encode())
        for node in self.nodes:
            h.update(f"\x00{node.id}\x01{node.path_text}".encode())
            for a in node.attributes:
                h.update(repr(a).encode())
        return h.hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Taxonomy) and other.digest == self.digest

    def __repr__(self) -> str:
        return f"Taxonomy({self.name!r}, {len(self.nodes)} nodes, {len(self.leaves)} leaves)"

    # -- lookups --------------------------------------------------------------------------------

    def leaf(self, path: str) -> Category | None:
        node = self.by_path.get(path)
        return node if node is not None and node.is_leaf else None

    def unmapped_leaves(self, channel: Channel) -> list[Category]:
        """Leaves with no category in ``channel``, in tree order: cards there leave the
        channel's category field empty (Google then guesses one; Shopify leaves it unset)."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r} (one of {', '.join(CHANNELS)})")
        return [leaf for leaf in self.leaves if leaf.channel_category(channel) is None]

    @property
    def flat(self) -> bool:
        """Roots only and no attributes: today's flat category list."""
        return all(r.is_leaf and not r.attributes for r in self.roots)

    def attribute_groups(self) -> list[tuple[tuple[Attribute, ...], list[Category]]]:
        """Leaves grouped by the attributes in effect on them, in tree order: one grammar
        alternative per group instead of one per leaf."""
        groups: dict[tuple[Attribute, ...], list[Category]] = {}
        for leaf in self.leaves:
            groups.setdefault(leaf.attributes, []).append(leaf)
        return list(groups.items())

    def outline(self, budget: int) -> str:
        """The tree as the prompt shows it, in at most ``budget`` characters.

        Breadth first: every root, then each next level while it fits, so a tree of thousands
        of leaves costs the prompt its upper levels only.  A level that does not fit whole is
        shown as the first few children of every node (as many as fit, the same for all), so
        each branch keeps some of its words.  ``…`` marks children not shown (the grammar still
        knows them all)."""
        shown = {r.id for r in self.roots}
        frontier: list[Category] = list(self.roots)
        text = self._render(shown)
        while frontier:
            widest = max(len(n.children) for n in frontier)
            if widest == 0:
                break
            best: set[str] | None = None
            lo, hi = 1, widest
            while lo <= hi:  # the most children per node that still fits
                k = (lo + hi) // 2
                wider = shown | {c.id for n in frontier for c in n.children[:k]}
                candidate = self._render(wider)
                if len(candidate) <= budget:
                    best, text, lo = wider, candidate, k + 1
                else:
                    hi = k - 1
            if best is None:
                break
            shown = best
            if hi < widest:  # this level is shown in part: no deeper one
                break
            frontier = [c for n in frontier for c in n.children]
        return text

    def _render(self, shown: set[str]) -> str:
        def part(node: Category) -> str:
            visible = [c for c in node.children if c.id in shown]
            if not node.children:
                return node.name
            if not visible:
                return f"{node.name} (…)"
            more = "; …" if len(visible) < len(node.children) else ""
            return f"{node.name} ({'; '.join(part(c) for c in visible)}{more})"

        return "\n".join(f"- {part(r)}" for r in self.roots)

    def attribute_guide(self, budget: int) -> str:
        """Each declared attribute once, with where it applies, while ``budget`` lasts:
        shallowest first (those apply to the most leaves)."""
        declared: dict[str, tuple[int, str, Attribute]] = {}
        for node in self.nodes:
            for a in self.own_attributes(node):
                declared.setdefault(
                    f"{node.path_text}/{a.name}", (len(node.path), node.path_text, a)
                )
        lines: list[str] = []
        used = 0
        for _depth, where, a in sorted(declared.values(), key=lambda item: item[0]):
            values = f" [{', '.join(a.values)}]" if a.type == "enum" else ""
            unit = f" ({a.unit})" if a.unit else ""
            line = f"- {a.name}{unit} em {where}: {a.description}{values}"
            if used + len(line) + 1 > budget:
                break
            lines.append(line)
            used += len(line) + 1
        return "\n".join(lines)

    @cached_property
    def _parents(self) -> dict[str, Category]:
        return {c.id: n for n in self.nodes for c in n.children}

    def own_attributes(self, node: Category) -> tuple[Attribute, ...]:
        """The attributes ``node`` declares itself (after the inherited ones)."""
        parent = self._parents.get(node.id)
        return node.attributes[len(parent.attributes) if parent is not None else 0 :]

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def flat_list(cls, names: Iterable[str], name: str = "flat") -> Taxonomy:
        roots = []
        for i, raw in enumerate(names):
            clean = _check_name(raw, f"{name}: category {i + 1}")
            roots.append(Category(slug(clean), (clean,)))
        return cls(name, _dedupe(roots, name))

    @classmethod
    def from_lines(cls, text: str, name: str) -> Taxonomy:
        """Google's ``id - A > B > C`` lines; ``A > B`` lines and plain names derive their ids.
        A parent missing from the file is created (derived id) the first time a child names it."""
        builder = _Builder(name)
        for number, line in enumerate(text.splitlines(), 1):
            stripped = re.sub(r"(^|\s)#.*$", "", line).strip()  # '# …' comments, whole or trailing
            if not stripped:
                continue
            match = GOOGLE_LINE.match(stripped)
            given, path_text = (match.group(1), match.group(2)) if match else (None, stripped)
            where = f"{name}:{number}"
            path = tuple(_check_name(p, where) for p in path_text.split(">"))
            builder.add(path, given, where)
        return cls(name, builder.roots())

    @classmethod
    def from_data(cls, data: object, name: str) -> Taxonomy:
        """The YAML/JSON form: a mapping with ``categories`` (and optional ``name``,
        ``version``), or just the list of root categories."""
        if isinstance(data, Mapping):
            unknown = set(data) - {"name", "version", "categories"}
            if unknown:
                raise TaxonomyError(f"{name}: unknown top-level keys {sorted(unknown)}")
            if data.get("version", 1) != 1:
                raise TaxonomyError(f"{name}: version {data.get('version')!r} (this reads 1)")
            name = str(data.get("name") or name)
            data = data.get("categories")
        if not isinstance(data, list):
            raise TaxonomyError(f"{name}: expected a list of categories")
        roots = [
            _node(item, (), (), f"{name}: categories[{i}]", (None, None))
            for i, item in enumerate(data)
        ]
        return cls(name, _dedupe(roots, name))

    @classmethod
    def load(cls, path: Path) -> Taxonomy:
        """A tree file, by its suffix: ``.yaml``/``.yml``, ``.json``, else Google's lines."""
        try:
            text = path.read_text(
                encoding="utf-8-sig"
            )  # a BOM (Windows, spreadsheets) is not a name
        except (OSError, UnicodeDecodeError) as exc:
            raise TaxonomyError(f"cannot read the category tree {path}: {exc}") from None
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise TaxonomyError(f"{path}: not valid YAML: {exc}") from None
            return cls.from_data(data, path.name)
        if suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TaxonomyError(f"{path}: not valid JSON: {exc}") from None
            return cls.from_data(data, path.name)
        return cls.from_lines(text, path.name)


def _dedupe(roots: list[Category], name: str) -> list[Category]:
    seen: set[str] = set()
    for root in roots:
        if root.name in seen:
            raise TaxonomyError(f"{name}: root category {root.name!r} appears twice")
        seen.add(root.name)
    return roots


def _node(
    data: object,
    parent: tuple[str, ...],
    inherited: tuple[Attribute, ...],
    where: str,
    channels: tuple[str | None, str | None],
) -> Category:
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"{where}: a category is a name or a mapping with a name")
    unknown = set(data) - {
        "name",
        "id",
        "attributes",
        "children",
        "google_product_category",
        "shopify_category",
    }
    if unknown:
        raise TaxonomyError(f"{where}: unknown keys {sorted(unknown)}")
    name = _check_name(data.get("name"), where)
    path = (*parent, name)
    where = f"{where} ({SEPARATOR.join(path)})"
    own = [_attribute(a, where) for a in data.get("attributes") or []]
    names = [a.name for a in inherited]
    for a in own:
        if a.name in names:
            above = "above" if a.name in {i.name for i in inherited} else "twice here"
            raise TaxonomyError(f"{where}: attribute {a.name} is already declared {above}")
        names.append(a.name)
    attributes = (*inherited, *own)
    given = data.get("id")
    if given is not None and (not str(given).strip() or len(str(given)) > ID_MAX):
        raise TaxonomyError(f"{where}: id must be 1 to {ID_MAX} characters")
    node_id = str(given).strip() if given is not None else ".".join(slug(p) for p in path)
    google, shopify = channels
    if data.get("google_product_category") is not None:
        google = _google_category(data["google_product_category"], where)
    if data.get("shopify_category") is not None:
        shopify = _shopify_category(data["shopify_category"], where)
    raw_children = data.get("children") or []
    if not isinstance(raw_children, list):
        raise TaxonomyError(f"{where}: children is a list")
    children = [
        _node(c, path, attributes, f"{where} children[{i}]", (google, shopify))
        for i, c in enumerate(raw_children)
    ]
    seen: set[str] = set()
    for child in children:
        if child.name in seen:
            raise TaxonomyError(f"{where}: child {child.name!r} appears twice")
        seen.add(child.name)
    return Category(node_id, path, attributes, tuple(children), google, shopify)


@dataclass
class _Draft:
    id: str
    children: dict[str, _Draft] = field(default_factory=dict)
    google: str | None = None  # the line's own id when it is Google's


class _Builder:
    """Nodes from path lines, in file order, into immutable categories."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.top: dict[str, _Draft] = {}
        self.given: dict[tuple[str, ...], str] = {}

    def add(self, path: tuple[str, ...], given: str | None, where: str) -> None:
        level = self.top
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            draft = level.get(prefix[-1])
            if draft is None:
                draft = level[prefix[-1]] = _Draft(".".join(slug(p) for p in prefix))
            level = draft.children
        if given is not None:
            if path in self.given:
                raise TaxonomyError(f"{where}: {SEPARATOR.join(path)!r} appears twice")
            self.given[path] = given
            draft = self._find(path)
            draft.id = given
            # An ``id - path`` line is Google's own format, so the id is Google's category id
            # (GOOGLE_LINE only matches digits); one longer than an id can be maps nothing.
            draft.google = given if GOOGLE_ID.match(given) else None

    def _find(self, path: tuple[str, ...]) -> _Draft:
        level, draft = self.top, None
        for part in path:
            draft = level[part]
            level = draft.children
        assert draft is not None
        return draft

    def roots(self) -> list[Category]:
        def build(draft: _Draft, path: tuple[str, ...], above: str | None) -> Category:
            google = draft.google or above
            children = tuple(build(d, (*path, n), google) for n, d in draft.children.items())
            return Category(draft.id, path, (), children, google_category=google)

        return [build(d, (n,), None) for n, d in self.top.items()]


def shipped(code: str) -> Path | None:
    """The tree vitrine ships for a language code, if any (``schemas/taxonomies/<code>.yaml``)."""
    for candidate in TAXONOMY_DIR.glob("*.yaml"):
        if candidate.stem.lower() == code.lower():
            return candidate
    return None
