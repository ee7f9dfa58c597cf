"""``vitrine models quantize``'s decisions before llama.cpp runs: the type, the output's name,
what the source GGUF holds, and the refusals (no llama.cpp here)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from vitrine.quantize import (
    QUANT_TYPES,
    QuantizeError,
    UnknownType,
    default_output,
    parse_type,
    plan,
    read_gguf,
    source_files,
)


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    file_type: gguf.LlamaFileType | None = gguf.LlamaFileType.ALL_F32,
    quantized: bool = False,
    clip_key: bool = False,
) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    if file_type is not None:
        writer.add_file_type(file_type)
    if clip_key:
        writer.add_bool("clip.has_vision_encoder", True)
    writer.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])  # arrays are skipped
    writer.add_array("tokenizer.ggml.scores", [0.0, 1.0, 2.0])
    writer.add_tensor("a.weight", np.ones((4, 32), np.float32))
    if quantized:
        data = np.zeros((4, 34), np.uint8)  # 4 rows of one Q8_0 block (2 + 32 bytes)
        writer.add_tensor("b.weight", data, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("text", "name", "ftype"),
    [("Q5_K_M", "Q5_K_M", 17), ("q4_k_m", "Q4_K_M", 15), (" q8-0 ", "Q8_0", 7), ("f16", "F16", 1),
     ("F32", "F32", 0), ("bf16", "BF16", 32), ("Q4_K", "Q4_K_M", 15), ("iq4_xs", "IQ4_XS", 30)],
)  # fmt: skip
def test_types_any_case_and_aliases(text: str, name: str, ftype: int) -> None:
    assert parse_type(text) == parse_type(name)
    assert (parse_type(text).name, parse_type(text).ftype) == (name, ftype)


def test_unknown_and_imatrix_types_list_the_valid_ones() -> None:
    with pytest.raises(UnknownType, match=r"unknown type 'Q9_K' \(valid: Q2_K, .*, F32\)"):
        parse_type("Q9_K")
    with pytest.raises(UnknownType, match="needs an importance matrix"):
        parse_type("iq2_xxs")
    assert len(set(QUANT_TYPES)) == len(QUANT_TYPES)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("gemma-3-270m-it-Q4_K_M.gguf", "gemma-3-270m-it-Q5_K_M.gguf"),
        ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-Q5_K_M.gguf"),
        ("Qwen2.5-VL-7B-Instruct-f16.gguf", "Qwen2.5-VL-7B-Instruct-Q5_K_M.gguf"),
        ("llava-v1.5-7b.Q8_0.gguf", "llava-v1.5-7b.Q5_K_M.gguf"),
        ("gemma-3-4b-it-UD-Q4_K_XL.gguf", "gemma-3-4b-it-Q5_K_M.gguf"),
        ("model_IQ3_XXS.gguf", "model_Q5_K_M.gguf"),
        ("model-bf16-00001-of-00002.gguf", "model-Q5_K_M.gguf"),
        ("model.gguf", "model-Q5_K_M.gguf"),
        ("ggml-model-Q4_0", "ggml-model-Q5_K_M.gguf"),
        # a tag has to follow a separator: these are names, not tags
        ("gemma-3-4b.gguf", "gemma-3-4b-Q5_K_M.gguf"),
        ("Q8_0.gguf", "Q8_0-Q5_K_M.gguf"),
    ],
)
def test_default_output_replaces_or_adds_the_tag(src: str, dst: str) -> None:
    assert default_output(Path("/m") / src, parse_type("Q5_K_M")) == Path("/m") / dst


def test_read_gguf(tmp_path: Path) -> None:
    info = read_gguf(write_gguf(tmp_path / "f32.gguf"))
    assert (info.architecture, info.file_type, info.is_projector, info.is_quantized) == (
        "llama",
        0,
        False,
        False,
    )
    q = read_gguf(write_gguf(tmp_path / "q.gguf", file_type=None, quantized=True))
    assert q.is_quantized and q.file_type is None and q.describe() == "quantized: Q8_0"
    labelled = read_gguf(write_gguf(tmp_path / "l.gguf", file_type=gguf.LlamaFileType.MOSTLY_Q6_K))
    assert labelled.is_quantized and labelled.describe() == "Q6_K"
    assert read_gguf(write_gguf(tmp_path / "clip.gguf", arch="clip")).is_projector
    assert read_gguf(write_gguf(tmp_path / "c.gguf", clip_key=True)).is_projector


def test_read_gguf_refuses_what_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="no such file"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(QuantizeError, match="not a file"):
        read_gguf(tmp_path)
    (tmp_path / "text.gguf").write_text("hello, this is not a model file at all\n")
    with pytest.raises(QuantizeError, match=r"not a GGUF file \(it starts with b'hell'\)"):
        read_gguf(tmp_path / "text.gguf")
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[:60])
    with pytest.raises(QuantizeError, match="truncated or corrupt"):
        read_gguf(tmp_path / "cut.gguf")


def test_plan_refusals(tmp_path: Path) -> None:
    f32 = write_gguf(tmp_path / "m-F32.gguf")
    q8 = write_gguf(
        tmp_path / "m-Q8_0.gguf", file_type=gguf.LlamaFileType.MOSTLY_Q8_0, quantized=True
    )
    proj = write_gguf(tmp_path / "mmproj.gguf", arch="clip")
    q5 = parse_type("Q5_K_M")

    with pytest.raises(QuantizeError, match=r"vision projector.*same mmproj"):
        plan(proj, q5, None)
    with pytest.raises(QuantizeError, match="already Q8_0: nothing to do"):
        plan(q8, parse_type("q8_0"), None, allow_requantize=True)
    with pytest.raises(QuantizeError, match="the output is the source"):
        plan(f32, q5, f32)
    with pytest.raises(QuantizeError, match="no such directory"):
        plan(f32, q5, tmp_path / "nope" / "x.gguf")
    with pytest.raises(QuantizeError, match=r"already quantized \(Q8_0\).*--allow-requantize"):
        plan(q8, q5, None)

    p = plan(f32, q5, None)
    assert (p.dst, p.requantize) == (tmp_path / "m-Q5_K_M.gguf", False)
    assert plan(f32, q5, tmp_path).dst == tmp_path / "m-Q5_K_M.gguf"  # a folder: the default name
    assert plan(q8, q5, None, allow_requantize=True).requantize

    p.dst.write_bytes(b"")
    with pytest.raises(QuantizeError, match="exists: pass --force"):
        plan(f32, q5, None)
    assert plan(f32, q5, None, force=True).dst == p.dst


def test_source_files_of_a_split_model(tmp_path: Path) -> None:
    one = write_gguf(tmp_path / "m-00001-of-00002.gguf")
    (tmp_path / "m-00002-of-00002.gguf").write_bytes(b"")
    info = read_gguf(one)
    assert source_files(one, info) == [one]  # no split.count: one file
    assert source_files(one, replace(info, split_count=2)) == [
        one,
        tmp_path / "m-00002-of-00002.gguf",
    ]
