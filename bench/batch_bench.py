"""Batched generation: cards/min and tokens/s at N = 1, 2, 4, 8, 16 slots, beside llama.cpp.

    python bench/batch_bench.py [--slots 1,2,4,8,16] [--cards-per-slot 3] [--max-tokens 1536]
                                [--variants before,after] [--raw-steps 0] [--n-gpu-layers -1]
                                [--threads N] [--pipeline 100] [--json out.json]
                                [--model M --mmproj P --handler llava15]

One run, on the real-weight model (Gemma 3 270M Q4_K_M from PyPI, with the generated projector;
``tests/support/tiny_models.real_pair``), measures three things:

1. **Raw batched decode** (the floor to compare with), as llama.cpp's ``batched-bench -pps``:
   one context with N sequences (split KV cache, as the engine's), a prompt as long as the
   card prompt evaluated once into one sequence and copied to the others
   (``llama_memory_seq_cp``), then as many decodes of one token per sequence as the engine's
   mean card at that N has tokens (``--raw-steps`` to fix it; argmax: no sampling, no
   grammar).  The prompt's prefill ms and the aggregate decode tokens/s per N.
2. **The engine**, per variant: a ``CardEngine`` with ``VITRINE_ENGINE_PARALLEL=N`` making
   ``N x --cards-per-slot`` cards from as many threads as slots (one attempt each: the rate of
   generation, not of acceptance).  ``before``: the image first and no shared prefix (each card
   prefills its whole prompt, alone, while its batch-mates wait), every token sampled from the
   whole vocabulary; ``after``: the defaults (the
   instructions first, the prefix evaluated once and copied).  Per N: prefill ms per card
   (image encode + prompt evaluation), cards/min, output tokens/s over the whole run (ramp and
   tail included) and over its sustained part (``sustained_tokens_per_s``: the engine's
   decoded tokens while all N slots were busy, prefilling or decoding, sampled every 100 ms;
   the seconds that held are printed beside it), and engine / raw.  Sustained cards/min is
   counted between the 10th and 90th percentile completions.
3. With ``--pipeline M``: the whole pipeline (ingest, inference at N = 8, sink, on the running
   native stack) draining M images, cards/min against the engine's own rate at that N.

Timings are wall clock on whatever else the machine runs: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from schemas.messages import Timings  # noqa: E402
from services.inference.card.errors import CardError  # noqa: E402
from services.inference.engine.card_engine import CardEngine  # noqa: E402
from services.inference.engine.model_files import resolve  # noqa: E402
from services.inference.engine.native import (  # noqa: E402
    RepackableLlama,
    choose_repack,
    on_native_thread,
)
from services.inference.engine.slot_view import TokenBatch  # noqa: E402
from services.inference.settings import EngineSettings  # noqa: E402
from tests.support.images import photo  # noqa: E402
from tests.support.tiny_models import TinyPair, real_pair  # noqa: E402

MODELS = Path(os.environ.get("VITRINE_BENCH_MODELS", "/tmp/vitrine-bench-models"))


VARIANTS: dict[str, dict[str, Any]] = {
    "before": {
        "prompt_order": "image_first",
        "shared_prefix": False,
        "prefill_in_steps": False,
        "shortlist": False,
    },
    "after": {
        "prompt_order": "instructions_first",
        "shared_prefix": True,
        "prefill_in_steps": True,
        "shortlist": True,
    },
}
"""Engine settings per variant; ``shortlist`` is the decoder's top-k shortlist sampling
(``shortlist.py``, not a setting).  Weight repacking is the ``auto`` rule in both (and in the
raw floor): ``bench/repack_bench.py`` measures it apart."""


@dataclass
class EngineRun:
    variant: str
    slots: int
    cards: int
    wall_s: float
    cards_per_min: float
    sustained_per_min: float
    tokens_per_s: float
    sustained_tokens_per_s: float
    """Output tokens per second while every slot was busy (``TokenClock.steady``)."""
    sustained_s: float
    """How long every slot was busy: what ``sustained_tokens_per_s`` is counted over."""
    per_sequence_tokens_per_s: float
    prompt_tokens: float
    completion_tokens: float
    cached_tokens: float
    prefill_ms: float
    """Image encode + prompt evaluation, the median card's (the first card of a process also
    waits for the shared prefix: ``prefix_build_ms``, once per process)."""
    prefix_build_ms: float
    peak_occupancy: int
    failures: dict[str, int]


class TokenClock:
    """Samples the engine's decoded-token count and its busy slots every 100 ms, for the rate
    over a stretch of a run."""

    def __init__(self, engine: CardEngine) -> None:
        self._engine = engine
        self.samples: list[tuple[float, int, int]] = []
        """(time, tokens so far, slots busy)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        slots = self._engine.slots
        while not self._stop.is_set():
            count = slots.output_tokens if slots is not None else 0
            busy = slots.busy if slots is not None else 0
            self.samples.append((time.perf_counter(), count, busy))
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def steady(self, slots: int) -> tuple[float, float]:
        """Tokens per second while every one of ``slots`` was busy (both ends of a 100 ms
        sample interval), and for how many seconds that held: the sustained part of the run,
        without the ramp (the first prompts) and the tail (slots emptying as the last cards
        end).  A slot busy prefilling a new card counts as busy: the steady rate pays for
        each card's image and prompt, as a worker's does."""
        tokens = seconds = 0.0
        for (t0, n0, b0), (t1, n1, b1) in zip(self.samples, self.samples[1:], strict=False):
            if b0 >= slots and b1 >= slots:
                tokens += n1 - n0
                seconds += t1 - t0
        return (tokens / seconds if seconds > 0 else float("nan")), seconds


