"""The prompt's order (``VITRINE_PROMPT_ORDER``): what comes before the image, what after, and the
version cards record.  The handlers' own rendering is checked on the tiny models
(``tests/model/test_prompt_order.py``); here the chat templates render the messages."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.card import generation_schema
from services.inference.card.prompt import TEMPLATE_VERSION, Prompt
from services.inference.engine.chat_templates import BUILTIN, MEDIA_MARKER, render
from services.inference.settings import EngineSettings

IMAGE_A = "data:image/png;base64,QUFBQQ=="
IMAGE_B = "data:image/jpeg;base64,QkJCQkJC"
TASKS = {
    "en": "Fill in the card for the product in this photo.",
    "pt-br": "Preencha a ficha do produto desta foto.",
}


def prompt_for(**settings: Any) -> Prompt:
    values = EngineSettings(**settings)
    return values.prompt(generation_schema(values.card_type()))


def split_at_image(messages: list[Any], template: str) -> tuple[str, str]:
    text = render(BUILTIN[template], messages)
    assert text.count(MEDIA_MARKER) == 1
    before, after = text.split(MEDIA_MARKER)
    return before, after


def test_the_default_is_instructions_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITRINE_PROMPT_ORDER", raising=False)
    assert EngineSettings().prompt_order == "instructions_first"
    monkeypatch.setenv("VITRINE_PROMPT_ORDER", "image_first")
    assert EngineSettings().prompt_order == "image_first"
    monkeypatch.setenv("VITRINE_PROMPT_ORDER", "sideways")
    with pytest.raises(ValidationError):
        EngineSettings()


@pytest.mark.parametrize("language", ["en", "pt-br"])
def test_instructions_first_puts_every_static_text_before_the_image(language: str) -> None:
    prompt = prompt_for(language=language, prompt_order="instructions_first")
    system, user = prompt.messages(IMAGE_A)
    assert [part["type"] for part in user["content"]] == ["image_url", "text"]
    # after the image: the task line and nothing else
    assert user["content"][1]["text"] == TASKS[language]
    # before it: role, rules, field guide, tree, attributes, word minimum
    assert system["content"] == f"{prompt.system}\n\n{prompt.instructions}"
    for static in ("Fields:" if language == "en" else "Campos:", "description_long", " > "):
        assert static in system["content"]
    assert str(EngineSettings().min_description_words) in system["content"]


def test_the_task_line_follows_the_instructions_language_not_the_output() -> None:
    prompt = prompt_for(language="pt-br", prompt_language="en")
    assert prompt.messages(IMAGE_A)[1]["content"][1]["text"] == TASKS["en"]


@pytest.mark.parametrize("language", ["en", "pt-br"])
def test_image_first_keeps_the_older_layout_and_version(language: str) -> None:
    prompt = prompt_for(language=language, prompt_order="image_first")
    system, user = prompt.messages(IMAGE_A, ["too short"])
    assert system == {"role": "system", "content": prompt.system}
    assert user["content"][0] == {"type": "image_url", "image_url": {"url": IMAGE_A}}
    intro = prompt.template.intro
    note = prompt.template.retry_note.format(problems="too short")
    assert user["content"][1]["text"] == f"{intro}\n\n{prompt.instructions}{note}"
    # the hash image_first cards recorded before the order was a setting
    tree = EngineSettings(language=language).tree()
    hashed = f"{prompt.system}\x00{prompt.user}\x00{tree.digest}".encode()
    assert prompt.version == f"{TEMPLATE_VERSION}+{hashlib.sha256(hashed).hexdigest()[:8]}"


def test_the_order_is_part_of_the_version() -> None:
    first = prompt_for(prompt_order="instructions_first").version
    older = prompt_for(prompt_order="image_first").version
    assert first != older
    assert first.startswith(f"{TEMPLATE_VERSION}+") and older.startswith(f"{TEMPLATE_VERSION}+")


@pytest.mark.parametrize("template", sorted(BUILTIN))
def test_rendered_instructions_first_has_only_the_task_after_the_image(template: str) -> None:
    prompt = prompt_for(language="en", prompt_order="instructions_first")
    before, after = split_at_image(prompt.messages(IMAGE_A), template)
    assert prompt.instructions.strip() in before and prompt.system in before
    assert after.strip().startswith(TASKS["en"])
    assert "Fields:" not in after and "description_long" not in after
    assert len(after) < len(TASKS["en"]) + 40  # the task line and the template's turn marks


@pytest.mark.parametrize("template", sorted(BUILTIN))
def test_rendered_image_first_has_the_instructions_after_the_image(template: str) -> None:
    prompt = prompt_for(language="en", prompt_order="image_first")
    before, after = split_at_image(prompt.messages(IMAGE_A), template)
    assert prompt.system in before and "Fields:" not in before
    assert prompt.instructions.strip() in after


@pytest.mark.parametrize("template", sorted(BUILTIN))
def test_the_text_before_the_image_is_the_same_for_every_card_and_retry(template: str) -> None:
    prompt = prompt_for(language="en", prompt_order="instructions_first")
    first, first_after = split_at_image(prompt.messages(IMAGE_A), template)
    other, _ = split_at_image(prompt.messages(IMAGE_B), template)
    retry, retry_after = split_at_image(prompt.messages(IMAGE_A, ["not JSON"]), template)
    assert first.encode() == other.encode() == retry.encode()
    note = prompt.template.retry_note.format(problems="not JSON")
    assert note.strip() in retry_after and note.strip() not in first_after
    assert retry_after.index(TASKS["en"]) < retry_after.index(note.strip())
