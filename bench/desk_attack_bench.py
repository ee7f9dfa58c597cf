"""The review desk under attack (issue 22, F1-F3), against the desk as it was, in one run.

    python bench/desk_attack_bench.py [--logins 60] [--bodies 3] [--body-mb 50]
                                      [--baseline-rev HEAD | --baseline-dir PATH]

Two desks on the real stack (infra/stack), the same variables, measured one after the other:
``before`` runs the code of ``--baseline-rev`` (a git worktree of it; the default, HEAD, is the
commit the fix goes on while the fix is uncommitted; after that, pass its parent) or of an
existing checkout (``--baseline-dir``); ``after`` runs this working tree.  Against each:

* a burst of ``--logins`` simultaneous logins for unknown names from one address (one login
  CSRF cookie), every request on the wire before the first answer is read: how many passwords
  the desk checked (every answer but a 429 is a checked password), and the round trip of
  ``/healthz``, asked again and again from the moment the burst is sent until its last answer;
* the same burst from ``--logins`` addresses (a botnet: no limit stops it, every password is
  checked), ``/healthz`` again;
* ``--bodies`` unauthenticated ``PATCH /v1/cards/...`` with ``--body-mb`` MB JSON bodies at
  once: the desk's peak resident memory growth (VmHWM, reset before), and how much of each
  body the desk took before it answered.

Addresses come as X-Forwarded-For from loopback, which the desks trust (as behind a proxy).
Goals (issue 22): /healthz p99 <= 100 ms during a burst; RSS growth <= 20 MB; a burst checks at
most the limit's number of passwords (20 per address by default).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from tests.support.desk_attacks import (  # noqa: E402
    MB,
    Answer,
    burst,
    filler,
    head,
    login_csrf,
    login_request,
    peak_growth_mb,
    reset_peak,
    send,
    status_line,
)
from tests.support.pipeline import ensure_stack  # noqa: E402
from tests.support.review_desk import PASSWORD, free_port, start_desk  # noqa: E402

ADDRESS_LIMIT = 20  # VITRINE_REVIEW_LOGIN_ATTEMPTS_PER_ADDRESS's default


@dataclass
class Target:
    name: str
    url: str
    pid: int
    bucket: str


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def baseline_desk(env: dict[str, str], code: Path, log: Path) -> Iterator[tuple[str, int]]:
    """``python -m services.review`` from the baseline's code, with the same variables."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.review"],
            cwd=code,
            env={**env, "VITRINE_REVIEW_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while '.started"' not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the baseline desk did not start: see {log}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def baseline_code(rev: str, given: Path | None) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="desk-base-") as tmp:
        where = Path(tmp) / "base"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", str(where), rev], check=True, capture_output=True)
        try:
            yield where
        finally:
            subprocess.run([*git, "remove", "--force", str(where)], check=False)


def healthz_during(url: str, requests: list[bytes]) -> tuple[list[float], list[Answer], float]:
    """/healthz round trips (ms) from the moment the burst is on the wire until its last
    answer; the burst's answers; the burst's duration (s)."""
    on_wire, answers = threading.Event(), []
    started = time.perf_counter()
    runner = threading.Thread(target=lambda: answers.extend(burst(url, requests, sent=on_wire.set)))
    runner.start()
    on_wire.wait(120)
    times: list[float] = []
    with httpx.Client(base_url=url, timeout=120) as probe:
        while runner.is_alive():
            began = time.perf_counter()
            probe.get("/healthz").raise_for_status()
            times.append((time.perf_counter() - began) * 1000)
    runner.join()
    return times, answers, time.perf_counter() - started


def idle_healthz(url: str, n: int = 50) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=30) as probe:
        for _ in range(n):
            began = time.perf_counter()
            probe.get("/healthz").raise_for_status()
            times.append((time.perf_counter() - began) * 1000)
    return times


def logins(url: str, n: int, one_address: bool) -> list[bytes]:
    csrf, tag = login_csrf(url), uuid.uuid4().hex[:6]
    shared = f"10.9.{int(tag[:2], 16)}.{int(tag[2:4], 16) or 1}"
    return [
        login_request(
            url,
            csrf,
            f"nobody-{tag}-{i}",
            PASSWORD,
            shared if one_address else f"10.8.{i // 250}.{i % 250 + 1}",
        )
        for i in range(n)
    ]