def sustained_window(stamps: list[float]) -> tuple[float, float, int]:
    """The 10th and 90th percentile completions, and the cards completed between them."""
    stamps = sorted(stamps)
    lo, hi = len(stamps) // 10, (len(stamps) * 9) // 10
    return stamps[lo], stamps[hi], hi - lo


def sustained(stamps: list[float]) -> float:
    """Cards per minute between the 10th and 90th percentile completions: the steady rate,
    without the ramp (every slot prefilling) and the tail (slots emptying)."""
    if len(stamps) < 5:
        return float("nan")
    lo, hi, n = sustained_window(stamps)
    return 60.0 * n / max(hi - lo, 1e-6)


def engine_settings(
    pair: TinyPair, args: argparse.Namespace, slots: int, variant: str = "after"
) -> EngineSettings:
    return EngineSettings(
        model_path=pair.model,
        mmproj_path=pair.mmproj,
        handler=pair.handler,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_gpu_layers=args.n_gpu_layers,
        max_tokens=args.max_tokens,
        max_attempts=1,  # the rate of generation, not of acceptance
        engine_parallel=slots,
        job_timeout_s=0,
        **{k: v for k, v in VARIANTS[variant].items() if k != "shortlist"},
    )


def engine_run(pair: TinyPair, args: argparse.Namespace, slots: int, variant: str) -> EngineRun:
    settings = engine_settings(pair, args, slots, variant)
    engine = CardEngine(resolve(settings), settings)
    if engine.decoder is not None:
        engine.decoder.shortlist = VARIANTS[variant]["shortlist"]
    engine.warm_prefix()  # once per process: reported apart, not in the cards' prefill
    clock = TokenClock(engine)
    try:
        n = slots * args.cards_per_slot
        images = [engine.prepare(photo(i)) for i in range(n)]
        barrier = threading.Barrier(slots)
        done_at: list[float] = []
        tokens: list[int] = []
        per_seq: list[float] = []
        prompt: list[int] = []
        cached: list[int] = []
        prefill: list[float] = []
        failures: dict[str, int] = {}
        lock = threading.Lock()

        def card(i: int) -> None:
            if i < slots:
                barrier.wait()
            t: Timings | None
            try:
                outcome = engine.card_for_image(images[i], seed=i)
                t = outcome.timings
            except CardError as exc:
                with lock:
                    failures[str(exc.reason)] = failures.get(str(exc.reason), 0) + 1
                t = exc.timings  # what the failed attempt generated counts as throughput
            with lock:
                done_at.append(time.perf_counter())
                if t is not None:
                    tokens.append(t.completion_tokens)
                    prompt.append(t.prompt_tokens)
                    cached.append(t.cached_tokens)
                    prefill.append(t.image_encode_ms + t.prompt_eval_ms)
                    if t.generate_ms:
                        per_seq.append(t.completion_tokens / (t.generate_ms / 1000))

        started = time.perf_counter()
        with ThreadPoolExecutor(slots) as pool:
            list(pool.map(card, range(n)))
        wall = time.perf_counter() - started
        clock.stop()
        total_tokens = sum(tokens)
        steady_rate, steady_s = clock.steady(slots)
        return EngineRun(
            variant=variant,
            slots=slots,
            cards=n,
            wall_s=wall,
            cards_per_min=60.0 * n / wall,
            sustained_per_min=sustained([s - started for s in done_at]),
            tokens_per_s=total_tokens / wall,
            sustained_tokens_per_s=steady_rate,
            sustained_s=steady_s,
            per_sequence_tokens_per_s=statistics.mean(per_seq) if per_seq else float("nan"),
            prompt_tokens=statistics.mean(prompt) if prompt else float("nan"),
            cached_tokens=statistics.mean(cached) if cached else float("nan"),
            completion_tokens=statistics.mean(tokens) if tokens else float("nan"),
            prefill_ms=statistics.median(prefill) if prefill else float("nan"),
            prefix_build_ms=(
                engine.slots.prefix.build_ms
                if engine.slots is not None and engine.slots.prefix is not None
                else 0.0
            ),
            peak_occupancy=engine.slots.peak_occupancy if engine.slots else 1,
            failures=failures,
        )
    finally:
        clock.stop()
        engine.close()


