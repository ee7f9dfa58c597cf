"""A stand-in HTTP server for what the stack would fetch from outside (a model URL, a registry)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer


def serve(respond: Callable[[str], tuple[int, bytes]]) -> tuple[HTTPServer, int]:
    """A stand-in HTTP server on a free local port: ``respond(path)`` gives each GET's status
    and body. The caller shuts it down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = respond(self.path)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]
