"""The Kafka side of inference: start-up, the consumer and its delivery markers, job → result.

Imports neither llama_cpp nor OpenCV at module load (``tests/unit/test_layers.py``): the engine is
reached through the registry in ``engines.py``, which imports it only when one is loaded.
"""
