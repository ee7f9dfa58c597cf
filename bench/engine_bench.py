"""Card engine benchmark: the tiny generated GGUF model by default, or real weights.

    python bench/engine_bench.py [--seeds 5] [--rounds 2] [--memory 200]
    python bench/engine_bench.py --model M.gguf --mmproj P.gguf --handler llava15 \
        [--seeds 3] [--rounds 2] [--card-seeds 2]
    python bench/engine_bench.py --real     # the same, on the test suite's real pair

Reports, measured in the same run on the same model, image and prompt, with every decoding mode
run in turn for each seed (so load from other processes hits all modes alike):
1. cost per generated token (200-token budget) and its ratio to unconstrained decoding, for
   unconstrained (llama-cpp-python's loop, and vitrine's own decode loop without a grammar),
   the GBNF grammar sampler, llguidance masks only, and llguidance + fast-forward;
   forced (fast-forwarded) tokens are output tokens and count as generated;
2. the end-to-end time of one card attempt (full card budget), same modes;
3. RSS over many generations in one process (the mtmd/KV-cache leak check; tiny model only).

With ``--model/--mmproj/--handler`` (real weights, e.g. Gemma 3 270M with a generated projector)
the same modes are measured against **llama.cpp's bare decode** of the same model in the same
run, interleaved with them: a loop of ``llama_decode`` of one fixed token at a time through the
low-level batch API (logits of each token read back, no sampling), after a prompt as long as the
card prompt, so it covers the same KV positions as a card's generation.  Each mode's ms/token is
reported with its ratio to that floor; the card section covers the grammar modes only.  A last
section loads the model twice more, with llama.cpp's CPU weight repacking
(``llama_model_params.use_extra_bufts``) on and off, and compares their bare decode and prompt
evaluation, interleaved.

Random weights make the *content* meaningless but the compute real: the tiny model's vocabulary
is LLaMA's 32k pieces, so the grammar mask costs what it costs on a real 7B's sampler (the
transformer itself is tiny, which makes the grammar's share look larger than on a real model).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import Llama
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from services.inference.card.errors import GenerationError  # noqa: E402
from services.inference.engine.card_engine import CardEngine  # noqa: E402
from services.inference.engine.decoding import Decoder, GuidanceGrammar  # noqa: E402
from services.inference.engine.model_files import resolve  # noqa: E402
from services.inference.engine.native import RepackableLlama, on_native_thread  # noqa: E402
from services.inference.settings import EngineSettings  # noqa: E402
from tests.support.tiny_models import generate  # noqa: E402


@dataclass(frozen=True)
class Pair:
    model: Path
    mmproj: Path
    handler: str


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


THREADS = os.cpu_count() or 1
N_CTX = 4096


def engine(pair: Pair, **overrides: Any) -> CardEngine:
    settings = EngineSettings(
        model_path=pair.model,
        mmproj_path=pair.mmproj,
        handler=pair.handler,
        n_ctx=N_CTX,
        n_threads=THREADS,
        # the one-at-a-time path, each card prefilling its whole prompt (batch_bench: slots)
        **{"engine_parallel": 1, "shared_prefix": False, **overrides},
    )
    return CardEngine(resolve(settings), settings)


def photo() -> bytes:
    image = Image.new("RGB", (1200, 900), (240, 240, 240))
    image.paste((30, 60, 160), (300, 200, 900, 700))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


MODES: list[tuple[str, dict[str, object]]] = [
    ("unconstrained (llama-cpp-python loop)", {"grammar_backend": "none"}),
    ("unconstrained (vitrine decode loop)", {"grammar_backend": "none", "own_loop": True}),
    ("gbnf: llama.cpp grammar sampler", {"grammar_backend": "gbnf"}),
    ("llguidance, mask only", {"grammar_backend": "llguidance", "grammar_fast_forward": False}),
    ("llguidance + fast-forward (default)", {"grammar_backend": "llguidance"}),
]
CARD_MODES_REAL = {"gbnf", "llguidance"}
"""Real weights: the card section runs the grammar modes (unconstrained never closes a card)."""


def mode_engine(pair: Pair, max_tokens: int, spec: dict[str, object]) -> CardEngine:
    options = dict(spec)
    own_loop = bool(options.pop("own_loop", False))
    eng = engine(pair, max_attempts=1, **options)
    set_budget(eng, max_tokens)  # not validated: budgets below the setting's minimum of 64 too
    if own_loop:  # the decoder without a grammar: separates the loop's cost from the mask's
        eng.decoder = Decoder(eng.llm, None, fast_forward=False)
    return eng


def set_budget(eng: CardEngine, max_tokens: int) -> None:
    eng.settings = eng.settings.model_copy(update={"max_tokens": max_tokens})


# -- llama.cpp's bare decode: the floor ------------------------------------------------------


@dataclass
class Bare:
    prefill_ms: float
    prefill_tokens: int
    decode_ms: float
    decode_tokens: int

    @property
    def ms_per_token(self) -> float:
        return self.decode_ms / self.decode_tokens

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / (self.prefill_ms / 1000.0)


def filler_tokens(llm: Llama, n: int) -> list[int]:
    text = b"Caneca de ceramica azul com alca, fotografada sobre um fundo claro. "
    piece = llm.tokenize(text, add_bos=False)
    return [llm.token_bos(), *(piece * (n // len(piece) + 1))][:n]


def bare_decode(llm: Llama, prompt_len: int, n_tokens: int) -> Bare:
    """On the llama.cpp thread, as the engines' decodes (one OpenMP team: native.py)."""
    return on_native_thread(_bare_decode, llm, prompt_len, n_tokens)


