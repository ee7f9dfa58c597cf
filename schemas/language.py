"""Output-language profiles: the vocabulary a card is checked against, per language.

The card contract is language-neutral in shape but not in content: the colour must be a colour
name *of the output language* and the default taxonomy is written in it.  Each profile is plain
data so downstream consumers can apply the same checks without importing the engine.
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
)

PROFILES: dict[str, LanguageProfile] = {p.code.lower(): p for p in (PT_BR, EN)}


def profile_for(code: str) -> LanguageProfile:
    """Look up a profile by BCP-47-ish code, case-insensitively ("pt-br", "EN")."""
    try:
        return PROFILES[code.lower()]
    except KeyError:
        known = ", ".join(p.code for p in PROFILES.values())
        raise ValueError(f"unsupported output language {code!r}; known: {known}") from None


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for vocabulary comparisons."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
