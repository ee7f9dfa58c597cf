"""The ``vitrine`` commands, one module per group; ``vitrine/cli.py`` assembles them into the app.

Each module only parses options and prints; the work is in the modules beside ``cli.py``
(``vitrine.cards``, ``vitrine.dlq``, ...).  Heavy imports stay inside the commands, so that
``vitrine --help`` loads neither llama.cpp nor a database driver.
"""