def _bare_decode(llm: Llama, prompt_len: int, n_tokens: int) -> Bare:
    """Prompt of ``prompt_len`` tokens, then ``n_tokens`` single-token ``llama_decode`` calls of a
    fixed token at the next positions, each followed by reading its logits (which waits for the
    decode); nothing else.  Leaves the context empty."""
    ctx = llm._ctx.ctx
    batch = llm._batch.batch
    llm.reset()
    llm._ctx.kv_cache_clear()
    prompt = filler_tokens(llm, prompt_len)
    step = llm.n_batch
    started = time.perf_counter()
    for i in range(0, len(prompt), step):
        chunk = prompt[i : i + step]
        batch.n_tokens = len(chunk)
        for j, token in enumerate(chunk):
            batch.token[j] = token
            batch.pos[j] = i + j
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = 0
            batch.logits[j] = i + j == len(prompt) - 1
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed on the prompt")
    llama_cpp.llama_get_logits_ith(ctx, -1)
    prefilled = time.perf_counter()
    token = prompt[-1]
    batch.n_tokens = 1
    batch.n_seq_id[0] = 1
    batch.seq_id[0][0] = 0
    batch.logits[0] = True
    for pos in range(len(prompt), len(prompt) + n_tokens):
        batch.token[0] = token
        batch.pos[0] = pos
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        llama_cpp.llama_get_logits_ith(ctx, -1)
    finished = time.perf_counter()
    llm.reset()
    llm._ctx.kv_cache_clear()
    return Bare(
        (prefilled - started) * 1000.0, len(prompt), (finished - prefilled) * 1000.0, n_tokens
    )


def bare_llama(model: Path, use_extra_bufts: bool) -> Llama:
    return on_native_thread(
        RepackableLlama,
        model_path=str(model),
        n_ctx=N_CTX,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        n_batch=EngineSettings.model_fields["n_batch"].default,
        verbose=False,
        use_extra_bufts=use_extra_bufts,
        swa_full=False,  # as the engine's context
    )


# -- the modes, interleaved ------------------------------------------------------------------


