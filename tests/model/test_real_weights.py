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
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from schemas.card import WORD_PATTERN
from schemas.language import PT_BR, colour_pattern
from services.inference.card.checks import check_card
from services.inference.card.errors import GenerationError, InvalidOutput, TruncatedOutput
from services.inference.engine.card_engine import CardEngine
from services.inference.engine.native import build_features, choose_repack
from services.inference.engine.native_probe import CHILD_TIMEOUT_S, NativeCrash
from tests.support.engines import load_engine
from tests.support.rss import rss_mb
from tests.support.tiny_models import TinyPair, real_pair

pytestmark = [pytest.mark.model, pytest.mark.realweights]

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="session")
def real_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyPair]:
    return real_pair(tmp_path_factory.mktemp("real-pair"))


def real_engine(pair: TinyPair, **overrides: object) -> CardEngine:
    values: dict[str, object] = {"word_minimum": "grammar", "n_ctx": 4096}
    if pair.chat_template:
        values["chat_template"] = pair.chat_template
    values.update(overrides)
    return load_engine(pair, **values)


@pytest.fixture(scope="module")
def backend_engine(real_pairs) -> Iterator[CardEngine]:
    """llguidance with the generic handler and the Gemma template on the real vocabulary.
    GBNF's whole card is not run here: it samples the 262k vocabulary 17-20x slower per token
    (four minutes of the suite for one card); its grammar on the real vocabulary is the
    six-thousand-leaf test's below (the card up to its attributes), its whole card schema
    test_grammar_backends.py's on the tiny models."""
    engine = real_engine(
        real_pairs["mtmd"], grammar_backend="llguidance", max_attempts=1, max_tokens=1536
    )
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
    """The quantized kernels, not only the f32 toys, and Gemma 3's sliding-window layers: a
    generation alone in a slot of the batched engine, its prompt's text before the image copied
    from the shared prefix, gives the single-sequence path's tokens (the whole prompt
    prefilled); generations side by side each end
    with their own text (batch-mates may change a quantized model's last bits, so they are
    not compared)."""
    assert default_engine.parallel > 1 and default_engine.slots is not None
    alone = real_engine(
        real_pairs["llava"],
        max_tokens=64,
        max_attempts=1,
        engine_parallel=1,
        shared_prefix=False,  # llama-cpp-python's own path: the whole prompt prefilled
    )
    try:
        image = alone.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
        a = alone.generate(image, seed=5)
    finally:
        alone.close()
    b = default_engine.generate(image, seed=5)
    assert (b.text, b.finish_reason) == (a.text, a.finish_reason)
    assert a.timings.cached_tokens == 0 and b.timings.cached_tokens > 1000  # the copied prefix
    with ThreadPoolExecutor(3) as pool:
        side_by_side = list(
            pool.map(lambda seed: default_engine.generate(image, seed=seed), (6, 7, 8))
        )
    assert all(g.timings.completion_tokens > 0 for g in side_by_side)
    assert all(g.text.startswith('{"product_name": "') for g in side_by_side)


def test_on_real_weights_the_shortlist_samples_the_whole_vocabulary_s_card(default_engine) -> None:
    """The top-k shortlist (``shortlist.py``) on 262k real logits, grammar-masked: the same
    card, token for token, as llama.cpp sampling the whole vocabulary, same seed."""
    decoder = default_engine.decoder
    assert decoder is not None and decoder.shortlist
    image = default_engine.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
    short = default_engine.generate(image, seed=11)
    decoder.shortlist = False
    try:
        whole = default_engine.generate(image, seed=11)
    finally:
        decoder.shortlist = True
    assert whole.timings.completion_tokens > 20
    assert (short.text, short.finish_reason) == (whole.text, whole.finish_reason)