def bodies(target: Target, n: int, size: int) -> tuple[float, list[Answer], int, int]:
    """``n`` unauthenticated oversized PATCHes at once: peak RSS growth (MB), the answers, and
    the desk's RSS (kB) before and after."""
    path = f"/v1/cards/{target.bucket}/attack/body.jpg"
    request = head(
        target.url, "PATCH", path, {"Content-Type": "application/json", "Content-Length": str(size)}
    )
    before = status_line(target.pid, "VmRSS")
    start = reset_peak(target.pid)
    with ThreadPoolExecutor(n) as pool:
        answers = list(
            pool.map(
                lambda _: send(target.url, request, filler(size, b'{"product_name": "', b'"}')),
                range(n),
            )
        )
    grown = peak_growth_mb(target.pid, start)
    return grown, answers, before, status_line(target.pid, "VmRSS")


def measure(target: Target, args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    idle = idle_healthz(target.url)
    out["idle"] = f"{statistics.median(idle):.1f} / {percentile(idle, 0.99):.1f} ({len(idle)})"
    for label, one in (("one", True), ("many", False)):
        times, answers, took = healthz_during(target.url, logins(target.url, args.logins, one))
        checked = sum(a.status != 429 for a in answers)
        out[f"{label}_checked"] = f"{checked} of {len(answers)}"
        out[f"{label}_healthz"] = (
            f"{statistics.median(times):.1f} / {percentile(times, 0.99):.1f} ({len(times)})"
        )
        out[f"{label}_p99"] = f"{percentile(times, 0.99):.1f}"
        out[f"{label}_took"] = f"{took:.1f}"
        time.sleep(1)
    grown, answers, before, after = bodies(target, args.bodies, args.body_mb * MB)
    codes = sorted({a.status for a in answers})
    took = max(a.sent for a in answers) / MB
    out["rss"] = f"{grown:.1f}"
    out["rss_line"] = f"{before / 1024:.0f} -> {after / 1024:.0f}"
    out["bodies"] = f"{'/'.join(map(str, codes))}, after <= {took:.1f} MB of each was written"
    return out


def table(args: argparse.Namespace, before: dict[str, str], after: dict[str, str]) -> None:
    n = args.logins
    rows = [
        ("/healthz idle, median / p99 ms (n)", "idle", ""),
        (f"passwords checked, {n} logins from one address", "one_checked", f"<= {ADDRESS_LIMIT}"),
        ("/healthz during that burst, median / p99 ms (n)", "one_healthz", "p99 <= 100"),
        ("that burst's duration, s", "one_took", ""),
        (f"passwords checked, {n} logins from {n} addresses", "many_checked", "(no limit applies)"),
        ("/healthz during that burst, median / p99 ms (n)", "many_healthz", "p99 <= 100"),
        ("that burst's duration, s", "many_took", ""),
        (
            f"peak RSS growth, {args.bodies} x {args.body_mb} MB unauthenticated PATCH, MB",
            "rss",
            "<= 20",
        ),
        ("RSS before -> after them, MB", "rss_line", ""),
        ("their answers (the client writes a body only until the answer comes)", "bodies", ""),
    ]
    print("| measure | before | after | goal |")
    print("|---|---|---|---|")
    for label, key, goal in rows:
        print(f"| {label} | {before[key]} | {after[key]} | {goal} |")
    met = (
        float(after["one_p99"]) <= 100
        and float(after["many_p99"]) <= 100
        and float(after["rss"]) <= 20
        and int(after["one_checked"].split()[0]) <= ADDRESS_LIMIT
    )
    print(f"\ngoals {'met' if met else 'MISSED'} (after)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=60)
    parser.add_argument("--bodies", type=int, default=3)
    parser.add_argument("--body-mb", type=int, default=50)
    parser.add_argument("--baseline-rev", default="HEAD")
    parser.add_argument("--baseline-dir", type=Path, default=None)
    args = parser.parse_args()
    ensure_stack()
    log_dir = Path(tempfile.mkdtemp(prefix="desk-attack-bench-"))
    desk = start_desk(log_dir)
    try:
        after = Target("after", desk.url, desk.service.proc.pid, desk.bucket)  # type: ignore[union-attr]
        with (
            baseline_code(args.baseline_rev, args.baseline_dir) as code,
            baseline_desk(desk.service.env, code, log_dir / "base.log") as (url, pid),
        ):
            revision = subprocess.run(
                ["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            print(f"before: {code} ({revision or 'not a git checkout'}); after: {ROOT}")
            before = measure(Target("before", url, pid, desk.bucket), args)
        results = measure(after, args)
        print()
        table(args, before, results)
    finally:
        desk.close()


if __name__ == "__main__":
    main()
