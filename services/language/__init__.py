"""Language tools that are not contracts: the colour science and the language check's words.

``schemas/language.py`` holds what the card contract needs (profiles, colour names, taxonomy)
and imports nothing from here; this package holds what only the checks compute with
(``colour_science`` reads the colour names from ``schemas.language``).
"""
