"""Category-tree benchmark: what a tree of thousands of leaves costs the grammar and the prompt.

    python bench/taxonomy_bench.py --real [--seeds 3] [--max-tokens 400]
    python bench/taxonomy_bench.py --model M.gguf --mmproj P.gguf --handler llava15

Trees, all in the same run: the flat pt-BR list (26 categories, the baseline), the shipped pt-BR
tree (``schemas/taxonomies/pt-BR.yaml``), and the generated 6,000-leaf tree of
``tests/support/big_tree.py`` in Google's text format (no attributes) and in YAML (attributes; 90
attribute groups).  For each:

1. **Compile**, per process, against the model's vocabulary: llguidance (schema → grammar →
   validation → first matcher; the tokenizer is built once per model and reported apart) and
   GBNF (our converter → llama.cpp's parser → ``llama_sampler_init_grammar``).  The design
   choice is measured too: the leaf paths as one radix tree whose leaves carry their group's
   attributes (what the converter emits) against the plain translation (each group an
   alternative, each enum flat alternatives), for GBNF's per-token mask on the category path.
2. **Prompt tokens** with the model's tokenizer, and the growth over the flat list's prompt.
3. **Per-token cost** of whole card generations (llguidance, fast-forward, the default
   engine path, one slot) against unconstrained decoding of the same prompt by the same
   model (``grammar_backend=none``), interleaved seed by seed: ms per output token and the
   ratio; forced tokens count as output tokens, as everywhere in vitrine.
4. **Validity**: every generation's ``category.path`` is looked up in its tree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import llama_cpp  # noqa: E402
from llama_cpp import Llama, LlamaGrammar  # noqa: E402
from llguidance import LLMatcher  # noqa: E402
from llguidance.llamacpp import lltokenizer_from_vocab  # noqa: E402

import services.inference.engine.grammar as grammar_module  # noqa: E402
from schemas.card import card_model, default_taxonomy, generation_schema  # noqa: E402
from schemas.language import PT_BR, colour_pattern  # noqa: E402
from schemas.taxonomy import Taxonomy  # noqa: E402
from services.inference.card.errors import CardError  # noqa: E402
from services.inference.engine.card_engine import CardEngine  # noqa: E402
from services.inference.engine.decoding import JSON_OPTIONS  # noqa: E402
from services.inference.engine.grammar import grammar_schema, json_schema_to_gbnf  # noqa: E402
from services.inference.engine.model_files import resolve  # noqa: E402
from services.inference.settings import EngineSettings  # noqa: E402
from tests.support import big_tree  # noqa: E402


def trees(workdir: Path) -> dict[str, tuple[Taxonomy, Path | None]]:
    google = big_tree.write("google", workdir / "big.txt")
    yaml = big_tree.write("yaml", workdir / "big.yaml")
    return {
        "flat (26)": (Taxonomy.flat_list(PT_BR.taxonomy), None),
        "shipped pt-BR": (default_taxonomy(PT_BR), None),
        "6000 Google": (Taxonomy.load(google), google),
        "6000 YAML+attrs": (Taxonomy.load(yaml), yaml),
    }


def schema_for(tree: Taxonomy) -> dict[str, Any]:
    return generation_schema(card_model(tree, colour_regex=colour_pattern(PT_BR)))


def compile_llguidance(schema: dict[str, Any], tokenizer: Any) -> float:
    started = time.perf_counter()
    grammar = LLMatcher.grammar_from_json_schema(
        grammar_schema(schema, words_by_decoder=True), overrides=JSON_OPTIONS
    )
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    matcher = LLMatcher(tokenizer, grammar, log_level=0)
    assert not is_error and not messages and not matcher.is_error(), messages
    return (time.perf_counter() - started) * 1000.0


def compile_gbnf(schema: dict[str, Any], llm: Llama, *, trie: bool = True) -> tuple[float, Any]:
    saved = grammar_module.TRIE_MIN
    merge = grammar_module._Converter._discriminated
    grammar_module.TRIE_MIN = grammar_module.TRIE_MIN if trie else 10**9
    if not trie:  # the plain translation: every enum and every anyOf as flat alternatives
        grammar_module._Converter._discriminated = lambda *_args: None  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        text = json_schema_to_gbnf(grammar_schema(schema))
        grammar = LlamaGrammar.from_string(text, verbose=False)
        sampler = llama_cpp.llama_sampler_init_grammar(
            llm._model.vocab, grammar._grammar.encode(), grammar._root.encode()
        )
        assert sampler, "llama.cpp refused the grammar"
        return (time.perf_counter() - started) * 1000.0, sampler
    finally:
        grammar_module.TRIE_MIN = saved
        grammar_module._Converter._discriminated = merge  # type: ignore[method-assign]


def gbnf_path_mask_ms(llm: Llama, sampler: Any, prefix: bytes) -> float:
    """ms of one grammar-sampler apply over the whole vocabulary, positioned just inside the
    category path (after ``prefix``, the document up to the path's opening quote)."""
    for piece in llm.tokenize(prefix, add_bos=False, special=False):
        llama_cpp.llama_sampler_accept(sampler, piece)
    n_vocab = llm.n_vocab()
    data = (llama_cpp.llama_token_data * n_vocab)(
        *[llama_cpp.llama_token_data(i, 0.0, 0.0) for i in range(n_vocab)]
    )
    array = llama_cpp.llama_token_data_array(data, n_vocab, -1, False)
    times = []
    for _ in range(3):
        for i in range(n_vocab):
            data[i].logit = 0.0
        started = time.perf_counter()
        llama_cpp.llama_sampler_apply(sampler, llama_cpp.ctypes.byref(array))
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def engine_for(args: argparse.Namespace, path: Path | None, backend: str, flat: bool) -> CardEngine:
    settings = EngineSettings(
        model_path=args.model,
        mmproj_path=args.mmproj,
        handler=args.handler,
        n_threads=args.threads,
        max_tokens=args.max_tokens,
        max_attempts=1,
        engine_parallel=1,
        job_timeout_s=0,
        grammar_backend=backend,
        taxonomy_file=path,
        taxonomy=PT_BR.taxonomy if flat else None,
        colour_check="off",
    )
    return CardEngine(resolve(settings), settings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true", help="the test suite's real Gemma pair")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--handler", default="llava15")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.real:
        from tests.support.tiny_models import real_pair

        pair = real_pair(Path("/tmp/vitrine-bench-models"))["llava"]
        args.model, args.mmproj, args.handler = pair.model, pair.mmproj, pair.handler
    if args.model is None or args.mmproj is None:
        parser.error("give --real, or --model and --mmproj")

    workdir = Path(tempfile.mkdtemp(prefix="vitrine-taxonomy-bench-"))
    all_trees = trees(workdir)
    vocab_llm = Llama(str(args.model), vocab_only=True, verbose=False)
    started = time.perf_counter()
    tokenizer = lltokenizer_from_vocab(vocab_llm._model.vocab)
    print(
        f"model {args.model.name}: {vocab_llm.n_vocab()} tokens; llguidance tokenizer "
        f"{(time.perf_counter() - started) * 1000:.0f} ms (once per model)\n"
    )

    print("## compile (ms, once per process) and prompt")
    print(
        "| tree | leaves | groups | llguidance | GBNF radix | GBNF flat | GBNF mask on path "
        "radix / flat (ms) | prompt tokens | vs flat |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base_prompt = 0
    for name, (tree, _path) in all_trees.items():
        schema = schema_for(tree)
        llg = statistics.median(compile_llguidance(schema, tokenizer) for _ in range(3))
        radix_ms, radix = compile_gbnf(schema, vocab_llm, trie=True)
        flat_ms, flat = compile_gbnf(schema, vocab_llm, trie=False)
        prefix = b'{"product_name": "Produto de teste", "category": {"path": "'
        mask_radix = gbnf_path_mask_ms(vocab_llm, radix, prefix)
        mask_flat = gbnf_path_mask_ms(vocab_llm, flat, prefix)
        for s in (radix, flat):
            llama_cpp.llama_sampler_free(s)
        settings = EngineSettings(
            taxonomy=PT_BR.taxonomy if name.startswith("flat") else None,
            taxonomy_file=_path,
        )
        prompt = settings.prompt(generation_schema(settings.card_type()))
        tokens = len(vocab_llm.tokenize(f"{prompt.system}\n{prompt.user}".encode(), special=True))
        base_prompt = base_prompt or tokens
        print(
            f"| {name} | {len(tree.leaves)} | {len(tree.attribute_groups())} | {llg:.0f} | "
            f"{radix_ms:.0f} | {flat_ms:.0f} | {mask_radix:.1f} / {mask_flat:.1f} | {tokens} | "
            f"+{tokens - base_prompt} |"
        )

    print("\n## per-token cost of whole cards, llguidance vs unconstrained, interleaved")
    engines = {"unconstrained": engine_for(args, None, "none", True)}
    for name, (_tree, path) in all_trees.items():
        engines[name] = engine_for(args, path, "llguidance", name.startswith("flat"))
    image = engines["unconstrained"].prepare(_photo())
    per_token: dict[str, list[float]] = {n: [] for n in engines}
    mask: dict[str, list[float]] = {n: [] for n in engines}
    valid: dict[str, list[bool]] = {n: [] for n in engines}
    for seed in range(args.seeds):
        for name, engine in engines.items():
            try:
                raw = engine.generate(image, seed=seed)
            except CardError as exc:
                print(f"  {name} seed {seed}: {exc.reason}")
                continue
            t = raw.timings
            per_token[name].append(t.generate_ms / max(t.completion_tokens, 1))
            mask[name].append(t.mask_ms / max(t.completion_tokens, 1))
            if name != "unconstrained":
                tree = engine.card_type.taxonomy
                assert tree is not None
                valid[name].append(_path_is_leaf(raw.text, tree))
    floor = statistics.median(per_token["unconstrained"])
    print("| tree | ms/token | vs unconstrained | mask ms/token | paths valid |")
    print("|---|---|---|---|---|")
    for name in engines:
        ms = statistics.median(per_token[name])
        checked = valid[name]
        validity = f"{sum(checked)}/{len(checked)}" if name != "unconstrained" else "—"
        print(
            f"| {name} | {ms:.2f} | {ms / floor:.2f}x | {statistics.median(mask[name]):.3f} | "
            f"{validity} |"
        )
    for engine in engines.values():
        engine.close()
    return 0


def _path_is_leaf(text: str, tree: Taxonomy) -> bool:
    """Whether the generated ``category.path`` is a leaf; a document cut by the token budget
    counts as valid when the path itself was complete (the path is all this checks)."""
    marker = '"path": "'
    start = text.find(marker)
    if start < 0:
        return False
    end = text.find('"', start + len(marker))
    if end < 0:
        return False
    try:
        path = json.loads(text[start + len(marker) - 1 : end + 1])
    except json.JSONDecodeError:
        return False
    return tree.leaf(path) is not None


def _photo() -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (640, 480), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.ellipse((180, 100, 460, 400), fill=(30, 60, 160))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
