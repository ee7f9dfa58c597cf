"""Is each process of the pipeline alive and answering?

On the native stack a service is *up* when the pid in its ``$VITRINE_STATE_DIR/run/<name>.pid``
(written by ``infra/services.sh``) is a live ``services.*`` process **and** its Prometheus
endpoint answers on the port ``services.sh`` gave it.  A live process whose endpoint is silent is
reported as such: it is stuck, or something else holds its port.

Where the services run elsewhere (compose, other hosts) no pid can be seen from here, so
``VITRINE_METRICS_TARGETS`` names their endpoints and an answering endpoint is what *up* means.
A name that resolves to several addresses is a scaled service (Docker's DNS gives one A record
per replica), so each address is one process: a dead replica shows as down instead of hiding
behind a live one.

MinIO is asked its liveness URL; Kafka and PostgreSQL are judged by whether the status queries
could use them (vitrine.status).
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from vitrine import targets
from vitrine.config import OpsSettings
from vitrine.targets import parse_targets

HTTP_TIMEOUT_S = 2.0

# Per service, the metrics summed into the status screen's "handled" column.
HANDLED_METRIC = {
    "ingest": "vitrine_ingest_events",
    "sink": "vitrine_sink_results",
    "inference": "vitrine_inference_jobs",
    "review": "vitrine_review_published",  # approved cards sent to Kafka
}


@dataclass
class ServiceHealth:
    name: str
    pid: int | None
    running: bool | None  # None: the process cannot be seen from here (VITRINE_METRICS_TARGETS)
    metrics_port: int
    metrics_up: bool
    handled: float | None = None  # messages handled since start (from its own counters)
    busy: int | None = None  # inference: jobs in flight now
    slots: int | None = None  # inference: jobs it keeps in flight at most (the engine's slots)
    error: str | None = None
    metrics_host: str = "127.0.0.1"

    @property
    def up(self) -> bool:
        return self.running is not False and self.metrics_up

    @property
    def endpoint(self) -> str:
        """``:port`` for a process on this machine (running is known), ``host:port`` else."""
        local = self.running is not None
        return f":{self.metrics_port}" if local else f"{self.metrics_host}:{self.metrics_port}"

    @property
    def state(self) -> str:
        if self.up:
            return "up"
        return "no metrics" if self.running else "down"


@dataclass(frozen=True)
class Target:
    """Where one process's metrics are, and its pid file when it runs on this machine."""

    name: str
    host: str
    port: int
    pidfile: Path | None = None
    error: str | None = None  # the target could not be resolved


