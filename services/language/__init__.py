"""Language tools that are not contracts: the colour science and the language check's words.

``schemas/language.py`` holds what the card contract needs (profiles, colour names, taxonomy);
this package holds what only the checks compute with.  Its modules are imported by name and this
file imports none of them: ``schemas.language`` reads ``function_words`` from here while
``colour_science`` reads ``schemas.language``, so importing the package must not start either.
"""
