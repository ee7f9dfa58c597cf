"""What importing a service's entry module costs: wall time, peak RSS, native packages loaded.

    python bench/import_bench.py [--rounds 7]
    python bench/import_bench.py --baseline /path/to/old-checkout:services.inference.worker

Each import runs in a fresh interpreter (``python -c``), rounds interleaved so that the page
cache and other load hit every row alike; reported as medians.  The default rows: the inference
worker's entry module (``services.inference.worker.service``), which must not load llama.cpp
(``tests/unit/test_layers.py``), against the engine module it builds at start-up
(``services.inference.engine.card_engine``), which does.  ``--baseline DIR:MODULE`` adds a row
for another checkout (e.g. a clone of the commit before the layers, where the worker was
``services.inference.worker`` and imported the engine), run with this interpreter and that
folder as its working directory, so before and after are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, resource, sys, time
started = time.perf_counter()
import importlib
importlib.import_module(sys.argv[1])
seconds = time.perf_counter() - started
native = sorted(m for m in ("llama_cpp", "llguidance", "cv2") if m in sys.modules)
print(json.dumps({"s": seconds, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "native": native, "modules": len(sys.modules)}))
"""


def measure(cwd: Path, module: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", action="append", default=[], metavar="DIR:MODULE")
    args = parser.parse_args()
    rows: list[tuple[str, Path, str]] = [
        ("worker entry (now)", ROOT, "services.inference.worker.service"),
        ("engine module (now)", ROOT, "services.inference.engine.card_engine"),
    ]
    for spec in args.baseline:
        folder, _, module = spec.rpartition(":")
        rows.append((f"{module} in {folder}", Path(folder), module))
    samples: dict[str, list[dict[str, object]]] = {label: [] for label, _, _ in rows}
    for _label, cwd, module in rows:  # warm the page cache
        measure(cwd, module)
    for _ in range(args.rounds):
        for label, cwd, module in rows:
            samples[label].append(measure(cwd, module))
    base = statistics.median(float(s["s"]) for s in samples[rows[0][0]])  # type: ignore[arg-type]
    print(f"rounds: {args.rounds}, python {sys.version.split()[0]}")
    print()
    print("| import | median s | ratio to worker entry | peak RSS MiB | modules | native loaded |")
    print("|---|---|---|---|---|---|")
    for label, _, _ in rows:
        got = samples[label]
        seconds = statistics.median(float(s["s"]) for s in got)  # type: ignore[arg-type]
        rss = statistics.median(int(s["rss_kb"]) for s in got) / 1024  # type: ignore[call-overload]
        native = ", ".join(got[-1]["native"]) or "none"  # type: ignore[arg-type]
        print(
            f"| {label} | {seconds:.3f} | {seconds / base:.1f}x | {rss:.0f} | "
            f"{got[-1]['modules']} | {native} |"
        )


if __name__ == "__main__":
    main()
