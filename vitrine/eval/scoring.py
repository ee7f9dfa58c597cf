"""Scores: what each candidate's cards get right, per item, so intervals can resample items.

Every accuracy is first a value per (item, seed) generation, then averaged over an item's
seeds: the item is the unit a bootstrap resamples (``intervals.py``), because seeds of one
photo are not independent evidence.  A generation that delivered no card counts as wrong on
every label it had (the pipeline would have shown the person nothing), and as "not predicted"
for attributes.

Attributes follow WDC PAVE's recipe: per attribute, each (item, attribute) pair is one of
no-gold/no-prediction (NN), no-gold/predicted (NV), gold/not-predicted (VN), correct (VC) or
wrong (VW); precision = VC / (NV + VC + VW), recall = VC / (VN + VC + VW); micro over all pairs,
macro as the mean of the attributes' F1.
"""

from __future__ import annotations

import json
import statistics
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz.distance import Levenshtein

from schemas.card import default_taxonomy
from schemas.language import PT_BR, LanguageProfile
from services.language.colour_science import neighbours
from vitrine.eval.labels import LabelledItem

BASE_RULES = (
    "parses",
    "product_name_blank",
    "description_min_words",
    "description_repetitive",
    "description_echoes_prompt",
    "color_vocabulary",
    "features_blank",
    "features_distinct",
    "language",
)
"""The rules every first attempt is held to; others (a colour or facts policy) join when seen."""

EDIT_FIELDS = (
    "product_name",
    "category_path",
    "color_primary",
    "description_long",
    "features_list",
    "attributes",
)
"""The fields a reviewer edits, compared with the reviewed card."""


def norm(text: str) -> str:
    """Case, accents and spacing do not make a label wrong."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.replace("-", " ").split())


def same_value(gold: Any, predicted: Any) -> bool:
    """An attribute's value: numbers with units by value and unit, text normalised, lists as
    sets."""
    if isinstance(gold, Mapping) and isinstance(predicted, Mapping):
        try:
            return float(gold.get("value")) == float(predicted.get("value")) and norm(  # type: ignore[arg-type]
                str(gold.get("unit", ""))
            ) == norm(str(predicted.get("unit", "")))
        except (TypeError, ValueError):
            return gold == predicted
    if isinstance(gold, list) and isinstance(predicted, list):
        return {norm(str(v)) for v in gold} == {norm(str(v)) for v in predicted}
    if isinstance(gold, bool) or isinstance(predicted, bool):
        return gold is predicted or norm(str(gold)) == norm(str(predicted))
    if isinstance(gold, int | float) and isinstance(predicted, int | float):
        return float(gold) == float(predicted)
    return norm(str(gold)) == norm(str(predicted))


def field_text(card: Mapping[str, Any], name: str) -> str:
    value = card.get(name)
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def edit_distance(a: str, b: str) -> float:
    """Normalised Levenshtein: 0 the same, 1 nothing in common (the share a person retyped)."""
    return float(Levenshtein.normalized_distance(a, b))


class PathIndex:
    """Leaf paths by id, so a label may give either: the shipped tree and every predicted
    card's (path, id) pair."""

    def __init__(self, profile: LanguageProfile = PT_BR) -> None:
        tree = default_taxonomy(profile)
        self.paths = {leaf.id: leaf.path_text for leaf in tree.leaves}
        self.known = set(self.paths.values())

    def learn(self, card: Mapping[str, Any]) -> None:
        path, ident = card.get("category_path"), card.get("category_id")
        if isinstance(path, str) and isinstance(ident, str):
            self.paths.setdefault(ident, path)
            self.known.add(path)

    def path(self, label: str) -> list[str]:
        text = label if label in self.known or " > " in label else self.paths.get(label, label)
        return [part.strip() for part in text.split(">")]


@dataclass
class Pave:
    nn: int = 0
    nv: int = 0
    vn: int = 0
    vc: int = 0
    vw: int = 0

    def add(self, gold: Any, predicted: Any) -> None:
        if gold is None:
            if predicted is None:
                self.nn += 1
            else:
                self.nv += 1
        elif predicted is None:
            self.vn += 1
        elif same_value(gold, predicted):
            self.vc += 1
        else:
            self.vw += 1

    def plus(self, other: Pave) -> Pave:
        return Pave(*(getattr(self, k) + getattr(other, k) for k in ("nn", "nv", "vn", "vc", "vw")))

    def scores(self) -> dict[str, float | None]:
        predicted = self.nv + self.vc + self.vw
        golden = self.vn + self.vc + self.vw
        p = self.vc / predicted if predicted else None
        r = self.vc / golden if golden else None
        f1 = (
            2 * p * r / (p + r)
            if p is not None and r is not None and p + r > 0
            else (0.0 if p is not None and r is not None else None)
        )
        return {"precision": p, "recall": r, "f1": f1}

    def as_json(self) -> dict[str, Any]:
        return {
            "NN": self.nn,
            "NV": self.nv,
            "VN": self.vn,
            "VC": self.vc,
            "VW": self.vw,
            **self.scores(),
        }


