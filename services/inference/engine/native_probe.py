"""The start-up self-test in a child process, where a native crash is a result, not a death.

Why: the self-test (``native.self_test``) exists to fail at start rather than on a job, but a
crashing kernel does not raise, it kills the process running it.  On an Intel Xeon with AMX,
``VITRINE_CPU_REPACK=on`` made ``vitrine card`` die with exit 139 during load, before it could
print a word of its own, and took a whole pytest run with it.  So before the engine loads a model
in its own process, the same load and the same self-test run in a child; a child that dies of a
signal becomes a ``NativeCrash``: a settings error naming the setting, the CPU feature and what
to do, with exit code 2 from ``vitrine card`` and the worker.

When (``VITRINE_SELF_TEST_ISOLATION``):

- ``auto`` (default): in a child only when the decision is not already known safe.  Known safe
  is the plain CPU path (repacking off), which every card on both CPU kinds we run on has taken,
  or a combination a child already proved on this machine: the verdict is cached per
  llama-cpp-python build (version, library file, compiled features), CPU (its flags), model file
  (path, size, mtime) and the load settings that choose kernels (repacking, GPU layers).  Only a
  pass is cached: a crash is probed again at the next start, so a fixed build is noticed.
- ``always``: in a child at every start (a new build flag, an unknown CPU), cache ignored.
- ``never``: in the process itself (a crash then kills it, as before).

The child loads only the text model, on a small context of one sequence, with the parameters
that choose the kernels; the image encoder is not part of the self-test (it never was).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import llama_cpp

from services.inference.card.errors import ModelLoadError
from services.inference.engine.native import RepackChoice, build_features
from services.inference.settings import SelfTestIsolation

log = logging.getLogger("vitrine.inference")

CHILD_ARGS: tuple[str, ...] = ("-m", "services.inference.engine.native_probe")
"""What the child runs, after the interpreter and before the spec.  The crash tests point this
at a wrapper that dies on purpose (``tests/support/crashing_self_test.py``), as
``tests/support/fault_services.py`` does for the services."""

CHILD_TIMEOUT_S = 600.0
"""Loading a large model from a cold disk takes minutes; a child past this is a hang."""

CHILD_N_CTX = 512
"""The self-test decodes a dozen tokens; the kernels do not depend on the context's size."""

STDERR_TAIL = 20


class NativeCrash(ModelLoadError):
    """The llama.cpp build died (a signal, not an error code) loading or self-testing the model
    with these settings: a settings problem, reported before the process that would have died
    loads anything."""


@dataclass(frozen=True)
class ProbeSpec:
    """What the child loads: the parameters that choose which native kernels run."""

    model: str
    use_extra_bufts: bool
    n_gpu_layers: int
    n_threads: int
    portable_repack: bool = False


@dataclass(frozen=True)
class ProbeResult:
    ran: bool
    """False: the decision was known safe or cached; nothing was started."""
    seconds: float = 0.0
    reason: str = ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them (``flags`` on x86, ``Features`` on
    ARM); empty where there is no ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                name, sep, value = line.partition(":")
                if sep and name.strip() in {"flags", "Features"}:
                    return set(value.split())
    except OSError:
        pass
    return set()


def _library_identity() -> str:
    """The llama.cpp libraries this process loads: a rebuilt wheel of the same version is
    another build."""
    lib = Path(llama_cpp.__file__).parent / "lib"
    parts = [llama_cpp.__version__]
    for path in sorted(lib.glob("*.so*")) if lib.is_dir() else []:
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def cache_key(spec: ProbeSpec) -> str:
    model = Path(spec.model).resolve()
    stat = model.stat()
    features = build_features()
    ingredients = [
        _library_identity(),
        json.dumps(features, sort_keys=True),
        " ".join(sorted(cpu_flags())),
        f"{model}:{stat.st_size}:{stat.st_mtime_ns}",
        f"extra_bufts={spec.use_extra_bufts}",
        f"portable_repack={spec.portable_repack}",
        f"n_gpu_layers={spec.n_gpu_layers}",
    ]
    return hashlib.sha256("\n".join(ingredients).encode()).hexdigest()[:32]


def cache_dir() -> Path:
    root = Path(os.environ.get("VITRINE_CACHE_DIR", Path.home() / ".cache" / "vitrine"))
    return root / "self-test"


def _cached_pass(key: str) -> bool:
    return (cache_dir() / f"{key}.json").is_file()


def _remember_pass(key: str, spec: ProbeSpec, seconds: float) -> None:
    """Best effort: a read-only cache (a container without a volume) costs a probe per start."""
    record = {**asdict(spec), "passed_at": time.time(), "seconds": round(seconds, 3)}
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{key}.json.{os.getpid()}"
        part.write_text(json.dumps(record) + "\n", encoding="utf-8")
        part.replace(folder / f"{key}.json")
    except OSError as exc:
        log.warning("engine.self_test_cache_unwritable", extra={"error": str(exc)})


def needs_child(isolation: SelfTestIsolation, repack: RepackChoice) -> bool:
    """Whether this start's load is not known safe (before the cache is asked)."""
    if isolation == "never":
        return False
    if isolation == "always":
        return True
    return repack.enabled


