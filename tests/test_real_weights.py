"""The engine on real quantized weights: Gemma 3 270M Q4_K_M, its real 262k vocabulary.

Random f32 toys never reach llama.cpp's quantized kernels or weight repacking (an AMX machine
crashed at the first decode on exactly this model), and a 32k vocabulary hides what a grammar
costs at 262k.  These tests load the real model, paired with a random projector (real language,
blind eyes: see ``tests/tiny_models.real_pair``), under both grammar backends and both handler
kinds: every generation ends as a card or a typed error, never a crash, and whatever the grammar
enforces holds on the raw text.  Kept to a few generations (about two minutes on 2 cores).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import load_engine
from schemas.card import WORD_PATTERN, bounded_description_pattern
from schemas.language import PT_BR, colour_pattern
from services.inference.checks import check_card
from services.inference.engine import CardEngine
from services.inference.errors import GenerationError, InvalidOutput, TruncatedOutput
from services.inference.native import choose_repack
from tiny_models import TinyPair, real_pair

pytestmark = [pytest.mark.model, pytest.mark.realweights]

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="session")
def real_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyPair]:
    return real_pair(tmp_path_factory.mktemp("real-pair"))


def real_engine(pair: TinyPair, **overrides: object) -> CardEngine:
    values: dict[str, object] = {"word_minimum": "grammar", "n_ctx": 4096}
    if pair.chat_template:
        values["chat_template"] = pair.chat_template
    values.update(overrides)
    return load_engine(pair, **values)


@pytest.fixture(scope="module", params=["llguidance", "gbnf"])
def backend_engine(request: pytest.FixtureRequest, real_pairs) -> Iterator[CardEngine]:
    # llguidance with the generic handler and the Gemma template, GBNF with the llava one:
    # both backends and both handler kinds run on the real vocabulary
    pair = real_pairs["mtmd" if request.param == "llguidance" else "llava"]
    engine = real_engine(pair, grammar_backend=request.param, max_attempts=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def default_engine(real_pairs) -> Iterator[CardEngine]:
    """The default settings on the real model (llguidance, auto repack, auto slots: batched),
    for the short tests."""
    engine = real_engine(real_pairs["llava"], max_tokens=64, max_attempts=1)
    yield engine
    engine.close()


def test_batched_on_real_weights_a_lone_card_is_the_sequential_one(
    real_pairs, default_engine
) -> None:
    """The quantized kernels, not only the f32 toys: a generation alone in a slot of the
    batched engine gives the single-sequence path's tokens; generations side by side each end
    with their own text (batch-mates may change a quantized model's last bits, so they are
    not compared)."""
    assert default_engine.parallel > 1 and default_engine.slots is not None
    alone = real_engine(real_pairs["llava"], max_tokens=64, max_attempts=1, engine_parallel=1)
    try:
        image = alone.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
        a = alone.generate(image, seed=5)
    finally:
        alone.close()
    b = default_engine.generate(image, seed=5)
    assert (b.text, b.finish_reason) == (a.text, a.finish_reason)
    with ThreadPoolExecutor(3) as pool:
        side_by_side = list(
            pool.map(lambda seed: default_engine.generate(image, seed=seed), (6, 7, 8))
        )
    assert all(g.timings.completion_tokens > 0 for g in side_by_side)
    assert all(g.text.startswith('{"product_name": "') for g in side_by_side)


def test_the_model_is_real_and_quantized_and_auto_repack_is_the_rule(default_engine) -> None:
    engine = default_engine
    assert engine.llm.n_vocab() == 262_144
    assert engine.llm.metadata["general.architecture"] == "gemma3"
    assert engine.llm.metadata["general.file_type"] == "15"  # MOSTLY_Q4_K_M
    assert engine.repack == choose_repack("auto")


@pytest.mark.parametrize("setting", ["on", "off"])
def test_repacking_on_or_off_loads_self_tests_and_decodes(real_pairs, setting: str) -> None:
    """Each setting passes the start-up self-test (a crash would end the test run here, which
    is the point: at start, not on a job) and then generates (no grammar: the load is what is
    under test, and llguidance's 262k-entry tokenizer takes seconds to build)."""
    engine = real_engine(
        real_pairs["llava"], cpu_repack=setting, grammar_backend="none", max_tokens=64
    )
    try:
        assert engine.repack.enabled is (setting == "on")
        image = engine.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
        raw = engine.generate(image, seed=1)
        assert raw.timings.completion_tokens > 0
    finally:
        engine.close()


def test_a_card_or_a_typed_error_and_the_grammar_holds_on_the_raw_text(backend_engine) -> None:
    """Whatever the content checks say, the grammar's rules hold on what the model wrote:
    the category enum, the colour names, three bounded features, no extra keys, and the
    description's bounds (llguidance: exactly 400-2000 characters, the words held open by the
    decoder until the character bound forbids more; GBNF: the bounded word pattern)."""
    engine = backend_engine
    image = engine.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
    raw = engine.generate(image, seed=11)
    if raw.finish_reason != "stop":  # a degenerate loop can spend max_tokens: a typed error
        with pytest.raises(TruncatedOutput):
            engine.parse(raw)
        return
    doc = json.loads(raw.text)
    assert list(doc) == list(engine.schema["properties"])
    tree = engine.card_type.taxonomy
    assert tree is not None
    leaf = tree.leaf(doc["category"]["path"])
    assert leaf is not None, doc["category"]
    assert list(doc["category"].get("attributes", {})) == [a.name for a in leaf.attributes]
    assert re.fullmatch(colour_pattern(PT_BR), doc["color_primary"])
    assert len(doc["features_list"]) == 3
    assert all(8 <= len(f) <= 160 for f in doc["features_list"])
    assert 3 <= len(doc["product_name"]) <= 120
    description = doc["description_long"]
    words = len(re.findall(WORD_PATTERN, description))
    if engine.settings.grammar_backend == "gbnf":
        assert re.fullmatch(bounded_description_pattern(150), description)
    else:
        assert 400 <= len(description) <= 2000
        assert words >= 150 or len(description) > 1950, (words, len(description))
    try:  # the same text through the engine's own parse and checks (no second generation)
        card = engine.parse(raw)
    except InvalidOutput:  # a bound only validation has (e.g. over 2000 characters with GBNF)
        return
    assert (card.category_path, card.category_id, card.category_standard) == (
        leaf.path_text,
        leaf.id,
        leaf.top,
    )
    assert not leaf.attribute_problems(card.attributes)
    broken = {f.check for f in check_card(card, PT_BR, engine.settings.min_description_words)}
    # content the grammar cannot judge may fail; the colour the grammar wrote must pass its check
    assert "color_vocabulary" not in broken, card.color_primary


def test_rss_is_flat_over_many_short_generations(default_engine) -> None:
    engine = default_engine
    image = engine.prepare((SAMPLES / "tenis-preto.jpg").read_bytes())
    samples = {}
    for i in range(1, 31):
        with pytest.raises(GenerationError):  # 64 tokens cannot hold a card: truncated
            engine.card_for_image(image, seed=i)
        if i in (5, 30):
            samples[i] = rss_mb()
    growth = samples[30] - samples[5]
    print(f"real weights: RSS after 5: {samples[5]:.1f} MB, after 30: {samples[30]:.1f} MB")
    assert growth < 40, f"RSS grew {growth:.1f} MB between generation 5 and 30"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.parametrize("backend", ["llguidance", "gbnf"])
def test_a_six_thousand_leaf_tree_yields_a_leaf_path_and_its_attributes(
    real_pairs, tmp_path, backend: str
) -> None:
    """The generated 6,000-leaf tree (90 attribute groups) on the real vocabulary, both
    backends and both handler kinds: the path the model writes is a leaf, and the attributes
    that follow are that leaf's.  A short budget: the category comes second in the card."""
    from big_tree import write

    path = write("yaml", tmp_path / "big.yaml")
    pair = real_pairs["mtmd" if backend == "llguidance" else "llava"]
    engine = real_engine(
        pair, grammar_backend=backend, taxonomy_file=path, max_attempts=1, max_tokens=160
    )
    try:
        tree = engine.card_type.taxonomy
        assert tree is not None and len(tree.leaves) == 6000
        image = engine.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
        for seed in (1, 2):
            text = engine.generate(image, seed=seed).text
            head = text[: text.index('"description_long"')]  # the card up to the description
            category = json.loads(head.rstrip(", ") + "}")["category"]
            leaf = tree.leaf(category["path"])
            assert leaf is not None, category
            assert list(category["attributes"]) == [a.name for a in leaf.attributes]
            assert not leaf.attribute_problems(
                {k: v for k, v in category["attributes"].items() if v is not None}
            )
    finally:
        engine.close()