Resolver = Callable[[str, int], list[str]]


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for TCP, sorted so replicas keep their numbers.

    A dual-stack name (an A and an AAAA record for one machine) is one process, not two: when
    both families answer, only the IPv4 addresses count (Docker's replicas are IPv4)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = {str(i[4][0]) for i in infos if i[0] == socket.AF_INET}
    return sorted(v4 or {str(i[4][0]) for i in infos})


def remote_targets(spec: str, resolve: Resolver = resolve_addresses) -> list[Target]:
    """One target per address of each entry; a name that does not resolve stays, as down."""
    targets = []
    for name, host, port in parse_targets(spec):
        try:
            addresses = resolve(host, port)
        except OSError as exc:
            targets.append(Target(name, host, port, error=f"cannot resolve {host}: {exc}"))
            continue
        if len(addresses) <= 1:
            targets.append(Target(name, host, port))
        else:
            targets += [Target(f"{name}-{i}", a, port) for i, a in enumerate(addresses, 1)]
    return targets


def service_targets(settings: OpsSettings) -> list[Target]:
    """The processes ``vitrine status`` checks: the configured targets, else the native stack's."""
    if settings.metrics_targets.strip():
        return remote_targets(settings.metrics_targets)
    run_dir = settings.state_path / "run"
    return [
        Target(name, settings.metrics_host, metrics_port(settings, name), run_dir / f"{name}.pid")
        for name in service_names(settings)
    ]


@dataclass
class ServerHealth:
    name: str
    address: str
    up: bool
    error: str | None = None
    notice: str | None = None  # up, but something the operator should act on


def metrics_port(settings: OpsSettings, name: str) -> int:
    """The port infra/services.sh assigns (the rule lives in vitrine/targets.py)."""
    return targets.metrics_port(settings.metrics_base_port, name)


def service_names(settings: OpsSettings) -> list[str]:
    """ingest, sink, the review desk, the export stage and the configured workers, plus any
    other worker with a pid file (the order of ``vitrine.targets.instances``)."""
    names = ["ingest", "sink", "review", "export"]
    names += [f"inference-{i}" for i in range(1, settings.inference_processes + 1)]
    run_dir = settings.state_path / "run"
    extra = sorted(
        (p.stem for p in run_dir.glob("inference-*.pid") if p.stem not in names),
        key=lambda n: int(n.rsplit("-", 1)[1]) if n.rsplit("-", 1)[1].isdigit() else 0,
    )
    return names + [n for n in extra if n.rsplit("-", 1)[1].isdigit()]


def live_service_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` if it is alive and still runs a vitrine service (not a reused pid)."""
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return pid if "services." in cmdline else None


def scrape(host: str, port: int) -> str:
    return scrape_url(
        f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
    )


def scrape_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
        return str(response.read().decode("utf-8", "replace"))


def _summarise(health: ServiceHealth, text: str) -> None:
    kind = health.name.split("-")[0]
    handled = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == HANDLED_METRIC.get(kind):
            handled += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "vitrine_inference_busy":
            health.busy = int(sum(s.value for s in family.samples))
        elif family.name == "vitrine_inference_parallel":
            health.slots = int(sum(s.value for s in family.samples))
    health.handled = handled


def service_health(target: Target) -> ServiceHealth:
    pid = live_service_pid(target.pidfile) if target.pidfile else None
    running = (pid is not None) if target.pidfile else None
    port = target.port
    health = ServiceHealth(target.name, pid, running, port, False, metrics_host=target.host)
    if target.error:
        health.error = target.error
        return health
    try:
        text = scrape(target.host, port)
    except (OSError, ValueError) as exc:  # URLError is an OSError; a bad host a ValueError
        reason = getattr(exc, "reason", exc)
        health.error = f"metrics on {health.endpoint}: {reason}"
        return health
    health.metrics_up = True
    try:
        _summarise(health, text)
    except ValueError as exc:  # not Prometheus text: something else answers on the port
        health.metrics_up = False
        health.error = f"{health.endpoint} does not serve Prometheus metrics: {exc}"
    return health


def minio_health(endpoint: str) -> ServerHealth:
    url = endpoint.rstrip("/") + "/minio/health/live"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            health = ServerHealth("minio", endpoint, response.status == 200)
    except (OSError, ValueError) as exc:  # ValueError: VITRINE_S3_ENDPOINT is not a URL
        return ServerHealth("minio", endpoint, False, str(getattr(exc, "reason", exc)))
    skipped = minio_skipped_notifications(endpoint)
    if skipped:
        health.notice = (
            f"skipped {skipped:.0f} notifications since it started (queue overflow): "
            "`vitrine backfill` enqueues objects without a row"
        )
    return health


def minio_skipped_notifications(endpoint: str) -> float | None:
    """MinIO's ``minio_notify_events_skipped_total``: events dropped for *every* target, the
    durable one included, when its 50 000-event notification queue overflows (a burst of uploads
    while Kafka is down; docs/benchmarks.md). None when its metrics need a token we lack."""
    url = endpoint.rstrip("/") + "/minio/v2/metrics/cluster"
    try:
        text = scrape_url(url)
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "minio_notify_events_skipped_total"
        )
    except (OSError, ValueError):  # 403 without MINIO_PROMETHEUS_AUTH_TYPE=public, or not text
        return None
