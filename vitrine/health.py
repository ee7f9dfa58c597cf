"""Is each process of the native stack alive and answering?

A service is *up* when the pid in its ``$VITRINE_STATE_DIR/run/<name>.pid`` (written by
``infra/services.sh``) is a live ``services.*`` process **and** its Prometheus endpoint answers on
the port ``services.sh`` gave it.  A live process whose endpoint is silent is reported as such:
it is stuck, or something else holds its port.  MinIO is asked its liveness URL; Kafka and
PostgreSQL are judged by whether the status queries could use them (vitrine.status).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from vitrine.config import OpsSettings

HTTP_TIMEOUT_S = 2.0

# Per service, the metrics summed into the status screen's "handled" column.
HANDLED_METRIC = {
    "ingest": "vitrine_ingest_events",
    "sink": "vitrine_sink_results",
    "inference": "vitrine_inference_jobs",
}


@dataclass
class ServiceHealth:
    name: str
    pid: int | None
    running: bool
    metrics_port: int
    metrics_up: bool
    handled: float | None = None  # messages handled since start (from its own counters)
    busy: bool | None = None  # inference: a job is running
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.running and self.metrics_up

    @property
    def state(self) -> str:
        if self.up:
            return "up"
        return "no metrics" if self.running else "down"


@dataclass
class ServerHealth:
    name: str
    address: str
    up: bool
    error: str | None = None


def metrics_port(settings: OpsSettings, name: str) -> int:
    """The port infra/services.sh assigns: ingest base+1, sink base+2, inference-N base+9+N."""
    if name == "ingest":
        return settings.metrics_base_port + 1
    if name == "sink":
        return settings.metrics_base_port + 2
    return settings.metrics_base_port + 9 + int(name.rsplit("-", 1)[1])


def service_names(settings: OpsSettings) -> list[str]:
    """ingest, sink and the configured workers, plus any other worker with a pid file."""
    names = ["ingest", "sink"]
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
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
        return str(response.read().decode("utf-8", "replace"))


def _summarise(health: ServiceHealth, text: str) -> None:
    kind = health.name.split("-")[0]
    handled = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == HANDLED_METRIC.get(kind):
            handled += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "vitrine_inference_busy":
            health.busy = any(s.value > 0 for s in family.samples)
    health.handled = handled


def service_health(settings: OpsSettings, name: str) -> ServiceHealth:
    pid = live_service_pid(settings.state_path / "run" / f"{name}.pid")
    port = metrics_port(settings, name)
    health = ServiceHealth(name, pid, pid is not None, port, metrics_up=False)
    try:
        text = scrape(settings.metrics_host, port)
    except (OSError, ValueError) as exc:  # URLError is an OSError; a bad host a ValueError
        reason = getattr(exc, "reason", exc)
        health.error = f"metrics on :{port}: {reason}"
        return health
    health.metrics_up = True
    try:
        _summarise(health, text)
    except ValueError as exc:  # not Prometheus text: something else answers on the port
        health.metrics_up = False
        health.error = f"port {port} does not serve Prometheus metrics: {exc}"
    return health


def minio_health(endpoint: str) -> ServerHealth:
    url = endpoint.rstrip("/") + "/minio/health/live"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return ServerHealth("minio", endpoint, response.status == 200)
    except (OSError, ValueError) as exc:  # ValueError: VITRINE_S3_ENDPOINT is not a URL
        return ServerHealth("minio", endpoint, False, str(getattr(exc, "reason", exc)))
