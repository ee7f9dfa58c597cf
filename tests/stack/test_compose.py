"""The Docker Compose deployment, checked without a Docker Engine.

- docker-compose.yml is valid per the Compose specification: the real `docker compose config`
  (a pinned Compose CLI built by infra/tools/compose.sh) parses, interpolates and validates it;
  the other tests read its normalised JSON, so anchors and merges are resolved as Compose does;
- every service's command reaches a real entry point; every setting the Python services read is
  passed to them; every variable the file interpolates is documented in .env.example;
- credentials are least-privilege, healthchecks gate depends_on, inference scales;
- the Dockerfiles follow the image rules; Prometheus scrapes the ports the services serve; the
  Grafana dashboard queries only metrics the code exports.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pkgutil
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from tests.support.http_stub import serve

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
ENTRYPOINT = REPO / "infra" / "docker" / "entrypoint.sh"
APP_DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
DOCKERFILES = sorted((REPO / "infra" / "docker").glob("*Dockerfile"))
PROMETHEUS = REPO / "infra" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "infra" / "grafana"
ALL_PROFILES = ("cpu", "gpu", "tools")
# Where the image puts the repository's files (WORKDIR and COPY targets of the Dockerfile).
APP_DIR_IN_IMAGE = "/app"

# Settings the compose deployment deliberately does not pass, and why.
NOT_PASSED = {
    "VITRINE_ENGINE": "only llama ships; stand-ins register in bench/ and tests/ processes",
    "VITRINE_S3_SECRET_KEY_FILE": "compose passes the secret; a secrets: override may set it",
    "VITRINE_PG_DSN_FILE": "compose passes the DSN; a secrets: override may set it",
    "VITRINE_UPLOAD_S3_SECRET_KEY_FILE": "compose passes the secret; a secrets: override sets it",
    # The native stack's state dir; the review desk reads it only to default its thumbnail cache,
    # which compose sets (VITRINE_REVIEW_THUMB_DIR).
    "VITRINE_STATE_DIR": "only the default of VITRINE_REVIEW_THUMB_DIR, which compose sets",
    # Fixed by the image, not a knob: read only to default VITRINE_MODELS_DIR, which compose sets.
    "VITRINE_CACHE_DIR": "only the default of VITRINE_MODELS_DIR, which compose sets",
}
# Read by tests/support/fault_services.py only (the services read none), whatever the name after it.
NOT_PASSED_PREFIXES = ("VITRINE_FAULT_",)


# --- helpers --------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a dotenv file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def compose_text() -> str:
    """docker-compose.yml without its comment lines (which may show ${VAR} as an example)."""
    lines = COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def interpolated_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)", compose_text()))


def required_variables() -> set[str]:
    """Variables the file interpolates as ${NAME:?...} (compose refuses to run without them)."""
    return set(re.findall(r"\$\{([A-Z0-9_]+):\?", compose_text()))


def made_up_secrets() -> dict[str, str]:
    """A distinct made-up value per required variable, so a test can tell where each one goes."""
    return {
        name: "t" + hashlib.sha256(name.encode()).hexdigest()[:20]
        for name in sorted(required_variables())
    }


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """No VITRINE_* or other settings of the test run leak into compose's interpolation."""
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    """The pinned Compose CLI, built once into the cache (minutes the first time)."""
    proc = subprocess.run(
        ["bash", str(REPO / "infra" / "tools" / "compose.sh"), "path"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        pytest.fail(f"infra/tools/compose.sh could not provide docker compose:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def compose_config(
    compose_bin: Path, env: dict[str, str], profiles: tuple[str, ...] = ALL_PROFILES
) -> subprocess.CompletedProcess[str]:
    args = [str(compose_bin), "--project-directory", str(REPO), "-f", str(COMPOSE_FILE)]
    args += ["--env-file", str(ENV_EXAMPLE)]
    for profile in profiles:
        args += ["--profile", profile]
    return subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=120,
    )


@pytest.fixture(scope="session")
def config(compose_bin: Path) -> dict[str, Any]:
    """The normalised model of docker-compose.yml with .env.example + made-up secrets."""
    proc = compose_config(compose_bin, made_up_secrets())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


def entrypoint_argv(command: list[str], **env: str) -> list[str]:
    """What the image's entry point would exec for ``command`` (its dry-run mode)."""
    proc = subprocess.run(
        ["bash", str(ENTRYPOINT), *command],
        capture_output=True,
        text=True,
        env=clean_env({"VITRINE_ENTRYPOINT_DRY_RUN": "1", **env}),
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run the vitrine image (built from infra/docker/Dockerfile)."""
    images = {
        svc["image"]
        for svc in services.values()
        if svc.get("build", {}).get("dockerfile") == "infra/docker/Dockerfile"
    }
    assert images, "no service builds infra/docker/Dockerfile"
    return {name: svc for name, svc in services.items() if svc.get("image") in images}


def service_modules(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """service name -> the Python module its command runs (python -m services.X)."""
    modules = {}
    for name, svc in app_services(services).items():
        argv = entrypoint_argv(svc["command"])
        if argv[:2] == ["python", "-m"]:
            modules[name] = argv[2]
    return modules


def settings_class(module: str) -> type[BaseSettings]:
    """The one settings class a service module's main() reads: the most derived BaseSettings
    subclass defined in the service's package."""
    package = importlib.import_module(module)
    classes: set[type[BaseSettings]] = set()
    for info in pkgutil.walk_packages(package.__path__, module + "."):
        if info.name.endswith("__main__"):
            continue
        for value in vars(importlib.import_module(info.name)).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value.__module__.startswith(module + ".")
            ):
                classes.add(value)
    leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
    assert len(leaves) == 1, f"{module}: expected one settings class, found {leaves}"
    return leaves[0]


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix") or "")
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        names.add((alias if isinstance(alias, str) else prefix + field_name).upper())
    return names


def direct_environ_reads(package: str) -> set[str]:
    """Variables read with os.environ / os.getenv in a package's source (beside its settings)."""
    pattern = re.compile(r"""os\.(?:environ\.get|getenv|environ\[)\(?\s*["']([A-Z0-9_]+)["']""")
    names = set()
    for path in (REPO / package.replace(".", "/")).rglob("*.py"):
        names |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def passed_on_purpose(name: str) -> bool:
    return name in NOT_PASSED or name.startswith(NOT_PASSED_PREFIXES)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (the ARGs before the first FROM are stage 0's)."""
    result: list[list[tuple[str, str]]] = [[]]
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result[1:]


SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: frozenset[str]

    @property
    def samples(self) -> set[str]:
        return {self.name + s for s in SAMPLE_SUFFIXES.get(self.type, ("",))}


def registered_families() -> dict[str, Family]:
    """Each metric family the services register, from prometheus_client's registry after
    importing every module of services/."""
    import prometheus_client

    import services

    for info in pkgutil.walk_packages(services.__path__, "services."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    # Label names as declared (a labelled metric with no child yet has no sample to show them).
    labels = {
        name: frozenset(getattr(collector, "_labelnames", ()))
        for name, collector in prometheus_client.REGISTRY._names_to_collectors.items()
    }
    return {
        f.name: Family(f.name, f.type, labels.get(f.name, frozenset()))
        for f in prometheus_client.REGISTRY.collect()
        if f.name.startswith("vitrine_")
    }


def metric_families() -> dict[str, set[str]]:
    """Each metric family with the sample names it exposes (a counter `x` as x_total, ...)."""
    return {name: family.samples for name, family in registered_families().items()}


def exposed_metric_names() -> set[str]:
    """Every sample name the services can expose."""
    return set().union(*metric_families().values())


# --- the file is valid Compose -----------------------------------------------------------------


def test_compose_config_validates_with_every_profile(config: dict[str, Any]) -> None:
    assert {"kafka", "minio", "postgres", "setup", "ingest", "inference", "sink", "review"} <= set(
        config["services"]
    )
    assert {"inference-gpu", "prometheus", "grafana"} <= set(config["services"])


def test_compose_rejects_what_the_spec_forbids(compose_bin: Path, tmp_path: Path) -> None:
    """The checker is a real one: an unknown key fails validation."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  a:\n    image: busybox\n    no_such_key: 1\n")
    proc = subprocess.run(
        [str(compose_bin), "-f", str(broken), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=clean_env({}),
        timeout=60,
    )
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr


def test_env_example_holds_no_secret_and_compose_demands_them(compose_bin: Path) -> None:
    example = read_env_file(ENV_EXAMPLE)
    secret_like = [k for k in example if re.search(r"PASSWORD|SECRET|TOKEN", k)]
    assert secret_like, "no secret variables documented in .env.example"
    assert {k: example[k] for k in secret_like if example[k]} == {}
    proc = compose_config(compose_bin, {})
    assert proc.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in proc.stderr


def test_no_literal_credentials_in_the_compose_file() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    for name, svc in raw["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|DSN|TOKEN|ACCESS_KEY|ROOT_USER", key):
                assert "${" in str(value), f"{name}.{key} is a literal, not from .env"


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    used = interpolated_variables()
    documented = set(read_env_file(ENV_EXAMPLE))
    assert used - documented == set(), "interpolated but missing from .env.example"
    # And nothing stale: every documented variable is used (COMPOSE_* are compose's own).
    stale = {v for v in documented - used if not v.startswith("COMPOSE_")}
    assert stale == set(), "in .env.example but not used by docker-compose.yml"


# --- entry points and settings ------------------------------------------------------------------


def test_every_command_reaches_a_real_entry_point(services: dict[str, dict[str, Any]]) -> None:
    import typer.main

    from vitrine.cli import app

    for name, svc in app_services(services).items():
        argv = entrypoint_argv(svc["command"])
        if argv[:2] == ["python", "-m"]:
            spec = importlib.util.find_spec(argv[2] + ".__main__")
            assert spec is not None, f"{name}: python -m {argv[2]} has no __main__"
        elif argv[0] == "vitrine":
            group: Any = typer.main.get_command(app)
            for word in argv[1:]:
                if not hasattr(group, "commands"):
                    break
                assert word in group.commands, f"{name}: `vitrine {' '.join(argv[1:])}`"
                group = group.commands[word]
        else:
            script = Path(argv[0])
            assert script.is_file() and os.access(script, os.X_OK), f"{name}: {argv}"


def test_entry_point_drops_empty_settings() -> None:
    """compose passes every tunable as ${VAR:-}; empty must mean 'the code's default'."""
    proc = subprocess.run(
        ["bash", str(ENTRYPOINT), "/usr/bin/env"],
        capture_output=True,
        text=True,
        env=clean_env({"VITRINE_N_THREADS": "", "HF_ENDPOINT": "", "VITRINE_SEED": "7"}),
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "VITRINE_SEED=7" in lines
    assert not [line for line in lines if line.startswith(("VITRINE_N_THREADS=", "HF_ENDPOINT="))]


def test_every_setting_of_the_services_is_passed_to_them(
    services: dict[str, dict[str, Any]],
) -> None:
    modules = service_modules(services)
    assert set(modules.values()) == {
        "services.ingest",
        "services.inference",
        "services.sink",
        "services.review",
        "services.export",
    }
    for name, module in modules.items():
        wanted = settings_env_names(settings_class(module)) | direct_environ_reads(module)
        wanted |= direct_environ_reads("services.runtime")
        passed = set(services[name].get("environment") or {})
        missing = {v for v in wanted - passed if not passed_on_purpose(v)}
        assert missing == set(), f"{name} ({module}) does not get these settings"


def test_model_download_settings_reach_the_cli_service(services: dict[str, dict[str, Any]]) -> None:
    wanted = direct_environ_reads("services.inference") | {"VITRINE_MODELS_DIR"}
    passed = set(services["vitrine"]["environment"])
    assert {v for v in wanted - passed if not passed_on_purpose(v)} == set()


# --- credentials, health, scaling, models ----------------------------------------------------


def holders(services: dict[str, dict[str, Any]], secret: str) -> set[str]:
    """Services whose environment contains ``secret`` anywhere (as a value or inside a DSN)."""
    return {
        name
        for name, svc in services.items()
        if any(secret in str(v) for v in (svc.get("environment") or {}).values())
    }


def test_each_service_gets_only_its_own_credentials(services: dict[str, dict[str, Any]]) -> None:
    secrets = made_up_secrets()
    inference = {"inference", "inference-gpu"}
    expected = {
        "VITRINE_S3_SECRET_KEY": {"minio", "setup"},
        "VITRINE_INFERENCE_S3_SECRET_KEY": {"setup"} | inference,
        # ingest's own user: reads manifests and first bytes, lists a folder (s3:ListBucket)
        "VITRINE_INGEST_S3_SECRET_KEY": {"setup", "ingest"},
        "POSTGRES_PASSWORD": {"postgres", "setup"},
        "VITRINE_PG_PASSWORD": {"setup"},
        "VITRINE_SINK_PG_PASSWORD": {"setup", "sink"},
        "VITRINE_READER_PG_PASSWORD": {"setup", "vitrine", "export"},
        # the review desk: its role, its read-only MinIO user and its put-only upload user
        "VITRINE_REVIEW_PG_PASSWORD": {"setup", "review"},
        "VITRINE_REVIEW_S3_SECRET_KEY": {"setup", "review"},
        "VITRINE_UPLOAD_S3_SECRET_KEY": {"setup", "review"},
        # the export stage: the exports bucket only
        "VITRINE_EXPORT_S3_SECRET_KEY": {"setup", "export"},
        "GRAFANA_ADMIN_PASSWORD": {"grafana"},
    }
    assert set(expected) <= set(secrets)
    for variable, who in expected.items():
        assert holders(services, secrets[variable]) == who, variable
    ingest_env = services["ingest"]["environment"]
    assert not [k for k in ingest_env if re.search(r"PASSWORD|DSN", k)]
    sink_dsn = urlsplit(services["sink"]["environment"]["VITRINE_PG_DSN"])
    assert sink_dsn.username == "vitrine_sink"
    for name in inference:
        env = services[name]["environment"]
        assert env["VITRINE_S3_ACCESS_KEY"] == secrets["VITRINE_INFERENCE_S3_ACCESS_KEY"]
    assert ingest_env["VITRINE_S3_ACCESS_KEY"] == secrets["VITRINE_INGEST_S3_ACCESS_KEY"]
    review = services["review"]["environment"]
    assert urlsplit(review["VITRINE_PG_DSN"]).username == "vitrine_review"
    assert review["VITRINE_S3_ACCESS_KEY"] == secrets["VITRINE_REVIEW_S3_ACCESS_KEY"]
    assert review["VITRINE_UPLOAD_S3_ACCESS_KEY"] == secrets["VITRINE_UPLOAD_S3_ACCESS_KEY"]
    # Five distinct MinIO users, none of them root, each handed to its own services only.
    users = {
        secrets[f"VITRINE_{who}_S3_ACCESS_KEY"]
        for who in ("INFERENCE", "INGEST", "REVIEW", "UPLOAD", "EXPORT")
    } | {secrets["VITRINE_S3_ACCESS_KEY"]}
    assert len(users) == 6
    export = services["export"]["environment"]
    assert export["VITRINE_S3_ACCESS_KEY"] == secrets["VITRINE_EXPORT_S3_ACCESS_KEY"]
    assert urlsplit(export["VITRINE_PG_DSN"]).username == "vitrine_reader"
    for variable in ("VITRINE_REVIEW_S3_ACCESS_KEY", "VITRINE_UPLOAD_S3_ACCESS_KEY"):
        assert holders(services, secrets[variable]) == {"setup", "review"}, variable
    assert holders(services, secrets["VITRINE_INFERENCE_S3_ACCESS_KEY"]) == {"setup"} | inference
    assert holders(services, secrets["VITRINE_INGEST_S3_ACCESS_KEY"]) == {"setup", "ingest"}


def test_review_desk_is_published_on_the_host_and_checked_on_its_web_port(
    services: dict[str, dict[str, Any]],
) -> None:
    """Listens on all of its container's addresses on port 8080, which compose publishes on
    BIND_ADDRESS (127.0.0.1) : VITRINE_REVIEW_PORT; the healthcheck asks that port's /healthz."""
    review = services["review"]
    env = review["environment"]
    assert env["VITRINE_REVIEW_HOST"] == "0.0.0.0"
    container_port = int(env["VITRINE_REVIEW_PORT"])
    example = read_env_file(ENV_EXAMPLE)
    assert [(p["host_ip"], int(p["published"]), p["target"]) for p in review["ports"]] == [
        ("127.0.0.1", int(example["VITRINE_REVIEW_PORT"]), container_port)
    ]
    test = review["healthcheck"]["test"]
    url = urlsplit(test[test.index("--url") + 1])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", container_port, "/healthz")
    assert {"setup", "kafka", "minio", "postgres"} <= set(review["depends_on"])
    # Its thumbnail cache is a volume mounted where VITRINE_REVIEW_THUMB_DIR says.
    mounts = {v["target"]: v for v in review["volumes"]}
    assert mounts[env["VITRINE_REVIEW_THUMB_DIR"]]["type"] == "volume"
    assert "review=review:9100" in services["vitrine"]["environment"]["VITRINE_METRICS_TARGETS"]


def test_long_running_services_have_healthchecks_that_gate_depends_on(
    services: dict[str, dict[str, Any]],
) -> None:
    one_shot = {name for name, svc in services.items() if svc.get("restart") in (None, "no")}
    assert one_shot == {"setup", "vitrine"}
    for name, svc in services.items():
        if name not in one_shot:
            check = svc.get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for dep, spec in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert spec["condition"] == want, f"{name} -> {dep}"
    for name in service_modules(services):
        assert services[name]["depends_on"]["setup"]["condition"] == (
            "service_completed_successfully"
        )


def test_app_healthchecks_run_files_the_image_contains(
    services: dict[str, dict[str, Any]],
) -> None:
    copied = image_paths()
    for name, svc in app_services(services).items():
        test = svc.get("healthcheck", {}).get("test", [])
        for word in test:
            if word.startswith(APP_DIR_IN_IMAGE + "/"):
                assert word in copied, f"{name}: {word} is not in the image"


def test_inference_scales_and_has_cpu_and_gpu_profiles(
    services: dict[str, dict[str, Any]],
) -> None:
    cpu, gpu = services["inference"], services["inference-gpu"]
    assert cpu["profiles"] == ["cpu"] and gpu["profiles"] == ["gpu"]
    for svc in (cpu, gpu):
        # --scale needs containers that compose may name and place freely.
        assert "container_name" not in svc and not svc.get("ports")
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "devices" not in cpu.get("deploy", {}).get("resources", {}).get("reservations", {})
    assert gpu["build"]["args"]["VARIANT"] == "cuda"
    # The CPU image is the one the setup service builds.
    builders = [s for s in services.values() if s.get("image") == cpu["image"] and "build" in s]
    assert [b["build"]["args"]["VARIANT"] for b in builders] == ["cpu"]
    assert read_env_file(ENV_EXAMPLE)["COMPOSE_PROFILES"] in ("cpu", "gpu")


def test_models_are_a_volume_read_only_for_workers(services: dict[str, dict[str, Any]]) -> None:
    for name in ("inference", "inference-gpu", "vitrine"):
        svc = services[name]
        mounts = [v for v in svc["volumes"] if v["target"] == "/models"]
        assert len(mounts) == 1 and mounts[0]["type"] == "volume", name
        assert mounts[0].get("read_only", False) is (name != "vitrine"), name
        assert svc["environment"]["VITRINE_MODELS_DIR"] == "/models"


# --- images ------------------------------------------------------------------------------------


def image_paths() -> set[str]:
    """Files the app image gets from the build context (COPY without --from), by image path."""
    paths = set()
    for keyword, rest in stages(APP_DOCKERFILE)[-1]:
        if keyword == "COPY" and "--from" not in rest:
            *sources, dest = shlex.split(rest)
            for source in sources:
                src = REPO / source
                files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
                for file in files:
                    rel = file.relative_to(src) if src.is_dir() else Path(file.name)
                    target = Path(dest) / rel if dest.endswith("/") or src.is_dir() else dest
                    paths.add(str(target))
    return paths


def test_dockerfiles_follow_the_image_rules() -> None:
    assert APP_DOCKERFILE in DOCKERFILES and len(DOCKERFILES) >= 2
    for path in DOCKERFILES:
        all_stages = stages(path)
        assert len(all_stages) >= 2, f"{path.name}: not multi-stage"
        for keyword, rest in dockerfile_instructions(path):
            if keyword == "RUN" and "apt-get install" in rest:
                assert "--no-install-recommends" in rest, f"{path.name}: {rest}"
                assert "rm -rf /var/lib/apt/lists/*" in rest, f"{path.name}: {rest}"
            if keyword in ("COPY", "ADD"):
                # No model and no .env file in an image (infra/dev.env is fine: no secret).
                assert not re.search(r"\.gguf|models|(^|[\s/])\.env\b", rest), path.name
            assert keyword != "ADD", f"{path.name}: ADD fetches/extracts implicitly; use COPY"
        final = all_stages[-1]
        users = [rest for keyword, rest in final if keyword == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{path.name}: runs as root"


def test_app_dockerfile_variants_entrypoint_and_context() -> None:
    text = APP_DOCKERFILE.read_text(encoding="utf-8")
    args = {
        name: value
        for keyword, rest in dockerfile_instructions(APP_DOCKERFILE)
        if keyword == "ARG"
        for name, _, value in [rest.partition("=")]
    }
    assert args["VARIANT"] == "cpu"
    assert "slim" in args["PYTHON_IMAGE"]
    assert "devel" in args["CUDA_DEVEL_IMAGE"] and "runtime" in args["CUDA_RUNTIME_IMAGE"]
    assert "CMAKE_ARGS" in args
    froms = [rest for keyword, rest in dockerfile_instructions(APP_DOCKERFILE) if keyword == "FROM"]
    assert "build-base-${VARIANT} AS builder" in froms and froms[-1] == "runtime-base-${VARIANT}"
    assert "-DGGML_CUDA=on" in text
    entry = [rest for keyword, rest in stages(APP_DOCKERFILE)[-1] if keyword == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1])[0] in image_paths()
    # Everything the final stage copies from the context gets through .dockerignore's allow-list.
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    for keyword, rest in dockerfile_instructions(APP_DOCKERFILE):
        if keyword == "COPY" and "--from" not in rest:
            for source in shlex.split(rest)[:-1]:
                assert (REPO / source).exists(), source
                assert any(source == a or source.startswith(a + "/") for a in allowed), source


def test_minio_defines_the_notification_targets_setup_uses(
    services: dict[str, dict[str, Any]],
) -> None:
    minio, setup = services["minio"]["environment"], services["setup"]["environment"]
    durable, fast = setup["VITRINE_MINIO_TARGET"], setup["VITRINE_MINIO_FAST_TARGET"]
    for target in (durable, fast):
        assert minio[f"MINIO_NOTIFY_KAFKA_ENABLE_{target}"] == "on"
        assert minio[f"MINIO_NOTIFY_KAFKA_BROKERS_{target}"] == setup["VITRINE_KAFKA_BOOTSTRAP"]
        # An empty topic in .env means the default, on both sides.
        assert minio[f"MINIO_NOTIFY_KAFKA_TOPIC_{target}"] == (
            setup["VITRINE_TOPIC_EVENTS"] or "minio.events"
        )
    # Only the durable target queues on disk, in a volume of its own.
    assert f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{fast}" not in minio
    queue = minio[f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{durable}"]
    assert [v["type"] for v in services["minio"]["volumes"] if v["target"] == queue] == ["volume"]


def test_pinned_versions_match_the_native_stack(services: dict[str, dict[str, Any]]) -> None:
    dev = dict(re.findall(r':\s*"\$\{(VITRINE_[A-Z_]+):=([^}]*)\}"', _dev_env()))
    minio_arg = re.search(
        r"ARG MINIO_VERSION=(\S+)", (REPO / "infra/docker/minio.Dockerfile").read_text()
    )
    assert minio_arg and minio_arg.group(1) == dev["VITRINE_MINIO_VERSION"]
    assert services["minio"]["build"]["args"]["MINIO_VERSION"] == dev["VITRINE_MINIO_VERSION"]
    assert services["kafka"]["image"].endswith(":" + dev["VITRINE_KAFKA_VERSION"])


def _dev_env() -> str:
    return (REPO / "infra" / "dev.env").read_text(encoding="utf-8")


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_host_setting() -> None:
    from services.runtime.settings import KafkaSettings

    assert KafkaSettings().metrics_host == "127.0.0.1"
    assert KafkaSettings(metrics_host="0.0.0.0").metrics_host == "0.0.0.0"


def test_prometheus_scrapes_every_service_on_its_metrics_port(
    services: dict[str, dict[str, Any]],
) -> None:
    prom = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert prom["global"]["scrape_interval"]
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    scraped: dict[str, int] = {}
    for job in jobs.values():
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            scraped |= {name: int(sd["port"]) for name in sd["names"]}
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                scraped[host] = int(port)
    for name, module in service_modules(services).items():
        env = services[name]["environment"]
        assert env["VITRINE_METRICS_HOST"] == "0.0.0.0", name
        # Reached by its service name or by a network alias (one DNS name for many services).
        dns_names = {name}
        for network in (services[name].get("networks") or {}).values():
            dns_names |= set((network or {}).get("aliases") or [])
        ports = {scraped[n] for n in dns_names if n in scraped}
        assert ports == {int(env["VITRINE_METRICS_PORT"])}, name
        assert module.rsplit(".", 1)[-1] in jobs
    mounts = {v["target"]: v for v in services["prometheus"]["volumes"]}
    assert Path(mounts["/etc/prometheus/prometheus.yml"]["source"]) == PROMETHEUS


def dashboards() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        yield path, json.loads(path.read_text(encoding="utf-8"))


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield target["expr"]


def test_dashboard_queries_only_metrics_the_code_exports() -> None:
    exported = exposed_metric_names()
    assert "vitrine_inference_jobs_total" in exported
    found = list(dashboards())
    assert found, "no dashboard"
    for path, dashboard in found:
        used = {m for e in panel_exprs(dashboard) for m in re.findall(r"\bvitrine_\w+", e)}
        assert used, path.name
        assert used - exported == set(), f"{path.name} queries metrics no service exports"


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield panel["title"], target


RATE_FUNCTIONS = {"rate", "irate", "increase"}


def _grouping(node: Any) -> set[str] | None:
    """The labels a query's result keeps, when its outermost step says (``sum by (...)``)."""
    import promql_parser as promql

    if isinstance(node, promql.BinaryExpr):
        return _grouping(node.lhs)
    if isinstance(node, promql.ParenExpr):
        return _grouping(node.expr)
    if isinstance(node, promql.Call) and node.func.name == "histogram_quantile":
        kept = _grouping(node.args[1])
        return None if kept is None else kept - {"le"}
    if (
        isinstance(node, promql.AggregateExpr)
        and node.modifier is not None
        and node.modifier.type == promql.AggModifierType.By
    ):
        return set(node.modifier.labels)
    return None


@dataclass
class QueryFacts:
    """What one parsed query selects, what it rates, and what is wrong with it."""

    used: list[str]
    under_rate: list[str]
    problems: list[str]


def query_facts(ast: Any, by_sample: dict[str, Family]) -> QueryFacts:
    import promql_parser as promql

    facts = QueryFacts([], [], [])

    def selected(node: Any) -> list[str]:
        names: list[str] = []
        promql.walk(
            node,
            lambda n: names.append(n.name) if isinstance(n, promql.VectorSelector) else None,
        )
        return names

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector) and node.name.startswith("vitrine_"):
            facts.used.append(node.name)
        elif isinstance(node, promql.Call) and node.func.name in RATE_FUNCTIONS:
            facts.under_rate.extend(selected(node.args[0]))
        elif isinstance(node, promql.Call) and node.func.name == "histogram_quantile":
            kept = _grouping(node.args[1])
            if kept is None or "le" not in kept:
                facts.problems.append("histogram_quantile without `by (le)`")
        elif isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            for name in selected(node.expr):
                family = by_sample.get(name)
                if family is None:
                    continue
                have = family.labels | {"job", "instance"}  # Prometheus adds these two
                if family.type == "histogram":
                    have |= {"le"}
                if extra := set(node.modifier.labels) - have:
                    facts.problems.append(f"{name} has no label {sorted(extra)}")

    promql.walk(ast, visit)
    return facts


def checked_query(expr: str, where: str, by_sample: dict[str, Family]) -> set[str] | None:
    """Parse ``expr`` with Prometheus' grammar (promql-parser) and hold it to the metrics' types:
    counters only under rate/increase, gauges never; histogram_quantile keeps ``le``; ``by``
    labels are labels the metric has. Returns the labels its result keeps, where known."""
    import promql_parser as promql

    try:
        ast = promql.parse(expr)
    except ValueError as exc:
        raise AssertionError(f"{where}: {exc}") from None
    facts = query_facts(ast, by_sample)
    for name in facts.used:
        family = by_sample.get(name)
        assert family is not None, f"{where}: no service exports {name}"
        counting = name.endswith(("_total", "_bucket", "_count", "_sum"))
        assert counting == (name in facts.under_rate), f"{where}: {name} ({family.type}) " + (
            "needs rate()/increase()" if counting else "is no counter for rate()"
        )
    assert facts.problems == [], f"{where}: {facts.problems}"
    return _grouping(ast)


def samples_by_name() -> dict[str, Family]:
    return {s: f for f in registered_families().values() for s in f.samples}


def test_dashboard_queries_parse_and_use_each_metric_as_its_type() -> None:
    by_sample = samples_by_name()
    checked = 0
    for path, dashboard in dashboards():
        for title, target in panel_targets(dashboard):
            where = f"{path.name}: {title!r}: {target['expr']}"
            kept = checked_query(target["expr"], where, by_sample)
            legend = set(re.findall(r"{{\s*(\w+)\s*}}", target.get("legendFormat", "")))
            if legend and kept is not None:
                assert legend <= kept, f"{where}: legend {sorted(legend - kept)} not in by()"
            checked += 1
    assert checked >= 30


def test_alert_rules_are_loaded_mounted_and_sound(services: dict[str, dict[str, Any]]) -> None:
    rules_path = PROMETHEUS.parent / "alerts.yml"
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]  # relative to the config file's directory
    mounts = {v["target"]: v for v in services["prometheus"]["volumes"]}
    assert Path(mounts["/etc/prometheus/alerts.yml"]["source"]) == rules_path
    assert mounts["/etc/prometheus/alerts.yml"]["read_only"] is True
    by_sample = samples_by_name()
    groups = yaml.safe_load(rules_path.read_text(encoding="utf-8"))["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules) >= 6
    for rule in rules:
        where = f"alerts.yml: {rule['alert']}"
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, where
        assert rule["labels"]["severity"] in {"critical", "warning"}, where
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], where
        kept = checked_query(rule["expr"], where, by_sample)
        text = " ".join(rule["annotations"].values())
        labels = set(re.findall(r"\$labels\.(\w+)", text))
        if labels and kept is not None:
            assert labels <= kept, f"{where}: annotations use {sorted(labels - kept)}"
    names = {m for r in rules for m in re.findall(r"\bvitrine_\w+", r["expr"])}
    assert {"vitrine_consumer_lag", "vitrine_inference_jobs_total"} <= names


def test_every_metric_the_code_exports_is_on_a_dashboard() -> None:
    # A metric nobody can see is a metric nobody watches: new ones land on a panel too.
    used = {
        m
        for _, dashboard in dashboards()
        for e in panel_exprs(dashboard)
        for m in re.findall(r"\bvitrine_\w+", e)
    }
    families = metric_families()
    assert "vitrine_inference_redeliveries" in families
    unseen = sorted(name for name, samples in families.items() if not samples & used)
    assert unseen == [], "exported but on no dashboard panel"


def test_every_metric_the_code_exports_is_documented() -> None:
    table = (REPO / "docs" / "operating.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(vitrine_\w+)` \|", table, re.M))
    families = metric_families()
    # A counter is documented as its sample (x_total), a histogram as its family name.
    missing = sorted(n for n, samples in families.items() if not ({n} | samples) & documented)
    assert missing == [], "exported but not in docs/operating.md's metrics table"
    known = set(families) | exposed_metric_names()
    assert documented <= known, f"documented but exported by no service: {documented - known}"


def test_grafana_provisioning_matches_compose(services: dict[str, dict[str, Any]]) -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )["datasources"]
    uids = {ds["uid"] for ds in datasources}
    assert urlsplit(datasources[0]["url"]).hostname == "prometheus"
    provider = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/vitrine.yml").read_text(encoding="utf-8")
    )["providers"][0]
    mounts = {v["target"]: Path(v["source"]) for v in services["grafana"]["volumes"]}
    assert mounts[provider["options"]["path"]] == GRAFANA / "dashboards"
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    home = Path(services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (GRAFANA / "dashboards" / home.relative_to(provider["options"]["path"])).is_file()
    for path, dashboard in dashboards():
        for panel in dashboard["panels"]:
            if "datasource" in panel:
                assert panel["datasource"]["uid"] in uids, path.name


# --- the healthcheck probe -----------------------------------------------------------------------


def serve_text(body: str) -> tuple[HTTPServer, int]:
    return serve(lambda _path: (200, body.encode()))


def run_probe(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The container healthcheck (infra/docker/healthcheck.py) against /metrics on ``port``."""
    return subprocess.run(
        ["python3", str(REPO / "infra/docker/healthcheck.py"), *args],
        capture_output=True,
        text=True,
        env=clean_env({"VITRINE_METRICS_PORT": str(port)}),
        timeout=30,
    )


@pytest.mark.parametrize(
    ("body", "args", "healthy"),
    [
        ("vitrine_inference_model_load_seconds 0.0\n", [], True),
        ("vitrine_inference_model_load_seconds 0.0\n", ["--ready", "m"], False),
        ("m 0.0\n", ["--ready", "m"], False),
        ("# HELP m x\nm 12.5\n", ["--ready", "m"], True),
    ],
)
def test_healthcheck_probe(body: str, args: list[str], healthy: bool) -> None:
    server, port = serve_text(body)
    try:
        proc = run_probe(port, *args)
    finally:
        server.shutdown()
    assert (proc.returncode == 0) is healthy, proc.stderr


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_probe_url(status: int, healthy: bool) -> None:
    """--url (the review desk's /healthz): metrics answer and the URL answers 200."""
    server, port = serve(
        lambda path: (status, b"ok") if path == "/healthz" else (200, b"vitrine_x 1.0\n")
    )
    try:
        proc = run_probe(port, "--url", f"http://127.0.0.1:{port}/healthz")
    finally:
        server.shutdown()
    assert (proc.returncode == 0) is healthy, proc.stderr


def test_healthcheck_probe_fails_when_nothing_listens() -> None:
    server, port = serve_text("")
    server.shutdown()
    server.server_close()
    assert run_probe(port).returncode == 1