@dataclass
class CandidateScores:
    """One candidate's scores: per-item vectors (for intervals) and the tallies."""

    name: str
    per_item: dict[str, dict[str, float]] = field(default_factory=dict)
    """metric → item id → the item's value (averaged over seeds)."""
    summary: dict[str, Any] = field(default_factory=dict)


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def score_candidate(
    name: str,
    items: Sequence[LabelledItem],
    records: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    index: PathIndex,
    profile: LanguageProfile = PT_BR,
) -> CandidateScores:
    """Score one candidate's records against the set's labels."""
    by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_item[str(record["id"])].append(record)
        if record.get("card"):
            index.learn(record["card"])
    scores = CandidateScores(name)
    vec: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    pave: dict[str, Pave] = defaultdict(Pave)
    roots: Counter[tuple[str, str]] = Counter()
    rule_broken: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    seen_rules = set(BASE_RULES)
    edit_sums: dict[str, list[float]] = defaultdict(list)
    generations = 0
    for item in items:
        item_id = item.id
        for record in by_item.get(item_id, []):
            generations += 1
            card = record.get("card") if record.get("ok") else None
            vec["delivered"][item_id].append(1.0 if card else 0.0)
            broken = set(record.get("first_broken") or [])
            seen_rules |= broken
            if "parses" in broken:
                broken |= set(BASE_RULES)
            rule_broken.update(broken)
            vec["first_attempt_pass"][item_id].append(0.0 if broken else 1.0)
            if not record.get("ok"):
                reasons[str(record.get("reason"))] += 1
            _category(item, card, index, vec, roots, item_id)
            _colour(item, card, record, profile, vec, item_id)
            written = card or record.get("refused_card")
            if written is not None:
                index.learn(written)
            _as_written(item, written, index, vec, item_id)
            _attributes(item, card, pave)
            _reviewed(item, card, vec, edit_sums, item_id)
    per_item = {
        metric: {i: statistics.fmean(v) for i, v in values.items()}
        for metric, values in vec.items()
    }
    scores.per_item = per_item
    total = Pave()
    for one in pave.values():
        total = total.plus(one)
    f1s = [p.scores()["f1"] for p in pave.values() if p.scores()["f1"] is not None]
    seconds = [float(r["seconds"]) for r in records if "seconds" in r]
    timings = [r["timings"] for r in records if r.get("timings")]  # refused cards cost too
    wall = sum(float(r.get("wall_s", 0.0)) for r in runs)
    cards_run = sum(int(r.get("cards", 0)) for r in runs)
    rules = [r for r in BASE_RULES] + sorted(seen_rules - set(BASE_RULES) - {"unknown"})
    last = runs[-1] if runs else {}
    scores.summary = {
        "generations": generations,
        "items": len(by_item),
        "delivered": _mean(r.get("ok") is True for r in records),
        "first_attempt_pass": _mean(per_item.get("first_attempt_pass", {}).values()),
        "rule_first_attempt_pass": {
            rule: 1 - rule_broken[rule] / generations if generations else None for rule in rules
        },
        "mean_attempts": _mean(float(r.get("attempts", 1)) for r in records),
        "failure_reasons": dict(reasons.most_common()),
        "attributes": {
            "micro": total.as_json(),
            "macro_f1": _mean(f for f in f1s if f is not None),
            "per_attribute": {k: p.as_json() for k, p in sorted(pave.items())},
        },
        "root_confusion": [[g, p, n] for (g, p), n in sorted(roots.items())],
        "edit_distance": {k: _mean(v) for k, v in edit_sums.items()},
        "cost": {
            "seconds_per_card": _mean(seconds),
            "machine_seconds_per_card": wall / cards_run if cards_run else None,
            "completion_tokens": _mean(float(t.get("completion_tokens", 0)) for t in timings),
            "prompt_tokens": _mean(float(t.get("prompt_tokens", 0)) for t in timings),
            "cards_per_min": 60.0 * cards_run / wall if wall > 0 else None,
            "parallel": last.get("parallel"),
            "load_s": last.get("load_s"),
            "peak_rss_bytes": max((int(r.get("peak_rss_bytes", 0)) for r in runs), default=None),
            "files": last.get("files", {}),
            "model_id": last.get("model_id"),
            "prompt_version": last.get("prompt_version"),
            "cpu": last.get("cpu"),
        },
    }
    return scores


