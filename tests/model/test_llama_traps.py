"""Known traps of llama-cpp-python 0.3.36, pinned down so a version bump re-checks them.

They are why the engine compiles its own grammar, verifies it, and passes ``grammar=`` itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.images import image_bytes

pytestmark = pytest.mark.model


def test_openai_json_schema_response_format_constrains_nothing(llava_engine) -> None:
    image = llava_engine.prepare(image_bytes("JPEG"))
    response = llava_engine.llm.create_chat_completion(
        messages=llava_engine.prompt.messages(image.data_uri()),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "card", "schema": llava_engine.schema},
        },
        max_tokens=64,
        seed=1,
    )
    text = response["choices"][0]["message"]["content"]
    with pytest.raises(ValueError):
        json.loads(text)


def test_json_object_with_the_card_schema_crashes_the_process(tiny_pairs) -> None:
    """The bundled converter's grammar is refused by llama.cpp, and the NULL sampler it leaves
    is chained anyway: the process dies with SIGSEGV.  (The engine never takes this path.)  The
    card's character bounds are enough for it; its patterns the converter cannot read at all."""
    pair = tiny_pairs["llava"]
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.support.images import image_bytes
        from tests.support.engines import load_engine
        from tests.support.tiny_models import TinyPair
        from services.inference.engine.grammar import grammar_schema
        from pathlib import Path
        pair = TinyPair(Path({str(pair.model)!r}), Path({str(pair.mmproj)!r}), "llava15")
        engine = load_engine(pair)
        image = engine.prepare(image_bytes("JPEG"))
        engine.llm.create_chat_completion(
            messages=engine.prompt.messages(image.data_uri()),
            response_format={{"type": "json_object", "schema": grammar_schema(
                engine.schema, words_by_decoder=True
            ) | {{"properties": {{
                k: {{n: v for n, v in p.items() if n != "pattern"}}
                for k, p in engine.schema["properties"].items()
            }}}}}},
            max_tokens=16,
        )
        print("survived")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert "survived" not in result.stdout
    assert result.returncode == -11, result.stderr[-500:]