def crash_advice(
    spec: ProbeSpec,
    repack: RepackChoice,
    signum: int,
    features: dict[str, str] | None = None,
    flags: set[str] | None = None,
) -> str:
    """The message of a crash: the setting, the CPU feature, what to do."""
    name = _signal_name(signum)
    model = Path(spec.model).name
    if signum == signal.SIGKILL:  # not a kernel's fault: the OOM killer, or a person
        return (
            f"the start-up self-test of {model} was killed ({name}) while loading it, as the "
            "OOM killer does when the model does not fit in memory: free memory or choose a "
            "smaller quantization"
        )
    features = build_features() if features is None else features
    flags = cpu_flags() if flags is None else flags
    if repack.portable:
        why = "the portable CPU_REPACK kernels crash this build on this CPU with this model"
        fix = "set VITRINE_CPU_REPACK=off"
    elif repack.enabled:
        if features.get("AMX_INT8") == "1" or "amx_int8" in flags:
            why = (
                "this CPU has AMX (amx_int8) and this llama.cpp build repacks quantized weights "
                "into its AMX kernels, which crash on such models"
            )
            fix = (
                "set VITRINE_CPU_REPACK=auto (on AMX builds it repacks only into the portable "
                "CPU_REPACK kernels) or off"
            )
        else:
            simd = ", ".join(
                f for f in ("avx512f", "avx512_vnni", "avx2", "asimd", "sve") if f in flags
            )
            why = f"repacked weights crash this build's kernels on this CPU ({simd or 'no SIMD'})"
            fix = "set VITRINE_CPU_REPACK=off"
    else:
        why = "the build's plain CPU kernels crash on this CPU with this model"
        fix = (
            "rebuild llama-cpp-python on this machine (scripts/bootstrap.sh builds it for the "
            "CPU it runs on) or use another model file"
        )
    return (
        f"llama.cpp crashed ({name}) loading and self-testing {model} with "
        f"{repack.reason} (cpu_repack={repack.label}): {why}; {fix}"
    )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def isolated_self_test(
    spec: ProbeSpec, repack: RepackChoice, isolation: SelfTestIsolation
) -> ProbeResult:
    """Run the load + self-test in a child first where it may crash; raise ``NativeCrash`` if
    the child died of a signal.

    A child that fails without a signal (an error the self-test reports, a bad file) proves
    nothing either way: the engine's own load then reports it, typed, in this process."""
    if not needs_child(isolation, repack):
        return ProbeResult(False, reason="known safe: the plain CPU path")
    key = cache_key(spec)
    if isolation == "auto" and _cached_pass(key):
        return ProbeResult(False, reason="passed before with this build, CPU and model")
    started = time.perf_counter()
    log.info(
        "engine.self_test_isolated",
        extra={"model": spec.model, "cpu_repack": repack.enabled, "reason": repack.reason},
    )
    try:
        child = subprocess.run(
            [sys.executable, *CHILD_ARGS, json.dumps(asdict(spec))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(
            f"the start-up self-test of {Path(spec.model).name} did not finish in "
            f"{CHILD_TIMEOUT_S:g}s ({repack.reason}); set VITRINE_SELF_TEST_ISOLATION=never "
            "to run it in the process itself"
        ) from exc
    seconds = time.perf_counter() - started
    tail = child.stderr.decode("utf-8", errors="replace").strip().splitlines()[-STDERR_TAIL:]
    if child.returncode < 0:
        message = crash_advice(spec, repack, -child.returncode)
        # info: the error itself is reported once, by whoever catches it (the worker's
        # worker.cannot_start, vitrine's one error line); this line keeps the child's last words
        log.info(
            "engine.self_test_crashed",
            extra={"signal": _signal_name(-child.returncode), "stderr_tail": tail},
        )
        raise NativeCrash(message)
    if child.returncode == 0:
        _remember_pass(key, spec, seconds)
        return ProbeResult(True, seconds, "passed in a child process")
    log.warning(
        "engine.self_test_child_failed",
        extra={"returncode": child.returncode, "stderr_tail": tail},
    )
    return ProbeResult(True, seconds, f"the child failed with exit {child.returncode}")


def run_child(spec: ProbeSpec) -> None:
    """The child's whole job: the engine's load parameters, then its self-test."""
    from services.inference.engine.native import RepackableLlama, self_test

    llm = RepackableLlama(
        model_path=spec.model,
        n_ctx=CHILD_N_CTX,
        n_gpu_layers=spec.n_gpu_layers,
        n_threads=spec.n_threads,
        n_threads_batch=spec.n_threads,
        verbose=False,
        use_extra_bufts=spec.use_extra_bufts,
        portable_repack=spec.portable_repack,
    )
    try:
        repacked = spec.use_extra_bufts or spec.portable_repack
        reason = "child" if repacked else "child (repacking off)"
        self_test(llm, RepackChoice(repacked, reason, portable=spec.portable_repack))
    finally:
        llm.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = ProbeSpec(**json.loads(args[0]))
    try:
        run_child(spec)
    except ModelLoadError as exc:
        print(f"self-test failed: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
