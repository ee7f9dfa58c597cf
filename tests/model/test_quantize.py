"""``vitrine models quantize`` as a user runs it: llama.cpp's quantize through the bindings.

The refusals run on the tiny generated models (a second or two each, most before llama.cpp is
loaded); the real Gemma 3 270M Q4_K_M is requantized to Q8_0 and the project's engine loads the
result with the unchanged projector and generates (quantizing runs no compute graph, but the
engine then runs Q8_0 kernels on this machine: the check that the variant is usable).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.tiny_models import TinyPair, real_pair
from vitrine.quantize import QUANT_TYPES, parse_type, read_gguf

pytestmark = pytest.mark.model

VITRINE = [sys.executable, "-m", "vitrine.cli", "models", "quantize"]


def quantize(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VITRINE, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("vitrine: error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_type_numbers_are_llama_cpps() -> None:
    import llama_cpp

    for name in QUANT_TYPES:
        constant = "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}"
        assert parse_type(name).ftype == getattr(llama_cpp, constant), name


def test_refusals_and_a_tiny_quantize(tiny_pairs: dict[str, TinyPair], tmp_path: Path) -> None:
    pair = tiny_pairs["llava"]
    one_error_line(quantize(pair.mmproj, "--type", "Q8_0"), 1, "vision projector", "same mmproj")
    one_error_line(quantize(pair.model, "--type", "Q9_K"), 2, "unknown type", "Q5_K_M, Q6_K, Q8_0")

    dst = tmp_path / "tiny-llava-Q8_0.gguf"  # the default name, in the folder --out names
    dst.write_bytes(b"keep")
    one_error_line(quantize(pair.model, "--type", "q8_0", "--out", tmp_path), 1, "--force")
    assert dst.read_bytes() == b"keep"

    # an F32 source needs no --allow-requantize
    result = quantize(pair.model, "--type", "q8_0", "--out", tmp_path, "--force", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert f"output: {dst}" in result.stdout and "F32" in result.stdout
    assert read_gguf(dst).file_type == parse_type("Q8_0").ftype
    assert sorted(p.name for p in tmp_path.iterdir()) == [dst.name]  # no temporary left

    # ... a quantized one does, and the message says why
    one_error_line(
        quantize(dst, "--type", "Q4_0", "--out", tmp_path / "again.gguf"),
        1,
        "already quantized (Q8_0)",
        "--allow-requantize",
    )
    one_error_line(quantize(dst, "--type", "Q4_0", "--out", dst), 1, "the output is the source")

    # llama.cpp's own failure: a header that promises tensors the file does not hold
    cut = tmp_path / "cut-F32.gguf"
    cut.write_bytes(pair.model.read_bytes()[:2_000_000])
    one_error_line(quantize(cut, "--type", "F16"), 1, "llama.cpp could not quantize", "bounds")
    assert not (tmp_path / "cut-F16.gguf").exists()
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.realweights
def test_real_model_to_q8_0(tmp_path: Path) -> None:
    """The quantize path on real weights; the engine loading the result with the same
    projector and generating (the default load, the self-test child included) is
    tests/model/test_eval_run.py's Q4_K_M-against-Q8_0 comparison."""
    pair = real_pair(tmp_path / "pair")["mtmd"]
    result = quantize(pair.model, "--type", "Q8_0", "--allow-requantize", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    dst = tmp_path / "gemma-3-270m-Q8_0.gguf"
    assert f"output: {dst}" in result.stdout and "Q4_K_M" in result.stdout
    assert "requantizing Q4_K_M to Q8_0" in result.stderr
    assert read_gguf(dst).file_type == parse_type("Q8_0").ftype
    assert dst.stat().st_size > pair.model.stat().st_size


@pytest.mark.realweights
def test_ctrl_c_leaves_neither_output_nor_temporary(tmp_path: Path) -> None:
    """IQ4_XS on one thread takes the 270M model about twenty seconds: interrupted a moment
    after llama.cpp starts writing, the command ends at once (130) and leaves nothing."""
    model = real_pair(tmp_path / "pair")["mtmd"].model
    out = tmp_path / "out"
    out.mkdir()
    args = ["--type", "IQ4_XS", "--allow-requantize", "--threads", "1", "--out", str(out)]
    proc = subprocess.Popen(
        [*VITRINE, str(model), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background job may inherit SIGINT ignored; Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in out.glob(".*.part")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert time.monotonic() - interrupted < 5
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []
