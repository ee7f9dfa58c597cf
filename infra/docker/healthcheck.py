"""Container healthcheck: is this process serving /metrics, and (optionally) is it ready?

    python infra/docker/healthcheck.py                      # /metrics answers
    python infra/docker/healthcheck.py --ready METRIC       # ... and METRIC's value is > 0
    python infra/docker/healthcheck.py --url URL            # ... and URL answers 200

Reads VITRINE_METRICS_PORT like the service does and asks 127.0.0.1 (the service binds
VITRINE_METRICS_HOST, 0.0.0.0 in compose, which includes loopback). The inference service uses
``--ready vitrine_inference_model_load_seconds``: its metrics server starts before the model is
loaded, and a worker is only useful once the gauge says the model is in memory. The review desk
uses ``--url http://127.0.0.1:8080/healthz``: its web app, not only its metrics, must answer.
Standard library only, so the probe stays cheap (a new Python process every interval).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request


def metric_value(text: str, name: str) -> float | None:
    """The value of the unlabelled sample ``name`` in a Prometheus text exposition."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == name:
            return float(parts[1])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready", metavar="METRIC", help="also require METRIC > 0")
    parser.add_argument("--url", help="also require a GET of URL to answer 200")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)

    port = os.environ.get("VITRINE_METRICS_PORT")
    if not port:
        print("healthcheck: VITRINE_METRICS_PORT is not set", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if args.ready:
        value = metric_value(text, args.ready)
        if value is None or value <= 0:
            print(f"healthcheck: not ready ({args.ready} = {value})", file=sys.stderr)
            return 1
    if args.url:
        try:
            with urllib.request.urlopen(args.url, timeout=args.timeout) as response:
                status = response.status
        except OSError as exc:  # an HTTP error status is an OSError (HTTPError) too
            print(f"healthcheck: {args.url}: {exc}", file=sys.stderr)
            return 1
        if status != 200:
            print(f"healthcheck: {args.url}: HTTP {status}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