@dataclass
class RetryRun:
    variant: str
    first_prefill_ms: float
    retry_prefill_ms: float
    first_image_ms: float
    retry_image_ms: float
    retry_evaluated_tokens: int
    window_restored: bool


def retry_run(pair: TinyPair, args: argparse.Namespace, variant: str) -> RetryRun:
    """One card's first attempt and its retry (with a note), one slot, the shared prefix built
    beforehand: each one's prefill (image encode + prompt evaluation)."""
    settings = engine_settings(pair, args, 1, variant).model_copy(update={"max_attempts": 2})
    engine = CardEngine(resolve(settings), settings)
    note = ["a descrição tem 12 palavras; o mínimo é 40"]
    try:
        engine.warm_prefix()
        image = engine.prepare(photo(101))
        with contextlib.ExitStack() as stack:
            lease = stack.enter_context(engine.slots.lease()) if engine.slots else None
            first = engine.generate(image, seed=2, lease=lease).timings
            retry = engine.generate(image, seed=3, retry_problems=note, lease=lease).timings
            held = lease.slot.view.held if lease is not None and lease.slot else None
        return RetryRun(
            variant=variant,
            first_prefill_ms=first.image_encode_ms + first.prompt_eval_ms,
            retry_prefill_ms=retry.image_encode_ms + retry.prompt_eval_ms,
            first_image_ms=first.image_encode_ms,
            retry_image_ms=retry.image_encode_ms,
            retry_evaluated_tokens=retry.prompt_tokens - retry.cached_tokens,
            window_restored=bool(held and held.restores),
        )
    finally:
        engine.close()


@dataclass
class RawRun:
    slots: int
    prefill_ms: float
    """The shared prompt, evaluated once."""
    tokens_per_s: float
    """Aggregate decode rate, ``slots`` tokens per ``llama_decode``."""


