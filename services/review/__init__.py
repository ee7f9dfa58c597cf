"""The review desk: people see each photo beside its card, correct it, approve or reject it.

A FastAPI app with server-rendered pages (``/``), a JSON API (``/v1``, OpenAPI at ``/docs``) and
a background publisher of approved cards (``vitrine.cards.approved``).  It reads the pipeline's
table and writes only its review columns, its sessions and ``card_reviews`` (its own database
role, ``vitrine_review``); it reads photos with its own read-only MinIO user and uploads with a
put-only one.
"""
