"""How many cards the engine generates at once, and whether their KV cache fits.

Each slot of the batched engine (``slots.py``) owns ``n_ctx`` tokens of KV cache, so the context
holds ``slots x n_ctx`` of them.  llama.cpp allocates that at start-up; asking for more than the
machine has either fails with a bare "Failed to create llama_context" or, on a CPU with
overcommit, succeeds and is killed later by the OOM killer mid-batch.  So the size is estimated
from the model's own metadata first, and a start-up error names the settings to change.

The ``auto`` choice comes from measurements (``bench/batch_bench.py``): on 2 CPU cores the real
Gemma 3 270M decodes 3.2x the tokens per second with 8 sequences per step than with 1, and
4.25x with 16, while each card then takes 16/4.25 = 3.8x longer: 8 is where throughput has most
of its gain and latency stays within 2.5x.  On a GPU, llama.cpp's batched-bench shows the rate
still climbing at 32 sequences; 16 is the default there (not measured here: no GPU was lent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from services.inference.card.errors import ModelLoadError

log = logging.getLogger("vitrine.inference")

CPU_SLOTS = 8
GPU_SLOTS = 16


def choose_slots(
    setting: int | str, *, grammar_backend: str, n_gpu_layers: int, gpu: bool | None = None
) -> tuple[int, str]:
    """The number of slots and why (for the start-up log line)."""
    if grammar_backend != "llguidance":
        if isinstance(setting, int) and setting > 1:
            raise ModelLoadError(
                f"VITRINE_ENGINE_PARALLEL={setting} needs the llguidance backend; "
                f"VITRINE_GRAMMAR_BACKEND={grammar_backend} generates one card at a time"
            )
        return 1, f"{grammar_backend} backend: one card at a time"
    if isinstance(setting, int):
        return setting, "VITRINE_ENGINE_PARALLEL"
    if gpu is None:
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
    if gpu and n_gpu_layers != 0:
        return GPU_SLOTS, "auto: model on a GPU"
    return CPU_SLOTS, "auto: model on the CPU"


@dataclass(frozen=True)
class KvShape:
    layers: int
    kv_heads: int
    key_length: int
    value_length: int

    def bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """K and V of every layer for one token (f16 cache: llama.cpp's default)."""
        return self.layers * self.kv_heads * (self.key_length + self.value_length) * bytes_per_value


def kv_shape(model: Path) -> KvShape | None:
    """The attention shape from the GGUF header (a memory map: no weights are read); ``None``
    for a file that is no GGUF (llama.cpp's own load then says what is wrong with it)."""
    import gguf

    try:
        reader = gguf.GGUFReader(model)
    except (ValueError, OSError, IndexError) as exc:
        log.debug("kv_shape.unreadable", extra={"model": str(model), "error": str(exc)})
        return None

    def value(key: str) -> int | None:
        found = reader.get_field(key)
        if found is None:
            return None
        contents = found.contents()
        if isinstance(contents, list):  # per-layer head counts: the largest bounds the cache
            return int(max(contents))
        return int(contents)

    arch_field = reader.get_field("general.architecture")
    arch = str(arch_field.contents()) if arch_field is not None else ""
    layers = value(f"{arch}.block_count") or 0
    heads = value(f"{arch}.attention.head_count") or 1
    kv_heads = value(f"{arch}.attention.head_count_kv") or heads
    embd = value(f"{arch}.embedding_length") or 0
    head = embd // heads if heads else 0
    return KvShape(
        layers,
        kv_heads,
        value(f"{arch}.attention.key_length") or head,
        value(f"{arch}.attention.value_length") or head,
    )


def available_memory() -> int | None:
    """Bytes this process can still get: MemAvailable, bounded by a cgroup v2 limit."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_kv_fits(
    model: Path,
    slots: int,
    n_ctx: int,
    *,
    on_gpu: bool,
    available: int | None = None,
    shared_prefix: bool = False,
) -> int:
    """The KV cache's size in bytes (an upper bound: sliding-window layers keep less); raises
    ``ModelLoadError`` when it does not fit in the memory the CPU has left.  On a GPU the cache
    lives in VRAM, which llama.cpp checks itself (see :func:`context_error`).  The shared
    prefix's sequence takes one slot's share more."""
    shape = kv_shape(model)
    sequences = slots + (1 if shared_prefix else 0)
    need = shape.bytes_per_token() * sequences * n_ctx if shape is not None else 0
    if on_gpu or not need:
        return need
    available = available_memory() if available is None else available
    if available is not None and need > available:
        raise ModelLoadError(
            f"{slots} slots{' and the shared prefix' if shared_prefix else ''} x {n_ctx} "
            f"tokens need {_gib(need)} of KV cache, and "
            f"{_gib(available)} of memory is available; lower VITRINE_ENGINE_PARALLEL or "
            "VITRINE_N_CTX"
        )
    return need


def context_error(exc: Exception, slots: int, n_ctx: int, need: int) -> ModelLoadError:
    """llama.cpp could not allocate the context: say which settings size it."""
    return ModelLoadError(
        f"llama.cpp could not create a context for {slots} slots x {n_ctx} tokens "
        f"({_gib(need)} of KV cache at most): {exc}; lower VITRINE_ENGINE_PARALLEL or "
        "VITRINE_N_CTX"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
