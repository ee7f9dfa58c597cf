"""Where each service's ``/metrics`` is: the native stack's port rule, and remote targets.

One home for both, so ``infra/services.sh`` (which starts the services on their ports) and
``vitrine status`` (which scrapes them) cannot disagree:

    python -m vitrine.targets instances N     # "name module port-offset" lines for services.sh

Kept free of the settings classes (``vitrine.config`` validates its targets with this module).
"""

from __future__ import annotations

import sys

INGEST_OFFSET = 1
SINK_OFFSET = 2
REVIEW_OFFSET = 3
"""The review desk (services/review): its /metrics; its web app is on VITRINE_REVIEW_PORT."""
EXPORT_OFFSET = 4
"""The export stage (services/export): the channels' feeds."""
INFERENCE_OFFSET = 9
"""inference-N listens on base + 9 + N."""


def instances(inference_processes: int) -> list[tuple[str, str, int]]:
    """``(name, module, metrics port offset)`` of every service the native stack runs."""
    found = [
        ("ingest", "services.ingest", INGEST_OFFSET),
        ("sink", "services.sink", SINK_OFFSET),
        ("review", "services.review", REVIEW_OFFSET),
        ("export", "services.export", EXPORT_OFFSET),
    ]
    found += [
        (f"inference-{i}", "services.inference", INFERENCE_OFFSET + i)
        for i in range(1, inference_processes + 1)
    ]
    return found


def metrics_port(base: int, name: str) -> int:
    """The port of service instance ``name`` on the native stack."""
    if name == "ingest":
        return base + INGEST_OFFSET
    if name == "sink":
        return base + SINK_OFFSET
    if name == "review":
        return base + REVIEW_OFFSET
    if name == "export":
        return base + EXPORT_OFFSET
    return base + INFERENCE_OFFSET + int(name.rsplit("-", 1)[1])


def parse_targets(spec: str) -> list[tuple[str, str, int]]:
    """``name=host:port,...`` → (name, host, port); ``ValueError`` names the bad entry."""
    parsed = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        name, eq, address = entry.partition("=")
        host, colon, port = address.rpartition(":")
        if not (eq and colon and name.strip() and host and port.isdigit()):
            raise ValueError(f"{entry!r} is not name=host:port")
        parsed.append((name.strip(), host.strip("[]"), int(port)))
    return parsed


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "instances" or not sys.argv[2].isdigit():
        raise SystemExit("usage: python -m vitrine.targets instances N")
    for name, module, offset in instances(int(sys.argv[2])):
        print(name, module, offset)
