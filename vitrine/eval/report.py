"""The report: every candidate side by side, with intervals, in JSON, Markdown and HTML.

Built from the output directory alone (``runner.py`` documents it), so ``vitrine eval report
OUT`` redraws it at any time, mid-run included.  The first candidate is the baseline: every
other one's accuracies are given as a difference from it with a paired interval, and called
better or worse only when that interval excludes zero.  Accuracies are also held against what a
guess gets (always the set's most common label): a model that does not see the photos — a
random projector, a text-only model — lands there, and the report says so in words.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from vitrine.eval.intervals import Interval, difference, interval
from vitrine.eval.labels import LabelledItem
from vitrine.eval.runner import read_records
from vitrine.eval.scoring import PathIndex, norm, reviewed_set_stats, score_candidate

ACCURACIES = {
    "delivered": "card delivered",
    "first_attempt_pass": "first attempt passes every check",
    "category_leaf": "category: exact leaf",
    "category_parent": "category: same parent",
    "category_root": "category: same root",
    "colour_label": "colour = label",
    "colour_label_or_neighbour": "colour = label or a neighbour",
    "colour_pixels": "colour agrees with the pixels",
    "category_leaf_written": "category: exact leaf, refused cards included",
    "colour_label_written": "colour = label, refused cards included",
    "approved_unchanged": "reviewed card reproduced exactly",
    "repeats_rejected": "repeats a rejected card (lower is better)",
}


def build(out: Path) -> dict[str, Any]:
    """The report's data from an output directory."""
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    items = [LabelledItem.model_validate(item) for item in manifest["items"]]
    index = PathIndex()
    names = [n for n in manifest["order"]] + sorted(
        set(manifest["candidates"]) - set(manifest["order"])
    )
    scored = []
    for name in names:
        records = read_records(out / "results" / f"{name}.jsonl")
        if not records:
            continue
        runs = read_records(out / "runs" / f"{name}.jsonl")
        scored.append(score_candidate(name, items, records, runs, index))
    chance = _chance(items, index)
    candidates = []
    for s in scored:
        accuracy = {}
        for metric in ACCURACIES:
            found = interval(s.per_item.get(metric, {}))
            if found is not None:
                accuracy[metric] = found.as_json()
        candidates.append(
            {
                "name": s.name,
                "settings": manifest["candidates"].get(s.name, {}),
                "accuracy": accuracy,
                **s.summary,
                "complete": s.summary["generations"] == len(items) * len(manifest["seeds"]),
            }
        )
    differences: dict[str, dict[str, Any]] = {}
    if scored:
        base = scored[0]
        for other in scored[1:]:
            differences[other.name] = {}
            for metric in ACCURACIES:
                delta = difference(base.per_item.get(metric, {}), other.per_item.get(metric, {}))
                if delta is not None:
                    differences[other.name][metric] = {
                        **delta.as_json(),
                        "verdict": _verdict(delta),
                    }
    report = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "set": manifest["set"],
        "items": len(items),
        "seeds": manifest["seeds"],
        "cpu": manifest.get("cpu"),
        "baseline": scored[0].name if scored else None,
        "chance": chance,
        "reviewed_set": reviewed_set_stats(items),
        "candidates": candidates,
        "differences": differences,
    }
    report["findings"] = findings(report)
    return report


def _verdict(delta: Interval) -> str:
    if delta.low > 0:
        return "higher"
    if delta.high < 0:
        return "lower"
    return "not different"


def _chance(items: list[LabelledItem], index: PathIndex) -> dict[str, Any]:
    """What always answering the set's most common label scores."""
    result: dict[str, Any] = {}
    leaves = Counter(" > ".join(index.path(label)) for i in items if (label := i.expected_category))
    if leaves:
        label, count = leaves.most_common(1)[0]
        result["category_leaf"] = {"label": label, "share": count / sum(leaves.values())}
    colours = Counter(norm(c) for i in items if (c := i.expected_color))
    if colours:
        label, count = colours.most_common(1)[0]
        result["colour_label"] = {"label": label, "share": count / sum(colours.values())}
    return result