def sample_row(raw: Any, wall_ms: float) -> dict[str, float]:
    t = raw.timings
    return {
        "wall_ms": wall_ms,
        "generate_ms": t.generate_ms,
        "ms_per_token": t.generate_ms / max(t.completion_tokens, 1),
        "tokens": t.completion_tokens,
        "forced": t.forced_tokens,
        "mask_ms": t.mask_ms,
        "image_ms": t.image_encode_ms,
        "prompt_ms": t.prompt_eval_ms,
        "prefill_ms": t.image_encode_ms + t.prompt_eval_ms,
        "prompt_tokens": t.prompt_tokens,
        "stop": float(raw.finish_reason == "stop"),
    }


def interleaved(
    engines: list[CardEngine],
    image: Any,
    seeds: int,
    rounds: int,
    bare: tuple[Llama, int, int] | None = None,
) -> tuple[list[list[dict[str, float]]], list[Bare]]:
    """One generation per engine in turn (and one bare decode, if asked), per seed and round,
    so load noise hits every mode alike."""
    samples: list[list[dict[str, float]]] = [[] for _ in engines]
    floors: list[Bare] = []
    for _ in range(rounds):
        for seed in range(seeds):
            if bare is not None:
                floors.append(bare_decode(*bare))
            for i, eng in enumerate(engines):
                started = time.perf_counter()
                raw = eng.generate(image, seed=100 + seed)
                samples[i].append(sample_row(raw, (time.perf_counter() - started) * 1000.0))
    return samples, floors


SETUP_S: list[float] = []
"""Each ``GuidanceGrammar`` built by an engine: what llguidance adds to start-up (tokenizer
from the vocabulary + schema compile), once per process."""
_guidance_init = GuidanceGrammar.__init__


def _timed_guidance_init(self: GuidanceGrammar, *args: Any, **kwargs: Any) -> None:
    started = time.perf_counter()
    _guidance_init(self, *args, **kwargs)
    SETUP_S.append(time.perf_counter() - started)


GuidanceGrammar.__init__ = _timed_guidance_init  # type: ignore[method-assign]


def setup_ms() -> str:
    return f"{statistics.median(SETUP_S) * 1000:.0f} ms" if SETUP_S else "n/a"


def warm_up(engines: list[CardEngine], image: Any) -> int:
    """One short generation per engine; returns the card prompt's length in tokens."""
    prompt_len = 0
    for eng in engines:
        budget = eng.settings.max_tokens
        set_budget(eng, 64)
        prompt_len = eng.generate(image, seed=999).timings.prompt_tokens
        set_budget(eng, budget)
    return prompt_len


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def memory(pair: Pair, n: int) -> list[tuple[int, float]]:
    eng = engine(pair, max_tokens=64, max_attempts=1)
    image = eng.prepare(photo())
    samples = []
    for i in range(1, n + 1):
        # 64 tokens cannot hold a card, so each ends truncated: the point is the allocations.
        with contextlib.suppress(GenerationError):
            eng.card_for_image(image, seed=i)
        if i in (1, 10, 20) or i % 50 == 0 or i == n:
            samples.append((i, rss_mb()))
    eng.close()
    return samples


# -- the tiny model (default) ----------------------------------------------------------------


