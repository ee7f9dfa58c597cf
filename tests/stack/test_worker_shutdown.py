"""SIGTERM in the middle of a generation: the worker hands the job back, stops its engine
without a call into a freed model, and its process ends within the grace period and a bound.

The worker runs with every llama.cpp decode slowed down (``tests/support/slow_decode.py``), so
that a card takes minutes and the signal lands mid-generation.  Before the engine had a closed
state, the process outlived the grace by the whole generation (the close waited for it) and then
died of a segmentation fault when the card's next attempt decoded on the freed model.  The job
must then be redelivered uncounted (a hand-back is not a death): a second worker makes its row.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.support.hostile_corpus import jpeg
from tests.support.pipeline import (
    Pipeline,
    Service,
    ensure_stack,
    new_namespace,
    rows,
    s3_client,
    tiny_model_env,
    wait_for,
)

pytestmark = [pytest.mark.pipeline, pytest.mark.model]

GRACE_S = 2.0
BOUND_S = 30.0
"""The bound a shutdown promises past the grace (``worker/service.py``'s ``ENGINE_STOP_S``): the
hand-back, leaving the group, the engine's current step.  A generation here takes minutes."""
KEY = "stop/one.jpg"


def events(service: Service, name: str) -> list[dict]:
    return [e for e in service.events() if e.get("event") == name]


@pytest.mark.parametrize("parallel", ["1", "2"], ids=["alone", "slots"])
def test_sigterm_mid_generation_hands_the_job_back_and_the_process_ends_in_time(
    tiny_pairs, tmp_path, parallel: str
) -> None:
    ensure_stack()
    ns = new_namespace(
        {
            **tiny_model_env(tiny_pairs["llava"]),
            "VITRINE_ENGINE_PARALLEL": parallel,
            "VITRINE_N_THREADS": "1",
        }
    )
    p = Pipeline(ns, tmp_path)
    p.add("ingest", "services.ingest")
    p.add("sink", "services.sink")
    slow = p.add(
        "inference",
        "tests.support.slow_decode",
        VITRINE_TEST_DECODE_DELAY_S="0.5",
        VITRINE_SHUTDOWN_GRACE_S=str(GRACE_S),
    )
    p.start_all()
    try:
        s3_client(ns.env).put_object(
            Bucket=ns.bucket, Key=KEY, Body=jpeg(), ContentType="image/jpeg"
        )
        wait_for(lambda: events(slow, "slow_decode.generating"), 180, "a generation")
        assert slow.proc is not None
        signalled = time.monotonic()
        slow.proc.send_signal(signal.SIGTERM)
        try:
            code = slow.proc.wait(GRACE_S + BOUND_S)
        except subprocess.TimeoutExpired:
            slow.kill()
            raise AssertionError(
                f"still running {GRACE_S + BOUND_S:g} s after SIGTERM:\n"
                + "\n".join(slow.lines()[-8:])
            ) from None
        print(f"\nparallel {parallel}: exited {time.monotonic() - signalled:.1f} s after SIGTERM")
        assert code == 0, "\n".join(slow.lines()[-15:])
        assert not events(slow, "slow_decode.after_close")
        assert [e["engine_calls_left"] for e in events(slow, "engine.closed")] == [0]
        [handed] = events(slow, "job.handed_back")
        assert handed["jobs"] == 1
        assert not [e for e in slow.events() if str(e.get("event")).startswith("card.")]

        again = p.add("inference-again", "services.inference")
        again.start()
        again.wait_started()
        final = "object_key = %s AND status_rank = 1"
        wait_for(lambda: rows(ns.dsn, ns.bucket, final, (KEY,)), 300, "the redelivered card")
        assert not events(again, "delivery.suspect"), "a hand-back counted as a death"
    finally:
        p.close()