def findings(report: dict[str, Any]) -> list[str]:
    """Plain sentences: what a person should take from the numbers."""
    said = []
    for c in report["candidates"]:
        name, acc = c["name"], c["accuracy"]
        if not c["complete"]:
            said.append(
                f"{name}: the run is not complete ({c['generations']} generations); "
                "rerun to resume."
            )
        delivered = acc.get("delivered")
        if delivered is not None and delivered["value"] < 0.5:
            top = ", ".join(f"{k} ×{v}" for k, v in list(c["failure_reasons"].items())[:3])
            said.append(
                f"{name}: only {delivered['value']:.0%} of generations delivered a card "
                f"(failures: {top}); every label counts those as wrong."
            )
        blind, unsure = [], []
        for metric in ("category_leaf", "colour_label"):
            guess = report["chance"].get(metric)
            # what the model wrote, refused cards included: failing a word count is not
            # failing to see
            metric = f"{metric}_written" if f"{metric}_written" in acc else metric
            got = acc.get(metric)
            if guess is None or got is None or guess["share"] >= 1.0:
                continue  # a set with one label cannot tell sight from a guess
            text = (
                f"{ACCURACIES[metric]} {got['value']:.0%} (interval {got['low']:.0%}–"
                f"{got['high']:.0%}) against {guess['share']:.0%} for always answering "
                f"“{guess['label']}”"
            )
            if got["value"] <= guess["share"]:
                blind.append(text)
            elif got["low"] <= guess["share"]:
                unsure.append(text)
        if blind:
            said.append(
                f"{name}: " + "; ".join(blind) + ": no better than a guess. At this level the "
                "model is not reading the photos (a blind model — a random or mismatched "
                "projector, a text-only model — scores here): do not use its cards."
            )
        if unsure:
            said.append(
                f"{name}: " + "; ".join(unsure) + ": not yet told apart from a guess; more "
                "items would narrow the interval."
            )
    for other, metrics in report["differences"].items():
        real = [m for m, d in metrics.items() if d["verdict"] != "not different"]
        if real:
            parts = [
                f"{ACCURACIES[m]} {metrics[m]['value']:+.0%} ({metrics[m]['low']:+.0%}…"
                f"{metrics[m]['high']:+.0%})"
                for m in real
            ]
            said.append(f"{other} vs {report['baseline']}: " + "; ".join(parts) + ".")
        else:
            said.append(
                f"{other} vs {report['baseline']}: no accuracy differs beyond the noise of "
                f"{report['items']} items (every difference's 95 % interval includes 0)."
            )
    return said


# -- rendering ------------------------------------------------------------------------------------


def _pct(x: dict[str, Any] | None) -> str:
    if x is None:
        return "–"
    return f"{x['value']:.0%} [{x['low']:.0%}, {x['high']:.0%}]"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table; both renderings draw from these."""
    cands = report["candidates"]
    names = [c["name"] for c in cands]
    tables = []
    acc_rows = []
    for metric, label in ACCURACIES.items():
        if not any(metric in c["accuracy"] for c in cands):
            continue
        row = [label] + [_pct(c["accuracy"].get(metric)) for c in cands]
        for c in cands[1:]:
            d = report["differences"].get(c["name"], {}).get(metric)
            row.append("–" if d is None else f"{d['value']:+.0%} ({d['verdict']})")
        acc_rows.append(row)
    diff_head = [f"{c['name']} − {report['baseline']}" for c in cands[1:]]
    tables.append(
        ("Accuracy (95 % bootstrap interval over items)", ["", *names, *diff_head], acc_rows)
    )
    attr_rows = []
    for c in cands:
        micro = c["attributes"]["micro"]
        attr_rows.append(
            [
                c["name"],
                *(str(micro[k]) for k in ("NN", "NV", "VN", "VC", "VW")),
                *(_num(micro[k], "{:.2f}") for k in ("precision", "recall", "f1")),
                _num(c["attributes"]["macro_f1"], "{:.2f}"),
            ]
        )
    tables.append(
        (
            "Attributes (WDC PAVE: micro over every attribute, macro = mean F1)",
            ["", "NN", "NV", "VN", "VC", "VW", "P", "R", "F1", "macro F1"],
            attr_rows,
        )
    )
    per_attr: dict[str, list[str]] = {}
    for i, c in enumerate(cands):
        for attr, counts in c["attributes"]["per_attribute"].items():
            per_attr.setdefault(attr, ["–"] * len(cands))[i] = (
                f"VC {counts['VC']} VW {counts['VW']} VN {counts['VN']} NV {counts['NV']} "
                f"F1 {_num(counts['f1'], '{:.2f}')}"
            )
    if per_attr:
        tables.append(
            ("Per attribute", ["attribute", *names], [[k, *v] for k, v in per_attr.items()])
        )
    rules = list(dict.fromkeys(r for c in cands for r in c["rule_first_attempt_pass"]))
    rule_rows = [
        [r, *(_num(c["rule_first_attempt_pass"].get(r), "{:.0%}") for c in cands)] for r in rules
    ]
    rule_rows.append(["mean attempts", *(_num(c["mean_attempts"], "{:.2f}") for c in cands)])
    rule_rows.append(
        [
            "failure reasons",
            *(
                ", ".join(f"{k} ×{v}" for k, v in c["failure_reasons"].items()) or "none"
                for c in cands
            ),
        ]
    )
    tables.append(("Checks: first-attempt pass rate per rule", ["", *names], rule_rows))
    if any(c["edit_distance"] for c in cands):
        fields = list(dict.fromkeys(f for c in cands for f in c["edit_distance"]))
        tables.append(
            (
                "Edit distance to the reviewed card (0 = what the reviewer approved, 1 = retyped)",
                ["field", *names],
                [[f, *(_num(c["edit_distance"].get(f), "{:.2f}") for c in cands)] for f in fields],
            )
        )
    cost_rows = []
    keys = [
        ("seconds per card (latency, cards in parallel)", "seconds_per_card", "{:.1f}"),
        (
            "machine seconds per card (run's wall time / cards)",
            "machine_seconds_per_card",
            "{:.1f}",
        ),
        ("completion tokens per card", "completion_tokens", "{:.0f}"),
        ("prompt tokens per card", "prompt_tokens", "{:.0f}"),
        ("cards/min at the engine's parallelism", "cards_per_min", "{:.2f}"),
        ("parallel (slots)", "parallel", "{}"),
        ("model load s", "load_s", "{:.1f}"),
    ]
    for label, key, fmt in keys:
        cost_rows.append([label, *(_num(c["cost"].get(key), fmt) for c in cands)])
    cost_rows.append(
        [
            "peak RSS (GiB)",
            *(_num((c["cost"]["peak_rss_bytes"] or 0) / 2**30, "{:.2f}") for c in cands),
        ]
    )
    cost_rows.append(
        [
            "model files (MB)",
            *(
                ", ".join(f"{n} {s / 1e6:.0f}" for n, s in c["cost"]["files"].items()) or "–"
                for c in cands
            ),
        ]
    )
    cost_rows.append(["model", *(str(c["cost"].get("model_id") or "–") for c in cands)])
    cost_rows.append(
        ["prompt version", *(str(c["cost"].get("prompt_version") or "–") for c in cands)]
    )
    tables.append((f"Cost (on {report.get('cpu') or 'this machine'})", ["", *names], cost_rows))
    for c in cands:
        conf = c["root_confusion"]
        if not conf:
            continue
        gold = sorted({g for g, _, _ in conf})
        got = sorted({p for _, p, _ in conf})
        counts = {(g, p): n for g, p, n in conf}
        rows = [[g, *(str(counts.get((g, p), "")) for p in got)] for g in gold]
        tables.append(
            (f"Root categories, {c['name']}: label (rows) × card (columns)", ["", *got], rows)
        )
    return tables


def _plots(report: dict[str, Any]) -> dict[str, str]:
    """SVG plots (matplotlib): accuracy against seconds per card, and per-rule pass rates."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    cands = report["candidates"]
    svgs: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for metric, marker in (("category_leaf", "o"), ("colour_label", "s"), ("colour_pixels", "^")):
        for c in cands:
            acc = c["accuracy"].get(metric)
            secs = c["cost"].get("machine_seconds_per_card") or c["cost"].get("seconds_per_card")
            if acc is None or secs is None:
                continue
            ax.errorbar(
                secs,
                acc["value"],
                yerr=[[acc["value"] - acc["low"]], [acc["high"] - acc["value"]]],
                fmt=marker,
                capsize=4,
                label=f"{c['name']}: {ACCURACIES[metric]}",
            )
    for metric in ("category_leaf", "colour_label"):
        guess = report["chance"].get(metric)
        if guess:
            ax.axhline(guess["share"], linestyle=":", linewidth=1, color="grey")
    ax.set_xlabel("machine seconds per card (wall time / cards)")
    ax.set_ylabel("accuracy (95 % interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy against cost (dotted: always the most common label)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    svgs["accuracy_vs_cost"] = _svg(fig)
    plt.close(fig)
    rules = list(dict.fromkeys(r for c in cands for r in c["rule_first_attempt_pass"]))
    if rules:
        fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(rules) + 1.2))
        height = 0.8 / max(1, len(cands))
        for k, c in enumerate(cands):
            values = [c["rule_first_attempt_pass"].get(r) or 0.0 for r in rules]
            ax.barh(
                [i + k * height for i in range(len(rules))], values, height=height, label=c["name"]
            )
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rules))], rules, fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_xlabel("first attempts passing the rule")
        ax.invert_yaxis()
        ax.legend(fontsize=7)
        fig.tight_layout()
        svgs["rules"] = _svg(fig)
        plt.close(fig)
    return svgs


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(x: str) -> str:
        return x.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _intro(report: dict[str, Any]) -> list[str]:
    seeds = ", ".join(str(s) for s in report["seeds"])
    return [
        f"Set: {report['set']} — {report['items']} items × seeds {seeds}; "
        f"baseline: {report['baseline']}; measured on {report.get('cpu') or '?'}; "
        f"{report['generated_at']}.",
    ]


