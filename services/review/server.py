"""``python -m services.review``: the desk under uvicorn, with JSON logs and /metrics.

The listening socket is bound before the app starts, so the ``review.started`` line (logged
once the database pool is open) means requests are answered from then on.
"""

from __future__ import annotations

import socket

import uvicorn

from services.review.app import create_app
from services.review.settings import ReviewSettings
from services.runtime.logs import setup_logging
from services.runtime.metrics import serve_metrics


def main() -> None:
    settings = ReviewSettings()
    setup_logging("review", settings.log_level)
    serve_metrics(settings.metrics_port, settings.metrics_host)
    family = socket.AF_INET6 if ":" in settings.review_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.review_host, settings.review_port))
    sock.listen(128)
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,  # uvicorn's loggers go through the JSON handler
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.review_trusted_proxies,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=[sock])
