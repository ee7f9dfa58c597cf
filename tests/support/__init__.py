"""What the tests share: generated models, builders of messages and cards, the in-memory broker,
the stack's helpers and the fault-injecting wrappers.  ``tests/unit``, ``tests/model`` and
``tests/stack`` import from here and never from each other; the product imports none of it."""