def tiny_main(args: argparse.Namespace) -> None:
    pair = generate(args.models)["llava"]
    pair = Pair(pair.model, pair.mmproj, pair.handler)
    print(f"model: {pair.model.name} (32k LLaMA vocab, random weights)")
    print(f"cores: {os.cpu_count()}, llama.cpp threads: {THREADS}")
    print(f"seeds: {args.seeds} x rounds: {args.rounds}, modes interleaved; medians")

    engines = [mode_engine(pair, 200, spec) for _, spec in MODES]
    try:
        print(f"llguidance set-up (tokenizer from the vocab + schema compile): {setup_ms()}")
        image = engines[0].prepare(photo())
        warm_up(engines, image)
        samples, _ = interleaved(engines, image, args.seeds, args.rounds)
        base = med(samples[0], "ms_per_token")
        own = med(samples[1], "ms_per_token")
        print("\n## Cost per generated token (200-token budget)\n")
        print("Forced (fast-forward) tokens are output tokens and count as generated.\n")
        print(
            "| decoding | ms/token | tokens/s | forced tokens | mask ms/token "
            "| vs unconstrained | vs unconstrained (same loop) |"
        )
        print("|---|---|---|---|---|---|---|")
        for (label, _), rows in zip(MODES, samples, strict=True):
            ms = med(rows, "ms_per_token")
            mask = statistics.median(r["mask_ms"] / max(r["tokens"], 1) for r in rows)
            print(
                f"| {label} | {ms:.3f} | {1000 / ms:.0f} | {med(rows, 'forced'):.0f} "
                f"| {mask:.3f} | {ms / base:.2f}x | {ms / own:.2f}x |"
            )

        for eng in engines:
            set_budget(eng, 1536)
        samples, _ = interleaved(engines, image, args.seeds, args.rounds)
    finally:
        for eng in engines:
            eng.close()
    base_card = med(samples[0], "wall_ms")
    print("\n## One card attempt (full card budget: 1536 tokens), end to end\n")
    print(
        "| decoding | ms/attempt | vs unconstrained | tokens | forced | closed JSON "
        "| ms/token (generation) | prefill ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (label, _), rows in zip(MODES, samples, strict=True):
        wall = med(rows, "wall_ms")
        closed = sum(r["stop"] for r in rows)
        print(
            f"| {label} | {wall:.0f} | {wall / base_card:.2f}x | {med(rows, 'tokens'):.0f} "
            f"| {med(rows, 'forced'):.0f} | {closed:.0f}/{len(rows)} "
            f"| {med(rows, 'ms_per_token'):.3f} | {med(rows, 'prefill_ms'):.0f} |"
        )

    if args.memory:
        mem = memory(pair, args.memory)
        print(f"\n## RSS over {args.memory} card generations in one process\n")
        print("| after generation | RSS MB |")
        print("|---|---|")
        for i, mb in mem:
            print(f"| {i} | {mb:.1f} |")
        warm = dict(mem)[20] if 20 in dict(mem) else mem[0][1]
        print(f"\ngrowth after warm-up (20 → {mem[-1][0]}): {mem[-1][1] - warm:+.1f} MB")


# -- real weights ----------------------------------------------------------------------------


def real_main(args: argparse.Namespace) -> None:
    pair = Pair(args.model, args.mmproj, args.handler)
    print(f"# engine_bench, real weights — {datetime.date.today().isoformat()}\n")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"model: {pair.model.name}, projector: {pair.mmproj.name}, handler: {pair.handler}")
    print(
        f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"llama.cpp threads: {THREADS}, n_ctx {N_CTX}, load average at start: "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(f"seeds: {args.seeds} x rounds: {args.rounds}, modes interleaved; medians")

    engines = [mode_engine(pair, args.tokens, spec) for _, spec in MODES]
    try:
        floor_llm = engines[-1].llm  # the default engine's own context: same threads and KV
        n_vocab = floor_llm.n_vocab()
        repack = getattr(engines[-1], "repack", None)
        print(
            f"vocabulary: {n_vocab} tokens; engine CPU repack: "
            f"{'n/a' if repack is None else repack.enabled}"
        )
        print(f"llguidance set-up (tokenizer from the vocab + schema compile): {setup_ms()}")
        image = engines[0].prepare(photo())
        prompt_len = warm_up(engines, image)
        bare_decode(floor_llm, prompt_len, 16)  # warm-up
        samples, floors = interleaved(
            engines, image, args.seeds, args.rounds, bare=(floor_llm, prompt_len, args.tokens)
        )
        floor = statistics.median(b.ms_per_token for b in floors)
        print(f"\n## Cost per generated token ({args.tokens}-token budget) vs bare decode\n")
        print(
            f"Card prompt: {prompt_len} tokens (image included). Bare decode: llama_decode of "
            f"one fixed token at a time at positions {prompt_len}..{prompt_len + args.tokens}, "
            "in the same context as the default engine (text tokens in place of the image's). "
            "Forced (fast-forward) tokens are output tokens and count as generated; a step is "
            "one sampled token (with the forced tokens decoded in its batch); mask ms is "
            "llguidance's mask (compute + apply) per generated token and per step.\n"
        )
        print(
            "| decoding | ms/token | tokens/s | vs bare decode | ms/step | step vs bare decode "
            "| forced tokens | mask ms/token | mask ms/step | prefill ms (image + prompt) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print(
            f"| llama.cpp bare decode (floor) | {floor:.2f} | {1000 / floor:.1f} | 1.000x "
            f"| {floor:.2f} | 1.000x | — | — | — | — |"
        )
        for (label, _), rows in zip(MODES, samples, strict=True):
            ms = med(rows, "ms_per_token")
            mask = statistics.median(r["mask_ms"] / max(r["tokens"], 1) for r in rows)
            step = statistics.median(r["mask_ms"] / max(r["tokens"] - r["forced"], 1) for r in rows)
            per_step = statistics.median(
                r["generate_ms"] / max(r["tokens"] - r["forced"], 1) for r in rows
            )
            print(
                f"| {label} | {ms:.2f} | {1000 / ms:.1f} | {ms / floor:.3f}x "
                f"| {per_step:.2f} | {per_step / floor:.3f}x "
                f"| {med(rows, 'forced'):.0f} | {mask:.3f} | {step:.3f} "
                f"| {med(rows, 'image_ms'):.0f} + {med(rows, 'prompt_ms'):.0f} |"
            )
        print(
            f"\nbare decode: {floor:.2f} ms/token (min {min(b.ms_per_token for b in floors):.2f}, "
            f"max {max(b.ms_per_token for b in floors):.2f} over {len(floors)} runs); its prompt "
            f"evaluation ({prompt_len} text tokens): "
            f"{statistics.median(b.prefill_tokens_per_s for b in floors):.0f} tokens/s"
        )

        card = [
            (label, eng)
            for (label, spec), eng in zip(MODES, engines, strict=True)
            if spec["grammar_backend"] in CARD_MODES_REAL
        ]
        for _, eng in card:
            set_budget(eng, args.card_tokens)
        card_samples: list[list[dict[str, float]]] = [[] for _ in card]
        card_floors: list[Bare] = []
        for seed in range(args.card_seeds):
            for i, (_, eng) in enumerate(card):
                started = time.perf_counter()
                raw = eng.generate(image, seed=100 + seed)
                card_samples[i].append(sample_row(raw, (time.perf_counter() - started) * 1000.0))
            # the floor over the same positions as the default mode's card just written
            n = int(card_samples[-1][-1]["tokens"])
            card_floors.append(bare_decode(floor_llm, prompt_len, max(n, 1)))
    finally:
        for eng in engines:
            eng.close()
    card_floor = statistics.median(b.ms_per_token for b in card_floors)
    print(f"\n## One card attempt (card budget: {args.card_tokens} tokens), end to end\n")
    print(
        "Seconds from the prepared image to the finished generation (image encode, prompt, "
        "generation; no retries). Floor: llama.cpp's bare decode over the positions of the "
        f"default mode's card, measured after each round of attempts ({card_floor:.2f} "
        "ms/token), times the attempt's tokens, plus the attempt's prefill.\n"
    )
    print(
        "| decoding | s/attempt | tokens | forced | closed JSON | ms/token (generation) "
        "| vs bare decode | floor s (bare decode x tokens + prefill) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (label, _), rows in zip(card, card_samples, strict=True):
        wall = med(rows, "wall_ms") / 1000.0
        ms = med(rows, "ms_per_token")
        tokens = med(rows, "tokens")
        floor_s = (tokens * card_floor + med(rows, "prefill_ms")) / 1000.0
        print(
            f"| {label} | {wall:.2f} | {tokens:.0f} | {med(rows, 'forced'):.0f} "
            f"| {sum(r['stop'] for r in rows):.0f}/{len(rows)} | {ms:.2f} "
            f"| {ms / card_floor:.3f}x | {floor_s:.2f} |"
        )

    repack_section(pair.model, prompt_len, args.tokens, args.rounds * args.seeds)


def repack_section(model: Path, prompt_len: int, n_tokens: int, rounds: int) -> None:
    """Bare decode and prompt evaluation with and without CPU weight repacking, interleaved."""
    llms = {on: bare_llama(model, on) for on in (True, False)}
    try:
        for llm in llms.values():
            bare_decode(llm, prompt_len, 16)  # warm-up
        runs: dict[bool, list[Bare]] = {True: [], False: []}
        for _ in range(rounds):
            for on, llm in llms.items():
                runs[on].append(bare_decode(llm, prompt_len, n_tokens))
    finally:
        for llm in llms.values():
            llm.close()
    print("\n## CPU weight repacking (llama_model_params.use_extra_bufts), bare llama.cpp\n")
    print(
        f"Two more loads of the model, alternated {rounds} times: prompt evaluation of "
        f"{prompt_len} text tokens (n_batch {EngineSettings.model_fields['n_batch'].default}), "
        f"then {n_tokens} single-token decodes.\n"
    )
    print("| use_extra_bufts | decode ms/token | decode tokens/s | prompt eval tokens/s |")
    print("|---|---|---|---|")
    table = {}
    for on, rs in runs.items():
        ms = statistics.median(b.ms_per_token for b in rs)
        pp = statistics.median(b.prefill_tokens_per_s for b in rs)
        table[on] = (ms, pp)
        print(f"| {on} | {ms:.2f} | {1000 / ms:.1f} | {pp:.0f} |")
    (on_ms, on_pp), (off_ms, off_pp) = table[True], table[False]
    print(
        f"\nrepacking: decode {off_ms / on_ms:.2f}x as fast, prompt evaluation "
        f"{on_pp / off_pp:.2f}x as fast (on vs off)"
    )


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None, help="default 5 (tiny), 3 (real)")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of the seed set")
    parser.add_argument("--threads", type=int, default=THREADS, help="llama.cpp CPU threads")
    parser.add_argument("--memory", type=int, default=200, help="generations (0 = skip; tiny)")
    parser.add_argument("--models", type=Path, default=Path("/tmp/vitrine-bench-models"))
    real = parser.add_argument_group("real weights")
    real.add_argument(
        "--real",
        action="store_true",
        help="the suite's real pair (tests/support/tiny_models.real_pair: Gemma 3 270M Q4_K_M "
        "from the cache or its package, a generated 640-wide projector, llava15), written under "
        "--models",
    )
    real.add_argument("--model", type=Path, help="text model GGUF")
    real.add_argument("--mmproj", type=Path, help="vision projector GGUF")
    real.add_argument("--handler", default="llava15", help="chat handler (default llava15)")
    real.add_argument("--tokens", type=int, default=200, help="per-token budget (real)")
    real.add_argument("--card-seeds", type=int, default=2, help="card attempts per mode (real)")
    real.add_argument("--card-tokens", type=int, default=1536, help="card budget (real)")
    args = parser.parse_args()
    if args.real:
        if args.model is not None or args.mmproj is not None:
            parser.error("--real or --model/--mmproj, not both")
        from tests.support.tiny_models import real_pair

        pair = real_pair(args.models)["llava"]
        args.model, args.mmproj, args.handler = pair.model, pair.mmproj, pair.handler
    if (args.model is None) != (args.mmproj is None):
        parser.error("give --model and --mmproj together")

    THREADS = args.threads
    if args.model is None:
        args.seeds = args.seeds or 5
        tiny_main(args)
    else:
        args.seeds = args.seeds or 3
        real_main(args)


if __name__ == "__main__":
    main()
