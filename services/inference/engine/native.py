"""The llama.cpp build on this machine: whether to repack weights, and proof that it decodes.

Why this exists: on a CPU with AMX (Intel Sapphire Rapids and later), a native llama.cpp build
compiles its AMX kernels and, by default, repacks every weight that has an AMX kernel (Q4_0,
Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS, F16, with aligned shapes) into an "AMX" extra buffer.  On
such a machine the real Gemma 3 270M Q4_K_M crashed with a segmentation fault at the first
``llama_decode`` after ``amx repack tensor blk.N.attn_output.weight of type q4_K``, and loaded
fine with ``use_extra_bufts = false``.  The same signature (a fault in
``ggml_backend_amx_mul_mat`` on the first decode after the AMX repack, machine-dependent,
Q4_K_M models) is reported upstream for llama.cpp and for Ollama on virtualised Sapphire and
Granite Rapids hosts, and is not fixed in the vendored llama.cpp.  f32 weights never qualify for
those kernels, which is why random f32 test models could not see it.

So ``cpu_repack=auto`` keeps the extra buffers (the portable AVX2/AVX-512 ``CPU_REPACK`` path)
except where the build reports ``AMX_INT8``: there only the weights ``CPU_REPACK`` has a kernel
for are pinned to it by name (``portable``, ``repack.py``) and the AMX buffer is never used;
``on``/``portable``/``off`` force a choice.  Whatever the choice, the
engine decodes a few tokens at start-up (:func:`self_test`) so that a build that cannot run the
model fails there, with the setting to change, rather than on the first job (where each job would
kill the worker and end up parked as poison).
"""

from __future__ import annotations

import faulthandler
import logging
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import llama_cpp
import numpy as np
from llama_cpp import Llama

from services.inference.card.errors import ModelLoadError
from services.inference.engine.repack import BuftOverrides, portable_overrides
from services.inference.settings import CpuRepack

log = logging.getLogger("vitrine.inference")

T = TypeVar("T")

NATIVE_THREAD = "vitrine-llama"
_NATIVE = ThreadPoolExecutor(max_workers=1, thread_name_prefix=NATIVE_THREAD)


