"""A deployment's card contract: the card its workers generate and its review desk accepts.

A handful of settings decide it (the output language, the category tree, the colour rule, the
description's word minimum).  The inference service and the review desk each read the same
``VITRINE_*`` variables into a :class:`CardContract` and build the card type here, so an edit a
person makes is held to exactly the rules the model was, without the desk importing the
inference service.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from schemas.card import ProductCard, card_model, default_taxonomy
from schemas.language import LanguageProfile, colour_pattern, profile_for
from schemas.taxonomy import Taxonomy, TaxonomyError

ColourVocabulary = Literal["grammar", "enforce", "check"]
"""grammar: the language's colour names with modifiers (a pattern); enforce: only the base names
(an enum); check: free text, held to the vocabulary by the engine's checks after generation."""

WordMinimum = Literal["grammar", "check"]
"""grammar: the description's word minimum is a pattern of the card type; check: it is left to
the content checks after generation."""


@dataclass(frozen=True, kw_only=True)
class CardContract:
    """What decides the card type: the taxonomy comes from ``taxonomy`` (an explicit flat list)
    if given, else from ``taxonomy_file``, else the language's shipped tree."""

    language: str
    taxonomy: tuple[str, ...] | None = None
    taxonomy_file: Path | None = None
    colour_vocabulary: ColourVocabulary
    min_description_words: int
    word_minimum: WordMinimum

    @property
    def profile(self) -> LanguageProfile:
        return profile_for(self.language)

    def card_type(self, *, word_pattern: bool = True) -> type[ProductCard]:
        """The card model of this contract: taxonomy, colour rule, word minimum.

        ``word_pattern=False`` is the same card without the description's word pattern: what
        the engine parses with, so that a description short of words is the content check's
        ``description_min_words`` (with a corrective note that gives the count), not a schema
        failure that quotes a regex."""
        profile = self.profile
        return card_model(
            self.tree(),
            profile.colours if self.colour_vocabulary == "enforce" else None,
            colour_regex=colour_pattern(profile) if self.colour_vocabulary == "grammar" else None,
            min_words=self.min_description_words
            if self.word_minimum == "grammar" and word_pattern
            else None,
        )

    def tree(self) -> Taxonomy:
        """The category tree: explicit flat list, else file, else the language's shipped tree
        (a file is read once per version of it: a changed file is read again)."""
        if self.taxonomy:
            return Taxonomy.flat_list(self.taxonomy, name="VITRINE_TAXONOMY")
        if self.taxonomy_file is not None:
            path = self.taxonomy_file
            try:
                stamp = path.stat().st_mtime_ns
            except OSError as exc:
                raise TaxonomyError(f"cannot read the category tree {path}: {exc}") from None
            return _load_tree(path, stamp)
        return default_taxonomy(self.profile)

    def categories(self) -> tuple[str, ...]:
        """The tree's leaf paths (for a flat list: its names)."""
        return tuple(leaf.path_text for leaf in self.tree().leaves)


@lru_cache(maxsize=4)
def _load_tree(path: Path, _stamp: int) -> Taxonomy:
    return Taxonomy.load(path)
