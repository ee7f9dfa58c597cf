"""The `vitrine` command as a user runs it: real subprocesses, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas.card import default_taxonomy
from schemas.language import PT_BR
from schemas.taxonomy import Taxonomy
from tests.support.images import image_bytes

VITRINE = [sys.executable, "-m", "vitrine.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VITRINE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=600,
    )


def test_models_pull_without_hub_fails_cleanly(tmp_path: Path) -> None:
    # Port 9 on loopback refuses connections: "offline" on any machine, deterministically.
    result = run(
        "models",
        "pull",
        "gemma-3-4b",
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "VITRINE_CACHE_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "cannot reach the model hub at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not any(tmp_path.rglob("*.gguf"))


def test_models_pull_unknown_preset_and_quant(tmp_path: Path) -> None:
    result = run("models", "pull", "nope", env={"VITRINE_CACHE_DIR": str(tmp_path)})
    assert result.returncode != 0 and "unknown preset 'nope'" in result.stderr
    result = run("models", "pull", "bakllava-1", "--quant", "Q8_0")
    assert result.returncode != 0 and "has no Q8_0 file" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_list_names_the_default(tmp_path: Path) -> None:
    result = run("models", "list", env={"VITRINE_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "gemma-3-4b (default)" in result.stdout and "llava-next-13b" in result.stdout


def test_card_without_downloaded_model_says_how_to_pull(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    result = run("card", str(photo), env={"VITRINE_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "vitrine models pull gemma-3-4b --quant Q4_K_M" in result.stderr
    assert "Traceback" not in result.stderr


def test_card_missing_image_is_a_usage_error(tmp_path: Path) -> None:
    result = run("card", str(tmp_path / "missing.jpg"))
    assert result.returncode == 2 and "no such file" in result.stderr


def run_cards(pair: Any, *images: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`vitrine card --json` on the tiny llava pair, with rules random weights can meet."""
    return run(
        "card",
        *images,
        "--json",
        *pair.cli_args(),
        env={
            "VITRINE_COLOUR_VOCABULARY": "enforce",
            "VITRINE_MIN_DESCRIPTION_WORDS": "20",
            "VITRINE_WORD_MINIMUM": "check",
            "VITRINE_LANGUAGE_CHECK": "false",
            "VITRINE_N_THREADS": "2",
            **env,
        },
    )


@pytest.mark.model
def test_card_json_lines_for_several_images_with_one_model_load(tiny_pairs, tmp_path) -> None:
    pair = tiny_pairs["llava"]
    paths = []
    for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB")):
        path = tmp_path / f"photo.{fmt.lower()}"
        path.write_bytes(image_bytes(fmt, mode))
        paths.append(str(path))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    result = run_cards(pair, *paths, str(text))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == [*paths, str(text)]
    assert result.stderr.count("loaded ") == 1  # one model load for all images
    done = [r for r in records if r["status"] == "done"]
    assert done, records
    for record in done:
        assert set(record["card"]) == {
            "product_name",
            "category_standard",
            "category_path",
            "category_id",
            "attributes",
            "description_long",
            "color_primary",
            "features_list",
            "sku",  # the shop's facts (none given here)
            "brand",
            "gtin",
        }
        assert record["timings"]["tokens_per_s"] > 0
        assert default_taxonomy(PT_BR).leaf(record["card"]["category_path"]) is not None
        assert record["checks"]["colour"]["model"] == record["card"]["color_primary"]
    assert records[-1] == {
        "image": str(text),
        "status": "failed",
        "reason": "bad_image",
        "error": "not a recognised image format: looks like plain text",
    }
    assert result.returncode == 1  # at least one image failed


def test_prompt_version_follows_the_settings() -> None:
    default = run("prompt").stdout.strip()
    other = run("prompt", env={"VITRINE_TAXONOMY": "Móveis;Outros"}).stdout.strip()
    assert default.startswith("card-v3+") and other.startswith("card-v3+") and default != other
    shown = run("prompt", "--show").stdout
    assert "analista de catálogo" in shown and "Cama, Mesa e Banho" in shown
    english = run("prompt", "--show", env={"VITRINE_PROMPT_LANGUAGE": "en"}).stdout
    assert "catalogue analyst" in english and "português do Brasil" in english
    # shown in the order the model reads it: every instruction before the photo by default,
    # only the task line after it; image_first puts the instructions after the photo
    before, after = shown.split("<the photo>")
    assert "Cama, Mesa e Banho" in before and "Cama, Mesa e Banho" not in after
    old = run("prompt", "--show", env={"VITRINE_PROMPT_ORDER": "image_first"}).stdout
    before, after = old.split("<the photo>")
    assert "Cama, Mesa e Banho" in after and "Cama, Mesa e Banho" not in before


@pytest.mark.model
def test_prompt_command_matches_the_engine(llava_engine) -> None:
    env = {"VITRINE_N_CTX": "4096"}
    assert run("prompt", env=env).stdout.strip() == llava_engine.prompt.version


@pytest.mark.model
def test_card_chooses_the_handler_from_the_files_and_says_so(tiny_pairs, tmp_path) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    pair = tiny_pairs["llava"]  # no chat template, mlp projector: llava15, not mtmd's refusal
    files = ["--model", str(pair.model), "--mmproj", str(pair.mmproj)]
    quick = {"VITRINE_N_THREADS": "2", "VITRINE_MAX_ATTEMPTS": "1", "VITRINE_MAX_TOKENS": "64"}
    result = run("card", str(photo), "--json", *files, env=quick)
    assert "handler: llava15 (chosen: projector mlp, model has no chat template)" in result.stderr
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["status"] in ("done", "failed")


def test_card_without_a_handler_rule_or_with_a_bad_template_is_a_usage_error(
    tiny_pairs, tmp_path
) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    model = str(tiny_pairs["llava"].model)
    # a text model given as the projector: no projector type, no template, nothing to go by
    result = run("card", str(photo), "--model", model, "--mmproj", model)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot choose a chat handler" in result.stderr and "--chat-template" in result.stderr
    mmproj = str(tiny_pairs["llava"].mmproj)
    result = run("card", str(photo), "--model", model, "--mmproj", mmproj, "--chat-template", "x")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "neither a built-in (gemma, chatml) nor a file" in result.stderr


@pytest.mark.model
def test_card_with_a_six_thousand_leaf_tree(tiny_pairs, tmp_path) -> None:
    """`vitrine card` with VITRINE_TAXONOMY_FILE pointing at the generated 6,000-leaf tree: a
    card names one of its leaves, with that leaf's attributes (or a typed failure, exit 1)."""
    from tests.support.big_tree import write

    tree_file = write("yaml", tmp_path / "big.yaml")
    photos = []
    for fmt in ("PNG", "JPEG"):
        photos.append(tmp_path / f"photo.{fmt.lower()}")
        photos[-1].write_bytes(image_bytes(fmt))
    pair = tiny_pairs["llava"]
    result = run_cards(pair, *map(str, photos), VITRINE_TAXONOMY_FILE=str(tree_file))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    done = [r for r in records if r["status"] == "done"]
    assert done, records  # random weights, relaxed rules: cards are routine
    tree = Taxonomy.load(tree_file)
    for record in done:
        card = record["card"]
        leaf = tree.leaf(card["category_path"])
        assert leaf is not None and card["category_id"] == leaf.id
        assert not leaf.attribute_problems(card["attributes"])