def raw_decode(
    model: Path, args: argparse.Namespace, slots: int, prompt_tokens: int, steps: int
) -> RawRun:
    """On the llama.cpp thread, as the engine's decodes (one OpenMP team: native.py)."""
    return on_native_thread(_raw_decode, model, args, slots, prompt_tokens, steps)


def _raw_decode(
    model: Path, args: argparse.Namespace, slots: int, prompt_tokens: int, steps: int
) -> RawRun:
    """llama.cpp alone, as ``batched-bench -pps``: a ``prompt_tokens`` prompt evaluated once
    into sequence 0 and copied to the others, then ``steps`` decodes of one token per sequence
    (argmax), in a context made as the engine's (split KV cache, sliding-window layers keeping
    their window).  ``steps`` is the engine's mean card length at that N: attention grows with
    the context, so the floor is measured over the same stretch of positions."""
    threads = args.threads or os.cpu_count() or 1
    llm = RepackableLlama(
        model_path=str(model),
        n_ctx=(prompt_tokens + steps + 64) * slots,
        sequences=slots,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=512,
        n_gpu_layers=-1 if args.n_gpu_layers is None else args.n_gpu_layers,
        verbose=False,
        use_extra_bufts=choose_repack("auto").use_extra_bufts,
        portable_repack=choose_repack("auto").portable,
        swa_full=False,
    )
    batch = TokenBatch(512)
    try:
        ctx, n_vocab = llm._ctx.ctx, llm.n_vocab()
        memory = llama_cpp.llama_get_memory(ctx)
        text = np.random.default_rng(0).integers(1000, 50_000, prompt_tokens).tolist()
        started = time.perf_counter()
        for start in range(0, prompt_tokens, 512):
            chunk = text[start : start + 512]
            batch.clear()
            for j, token in enumerate(chunk):
                batch.add(token, start + j, 0, j == len(chunk) - 1)
            batch.decode(ctx)
        prefill_ms = (time.perf_counter() - started) * 1000.0
        for seq in range(1, slots):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        last = [1] * slots
        started = time.perf_counter()
        for step in range(steps):
            batch.clear()
            for seq in range(slots):
                batch.add(last[seq], prompt_tokens + step, seq, True)
            batch.decode(ctx)
            for seq in range(slots):
                row = llama_cpp.llama_get_logits_ith(ctx, seq)
                last[seq] = int(np.ctypeslib.as_array(row, shape=(n_vocab,)).argmax())
        rate = slots * steps / (time.perf_counter() - started)
        return RawRun(slots, prefill_ms, rate)
    finally:
        batch.close()
        llm.close()


def pipeline_run(pair: TinyPair, args: argparse.Namespace, slots: int) -> dict[str, float]:
    """The whole pipeline on the native stack: upload ``--pipeline`` photos, time the rows."""
    from tests.support.pipeline import (
        Pipeline,
        ensure_stack,
        new_namespace,
        rows,
        s3_client,
        wait_for,
    )

    ensure_stack()
    env = {
        "VITRINE_MODEL_PATH": str(pair.model),
        "VITRINE_MMPROJ_PATH": str(pair.mmproj),
        "VITRINE_HANDLER": pair.handler,
        "VITRINE_ENGINE_PARALLEL": str(slots),
        "VITRINE_MAX_ATTEMPTS": "1",
        "VITRINE_MAX_TOKENS": str(args.max_tokens),
        "VITRINE_N_CTX": str(args.n_ctx),
        "VITRINE_JOB_TIMEOUT_S": "0",
    }
    if args.threads:
        env["VITRINE_N_THREADS"] = str(args.threads)
    if args.n_gpu_layers is not None:
        env["VITRINE_N_GPU_LAYERS"] = str(args.n_gpu_layers)
    ns = new_namespace(env)
    logs = Path("/tmp/vitrine-bench-logs") / ns.name
    logs.mkdir(parents=True, exist_ok=True)
    p = Pipeline(ns, logs)
    for name, module in (("sink", "services.sink"), ("inference", "services.inference")):
        p.add(name, module)
    p.start_all()  # the model loads before the clock starts
    n = args.pipeline
    try:
        s3 = s3_client(ns.env)
        bodies = [photo(i) for i in range(n)]
        for i, body in enumerate(bodies):  # a backlog, as a shop's bulk upload makes
            s3.put_object(Bucket=ns.bucket, Key=f"b/{i:04d}.jpg", Body=body)
        started = time.time()
        p.add("ingest", "services.ingest").start()

        def final() -> list[dict[str, Any]]:
            return rows(ns.dsn, ns.bucket, "object_key LIKE 'b/%%' AND status_rank = 1")

        wait_for(lambda: len(final()) >= n, 7200, f"{n} final rows", interval=2)
        stamps = [r["updated_at"].timestamp() - started for r in final()]
        wall = max(stamps)
        return {
            "images": n,
            "wall_s": wall,
            "cards_per_min": 60.0 * n / wall,
            "sustained_per_min": sustained(stamps),
        }
    finally:
        p.close()


