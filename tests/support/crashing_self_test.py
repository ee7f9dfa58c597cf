"""The start-up self-test made to crash on purpose, for the crash tests only.

    python -m tests.support.crashing_self_test child SPEC       the engine's child
    python -m tests.support.crashing_self_test vitrine ARGS...  vitrine's CLI, its children crashing
    python -m tests.support.crashing_self_test inference        the inference worker, likewise

A real crashing kernel needs a CPU that has it (an Intel Xeon with AMX and repacking on); this
wrapper gives every machine the same death: the child runs the real probe (``native_probe``)
with ``native.self_test`` replaced by a signal to itself, ``VITRINE_FAULT_SELF_TEST_SIGNAL``
(default SIGSEGV), after the model has loaded, where the AMX kernels die.  The product reads no
variable whose only purpose is to break it; this module does.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from services.inference.engine import native, native_probe

WRAPPED_CHILD = ("-m", "tests.support.crashing_self_test", "child")


def crash_instead(_llm: Any, _repack: Any) -> None:
    name = os.environ.get("VITRINE_FAULT_SELF_TEST_SIGNAL", "SIGSEGV")
    signum = signal.Signals[name]
    signal.signal(signum, signal.SIG_DFL)  # die of it, as a native fault does
    os.kill(os.getpid(), signum)


def main() -> None:
    which, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if which == "child":
        native.self_test = crash_instead  # type: ignore[assignment]
        sys.exit(native_probe.main(args))
    native_probe.CHILD_ARGS = WRAPPED_CHILD
    if which == "vitrine":
        from vitrine.cli import main as vitrine

        sys.argv = ["vitrine", *args]
        vitrine()
    elif which == "inference":
        from services.inference.worker import service as worker

        worker.main()
    else:
        raise SystemExit(
            "usage: python -m tests.support.crashing_self_test child|vitrine|inference ..."
        )


if __name__ == "__main__":
    main()
