"""Chat templates for models that ship without one (``VITRINE_CHAT_TEMPLATE``).

llama-cpp-python's generic ``MTMDChatHandler`` renders the model's ``tokenizer.chat_template``
(Jinja) and refuses a model that has none, e.g. a base model.  The setting names a built-in
template (``gemma``, ``chatml``) or a Jinja file; the engine puts it into the model's metadata,
where the handler reads it.  **Given explicitly, the setting wins over the model's own template**
(the setting has no default, so it is only ever set on purpose, typically to fix a model whose
template is missing or wrong); not given, the model's own template is used.

How the handler renders (llama-cpp-python 0.3.36, ``MTMDChatHandler.__call__``): each
``image_url`` content part is replaced by a *text* part holding libmtmd's media marker
(``<__media__>``), where the image's embeddings go; the templates therefore print the text of
every text part and nothing else, and the marker comes out where the image stood.  The handler
tokenizes with ``add_special=True``, so llama.cpp adds the BOS token itself for models that want
one: unlike the Hugging Face originals, these templates do not start with ``{{ bos_token }}``
(which would be a second BOS).  Templates are rendered with ``trim_blocks`` and ``lstrip_blocks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GEMMA = r"""
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- else -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
""".strip()
"""Gemma 3's template: turns ``<start_of_turn>user|model`` ... ``<end_of_turn>``, the system
text folded into the first user turn (Gemma has no system role)."""

CHATML = r"""
{%- for message in messages -%}
    {{ '<|im_start|>' + message['role'] + '\n' }}
    {%- if message['content'] is string -%}
        {{ message['content'] }}
    {%- else -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ '<|im_end|>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<|im_start|>assistant\n' }}
{%- endif -%}
""".strip()
"""ChatML (Qwen, many fine-tunes): ``<|im_start|>role`` ... ``<|im_end|>``."""

BUILTIN: dict[str, str] = {"gemma": GEMMA, "chatml": CHATML}
MEDIA_MARKER = "<__media__>"
"""libmtmd's default marker (``mtmd_default_marker()``), used to check a template keeps images."""


class ChatTemplateError(ValueError):
    pass


def template_text(spec: str) -> str:
    """The Jinja source for ``spec``: a built-in name, else a path to a file."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ChatTemplateError(
            f"chat template {spec!r} is neither a built-in ({', '.join(BUILTIN)}) nor a file"
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatTemplateError(f"cannot read chat template {path}: {exc}") from None


def render(source: str, messages: list[dict[str, Any]]) -> str:
    """Render like ``MTMDChatHandler`` does (its environment and helpers, image parts as the
    media marker); for checks and tests."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    parts_as_marker = [
        {
            **m,
            "content": [
                {"type": "text", "text": MEDIA_MARKER} if p.get("type") == "image_url" else p
                for p in m["content"]
            ]
            if isinstance(m["content"], list)
            else m["content"],
        }
        for m in messages
    ]
    try:
        return env.from_string(source).render(
            messages=parts_as_marker,
            add_generation_prompt=True,
            bos_token="",
            eos_token="",
            raise_exception=raise_exception,
        )
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"chat template does not render: {exc}") from None


def load_chat_template(spec: str) -> str:
    """The checked Jinja source for ``spec``: it must parse, render a system + image + text
    conversation, and keep the image (exactly one media marker) and the text."""
    source = template_text(spec)
    sample: list[dict[str, Any]] = [
        {"role": "system", "content": "SYSTEM-TEXT"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}},
                {"type": "text", "text": "USER-TEXT"},
            ],
        },
    ]
    text = render(source, sample)
    if text.count(MEDIA_MARKER) != 1 or "USER-TEXT" not in text or "SYSTEM-TEXT" not in text:
        raise ChatTemplateError(
            f"chat template {spec!r} must print the system text and the text of each text "
            "content part (the image arrives as one); its output for a system + image + text "
            "conversation was: " + repr(text[:200])
        )
    return source
