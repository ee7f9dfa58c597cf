"""The llama.cpp runtime: loading a model, the native thread, continuous batching (slots),
capacity, model files and presets, chat handlers and templates, and the constrained decoder.

The only layer that imports llama_cpp.  This package's ``__init__`` imports nothing, so that
the worker can name what it needs from here (model-file errors, presets) without loading it.
"""