def test_on_real_weights_a_retry_keeps_its_image_and_its_sliding_window(
    real_pairs, default_engine
) -> None:
    """Gemma 3 keeps only a 512-token window in five layers of six.  A retry truncates its
    slot back to just after the image, evaluates only its task line and note, and encodes no
    image.  After a short first attempt the window's cells are still in place, and the retry
    gives the tokens of the same retry prefilled whole; after a long one (past the window's
    ring) they are put back from the checkpoint taken after the image, and the retry is still
    a card in the making (its last bits may differ: the cells sit elsewhere in the cache)."""
    assert default_engine.slots is not None
    image = default_engine.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
    note = ["a descrição tem 12 palavras; o mínimo é 40"]
    alone = real_engine(
        real_pairs["llava"], max_tokens=64, max_attempts=1, engine_parallel=1, shared_prefix=False
    )
    try:
        reference = alone.generate(image, seed=41, retry_problems=note)
    finally:
        alone.close()
    with default_engine.slots.lease() as lease:
        first = default_engine.generate(image, seed=40, lease=lease)
        retry = default_engine.generate(image, seed=41, retry_problems=note, lease=lease)
        assert lease.slot is not None and lease.slot.view.held is not None
        assert lease.slot.view.held.window and lease.slot.view.held.restores == 0
    assert retry.text == reference.text
    assert first.timings.image_encode_ms > 0 and retry.timings.image_encode_ms == 0
    evaluated = retry.timings.prompt_tokens - retry.timings.cached_tokens
    assert 0 < evaluated <= 0.1 * first.timings.prompt_tokens  # the note and the task line

    long = real_engine(real_pairs["llava"], max_tokens=700, max_attempts=2, engine_parallel=2)
    try:
        assert long.slots is not None
        with long.slots.lease() as lease:
            first = long.generate(image, seed=40, lease=lease)
            assert first.timings.completion_tokens > 600  # past the window's ring
            # the retry's own length is not under test: a short one (seconds, not a minute)
            long.settings = long.settings.model_copy(update={"max_tokens": 64})
            retry = long.generate(image, seed=41, retry_problems=note, lease=lease)
            assert lease.slot is not None and lease.slot.view.held is not None
            assert lease.slot.view.held.restores == 1
    finally:
        long.close()
    assert retry.timings.image_encode_ms == 0 and retry.timings.completion_tokens > 0
    assert retry.text.startswith('{"product_name": "')


def test_the_model_is_real_and_quantized_and_auto_repack_is_the_rule(default_engine) -> None:
    engine = default_engine
    assert engine.llm.n_vocab() == 262_144
    assert engine.llm.metadata["general.architecture"] == "gemma3"
    assert engine.llm.metadata["general.file_type"] == "15"  # MOSTLY_Q4_K_M
    assert engine.repack == choose_repack("auto")


AMX_BUILD = build_features().get("AMX_INT8") == "1"
"""This llama.cpp build has its AMX kernels (an Intel Xeon with AMX): repacking the real
Q4_K_M weights into them crashed at the first decode on the AMX machines we had, and is
reported upstream as machine-dependent, so a host where it decodes is not an error."""

AMX_CRASH = r"crashed \(SIG\w+\).*AMX \(amx_int8\).*set VITRINE_CPU_REPACK=auto"


