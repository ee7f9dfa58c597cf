"""What the start-up self-test in a child process adds to an engine's start.

    python bench/self_test_bench.py [--rounds 3]            the test suite's real pair
    python bench/self_test_bench.py --model M.gguf --mmproj P.gguf --handler llava15

Loads the engine (llguidance off: the grammar's compile time is not what is measured) in three
ways, interleaved round by round so that the page cache and other load hit all alike:

- ``never``: the self-test only in this process (what every start did before): the baseline;
- ``always``: the same load and self-test first in a child process, at every start;
- ``auto``: with repacking on, the child's pass remembered for this build, CPU and model (every
  start after the first on a machine); with repacking off, known safe: no child.

The repacking setting is the ``auto`` rule's for this CPU (off on AMX builds, where ``on``
crashes: forced on, the ``always`` rows would end in the crash error they exist to report).
Reports each mode's median start time and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from services.inference.engine.card_engine import CardEngine  # noqa: E402
from services.inference.engine.model_files import resolve  # noqa: E402
from services.inference.engine.native import build_features, choose_repack  # noqa: E402
from services.inference.settings import EngineSettings  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def start(model: Path, mmproj: Path, handler: str, isolation: str, repack: str) -> float:
    settings = EngineSettings(
        model_path=model,
        mmproj_path=mmproj,
        handler=handler,  # type: ignore[arg-type]
        grammar_backend="none",
        cpu_repack=repack,  # type: ignore[arg-type]
        self_test_isolation=isolation,  # type: ignore[arg-type]
        n_ctx=4096,
        engine_parallel=1,
    )
    began = time.perf_counter()
    engine = CardEngine(resolve(settings), settings)
    seconds = time.perf_counter() - began
    if isolation != "never":
        expected = isolation == "always"
        assert engine.probe.ran is expected, (isolation, engine.probe)
    engine.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--handler", default="llava15")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.model is None:
        from tests.support.tiny_models import real_pair

        pair = real_pair(Path(tempfile.mkdtemp(prefix="vitrine-selftest-bench-")))["llava"]
        model, mmproj, handler = pair.model, pair.mmproj, pair.handler
    else:
        model, mmproj, handler = args.model, args.mmproj, args.handler
    repack = "on" if choose_repack("auto").enabled else "off"
    cache = tempfile.mkdtemp(prefix="vitrine-selftest-cache-")
    os.environ["VITRINE_CACHE_DIR"] = cache  # verdicts of this run only
    start(model, mmproj, handler, "always", repack)  # warm the page cache; cache the pass
    times: dict[str, list[float]] = {"never": [], "always": [], "auto": []}
    for _ in range(args.rounds):
        for mode in times:
            times[mode].append(start(model, mmproj, handler, mode, repack))
    base = statistics.median(times["never"])
    amx = build_features().get("AMX_INT8") == "1"
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores, AMX kernels in the build: {amx})")
    print(f"model: {model.name}, cpu_repack={repack} (the auto rule), rounds: {args.rounds}")
    print()
    print("| start | median s | min s | ratio to never |")
    print("|---|---|---|---|")
    auto = "auto, cached pass" if repack == "on" else "auto (repacking off: known safe)"
    labels = {"never": "never (baseline)", "always": "always (child)", "auto": auto}
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"| {labels[mode]} | {median:.2f} | {min(values):.2f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
