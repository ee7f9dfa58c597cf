"""The grammar a card's facts force: the engine's schema with values made ``const``, compiled
for the engine's backend once per distinct set of forced values.

A shop that uploads a catalogue gives the same few colours and attribute values again and
again, so compiled variants are kept (least recently used out); llguidance's variant shares
the engine grammar's tokenizer (the slow part to build), GBNF's is parsed and proven by
llama.cpp as the engine's own was at start.  A binding that forces nothing uses the engine's
grammar.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llama_cpp import Llama, LlamaGrammar

from services.inference.card.facts import Binding
from services.inference.engine.decoding import GuidanceGrammar
from services.inference.engine.grammar import grammar_schema

CACHED = 64


@dataclass(frozen=True)
class Constraint:
    """One generation's grammar: llguidance's (``guidance``) or llama.cpp's (``grammar``)."""

    guidance: GuidanceGrammar | None = None
    grammar: LlamaGrammar | None = None


class FactGrammars:
    def __init__(
        self,
        llm: Llama,
        guidance: GuidanceGrammar | None,
        grammar: LlamaGrammar | None,
    ) -> None:
        self._llm = llm
        self.base = Constraint(guidance, grammar)
        self._cache: OrderedDict[str, Constraint] = OrderedDict()
        self._lock = threading.Lock()
        self.compiled = 0
        """Variants compiled so far (a test reads it: the cache serves repeats)."""

    def for_binding(self, binding: Binding) -> Constraint:
        if not binding.key or (self.base.guidance is None and self.base.grammar is None):
            return self.base
        with self._lock:
            found = self._cache.get(binding.key)
            if found is not None:
                self._cache.move_to_end(binding.key)
                return found
        made = self._compile(binding.schema)
        with self._lock:
            self._cache[binding.key] = made
            self.compiled += 1
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)
        return made

    def _compile(self, schema: dict[str, Any]) -> Constraint:
        if self.base.guidance is not None:
            variant = grammar_schema(schema, words_by_decoder=True)
            return Constraint(guidance=self.base.guidance.variant(variant, self._llm))
        from services.inference.engine.opener import compile_grammar

        return Constraint(grammar=compile_grammar(grammar_schema(schema), self._llm))
