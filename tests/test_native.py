"""The llama.cpp build on this machine: the repack choice and the start-up self-test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tiny_models
from conftest import load_engine
from services.inference.errors import ModelLoadError
from services.inference.native import build_features, choose_repack
from tiny_models import TextDims, TinyPair


def test_auto_turns_repacking_off_only_where_the_build_has_amx_kernels() -> None:
    assert choose_repack("auto", {"AVX2": "1", "REPACK": "1"}).enabled is True
    amx = choose_repack("auto", {"AVX512": "1", "AMX_INT8": "1"})
    assert amx.enabled is False and "AMX" in amx.reason
    assert choose_repack("on", {"AMX_INT8": "1"}).enabled is True
    assert choose_repack("off", {}).enabled is False


def test_the_build_features_are_read_from_llama_cpp() -> None:
    features = build_features()
    assert features, "llama_print_system_info gave nothing"
    assert all(value in {"0", "1"} or value for value in features.values())
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
