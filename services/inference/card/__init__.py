"""What a card must be, independent of any model: the outcome and error types, the prompt, the
content checks.  Imports neither llama_cpp nor OpenCV at module load
(``tests/unit/test_layers.py``).
"""