@pytest.mark.parametrize("setting", ["on", "portable", "off"])
def test_repacking_on_portable_or_off_loads_self_tests_and_decodes(
    real_pairs, setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each setting passes the start-up self-test and then generates (no grammar: the load is
    what is under test, and llguidance's 262k-entry tokenizer takes seconds to build), except
    ``on`` with AMX kernels where the kernels crash: the self-test ran in a child first, so
    that is a clear start-up error naming AMX and the setting, and this process lives on.
    (Before, the crash killed the pytest run here.)  Machines without AMX take that branch
    through ``tests/support/crashing_self_test.py`` (test_native.py)."""
    monkeypatch.setenv("VITRINE_CACHE_DIR", str(tmp_path))  # a verdict of its own, not cached
    try:
        engine = real_engine(
            real_pairs["llava"], cpu_repack=setting, grammar_backend="none", max_tokens=64
        )
    except NativeCrash as exc:
        if not (setting == "on" and AMX_BUILD):
            raise
        assert re.search(AMX_CRASH, str(exc)), exc
        return
    try:
        assert engine.repack.enabled is (setting != "off")
        assert engine.probe.ran is (setting != "off")  # repacking is what a child proves first
        overrides = engine.llm.buft_overrides
        if setting == "portable":  # the real Q4_K_M's 27 Q4_K blk weights, pinned by name
            assert overrides is not None and overrides.count == 27
        else:
            assert overrides is None
        image = engine.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
        raw = engine.generate(image, seed=1)
        assert raw.timings.completion_tokens > 0
    finally:
        engine.close()


@pytest.mark.skipif(
    not AMX_BUILD, reason="a real crash needs AMX kernels; test_native.py's wrapper has the path"
)
def test_vitrine_card_with_repacking_forced_on_amx_ends_clearly(real_pairs, tmp_path: Path) -> None:
    """What a user on an AMX machine sees with ``VITRINE_CPU_REPACK=on``: where the kernels
    crash, one line and exit 2, not a dead process with exit 139; where they do not, a card
    or a typed failure, as any run."""
    pair = real_pairs["llava"]
    photo = str(SAMPLES / "caneca-azul.jpg")
    result = subprocess.run(
        [sys.executable, "-m", "vitrine.cli", "card", photo, "--json", *pair.cli_args()],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "COLUMNS": "300",
            "VITRINE_CPU_REPACK": "on",
            "VITRINE_CACHE_DIR": str(tmp_path),
        },
        timeout=CHILD_TIMEOUT_S + 600,  # the child's own limit first
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    if result.returncode == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("vitrine: ")]
        assert len(errors) == 1 and re.search(AMX_CRASH, errors[0]), result.stderr[-2000:]
    else:
        assert result.returncode in (0, 1), (result.returncode, result.stderr[-2000:])
        assert json.loads(result.stdout)["status"] in ("done", "failed")


def test_a_card_or_a_typed_error_and_the_grammar_holds_on_the_raw_text(backend_engine) -> None:
    """Whatever the content checks say, the grammar's rules hold on what the model wrote:
    the category enum, the colour names, three bounded features, no extra keys, and the
    description's bounds (exactly 400-2000 characters, the words held open by the decoder
    until the character bound forbids more)."""
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
    assert 400 <= len(description) <= 2000
    assert words >= 150 or len(description) > 1950, (words, len(description))
    try:  # the same text through the engine's own parse and checks (no second generation)
        card = engine.parse(raw)
    except InvalidOutput:  # a bound only validation has
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


@pytest.mark.parametrize("backend", ["llguidance", "gbnf"])
def test_a_six_thousand_leaf_tree_yields_a_leaf_path_and_its_attributes(
    real_pairs, tmp_path, backend: str
) -> None:
    """The generated 6,000-leaf tree (90 attribute groups) on the real vocabulary, both
    backends and both handler kinds: the path the model writes is a leaf, and the attributes
    that follow are that leaf's.  A short budget: the category comes second in the card."""
    from tests.support.big_tree import write

    path = write("yaml", tmp_path / "big.yaml")
    pair = real_pairs["mtmd" if backend == "llguidance" else "llava"]
    engine = real_engine(
        pair, grammar_backend=backend, taxonomy_file=path, max_attempts=1, max_tokens=160
    )
    try:
        tree = engine.card_type.taxonomy
        assert tree is not None and len(tree.leaves) == 6000
        image = engine.prepare((SAMPLES / "caneca-azul.jpg").read_bytes())
        for seed in (1,) if backend == "gbnf" else (1, 2):  # GBNF: 17-20x slower a token
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
