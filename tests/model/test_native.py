"""The llama.cpp build on this machine: the repack choice and the start-up self-test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from services.inference.card.errors import ModelLoadError
from services.inference.engine import native_probe
from services.inference.engine.native import RepackChoice, build_features, choose_repack
from services.inference.engine.native_probe import (
    NativeCrash,
    ProbeSpec,
    cache_key,
    crash_advice,
    needs_child,
)
from services.inference.engine.repack import WeightInfo, cpu_repack_buft, pattern_for, repackable
from tests.support import tiny_models
from tests.support.engines import load_engine
from tests.support.images import image_bytes
from tests.support.tiny_models import TextDims, TinyPair


def test_auto_keeps_weights_off_the_amx_buffer_only_where_the_build_has_amx_kernels() -> None:
    plain = choose_repack("auto", {"AVX2": "1", "REPACK": "1"})
    assert plain.enabled and plain.use_extra_bufts and not plain.portable
    amx = choose_repack("auto", {"AVX512": "1", "AMX_INT8": "1"})
    assert amx.enabled and amx.portable and not amx.use_extra_bufts and "AMX" in amx.reason
    assert amx.label == "portable"
    assert choose_repack("on", {"AMX_INT8": "1"}).use_extra_bufts is True
    assert choose_repack("portable", {}).portable is True
    off = choose_repack("off", {})
    assert not off.enabled and not off.use_extra_bufts and off.label == "off"


def test_the_build_features_are_read_from_llama_cpp() -> None:
    """Every ``NAME = VALUE`` that llama.cpp prints is read as it is printed, and a native build
    (what bootstrap makes) reports the SIMD and AMX features this CPU has."""
    features = build_features()
    printed = re.findall(r"(\w+) = (\w+)", llama_cpp.llama_print_system_info().decode())
    assert printed, "llama_print_system_info printed no feature"
    assert {name: features.get(name) for name, _ in printed} == dict(printed)
    flags = native_probe.cpu_flags()
    for flag, feature in (("avx2", "AVX2"), ("avx512f", "AVX512"), ("amx_int8", "AMX_INT8")):
        if flag in flags:
            assert features.get(feature) == "1", (flag, features)
    assert choose_repack("auto") == choose_repack("auto", features)


@pytest.mark.model
def test_a_build_that_decodes_nan_fails_at_start_with_the_setting_to_change(
    tiny_pairs, tmp_path: Path, monkeypatch
) -> None:
    """A model whose weights are NaN stands in for a build that computes garbage: the engine
    refuses to start instead of parking every job."""
    monkeypatch.setattr(
        tiny_models, "_w", lambda rng, *shape, scale=0.02: np.full(shape, np.nan, np.float32)
    )
    broken = tmp_path / "nan.gguf"
    tiny_models.write_text_model(broken, chat_template=None, seed=0, dims=TextDims())
    pair = TinyPair(broken, tiny_pairs["llava"].mmproj, "llava15")
    with pytest.raises(ModelLoadError, match=r"self-test: .*non-finite logits.*VITRINE_CPU_REPACK"):
        load_engine(pair, cpu_repack="on")


# -- the self-test in a child process: a crash is a settings error, not a dead process ----------

CRASHING = ("-m", "tests.support.crashing_self_test", "child")


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of self-test verdicts of the test's own, so a pass cached earlier proves nothing."""
    monkeypatch.setenv("VITRINE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "self-test"


def spec_for(pair: TinyPair, repack: bool = True) -> ProbeSpec:
    return ProbeSpec(str(pair.model), repack, 0, 2)


def test_crash_advice_names_the_setting_the_cpu_feature_and_the_fix(tiny_pairs) -> None:
    """Each branch of the message, on any machine: the CPU and build are given, not read."""
    spec = spec_for(tiny_pairs["llava"])
    on = RepackChoice(True, "VITRINE_CPU_REPACK=on")
    amx = crash_advice(spec, on, signal.SIGSEGV, {"AMX_INT8": "1"}, {"avx512f", "amx_int8"})
    assert "crashed (SIGSEGV)" in amx and "VITRINE_CPU_REPACK=on" in amx
    assert "AMX (amx_int8)" in amx and "set VITRINE_CPU_REPACK=auto" in amx
    amd = crash_advice(spec, on, signal.SIGILL, {"AVX2": "1"}, {"avx2"})
    assert "crashed (SIGILL)" in amd and "(avx2)" in amd and "set VITRINE_CPU_REPACK=off" in amd
    plain = crash_advice(spec, RepackChoice(False, "VITRINE_CPU_REPACK=off"), 11, {}, {"avx2"})
    assert "plain CPU kernels" in plain and "rebuild llama-cpp-python" in plain
    portable = RepackChoice(True, "auto: ... portable", portable=True)
    pinned = crash_advice(spec, portable, 11, {"AMX_INT8": "1"}, {"amx_int8"})
    assert "cpu_repack=portable" in pinned and "CPU_REPACK" in pinned
    assert "set VITRINE_CPU_REPACK=off" in pinned
    killed = crash_advice(spec, on, signal.SIGKILL, {"AMX_INT8": "1"}, {"amx_int8"})
    assert "SIGKILL" in killed and "memory" in killed


def test_only_a_load_not_known_safe_runs_in_a_child() -> None:
    on, off = RepackChoice(True, "on"), RepackChoice(False, "off")
    assert needs_child("auto", on) and not needs_child("auto", off)
    assert needs_child("auto", RepackChoice(True, "portable", portable=True))
    assert needs_child("always", off) and not needs_child("never", on)


@pytest.mark.model
@pytest.mark.parametrize("amx", [True, False], ids=["amx-cpu", "other-cpu"])
def test_a_self_test_that_crashes_is_a_clear_start_up_error(
    tiny_pairs, own_cache: Path, monkeypatch: pytest.MonkeyPatch, amx: bool
) -> None:
    """The crash path on every machine: the child dies of SIGSEGV after loading the model
    (``tests/support/crashing_self_test.py``), this process lives on and gets ``NativeCrash``
    with the setting to change, for the CPU it is told it has; nothing is cached, so the next
    start tries again."""
    monkeypatch.setattr(native_probe, "CHILD_ARGS", CRASHING)
    flags = {"avx512f", "amx_int8"} if amx else {"avx2"}
    monkeypatch.setattr(native_probe, "cpu_flags", lambda: flags)
    monkeypatch.setattr(native_probe, "build_features", lambda: {"AMX_INT8": "1"} if amx else {})
    with pytest.raises(NativeCrash) as info:
        load_engine(tiny_pairs["llava"], cpu_repack="on")
    message = str(info.value)
    assert "crashed (SIGSEGV)" in message and "VITRINE_CPU_REPACK=on" in message
    if amx:
        assert "AMX" in message and "set VITRINE_CPU_REPACK=auto" in message
    else:
        assert "set VITRINE_CPU_REPACK=off" in message
    assert isinstance(info.value, ModelLoadError)  # the engine's settings error: exit 2
    assert not own_cache.exists() or not any(own_cache.iterdir())


@pytest.mark.model
def test_a_passing_child_is_cached_per_build_cpu_and_model(tiny_pairs, own_cache: Path) -> None:
    """auto: the first start with repacking on proves it in a child and remembers it; the
    second start asks no child; ``always`` asks again; repacking off (the plain CPU path) never
    needs one."""
    pair = tiny_pairs["llava"]
    first = load_engine(pair, cpu_repack="on")
    first.close()
    assert first.probe.ran and first.probe.reason == "passed in a child process"
    assert len(list(own_cache.glob("*.json"))) == 1
    again = load_engine(pair, cpu_repack="on")
    again.close()
    assert not again.probe.ran and "passed before" in again.probe.reason
    always = load_engine(pair, cpu_repack="on", self_test_isolation="always")
    always.close()
    assert always.probe.ran
    plain = load_engine(pair, cpu_repack="off")
    plain.close()
    assert not plain.probe.ran and "known safe" in plain.probe.reason
    assert cache_key(spec_for(pair)) != cache_key(spec_for(pair, repack=False))


@pytest.mark.model
def test_vitrine_card_and_the_worker_end_with_one_line_and_exit_2_on_a_crash(
    tiny_pairs, tmp_path: Path
) -> None:
    """Not 139: ``vitrine card`` prints one error line and exits 2; the worker logs
    ``worker.cannot_start`` with the advice and exits 2, as for any setting it cannot start
    with."""
    pair = tiny_pairs["llava"]
    photo = tmp_path / "p.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    env = {
        **os.environ,
        "COLUMNS": "300",
        "VITRINE_CACHE_DIR": str(tmp_path / "cache"),
        "VITRINE_CPU_REPACK": "on",
    }
    wrapper = [sys.executable, "-m", "tests.support.crashing_self_test"]
    card = subprocess.run(
        [*wrapper, "vitrine", "card", str(photo), *pair.cli_args()],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert card.returncode == 2, (card.returncode, card.stderr)
    errors = [line for line in card.stderr.splitlines() if line.startswith("vitrine: error:")]
    assert len(errors) == 1 and "crashed (SIGSEGV)" in errors[0], card.stderr
    assert "VITRINE_CPU_REPACK" in errors[0] and "Traceback" not in card.stderr
    worker_env = {
        **env,
        "VITRINE_MODEL_PATH": str(pair.model),
        "VITRINE_MMPROJ_PATH": str(pair.mmproj),
        "VITRINE_HANDLER": pair.handler,
        "VITRINE_N_CTX": "4096",
    }
    worker_env.pop("VITRINE_METRICS_PORT", None)
    worker = subprocess.run(
        [*wrapper, "inference"],
        capture_output=True,
        text=True,
        env=worker_env,
        timeout=300,
        check=False,
    )
    assert worker.returncode == 2, (worker.returncode, worker.stderr[-2000:])
    lines = [
        json.loads(line)
        for line in (worker.stdout + worker.stderr).splitlines()
        if line.startswith("{")
    ]
    cannot = [line for line in lines if line.get("event") == "worker.cannot_start"]
    assert cannot and "crashed (SIGSEGV)" in cannot[0]["error"], lines[-3:]
    assert "VITRINE_CPU_REPACK" in cannot[0]["error"]


# -- portable repacking: the weights x86 CPU_REPACK has a kernel for, pinned by name -------------


def test_only_blk_matrices_of_a_type_with_an_x86_kernel_and_whole_row_groups_are_pinned() -> None:
    """ggml's CPU_REPACK asserts a layout exists for every tensor it is given, so a Q6_K weight,
    the token embedding (read by get_rows too) or rows not a multiple of 8 must stay out."""
    weights = [
        WeightInfo("blk.0.attn_output.weight", "Q4_K", (1024, 640)),
        WeightInfo("blk.0.ffn_down.weight", "Q6_K", (2048, 640)),
        WeightInfo("blk.0.attn_q.weight", "Q4_0", (640, 1020)),  # 1020 rows: not 8-aligned
        WeightInfo("blk.1.ffn_up.weight", "IQ4_NL", (640, 2048)),
        WeightInfo("blk.1.ffn_gate.weight", "Q2_K", (640, 2048)),
        WeightInfo("blk.1.attn_norm.weight", "Q4_0", (640,)),
        WeightInfo("token_embd.weight", "Q4_0", (640, 262144)),
    ]
    avx2 = repackable(weights, {"AVX2": "1"})
    assert avx2 == ["blk.0.attn_output.weight", "blk.1.ffn_up.weight"]
    avx512 = repackable(weights, {"AVX2": "1", "AVX512": "1"})
    assert avx512 == [*avx2, "blk.1.ffn_gate.weight"]
    assert repackable(weights, {}) == []  # no AVX2 in the build: no x86 kernel at all
    pattern = re.compile(pattern_for(avx2))
    assert pattern.search("blk.0.attn_output.weight")
    assert not pattern.search("blk.10.attn_output.weight")  # anchored, dots escaped
    assert not pattern.search("blk.0.attn_output.weight.extra")


def test_the_build_offers_the_portable_repack_buffer() -> None:
    """The ctypes walk over ggml's registry finds CPU_REPACK in a build with the x86 kernels
    (every AVX2 build bootstrap makes); its absence would make ``portable`` the plain path."""
    if build_features().get("AVX2") != "1":
        pytest.skip("no AVX2 in this build: no x86 repack kernels to find")
    assert cpu_repack_buft()