def markdown(report: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    parts = ["# vitrine eval report", "", *_intro(report), "", "## Findings", ""]
    parts += [f"- {f}" for f in report["findings"]] or ["- nothing to report"]
    for c in report["candidates"]:
        shown = ", ".join(f"{k}={v}" for k, v in c["settings"].items()) or "the environment as is"
        parts.append(f"- **{c['name']}**: {shown}")
    for title, header, rows in _tables(report):
        parts += ["", f"## {title}", "", _md_table(header, rows)]
    if plots:
        parts += ["", "## Plots", ""] + [f"![{name}](plots/{name}.svg)" for name in plots]
    if report["reviewed_set"]:
        parts += [
            "",
            "## The reviewed set",
            "",
            "```",
            json.dumps(report["reviewed_set"], indent=1),
            "```",
        ]
    return "\n".join(parts) + "\n"


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}li{margin:.3em 0}
.findings{background:#fff8e1;border-left:4px solid #f0a000;padding:.6em 1.2em}
.plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.plots svg{max-width:49%;height:auto}
"""


def render_html(report: dict[str, Any], plots: dict[str, str]) -> str:
    e = html.escape
    out = [
        "<!doctype html><html lang=en><meta charset=utf-8><title>vitrine eval report</title>",
        f"<style>{STYLE}</style><h1>vitrine eval report</h1>",
        *(f"<p>{e(line)}</p>" for line in _intro(report)),
        "<div class=findings><h2>Findings</h2><ul>",
        *(f"<li>{e(f)}</li>" for f in report["findings"]),
        "</ul></div><h2>Candidates</h2><ul>",
    ]
    for c in report["candidates"]:
        shown = ", ".join(f"{k}={v}" for k, v in c["settings"].items()) or "the environment as is"
        out.append(f"<li><b>{e(c['name'])}</b>: <code>{e(shown)}</code></li>")
    out.append("</ul>")
    tables = _tables(report)
    for i, (title, header, rows) in enumerate(tables):
        out.append(f"<h2>{e(title)}</h2><table><tr>")
        out += [f"<th>{e(h)}</th>" for h in header]
        out.append("</tr>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        out.append("</table>")
        if i == 0:  # the accuracies first, then how they sit against cost
            out.append("<div class=plots>")
            out += list(plots.values())  # matplotlib's own SVG markup, from our numbers
            out.append("</div>")
    return "\n".join(out) + "\n</html>\n"


def write(out: Path) -> dict[str, Any]:
    """Build and write report.json, report.md, report.html and plots/*.svg into ``out``."""
    report = build(out)
    plots = _plots(report) if report["candidates"] else {}
    (out / "plots").mkdir(exist_ok=True)
    for name, svg in plots.items():
        (out / "plots" / f"{name}.svg").write_text(svg, encoding="utf-8")
    (out / "report.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    (out / "report.md").write_text(markdown(report, plots), encoding="utf-8")
    (out / "report.html").write_text(render_html(report, plots), encoding="utf-8")
    return report
