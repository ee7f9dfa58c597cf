"""Repacked weights without the AMX kernels: llama.cpp's portable ``CPU_REPACK`` buffer, asked
for tensor by tensor.

Why: on a build with AMX kernels, ``use_extra_bufts`` lets llama.cpp put every weight the AMX
buffer type accepts into it, and those kernels crashed on real quantized models (``native.py``).
Turning extra buffers off also loses the x86 ``CPU_REPACK`` kernels (interleaved Q4_0/Q4_K/IQ4_NL
rows for AVX2/AVX-512), which AMD machines and AMX-less builds use by default.  llama.cpp's
``tensor_buft_overrides`` can name a buffer type per tensor, so the weights that have an x86
repack kernel are pinned to ``CPU_REPACK`` by name and the AMX buffer is never asked.  Measured
on an Intel Xeon with AMX: the same tokens as an AMX-less build with repacking on, no crash
(``bench/repack_bench.py``; numbers in docs/benchmarks.md).

Only tensors the kernel takes may be pinned: ``CPU_REPACK``'s ``set_tensor`` asserts that a
repack layout exists for the tensor, so a Q6_K weight sent there aborts the load.  The rules
below are ggml's ``ggml_repack_get_optimal_repack_type`` for x86 (``ggml-cpu/repack.cpp``), and
only ``blk.*`` matrices are pinned: the token embedding is read by ``get_rows`` too, which the
repacked layout does not serve.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import llama_cpp

log = logging.getLogger("vitrine.inference")

AVX2_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})
"""Weight types with an x86 repack kernel where the build has AVX2 (rows a multiple of 8)."""
AVX512_TYPES = frozenset({"Q2_K"})
"""... and where it has AVX-512."""
ROW_MULTIPLE = 8

BUFT_NAME = "CPU_REPACK"
_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU


@dataclass(frozen=True)
class WeightInfo:
    name: str
    type_name: str
    shape: tuple[int, ...]
    """ggml order: ``shape[1]`` is ``ne[1]``, the rows the kernel interleaves."""


def repackable(weights: Iterable[WeightInfo], features: dict[str, str]) -> list[str]:
    """Names of the weights x86 ``CPU_REPACK`` has a kernel for in a build with ``features``."""
    types: set[str] = set()
    if features.get("AVX2") == "1":
        types |= AVX2_TYPES
    if features.get("AVX512") == "1":
        types |= AVX512_TYPES
    return [
        w.name
        for w in weights
        if w.name.startswith("blk.")
        and w.type_name in types
        and len(w.shape) == 2
        and w.shape[1] % ROW_MULTIPLE == 0
    ]


def read_weights(model_path: str) -> list[WeightInfo]:
    """The model's tensors as the GGUF header lists them (no weight data is read)."""
    import gguf  # only where the setting asks for it: the reader is slow to import

    reader = gguf.GGUFReader(model_path)
    return [
        WeightInfo(t.name, t.tensor_type.name, tuple(int(n) for n in t.shape))
        for t in reader.tensors
    ]


def pattern_for(names: list[str]) -> str:
    """One anchored regex naming exactly these tensors (llama.cpp matches with regex_search)."""
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def _lib(name: str) -> ctypes.CDLL:
    folder = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    return ctypes.CDLL(os.path.join(folder, name))


def cpu_repack_buft() -> int | None:
    """The CPU device's ``CPU_REPACK`` buffer type, from ggml's public registry API; None if
    this build has none (a build without the repack kernels)."""
    ggml, base = _lib("libggml.so.0"), _lib("libggml-base.so.0")
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    device = ggml.ggml_backend_dev_by_type(_CPU_DEVICE)
    if not device:
        return None
    registry = base.ggml_backend_dev_backend_reg(device)
    address = base.ggml_backend_reg_get_proc_address(registry, b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return None
    extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(device)
    i = 0
    while extra[i]:
        if base.ggml_backend_buft_name(extra[i]) == BUFT_NAME.encode():
            return int(extra[i])
        i += 1
    return None


class _Override(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


class BuftOverrides:
    """A NULL-terminated ``llama_model_tensor_buft_override`` array that outlives the load
    (llama.cpp reads it while loading; the pattern's bytes are kept here)."""

    def __init__(self, pattern: str, buft: int, count: int) -> None:
        self.count = count
        self._pattern = pattern.encode()
        self._array = (_Override * 2)()
        self._array[0].pattern = self._pattern
        self._array[0].buft = buft

    @property
    def address(self) -> int:
        return ctypes.addressof(self._array)


def portable_overrides(model_path: str, features: dict[str, str]) -> BuftOverrides | None:
    """Pin the model's repackable weights to ``CPU_REPACK``; None when none qualify or the
    build has no such buffer (the load is then the plain CPU path)."""
    names = repackable(read_weights(model_path), features)
    buft = cpu_repack_buft() if names else None
    log.info(
        "engine.repack_portable",
        extra={"model": os.path.basename(model_path), "tensors": len(names), "buffer": bool(buft)},
    )
    if not names or buft is None:
        return None
    return BuftOverrides(pattern_for(names), buft, len(names))
