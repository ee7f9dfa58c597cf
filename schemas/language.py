"""Output-language profiles: what the card contract needs to know about each language.

The card contract is language-neutral in shape but not in content: the colour must be a colour
name *of the output language* (``colour_pattern`` builds the grammar's pattern from the names
here) and the default taxonomy is written in it.  This is the one home of the colour words:
the colour science (``services.language.colour_science``) and the tests read them from here.
Each profile is plain data so downstream consumers can apply the same rules without importing
the engine.  What only the checks use (the function words) lives in ``services/language/``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class LanguageProfile:
    code: str
    name: str
    """Human name of the language, used in the prompt ("português do Brasil")."""
    taxonomy: tuple[str, ...]
    """Default category list; configuration may replace it."""
    colours: frozenset[str]
    """Base colour names (both genders where the language inflects them), accents included."""
    colour_modifiers: frozenset[str]
    """Words that may follow a base colour ("azul claro", "verde-oliva")."""
    colour_connectors: frozenset[str] = frozenset()
    """Of the modifiers, those that join two colours ("azul e branco") rather than qualify one."""


PT_BR = LanguageProfile(
    code="pt-BR",
    name="português do Brasil",
    taxonomy=(
        "Eletrônicos",
        "Informática",
        "Celulares e Smartphones",
        "Eletrodomésticos",
        "Móveis",
        "Decoração",
        "Casa e Cozinha",
        "Cama, Mesa e Banho",
        "Vestuário",
        "Calçados",
        "Bolsas e Acessórios",
        "Joias e Relógios",
        "Beleza e Cuidados Pessoais",
        "Saúde",
        "Esporte e Lazer",
        "Brinquedos e Jogos",
        "Bebês",
        "Livros",
        "Papelaria e Escritório",
        "Ferramentas e Construção",
        "Jardim",
        "Automotivo",
        "Pet Shop",
        "Alimentos e Bebidas",
        "Instrumentos Musicais",
        "Outros",
    ),
    colours=frozenset(
        {
            "preto",
            "preta",
            "branco",
            "branca",
            "cinza",
            "grafite",
            "chumbo",
            "prata",
            "rosé",
            "prateado",
            "prateada",
            "dourado",
            "dourada",
            "ouro",
            "bronze",
            "cobre",
            "vermelho",
            "vermelha",
            "vinho",
            "bordô",
            "marsala",
            "rosa",
            "pink",
            "magenta",
            "fúcsia",
            "roxo",
            "roxa",
            "lilás",
            "violeta",
            "lavanda",
            "azul",
            "turquesa",
            "ciano",
            "verde",
            "amarelo",
            "amarela",
            "mostarda",
            "laranja",
            "coral",
            "salmão",
            "pêssego",
            "marrom",
            "caramelo",
            "café",
            "chocolate",
            "castanho",
            "castanha",
            "bege",
            "creme",
            "areia",
            "nude",
            "caqui",
            "off-white",
            "marfim",
            "gelo",
            "transparente",
            "incolor",
            "multicolorido",
            "multicolorida",
            "colorido",
            "colorida",
            "estampado",
            "estampada",
            "natural",
            "madeira",
            "jeans",
        }
    ),
    colour_modifiers=frozenset(
        {
            "claro",
            "clara",
            "escuro",
            "escura",
            "médio",
            "média",
            "marinho",
            "royal",
            "bebê",
            "celeste",
            "petróleo",
            "piscina",
            "turquesa",
            "oliva",
            "militar",
            "musgo",
            "limão",
            "água",
            "bandeira",
            "menta",
            "esmeralda",
            "neon",
            "pastel",
            "metálico",
            "metálica",
            "fosco",
            "fosca",
            "brilhante",
            "acetinado",
            "acetinada",
            "queimado",
            "queimada",
            "chumbo",
            "grafite",
            "rosé",
            "champanhe",
            "envelhecido",
            "envelhecida",
            "mesclado",
            "mesclada",
            "translúcido",
            "translúcida",
            "cru",
            "crua",
            "de",
            "e",
            "com",
        }
    ),
    colour_connectors=frozenset({"e", "com"}),
)

EN = LanguageProfile(
    code="en",
    name="English",
    taxonomy=(
        "Electronics",
        "Computers",
        "Phones",
        "Appliances",
        "Furniture",
        "Home Decor",
        "Kitchen",
        "Bed and Bath",
        "Clothing",
        "Shoes",
        "Bags and Accessories",
        "Jewelry and Watches",
        "Beauty and Personal Care",
        "Health",
        "Sports and Outdoors",
        "Toys and Games",
        "Baby",
        "Books",
        "Office Supplies",
        "Tools and Home Improvement",
        "Garden",
        "Automotive",
        "Pet Supplies",
        "Food and Beverages",
        "Musical Instruments",
        "Other",
    ),
    colours=frozenset(
        {
            "black",
            "white",
            "grey",
            "gray",
            "graphite",
            "silver",
            "gold",
            "golden",
            "bronze",
            "copper",
            "red",
            "burgundy",
            "wine",
            "pink",
            "magenta",
            "fuchsia",
            "purple",
            "lilac",
            "violet",
            "lavender",
            "blue",
            "navy",
            "turquoise",
            "cyan",
            "teal",
            "green",
            "olive",
            "yellow",
            "mustard",
            "orange",
            "coral",
            "salmon",
            "peach",
            "brown",
            "tan",
            "caramel",
            "chocolate",
            "beige",
            "cream",
            "sand",
            "nude",
            "khaki",
            "off-white",
            "ivory",
            "transparent",
            "clear",
            "multicolour",
            "multicolor",
            "multicoloured",
            "patterned",
            "natural",
            "wood",
            "denim",
        }
    ),
    colour_modifiers=frozenset(
        {
            "light",
            "dark",
            "pale",
            "deep",
            "bright",
            "royal",
            "baby",
            "sky",
            "navy",
            "olive",
            "lime",
            "mint",
            "emerald",
            "neon",
            "pastel",
            "metallic",
            "matte",
            "glossy",
            "rose",
            "champagne",
            "heather",
            "and",
            "with",
        }
    ),
    colour_connectors=frozenset({"and", "with"}),
)

PROFILES: dict[str, LanguageProfile] = {p.code.lower(): p for p in (PT_BR, EN)}


def profile_for(code: str) -> LanguageProfile:
    """Look up a profile by BCP-47-ish code, case-insensitively ("pt-br", "EN")."""
    try:
        return PROFILES[code.lower()]
    except KeyError:
        known = ", ".join(p.code for p in PROFILES.values())
        raise ValueError(f"unsupported output language {code!r}; known: {known}") from None


def _alternation(words: list[str]) -> str:
    # longest first, so a regex engine that takes the first match still sees "azul-marinho"
    return "|".join(sorted(words, key=lambda w: (-len(w), w)))


def colour_pattern(profile: LanguageProfile) -> str:
    """The profile's colour names as a regex: what the grammar lets ``color_primary`` be.

    A base colour with up to two modifiers ("azul", "azul-marinho", "verde claro fosco"), two
    colours joined by a connector ("azul e branco", "preto com dourado claro"), or a compound
    name as listed ("off-white").  Lower case, accents as in the vocabulary.  Everything it
    matches passes the engine's vocabulary check, which stays as the safety net for free text.
    """
    simple = [c for c in profile.colours if not set(c) & {" ", "-"}]
    compound = [c for c in profile.colours if c not in simple]
    modifiers = [m for m in profile.colour_modifiers if m not in profile.colour_connectors]
    base = f"(?:{_alternation(simple)})"
    modifier = f"(?:{_alternation(modifiers)})"
    forms = [f"{base}(?:[ -]{modifier}){{0,2}}"]
    if profile.colour_connectors:
        joined = _alternation(sorted(profile.colour_connectors))
        forms.append(f"{base} (?:{joined}) {base}(?:[ -]{modifier})?")
    if compound:
        forms.append(_alternation(compound))
    return "^(?:" + "|".join(forms) + ")$"


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for vocabulary comparisons."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