def _category(
    item: LabelledItem,
    card: Mapping[str, Any] | None,
    index: PathIndex,
    vec: dict[str, dict[str, list[float]]],
    roots: Counter[tuple[str, str]],
    item_id: str,
) -> None:
    label = item.expected_category
    if not label:
        return
    gold = index.path(label)
    got = index.path(str(card["category_path"])) if card else []
    vec["category_leaf"][item_id].append(1.0 if got == gold else 0.0)
    vec["category_parent"][item_id].append(1.0 if got[:-1] == gold[:-1] and got else 0.0)
    vec["category_root"][item_id].append(1.0 if got[:1] == gold[:1] else 0.0)
    roots[(gold[0], got[0] if got else "(no card)")] += 1


def _as_written(
    item: LabelledItem,
    written: Mapping[str, Any] | None,
    index: PathIndex,
    vec: dict[str, dict[str, list[float]]],
    item_id: str,
) -> None:
    """Category and colour of what the model wrote, a card the checks refused included: a
    model that reads the photo but fails the word count is told apart from a blind one."""
    label = item.expected_category
    if label:
        got = index.path(str(written["category_path"])) if written else []
        vec["category_leaf_written"][item_id].append(1.0 if got == index.path(label) else 0.0)
    colour = item.expected_color
    if colour:
        said = written.get("color_primary") if written else None
        right = said is not None and norm(str(said)) == norm(colour)
        vec["colour_label_written"][item_id].append(1.0 if right else 0.0)


def _colour(
    item: LabelledItem,
    card: Mapping[str, Any] | None,
    record: Mapping[str, Any],
    profile: LanguageProfile,
    vec: dict[str, dict[str, list[float]]],
    item_id: str,
) -> None:
    label = item.expected_color
    predicted = card.get("color_primary") if card else None
    if label:
        exact = predicted is not None and norm(str(predicted)) == norm(label)
        vec["colour_label"][item_id].append(1.0 if exact else 0.0)
        close = exact or (predicted is not None and neighbours(str(predicted), label, profile))
        vec["colour_label_or_neighbour"][item_id].append(1.0 if close else 0.0)
    pixels = record.get("pixels")
    if card is None:
        vec["colour_pixels"][item_id].append(0.0)
    elif pixels and pixels.get("checkable", True):
        vec["colour_pixels"][item_id].append(1.0 if pixels.get("agrees") else 0.0)


def _attributes(item: LabelledItem, card: Mapping[str, Any] | None, pave: dict[str, Pave]) -> None:
    gold = item.expected_attributes
    if gold is None:
        return  # not labelled: no attribute is scored on this item
    predicted = (card or {}).get("attributes") or {}
    for name in sorted(set(gold) | set(predicted)):
        pave[name].add(gold.get(name), predicted.get(name))


def _reviewed(
    item: LabelledItem,
    card: Mapping[str, Any] | None,
    vec: dict[str, dict[str, list[float]]],
    edit_sums: dict[str, list[float]],
    item_id: str,
) -> None:
    truth = item.card
    if truth:
        unchanged = card is not None
        for name in EDIT_FIELDS:
            distance = edit_distance(field_text(card or {}, name), field_text(truth, name))
            edit_sums[name].append(distance)
            unchanged = unchanged and distance == 0.0
        vec["approved_unchanged"][item_id].append(1.0 if unchanged else 0.0)
    rejected = item.rejected_card
    if rejected and item.verdict == "rejected":
        repeats = card is not None and all(
            field_text(card, f) == field_text(rejected, f)
            for f in ("category_path", "color_primary")
        )
        vec["repeats_rejected"][item_id].append(1.0 if repeats else 0.0)


def reviewed_set_stats(items: Sequence[LabelledItem]) -> dict[str, Any] | None:
    """What reviewers changed of the cards they saw (the set's own model cards): per field the
    mean edit distance and the share approved unchanged; None for a set with no reviews."""
    reviewed = [(i.model_card, i.card) for i in items if i.card and i.model_card]
    decided = [i for i in items if i.verdict]
    if not decided:
        return None
    per_field = {
        name: _mean(
            edit_distance(field_text(model, name), field_text(truth, name))
            for model, truth in reviewed
        )
        for name in EDIT_FIELDS
    }
    verdicts = Counter(str(i.verdict) for i in decided)
    return {
        "decided": len(decided),
        "verdicts": dict(verdicts),
        "approved_unchanged_share": verdicts["approved"] / len(decided),
        "edit_distance": per_field,
    }
