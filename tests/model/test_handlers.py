"""Choosing the chat handler from the GGUF files, chat templates for models without one, and the
real-text pair (Gemma 3 270M base, real weights, random projector) through ``vitrine card``."""

from __future__ import annotations

import base64
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest
from pydantic import ValidationError

from services.inference.card import errors
from services.inference.engine.card_engine import CardEngine
from services.inference.engine.chat_templates import (
    BUILTIN,
    GEMMA,
    MEDIA_MARKER,
    load_chat_template,
)
from services.inference.engine.handlers import (
    PINPOINTS_KEY,
    GGUFMetadataError,
    HandlerNotDetected,
    detect_handler,
    read_metadata,
)
from services.inference.engine.model_files import ModelFiles, ModelFilesError, resolve
from services.inference.settings import EngineSettings
from tests.support.images import image_bytes
from tests.support.tiny_models import RealWeightsMissing, TinyPair, real_pair

VITRINE = [sys.executable, "-m", "vitrine.cli"]
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "caneca-azul.jpg"
PNG_URI = "data:image/png;base64," + base64.b64encode(image_bytes("PNG")).decode()
REASONS = {
    cls.reason
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.CardError)
}


def write_gguf(path: Path, arch: str, fields: dict[str, Any]) -> Path:
    """A metadata-only GGUF (no tensors): all that handler detection reads."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in fields.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_array(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def text_models(tmp_path: Path) -> dict[str, Path]:
    return {
        "bare": write_gguf(tmp_path / "bare.gguf", "llama", {"tokenizer.ggml.model": "llama"}),
        "templated": write_gguf(
            tmp_path / "templated.gguf", "llama", {"tokenizer.chat_template": BUILTIN["chatml"]}
        ),
    }


def projector(tmp_path: Path, name: str, fields: dict[str, Any]) -> Path:
    fields = {"clip.has_vision_encoder": True, **fields}
    return write_gguf(tmp_path / f"{name}.gguf", "clip", fields)


# -- detection --------------------------------------------------------------------------------


def test_tiny_pairs_are_detected_as_their_declared_handlers(tiny_pairs) -> None:
    for pair in tiny_pairs.values():
        choice = detect_handler(pair.model, pair.mmproj)
        assert choice.handler == pair.handler
    assert detect_handler(tiny_pairs["llava"].model, tiny_pairs["llava"].mmproj).reason == (
        "chosen: projector mlp, model has no chat template"
    )
    assert detect_handler(tiny_pairs["mtmd"].model, tiny_pairs["mtmd"].mmproj).reason == (
        "chosen: the model has a chat template"
    )


def test_a_given_chat_template_means_the_generic_handler(tiny_pairs) -> None:
    pair = tiny_pairs["llava"]
    choice = detect_handler(pair.model, pair.mmproj, chat_template="gemma")
    assert (choice.handler, choice.reason) == ("mtmd", "chosen: chat template gemma given")


@pytest.mark.parametrize(
    ("fields", "handler"),
    [
        ({"clip.projector_type": "mlp"}, "llava15"),
        ({"clip.projector_type": "mlp", PINPOINTS_KEY: [336, 672, 672, 336]}, "llava16"),
        ({"clip.projector_type": "qwen2.5vl_merger"}, "qwen25vl"),
        ({"clip.vision.projector_type": "qwen2.5vl_merger"}, "qwen25vl"),  # per-modality key
        ({"clip.projector_type": "qwen2.5o"}, "qwen25vl"),
    ],
)
def test_models_without_a_template_get_the_projectors_handler(
    tmp_path, text_models, fields, handler
) -> None:
    mmproj = projector(tmp_path, "proj", fields)
    assert detect_handler(text_models["bare"], mmproj).handler == handler
    # the model's own template wins over the projector
    assert detect_handler(text_models["templated"], mmproj).handler == "mtmd"


@pytest.mark.parametrize(
    ("fields", "found"),
    [
        ({"clip.projector_type": "gemma3"}, "projector type 'gemma3'"),
        ({}, "no projector type"),
    ],
)
def test_no_rule_fits_names_what_was_found_and_the_options(
    tmp_path, text_models, fields, found
) -> None:
    mmproj = projector(tmp_path, "proj", fields)
    with pytest.raises(HandlerNotDetected) as caught:
        detect_handler(text_models["bare"], mmproj)
    message = str(caught.value)
    assert found in message and "no tokenizer.chat_template" in message
    assert "--handler" in message and "--chat-template" in message


def test_metadata_reader_agrees_with_gguf_reader(tiny_pairs) -> None:
    pair = tiny_pairs["mtmd"]
    for path in (pair.model, pair.mmproj):
        reader = gguf.GGUFReader(path)
        keys = tuple(k for k in reader.fields if not k.startswith("GGUF."))
        ours = read_metadata(path, keys)
        assert set(ours) == set(keys)
        for key in keys:
            theirs = reader.fields[key].contents()
            floats = theirs if isinstance(theirs, list) else [theirs]
            if floats and isinstance(floats[0], float):
                assert ours[key] == pytest.approx(theirs)
            else:
                assert ours[key] == theirs, key


def test_unreadable_files_are_model_file_errors(tmp_path, tiny_pairs) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF but not really")
    with pytest.raises(GGUFMetadataError):
        read_metadata(junk, ("tokenizer.chat_template",))
    settings = EngineSettings(model_path=junk, mmproj_path=tiny_pairs["llava"].mmproj)
    with pytest.raises(ModelFilesError, match="not a readable GGUF header"):
        resolve(settings)


def test_resolve_says_how_the_handler_was_chosen(tiny_pairs, monkeypatch) -> None:
    pair = tiny_pairs["llava"]
    detected = resolve(EngineSettings(model_path=pair.model, mmproj_path=pair.mmproj))
    assert (detected.handler, detected.handler_reason) == (
        "llava15",
        "chosen: projector mlp, model has no chat template",
    )
    given = resolve(EngineSettings(model_path=pair.model, mmproj_path=pair.mmproj, handler="mtmd"))
    assert (given.handler, given.handler_reason) == ("mtmd", "given: --handler / VITRINE_HANDLER")
    # presets keep their declared handler, whatever the files say
    from services.inference.engine import model_files

    monkeypatch.setattr(model_files, "_cached", lambda file, models_dir: pair.mmproj)
    preset = resolve(EngineSettings(preset="llava-1.5-7b"))
    assert (preset.handler, preset.handler_reason) == ("llava15", "preset llava-1.5-7b")
    preset = resolve(EngineSettings(preset="gemma-3-4b"))
    assert (preset.handler, preset.handler_reason) == ("mtmd", "preset gemma-3-4b")


# -- chat templates ---------------------------------------------------------------------------


def test_chat_template_setting_takes_names_and_files(tmp_path, monkeypatch) -> None:
    assert EngineSettings(chat_template="gemma").chat_template == "gemma"
    own = tmp_path / "own.jinja"
    own.write_text(BUILTIN["chatml"], encoding="utf-8")
    assert EngineSettings(chat_template=str(own)).chat_template == str(own)
    monkeypatch.setenv("VITRINE_CHAT_TEMPLATE", "chatml")
    assert EngineSettings().chat_template == "chatml"
    monkeypatch.setenv("VITRINE_CHAT_TEMPLATE", "")
    assert EngineSettings().chat_template is None


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (None, "neither a built-in"),
        ("{% for m in messages %}", "does not render"),
        ("{% for m in messages %}{{ m['role'] }}{% endfor %}", "must print the system text"),
    ],
)
def test_bad_chat_templates_are_refused_by_the_settings(tmp_path, source, problem) -> None:
    path = tmp_path / "t.jinja"
    if source is not None:
        path.write_text(source, encoding="utf-8")
    with pytest.raises(ValidationError, match=problem):
        EngineSettings(chat_template=str(path))


class _RenderedStop(Exception):
    pass


class _StubMtmd:
    """Stands in for ``mtmd_cpp``: the real marker, and a stop before any native call."""

    def mtmd_default_marker(self) -> bytes:
        return MEDIA_MARKER.encode()

    def mtmd_helper_bitmap_init_from_buf(self, *args: object) -> None:
        raise _RenderedStop


class _FakeLlama:
    verbose = True

    def __init__(self, template: str) -> None:
        self.metadata = {"tokenizer.chat_template": template}

    def token_bos(self) -> int:
        return 2

    def token_eos(self) -> int:
        return 1

    def detokenize(self, tokens: list[int]) -> bytes:
        return {2: b"<bos>", 1: b"<eos>"}[tokens[0]]


def rendered_by_llama_cpp(template: str, messages: list[Any], tmp_path: Path, capsys) -> str:
    """The prompt text llama-cpp-python's own MTMDChatHandler renders (it prints it when
    verbose), stopped before it touches libmtmd."""
    from llama_cpp.llama_chat_format import MTMDChatHandler

    clip = tmp_path / "clip.gguf"
    clip.write_bytes(b"")
    handler = MTMDChatHandler(clip_model_path=str(clip), verbose=True)
    handler._mtmd_cpp = _StubMtmd()  # type: ignore[assignment]
    handler.mtmd_ctx = object()  # type: ignore[assignment]
    capsys.readouterr()
    with pytest.raises(_RenderedStop):
        handler(llama=_FakeLlama(template), messages=messages)  # type: ignore[arg-type]
    return capsys.readouterr().err.removesuffix("\n")


def card_messages(system: str, user: str) -> list[dict[str, Any]]:
    """The shape of ``Prompt.messages``: a system turn, then the image and the instructions."""
    return [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": PNG_URI}},
                {"type": "text", "text": user},
            ],
        },
    ]


def test_gemma_template_renders_the_cards_prompt_as_gemma_turns(tmp_path, capsys) -> None:
    system, user = "You write product cards.\nJSON only.", "Describe the product.\n"
    text = rendered_by_llama_cpp(GEMMA, card_messages(system, user), tmp_path, capsys)
    assert text == (
        f"<start_of_turn>user\n{system}\n\n{MEDIA_MARKER}Describe the product.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert "<bos>" not in text  # llama.cpp adds BOS itself (add_special): one, not two


def test_every_builtin_template_keeps_one_image_marker(tmp_path, capsys) -> None:
    for name in BUILTIN:
        assert load_chat_template(name) == BUILTIN[name]
        text = rendered_by_llama_cpp(BUILTIN[name], card_messages("S", "T"), tmp_path, capsys)
        assert text.count(MEDIA_MARKER) == 1 and PNG_URI not in text, name
        assert text.index("S") < text.index(MEDIA_MARKER) < text.rindex("T"), name


# -- the real-text pair: Gemma 3 270M base, real weights ---------------------------------------


@pytest.fixture(scope="session")
def gemma_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyPair]:
    try:
        return real_pair(tmp_path_factory.mktemp("gemma"))
    except RealWeightsMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs the real weights (scripts/bootstrap.sh): {exc}")
        pytest.skip(str(exc))


@pytest.mark.realweights
def test_card_chooses_a_handler_for_gemma_base_and_ends_cleanly(gemma_pairs) -> None:
    pair = gemma_pairs["llava"]
    files = ["--model", str(pair.model), "--mmproj", str(pair.mmproj)]
    result = subprocess.run(
        [*VITRINE, "card", str(SAMPLE), "--json", *files],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "VITRINE_MAX_ATTEMPTS": "1",
            "VITRINE_MAX_TOKENS": "64",
            "VITRINE_N_THREADS": "2",
        },
        timeout=600,
        cwd=ROOT,
    )
    assert "handler: llava15 (chosen: projector mlp, model has no chat template)" in (
        result.stderr.splitlines()
    ), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode in (0, 1), result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    if result.returncode == 0:
        assert record["status"] == "done" and set(record["card"]) >= {"product_name"}
    else:
        assert record["status"] == "failed" and record["reason"] in REASONS, record


@pytest.fixture(scope="module")
def gemma_mtmd_engine(gemma_pairs) -> Iterator[CardEngine]:
    pair = gemma_pairs["mtmd"]
    settings = EngineSettings(
        model_path=pair.model,
        mmproj_path=pair.mmproj,
        chat_template=pair.chat_template,
        n_threads=2,
        max_tokens=64,
        max_attempts=1,
        grammar_backend="none",  # the template and the handler are under test, not the grammar
    )
    files = resolve(settings)
    assert (files.handler, files.handler_reason) == ("mtmd", "chosen: chat template gemma given")
    engine = CardEngine(files, settings)
    yield engine
    engine.close()


@pytest.mark.realweights
def test_gemma_base_with_the_gemma_template_runs_under_mtmd(gemma_mtmd_engine, monkeypatch) -> None:
    engine = gemma_mtmd_engine
    assert engine.llm.metadata["tokenizer.chat_template"] == GEMMA
    prompts: list[list[int]] = []
    complete = engine.llm.create_completion

    def spy(*args: Any, **kwargs: Any) -> Any:
        prompts.append(list(kwargs["prompt"]))
        return complete(*args, **kwargs)

    monkeypatch.setattr(engine.llm, "create_completion", spy)
    raw = engine.generate(engine.prepare(SAMPLE.read_bytes()), seed=1)
    assert raw.timings.completion_tokens > 0
    (prompt,) = prompts

    def tokens(text: str) -> list[int]:
        return engine.llm.tokenize(text.encode(), add_bos=False, special=True)

    # the text before the image is its own chunk of real tokens: one BOS (llama.cpp's), then
    # the turn with the system text folded in; the image's positions after it are not tokens
    head = [engine.llm.token_bos(), *tokens(f"<start_of_turn>user\n{engine.prompt.system}\n\n")]
    assert prompt[: len(head)] == head, prompt[:8]
    tail = tokens("<end_of_turn>\n<start_of_turn>model\n")
    assert prompt[-len(tail) :] == tail


def test_model_files_default_reason_keeps_positional_construction(tiny_pairs) -> None:
    pair = tiny_pairs["llava"]
    files = ModelFiles(pair.model, pair.mmproj, "llava15", None, None)
    assert files.handler_reason == "" and files.model_id == pair.model.name
