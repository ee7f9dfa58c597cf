"""``vitrine eval``: how good the cards are, measured on a shop's own labelled photos.

The path, one module per step: a labelled set (``labels.py``) → candidates, each an engine's
settings (``candidates.py``) → one child process per candidate generating every card with the
same photos and seeds (``child.py``, driven and resumed by ``runner.py``) → scores
(``scoring.py``) with bootstrap intervals (``intervals.py``) → the report (``report.py``).
``export.py`` writes a labelled set from the review desk's decisions.  Nothing here is imported
by the services; only ``child.py`` loads llama.cpp, and only in its own process.
"""