def report(runs: list[EngineRun], raw: dict[int, RawRun]) -> str:
    """The before/after table: per variant and N, against that variant's N = 1 and raw.

    A card's length is the model's doing (a blind model runs to the token budget on some
    photos and seeds, not on others), and each N makes another set of cards; so beside the
    measured cards/min stands the rate at the variant's mean card length over all its runs
    (cards/min x this run's mean length / that mean): the engine's speed, the length fixed."""
    lines = [
        "",
        "| variant | N | prefill ms/card (prefix once) | cards/min (sustained) | tokens/card | "
        "cards/min at the common length | vs N=1 | tok/s | sustained tok/s | raw tok/s (-pps) "
        "| engine / raw (sustained) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    firsts: dict[str, EngineRun] = {}
    common: dict[str, float] = {}
    for variant in {run.variant for run in runs}:
        mine = [run for run in runs if run.variant == variant]
        common[variant] = sum(r.completion_tokens * r.cards for r in mine) / max(
            1, sum(r.cards for r in mine)
        )
    for run in runs:
        first = firsts.setdefault(run.variant, run)
        r = raw[run.slots].tokens_per_s
        length = common[run.variant]
        at_length = run.cards_per_min * run.completion_tokens / length if length else 0.0
        first_at = first.cards_per_min * first.completion_tokens / length if length else 1.0
        lines.append(
            f"| {run.variant} | {run.slots} | {run.prefill_ms:.0f} ({run.prefix_build_ms:.0f}) | "
            f"{run.cards_per_min:.1f} ({run.sustained_per_min:.1f}) | "
            f"{run.completion_tokens:.0f} | {at_length:.1f} ({length:.0f}) | "
            f"{run.cards_per_min / first.cards_per_min:.2f}x ({at_length / first_at:.2f}x) | "
            f"{run.tokens_per_s:.1f} | {run.sustained_tokens_per_s:.1f} | {r:.1f} | "
            f"{run.tokens_per_s / r:.0%} ({run.sustained_tokens_per_s / r:.0%}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", default="1,2,4,8,16")
    parser.add_argument("--cards-per-slot", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=1536)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-gpu-layers", type=int, default=None)
    parser.add_argument(
        "--raw-steps", type=int, default=0, help="0: the engine's mean card length at that N"
    )
    parser.add_argument("--variants", default="before,after", help="before, after or both")
    parser.add_argument("--pipeline", type=int, default=0, help="images for the pipeline run")
    parser.add_argument("--pipeline-slots", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--model", type=Path, default=None, help="another text GGUF (with --mmproj, --handler)"
    )
    parser.add_argument("--mmproj", type=Path, default=None)
    parser.add_argument("--handler", default="llava15")
    args = parser.parse_args()
    slot_counts = [int(s) for s in args.slots.split(",")]
    if args.model is not None:  # e.g. bench/gpu/make_model.py's, where the real one cannot go
        pair = TinyPair(args.model, args.mmproj, args.handler)
    else:
        pair = real_pair(MODELS)["llava"]
    print(
        f"model: {pair.model.name} + {pair.mmproj.name} ({pair.handler}); "
        f"max_tokens {args.max_tokens}, n_ctx {args.n_ctx}/slot, 1 attempt",
        flush=True,
    )

    variants = args.variants.split(",")
    runs: list[EngineRun] = []
    for variant in variants:
        for slots in slot_counts:
            run = engine_run(pair, args, slots, variant)
            runs.append(run)
            print(
                f"{variant:>6} N={slots:>2}: {run.cards} cards in {run.wall_s:6.1f} s  "
                f"prefill {run.prefill_ms:7.1f} ms/card, prefix once {run.prefix_build_ms:.0f} ms "
                f"({run.cached_tokens:.0f} of "
                f"{run.prompt_tokens:.0f} tokens cached)  {run.cards_per_min:5.1f} cards/min "
                f"(sustained {run.sustained_per_min:5.1f})  {run.tokens_per_s:6.1f} tok/s "
                f"(sustained {run.sustained_tokens_per_s:6.1f} over {run.sustained_s:.0f} s)  "
                f"peak occupancy "
                f"{run.peak_occupancy}  {run.failures}",
                flush=True,
            )
    last = {run.slots: run for run in runs if run.variant == variants[-1]}
    raw: dict[int, RawRun] = {}
    for slots in slot_counts:
        prompt_tokens = round(last[slots].prompt_tokens)
        steps = args.raw_steps or max(round(last[slots].completion_tokens), 16)
        raw[slots] = raw_decode(pair.model, args, slots, prompt_tokens, steps)
        print(
            f"raw    N={slots:>2}: prompt {raw[slots].prefill_ms:7.1f} ms once, "
            f"{raw[slots].tokens_per_s:6.1f} tok/s ({prompt_tokens}-token prompt shared, "
            f"{steps} steps)",
            flush=True,
        )
    print(report(runs, raw))
    retries = [retry_run(pair, args, variant) for variant in variants]
    print(
        "\n| variant | first attempt prefill ms (image) | retry prefill ms (image) | retry / "
        "first | retry's evaluated tokens | window restored |"
    )
    print("|---|---|---|---|---|---|")
    for r in retries:
        print(
            f"| {r.variant} | {r.first_prefill_ms:.0f} ({r.first_image_ms:.0f}) | "
            f"{r.retry_prefill_ms:.0f} ({r.retry_image_ms:.0f}) | "
            f"{r.retry_prefill_ms / r.first_prefill_ms:.0%} | {r.retry_evaluated_tokens} | "
            f"{r.window_restored} |"
        )
    result: dict[str, Any] = {
        "retries": [asdict(r) for r in retries],
        "engine": [asdict(r) for r in runs],
        "raw": {n: asdict(r) for n, r in raw.items()},
        "args": vars(args),
    }
    if args.pipeline:
        piped = pipeline_run(pair, args, args.pipeline_slots)
        at = next(
            (r for r in runs if r.slots == args.pipeline_slots and r.variant == variants[-1]),
            None,
        )
        print(
            f"\npipeline N={args.pipeline_slots}: {piped['images']} images in "
            f"{piped['wall_s']:.1f} s = {piped['cards_per_min']:.1f} cards/min "
            f"(sustained {piped['sustained_per_min']:.1f})"
        )
        if at is not None:
            overall = piped["cards_per_min"] / at.cards_per_min
            steady = piped["sustained_per_min"] / at.sustained_per_min
            print(
                f"  vs the engine alone at N={at.slots}: {overall:.0%} overall, "
                f"{steady:.0%} sustained"
            )
        result["pipeline"] = piped
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
