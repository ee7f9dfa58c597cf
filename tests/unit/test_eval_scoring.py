"""``vitrine eval``'s parts that need no model: the set, candidates, scores, intervals, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vitrine.eval import report
from vitrine.eval.candidates import CandidateError, parse_candidate, parse_candidates
from vitrine.eval.intervals import difference, interval
from vitrine.eval.labels import LabelError, LabelledItem, read_set
from vitrine.eval.runner import _compact_torn_line, done_pairs
from vitrine.eval.scoring import PathIndex, Pave, same_value, score_candidate

SHIRT = "Vestuário > Blusas e Camisetas > Camisetas"
BLOUSE = "Vestuário > Blusas e Camisetas > Blusas"
MUG = "Casa e Cozinha > Mesa Posta > Xícaras e Canecas"

# -- the labelled set -----------------------------------------------------------------------------


def test_jsonl_and_csv_sets_read_alike(tmp_path: Path) -> None:
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text(
        '{"id": "a", "photos": ["a.jpg", "b.jpg"], "main": 1, "color": "azul",'
        ' "attributes": {"material": "algodão"}}\n\n'
        '{"id": "b", "folder": "s3://incoming/shop/1/", "category_id": "x"}\n',
        encoding="utf-8",
    )
    csv = tmp_path / "set.csv"
    csv.write_text(
        "id,photos,main,color,attributes,folder,category_id\n"
        'a,a.jpg|b.jpg,1,azul,"{""material"": ""algodão""}",,\n'
        "b,,,,,s3://incoming/shop/1/,x\n",
        encoding="utf-8-sig",
    )
    assert read_set(jsonl) == read_set(csv)
    first = read_set(csv)[0]
    assert first.photos == ["a.jpg", "b.jpg"] and first.main == 1
    assert first.expected_attributes == {"material": "algodão"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"id": "a", "photos": ["a.jpg"]}\n{"id": "a", "photos": ["b.jpg"]}\n', ":2: id 'a'"),
        ('{"id": "a"}\n', ":1: item: Value error, give photos or a folder"),
        ('{"id": "a", "photos": ["a.jpg"], "folder": "f/"}\n', "one of the two"),
        ('{"id": "a", "photos": ["a.jpg"], "main": 3}\n', "main 3 is not one of the 1 photos"),
        ('{"id": "a", "photos": ["a.jpg"], "colour": "azul"}\n', "colour: Extra inputs"),
        ('{"id": "a", "photos": ["a.jpg"]}\nnot json\n', "line 2: not JSON"),
        ("[1, 2]\n", "line 1: expected a JSON object, not list"),
        ("\n\n", "no items"),
        ('{"id": "a", "photos": ["a.jpg"], "verdict": "rejected"}\n', "names the rejected_card"),
    ],
)
def test_a_bad_set_names_its_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LabelError) as caught:
        read_set(path)
    assert says in str(caught.value)


def test_a_missing_or_binary_set_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="no such file"):
        read_set(tmp_path / "nope.jsonl")
    binary = tmp_path / "set.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LabelError, match="UTF-8"):
        read_set(binary)


# -- candidates -----------------------------------------------------------------------------------


def test_candidates_take_setting_names_and_variables() -> None:
    known = frozenset({"model_path", "prompt_order", "n_ctx"})
    one = parse_candidate("q5=model=/m/x.gguf, VITRINE_N_CTX=2048,prompt_order=image_first", known)
    assert one.env == {
        "VITRINE_MODEL_PATH": "/m/x.gguf",
        "VITRINE_N_CTX": "2048",
        "VITRINE_PROMPT_ORDER": "image_first",
    }
    assert parse_candidates([], known)[0].name == "default"
    with pytest.raises(CandidateError, match="no engine setting 'prompt_ordr'"):
        parse_candidate("x=prompt_ordr=image_first", known)
    with pytest.raises(CandidateError, match="given twice"):
        parse_candidates(["a=n_ctx=1", "a=n_ctx=2"], known)
    with pytest.raises(CandidateError, match="NAME=SETTINGS"):
        parse_candidate("../evil=n_ctx=1", known)
    with pytest.raises(CandidateError, match="not key=value"):
        parse_candidate("a=n_ctx", known)


def test_every_engine_setting_is_a_candidate_axis() -> None:
    from vitrine.eval.candidates import engine_setting_names

    names = engine_setting_names()
    for axis in ("model_path", "quant", "prompt_language", "prompt_order", "grammar_backend"):
        assert axis in names
    assert "preprocess_adapt" in names


# -- scores ---------------------------------------------------------------------------------------


def labelled(items: list[dict[str, Any]]) -> list[LabelledItem]:
    return [LabelledItem.model_validate(item) for item in items]


def card(path: str, colour: str, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "product_name": "Camiseta básica",
        "category_path": path,
        "category_id": path.lower(),
        "color_primary": colour,
        "attributes": attributes or {},
        "description_long": "texto " * 80,
        "features_list": ["um ponto forte", "outro ponto", "mais um ponto"],
    }


def test_pave_counts_every_attribute_outcome() -> None:
    pave = Pave()
    pave.add(None, None)  # NN
    pave.add(None, "x")  # NV
    pave.add("algodão", None)  # VN
    pave.add("Algodao", "algodão")  # VC: case and accents
    pave.add("algodão", "linho")  # VW
    pave.add({"value": 500, "unit": "ml"}, {"value": 500.0, "unit": "mL"})  # VC
    assert pave.as_json() == {
        "NN": 1,
        "NV": 1,
        "VN": 1,
        "VC": 2,
        "VW": 1,
        "precision": 2 / 4,
        "recall": 2 / 4,
        "f1": 0.5,
    }
    assert not same_value({"value": 500, "unit": "ml"}, {"value": 500, "unit": "l"})


def test_a_candidate_is_scored_per_item_over_its_seeds() -> None:
    items = [
        {"id": "1", "photos": ["1.jpg"], "category": SHIRT, "color": "azul",
         "attributes": {"material": "algodão", "genero": "unissex"}},
        {"id": "2", "photos": ["2.jpg"], "category": MUG, "color": "vermelho"},
        {"id": "3", "photos": ["3.jpg"], "category": SHIRT, "color": "preto"},
    ]  # fmt: skip
    records = [
        # item 1: seed 1 exact (colour a neighbour name), seed 2 a sibling leaf
        {"id": "1", "seed": 1, "ok": True, "attempts": 1, "first_broken": [], "seconds": 2.0,
         "card": card(SHIRT, "azul-marinho", {"material": "algodão", "tipo_gola": "redonda"}),
         "pixels": {"agrees": True, "checkable": True}},
        {"id": "1", "seed": 2, "ok": True, "attempts": 2, "first_broken": ["language"],
         "seconds": 4.0, "card": card(BLOUSE, "azul", {"material": "linho"}),
         "pixels": {"agrees": True, "checkable": True}},
        # item 2: no card in two attempts: wrong on every label
        {"id": "2", "seed": 1, "ok": False, "attempts": 2, "first_broken": ["parses"],
         "reason": "truncated", "seconds": 6.0},
        {"id": "2", "seed": 2, "ok": True, "attempts": 1, "first_broken": [], "seconds": 2.0,
         "card": card(MUG, "vermelho"), "pixels": {"agrees": False, "checkable": True}},
        {"id": "3", "seed": 1, "ok": True, "attempts": 1, "first_broken": [], "seconds": 2.0,
         "card": card(MUG, "preto"), "pixels": {"agrees": True, "checkable": False}},
        {"id": "3", "seed": 2, "ok": True, "attempts": 1, "first_broken": [], "seconds": 2.0,
         "card": card(SHIRT, "preto"), "pixels": {"agrees": True, "checkable": True}},
    ]  # fmt: skip
    scores = score_candidate("a", labelled(items), records, [], PathIndex())
    assert scores.per_item["category_leaf"] == {"1": 0.5, "2": 0.5, "3": 0.5}
    assert scores.per_item["category_parent"] == {"1": 1.0, "2": 0.5, "3": 0.5}
    assert scores.per_item["category_root"] == {"1": 1.0, "2": 0.5, "3": 0.5}
    assert scores.per_item["colour_label"] == {"1": 0.5, "2": 0.5, "3": 1.0}
    assert scores.per_item["colour_label_or_neighbour"]["1"] == 1.0
    # a card the pixels cannot check is left out; no card counts as disagreeing
    assert scores.per_item["colour_pixels"] == {"1": 1.0, "2": 0.0, "3": 1.0}
    summary = scores.summary
    assert summary["delivered"] == pytest.approx(5 / 6)
    assert summary["rule_first_attempt_pass"]["language"] == pytest.approx(4 / 6)
    assert summary["rule_first_attempt_pass"]["product_name_blank"] == pytest.approx(5 / 6)
    assert summary["mean_attempts"] == pytest.approx(8 / 6)
    assert summary["failure_reasons"] == {"truncated": 1}
    micro = summary["attributes"]["micro"]
    # item 1 only is labelled: seed 1 material VC, genero VN, tipo_gola NV; seed 2 VW, VN
    assert (micro["VC"], micro["VW"], micro["VN"], micro["NV"]) == (1, 1, 2, 1)
    assert summary["cost"]["seconds_per_card"] == pytest.approx(3.0)
    assert [g for g, _, _ in summary["root_confusion"]].count("Vestuário") == 2
    assert ["Casa e Cozinha", "(no card)", 1] in summary["root_confusion"]


def test_a_card_the_checks_refused_is_scored_as_written_only() -> None:
    items = [{"id": "1", "photos": ["1.jpg"], "category": SHIRT, "color": "azul"}]
    records = [
        {"id": "1", "seed": 1, "ok": False, "reason": "semantic_check", "attempts": 1,
         "first_broken": ["description_min_words"], "refused_card": card(SHIRT, "azul")},
        {"id": "1", "seed": 2, "ok": False, "reason": "truncated", "attempts": 1,
         "first_broken": ["parses"]},
    ]  # fmt: skip
    scores = score_candidate("a", labelled(items), records, [], PathIndex())
    assert scores.per_item["category_leaf"] == {"1": 0.0}  # nothing was delivered
    assert scores.per_item["category_leaf_written"] == {"1": 0.5}
    assert scores.per_item["colour_label_written"] == {"1": 0.5}
    assert scores.summary["delivered"] == 0.0


def test_reviewed_items_measure_edits_and_negatives() -> None:
    truth = card(SHIRT, "azul")
    items = [
        {"id": "r", "photos": ["r.jpg"], "card": truth, "model_card": card(SHIRT, "verde"),
         "verdict": "edited"},
        {"id": "n", "photos": ["n.jpg"], "verdict": "rejected",
         "rejected_card": card(MUG, "preto")},
    ]  # fmt: skip
    records = [
        {"id": "r", "seed": 1, "ok": True, "first_broken": [], "card": dict(truth)},
        {"id": "r", "seed": 2, "ok": True, "first_broken": [],
         "card": {**truth, "product_name": "Camiseta básica azul"}},
        {"id": "n", "seed": 1, "ok": True, "first_broken": [], "card": card(MUG, "preto")},
        {"id": "n", "seed": 2, "ok": True, "first_broken": [], "card": card(MUG, "branco")},
    ]  # fmt: skip
    scores = score_candidate("a", labelled(items), records, [], PathIndex())
    assert scores.per_item["approved_unchanged"] == {"r": 0.5}
    assert scores.per_item["repeats_rejected"] == {"n": 0.5}
    edits = scores.summary["edit_distance"]
    assert edits["description_long"] == 0.0
    assert edits["product_name"] == pytest.approx(len(" azul") / len("Camiseta básica azul") / 2)
    # the reviewed card's own labels are the truth for category and colour
    assert scores.per_item["category_leaf"] == {"r": 1.0}


def test_a_label_may_name_the_leaf_by_id() -> None:
    index = PathIndex()
    assert index.path("vestuario.blusas-e-camisetas.camisetas") == SHIRT.split(" > ")
    assert index.path(SHIRT) == SHIRT.split(" > ")


# -- intervals ------------------------------------------------------------------------------------


def test_intervals_separate_signal_from_noise() -> None:
    same = {str(i): float(i % 2) for i in range(30)}
    assert interval(same) == interval(same)  # seeded: a report redrawn says the same
    half = interval(same)
    assert half is not None and half.low < 0.5 < half.high and half.high - half.low > 0.2
    better = {k: 1.0 for k in same}
    gap = difference(same, better)
    assert gap is not None and gap.low > 0  # 15 of 30 items better, none worse
    noise = {k: float((int(k) + 1) % 2) for k in same}  # as good, on other items
    delta = difference(same, noise)
    assert delta is not None and delta.low < 0 < delta.high
    assert interval({}) is None and difference(same, {"x": 1.0}) is None


# -- results files and the report -----------------------------------------------------------------


def test_a_torn_last_line_is_not_a_result(tmp_path: Path) -> None:
    results = tmp_path / "a.jsonl"
    results.write_text('{"id": "1", "seed": 1, "ok": true}\n{"id": "2", "se', encoding="utf-8")
    assert done_pairs(results) == {("1", 1)}
    _compact_torn_line(results)
    assert results.read_text() == '{"id": "1", "seed": 1, "ok": true}\n'


def _fake_run(out: Path, per_candidate: dict[str, list[bool]]) -> None:
    """An OUT directory as runner.py leaves it: candidate → whether each item's card is right."""
    n = len(next(iter(per_candidate.values())))
    items = [{"id": str(i), "photos": [f"{i}.jpg"], "category": SHIRT, "color": "azul"}
             for i in range(n)]  # fmt: skip
    items[0]["category"] = MUG  # the most common label is the shirt, n-1 of n
    (out / "results").mkdir(parents=True)
    (out / "runs").mkdir()
    (out / "run.json").write_text(
        json.dumps(
            {
                "set": "set.jsonl",
                "items": items,
                "seeds": [1000],
                "candidates": {name: {"VITRINE_N_CTX": "4096"} for name in per_candidate},
                "order": list(per_candidate),
                "cpu": "test CPU",
            }
        )
    )
    for name, right in per_candidate.items():
        lines = []
        for i, good in enumerate(right):
            leaf = items[i]["category"] if good else BLOUSE
            lines.append(
                json.dumps({"id": str(i), "seed": 1000, "ok": True, "attempts": 1,
                            "first_broken": [], "seconds": 1.5,
                            "card": card(leaf, "azul" if good else "verde"),
                            "timings": {"completion_tokens": 300, "prompt_tokens": 900}})
            )  # fmt: skip
        (out / "results" / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        (out / "runs" / f"{name}.jsonl").write_text(
            json.dumps({"wall_s": 30.0, "cards": n, "parallel": 4, "load_s": 2.0,
                        "peak_rss_bytes": 2**30, "files": {"m.gguf": 2 * 10**8},
                        "model_id": "m.gguf", "prompt_version": "card-v3+x"}) + "\n"
        )  # fmt: skip


def test_the_report_calls_a_blind_candidate_blind_and_a_real_gap_real(tmp_path: Path) -> None:
    _fake_run(tmp_path, {"blind": [False] * 30, "sighted": [True] * 30})
    data = report.write(tmp_path)
    blind, sighted = data["candidates"]
    assert blind["accuracy"]["category_leaf"]["value"] == 0.0
    assert sighted["accuracy"]["category_leaf"] == {"value": 1.0, "low": 1.0, "high": 1.0, "n": 30}
    assert sighted["cost"]["cards_per_min"] == pytest.approx(60.0)
    gap = data["differences"]["sighted"]["category_leaf"]
    assert gap["verdict"] == "higher" and gap["value"] == 1.0
    said = " ".join(data["findings"])
    assert (
        "blind: category: exact leaf, refused cards included 0%" in said
        and "not reading the photos" in said
    )
    assert "sighted: " not in said.replace("sighted vs blind", "")
    assert "sighted vs blind: category: exact leaf +100%" in said
    for name in ("report.json", "report.md", "report.html", "plots/accuracy_vs_cost.svg"):
        assert (tmp_path / name).stat().st_size > 0
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "Root categories, sighted" in html
    assert (
        "| category: exact leaf | 0% [0%, 0%] | 100% [100%, 100%] | +100% (higher) |"
        in (tmp_path / "report.md").read_text()
    )


def test_two_candidates_alike_are_not_called_different(tmp_path: Path) -> None:
    pattern = [i % 3 != 0 for i in range(30)]
    shifted = [i % 3 != 1 for i in range(30)]
    _fake_run(tmp_path, {"a": pattern, "b": shifted})
    data = report.build(tmp_path)
    assert data["differences"]["b"]["category_leaf"]["verdict"] == "not different"
    assert any("no accuracy differs beyond the noise of 30 items" in f for f in data["findings"])


def test_report_text_is_escaped(tmp_path: Path) -> None:
    _fake_run(tmp_path, {"a": [True, False]})
    manifest = json.loads((tmp_path / "run.json").read_text())
    manifest["candidates"]["a"] = {"VITRINE_CHAT_TEMPLATE": "<script>alert(1)</script>"}
    (tmp_path / "run.json").write_text(json.dumps(manifest))
    report.write(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_resumed_run_refuses_changed_photos_seeds_or_settings(tmp_path: Path) -> None:
    from vitrine.eval.candidates import Candidate
    from vitrine.eval.runner import EvalError, Runner

    (tmp_path / "a.jpg").write_bytes(b"first photo")
    labelled = tmp_path / "set.jsonl"
    labelled.write_text('{"id": "a", "photos": ["a.jpg"], "facts": {"sku": "1"}}\n')
    out = tmp_path / "out"
    items = read_set(labelled)
    one = [Candidate("c", {"VITRINE_N_CTX": "4096"})]
    Runner(items, labelled, out, one, [1000]).prepare()
    Runner(items, labelled, out, one, [1000]).prepare()  # the same: resumable
    with pytest.raises(EvalError, match="seeds"):
        Runner(items, labelled, out, one, [1000, 1001]).prepare()
    with pytest.raises(EvalError, match=r"candidate c ran in .* with other settings"):
        Runner(items, labelled, out, [Candidate("c", {"VITRINE_N_CTX": "2048"})], [1000]).prepare()
    (tmp_path / "a.jpg").write_bytes(b"another photo")
    with pytest.raises(EvalError, match=r"photos or facts of 1 item\(s\) changed .* \(e.g. a\)"):
        Runner(items, labelled, out, one, [1000]).prepare()
    with pytest.raises(EvalError, match=r"photo b\.jpg: no such file"):
        bad = read_set(labelled)[0].model_copy(update={"photos": ["b.jpg"]})
        Runner([bad], labelled, tmp_path / "other", one, [1000]).prepare()
