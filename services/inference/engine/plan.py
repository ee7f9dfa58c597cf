"""What an engine will load, decided before anything is loaded.

Every choice that sizes the load (weight repacking, slots, context, KV cache, GPU layers,
threads) is made here from the settings, the files and the build's capability flags, so that a
refusal (a KV cache that cannot fit, slots the backend cannot batch) comes before gigabytes are
mapped, and so that the opener (``opener.py``) has one immutable answer to build from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import llama_cpp

from services.inference.engine.capacity import check_kv_fits, choose_slots
from services.inference.engine.model_files import ModelFiles
from services.inference.engine.native import RepackChoice, choose_repack
from services.inference.engine.native_probe import ProbeSpec
from services.inference.settings import EngineSettings


@dataclass(frozen=True)
class LoadPlan:
    files: ModelFiles
    repack: RepackChoice
    n_gpu_layers: int
    parallel: int
    """Slots: generations decoded together in one context (``slots.py``)."""
    parallel_reason: str
    shared_prefix: bool
    """A sequence of the context holds the prompt's shared prefix (``prompt_cache.py``)."""
    n_ctx: int
    """One generation's context: a slot's share of the KV cache."""
    kv_bytes: int
    """The KV cache's size at most, for the error that says which settings size it."""
    n_threads: int

    @property
    def sequences(self) -> int:
        """Sequences of the context: the slots, and the shared prefix's."""
        return self.parallel + (1 if self.shared_prefix else 0)

    @property
    def batched(self) -> bool:
        """Generations go through the batched engine (``slots.py``), even with one slot when
        the prefix is shared; else through llama-cpp-python's one-at-a-time path."""
        return self.parallel > 1 or self.shared_prefix

    @property
    def probe_spec(self) -> ProbeSpec:
        """The parameters that choose the native kernels, for the isolated self-test."""
        return ProbeSpec(
            str(self.files.model),
            self.repack.use_extra_bufts,
            self.n_gpu_layers,
            self.n_threads,
            portable_repack=self.repack.portable,
        )


def plan_load(files: ModelFiles, settings: EngineSettings) -> LoadPlan:
    """Decide the load; raises ``ModelLoadError`` for slots or a KV cache that cannot be had."""
    repack = choose_repack(settings.cpu_repack)
    preset = files.preset
    n_gpu_layers = (
        settings.n_gpu_layers
        if settings.n_gpu_layers is not None
        else (preset.n_gpu_layers if preset else -1)
    )
    parallel, parallel_reason = choose_slots(
        settings.engine_parallel,
        grammar_backend=settings.grammar_backend,
        n_gpu_layers=n_gpu_layers,
    )
    n_ctx = settings.n_ctx or (preset.n_ctx if preset else 4096)
    shared = settings.shared_prefix and settings.grammar_backend == "llguidance"
    on_gpu = n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
    return LoadPlan(
        files=files,
        repack=repack,
        n_gpu_layers=n_gpu_layers,
        parallel=parallel,
        parallel_reason=parallel_reason,
        shared_prefix=shared,
        n_ctx=n_ctx,
        kv_bytes=check_kv_fits(files.model, parallel, n_ctx, on_gpu=on_gpu, shared_prefix=shared),
        n_threads=settings.n_threads or os.cpu_count() or 1,
    )