def on_native_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on the process's one llama.cpp thread and wait for its result.

    Why one thread: this llama.cpp build computes with OpenMP, and libgomp keeps a team of
    worker threads for *each* thread that ever starts a parallel region.  Decodes from several
    threads (the loader, the self-test, each job's thread) leave more OpenMP threads than cores,
    and libgomp then throttles their spin-wait to 1 000 turns: each of a decode's many barriers
    sleeps and wakes through the kernel.  Measured on 2 cores with Gemma 3 270M (4 sequences per
    step): 40-47 ms per step with every decode on one thread, 49-68 ms once the self-test had run
    on another.  So model load, self-test, prefill and every decode of every engine in the
    process run here, in the order they were asked for.
    """
    if threading.current_thread().name.startswith(NATIVE_THREAD):
        return fn(*args, **kwargs)  # already there (an engine built inside a native call)
    return _NATIVE.submit(fn, *args, **kwargs).result()


def submit_native(fn: Callable[[], None]) -> Future[None]:
    """Queue ``fn`` on the llama.cpp thread without waiting (the batched engine's steps)."""
    return _NATIVE.submit(fn)


SELF_TEST_PROMPT = "Caneca de cerâmica azul"
SELF_TEST_TOKENS = 4
"""Greedy tokens decoded one at a time after the prompt: the path every card takes."""


def build_features() -> dict[str, str]:
    """CPU features the llama.cpp build was compiled with (``llama_print_system_info``)."""
    text = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    features: dict[str, str] = {}
    for part in text.replace("|", "\n").splitlines():
        name, sep, value = part.partition("=")
        if sep:
            features[name.strip().rsplit(" ", 1)[-1]] = value.strip()
    return features


@dataclass(frozen=True)
class RepackChoice:
    enabled: bool
    """Some weights are repacked."""
    reason: str
    portable: bool = False
    """Only into the portable ``CPU_REPACK`` buffer, tensor by tensor (``repack.py``), never
    into the AMX one."""

    @property
    def use_extra_bufts(self) -> bool:
        """Every extra buffer type may take weights (AMX included where the build has it)."""
        return self.enabled and not self.portable

    @property
    def label(self) -> str:
        return "portable" if self.portable else ("on" if self.enabled else "off")


def choose_repack(setting: CpuRepack, features: dict[str, str] | None = None) -> RepackChoice:
    """Whether llama.cpp may repack weights into its extra CPU buffer types."""
    if setting == "on":
        return RepackChoice(True, "VITRINE_CPU_REPACK=on")
    if setting == "off":
        return RepackChoice(False, "VITRINE_CPU_REPACK=off")
    if setting == "portable":
        return RepackChoice(True, "VITRINE_CPU_REPACK=portable", portable=True)
    features = build_features() if features is None else features
    if features.get("AMX_INT8") == "1":
        return RepackChoice(
            True,
            "auto: this build has AMX kernels, which crash on quantized models, so only the "
            "portable CPU_REPACK kernels",
            portable=True,
        )
    return RepackChoice(True, "auto: no AMX kernels in this build")


def self_test(llm: Llama, repack: RepackChoice) -> None:
    """Decode a short prompt and a few tokens; raise ``ModelLoadError`` if the build cannot.

    A native crash cannot be caught, so the attempt is announced first and ``faulthandler``
    prints the Python stack if it dies: the last lines of the log then say it was the
    self-test, and which setting to change.
    """
    advice = (
        "set VITRINE_CPU_REPACK=off" if repack.enabled else "rebuild llama-cpp-python for this CPU"
    )
    log.info(
        "engine.self_test",
        extra={
            "cpu_repack": repack.enabled,
            "cpu_repack_reason": repack.reason,
            "note": f"decoding {SELF_TEST_TOKENS} tokens; if the process dies here, {advice}",
        },
    )
    if not faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr)
    tokens = llm.tokenize(SELF_TEST_PROMPT.encode(), add_bos=True, special=False)
    n_vocab = llm.n_vocab()
    ctx = llm._ctx.ctx
    try:
        llm.reset()
        llm._ctx.kv_cache_clear()
        step = tokens
        for _ in range(SELF_TEST_TOKENS + 1):
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=step, n_past=n_past, logits_all=False)
            llm._ctx.decode(llm._batch)
            llm.n_tokens += len(step)
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)
            )
            if not np.isfinite(logits).all():
                raise ModelLoadError(
                    f"self-test: llama.cpp produced non-finite logits for {llm.model_path} "
                    f"(cpu_repack={repack.label}, {repack.reason}); "
                    f"{advice}"
                )
            if float(logits.max() - logits.min()) == 0.0:
                raise ModelLoadError(
                    f"self-test: llama.cpp produced constant logits for {llm.model_path}; {advice}"
                )
            step = [int(logits.argmax())]
    except RuntimeError as exc:  # llama_decode returned an error code
        raise ModelLoadError(f"self-test: llama.cpp cannot decode with this model: {exc}") from exc
    finally:
        llm.reset()
        llm._ctx.kv_cache_clear()


class RepackableLlama(Llama):
    """A ``Llama`` that takes llama.cpp parameters ``Llama`` does not: ``use_extra_bufts``
    (CPU weight repacking) and, with ``portable_repack``, ``tensor_buft_overrides`` pinning the
    repackable weights to ``CPU_REPACK`` (``repack.py``), set on the model parameters; and
    ``sequences`` (``n_seq_max``, for the batched engine, with a KV cache split per sequence:
    ``kv_unified`` off, each sequence getting ``n_ctx / sequences`` cells), set on the context
    parameters.  All are applied as ``Llama.__init__`` assigns the parameters, before the model
    and context are created."""

    def __init__(
        self,
        *args: Any,
        use_extra_bufts: bool,
        portable_repack: bool = False,
        sequences: int = 1,
        **kwargs: Any,
    ) -> None:
        self._use_extra_bufts = use_extra_bufts
        self._sequences = sequences
        self.buft_overrides: BuftOverrides | None = None
        offloads = kwargs.get("n_gpu_layers", 0) != 0 and llama_cpp.llama_supports_gpu_offload()
        if portable_repack and not offloads:  # pinned to CPU, a weight would not go to the GPU
            model_path = kwargs["model_path"] if "model_path" in kwargs else args[0]
            self.buft_overrides = portable_overrides(str(model_path), build_features())
        super().__init__(*args, **kwargs)

    @property
    def context_params(self) -> Any:
        return self._context_params

    @context_params.setter
    def context_params(self, params: Any) -> None:
        if self._sequences > 1:
            params.n_seq_max = self._sequences
            params.kv_unified = False
        self._context_params = params

    @property
    def model_params(self) -> Any:
        return self._model_params

    @model_params.setter
    def model_params(self, params: Any) -> None:
        params.use_extra_bufts = self._use_extra_bufts
        if self.buft_overrides is not None:
            params.tensor_buft_overrides = self.buft_overrides.address
        self._model_params = params
