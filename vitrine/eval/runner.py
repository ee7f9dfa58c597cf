"""Run every candidate over the same photos and seeds, one child process each, resumably.

The output directory holds everything a report needs and everything a resume needs::

    OUT/run.json               the set's items (photos resolved), seeds, candidates' settings
    OUT/photos/                every photo as the candidates read it (S3 objects fetched once)
    OUT/results/NAME.jsonl     one line per (item, seed): the card or why there is none
    OUT/runs/NAME.jsonl        one line per child run: load time, wall time, peak RSS, model
    OUT/logs/NAME.log          the child's stderr

Candidates run one after the other, in the order given, each through the items in the set's
order and every seed, on this machine: the same work in the same sequence.  A rerun with the
same OUT continues where each candidate stopped (results already written are kept); changing a
candidate's settings or the seeds under the same OUT is refused, since its results would mix
two configurations.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.products import MANIFEST_NAME, read_manifest
from vitrine.eval.candidates import Candidate
from vitrine.eval.labels import LabelledItem

Progress = Callable[[str, int, int], None]
"""(candidate, cards done, cards in all): the caller's progress display."""


class EvalError(RuntimeError):
    """The run cannot go on: a photo that cannot be had, a candidate that crashed."""


@dataclass(frozen=True)
class Photos:
    """An item's photos on local disk, in order, and the shop's facts."""

    paths: list[str]
    main: int
    facts: dict[str, str]


def cpu_name() -> str:
    """What the numbers were measured on (the report says it beside every cost): the model,
    the cores this process may use, and AMX where present (llama.cpp's kernels differ there)."""
    name = platform.processor() or platform.machine()
    amx = False
    try:
        info = Path("/proc/cpuinfo").read_text()
        amx = "amx_int8" in info
        for line in info.splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}{' with AMX' if amx else ''}, {cores} cores"


class PhotoSource:
    """Files relative to the set, ``s3://bucket/key`` objects (fetched once into OUT/photos
    with the operator's S3 settings), product folders (their ``product.json``)."""

    def __init__(self, base: Path, cache: Path) -> None:
        self.base = base
        self.cache = cache
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            from vitrine.config import OpsSettings
            from vitrine.objects import ops_minio

            self._client = ops_minio(OpsSettings())
        return self._client

    def _split(self, uri: str) -> tuple[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise EvalError(f"{uri}: an S3 photo is s3://bucket/key")
        return bucket, key

    def fetch(self, uri: str) -> str:
        """A local path for a photo reference; raises EvalError naming it."""
        if not uri.startswith("s3://"):
            path = (self.base / uri).resolve()
            if not path.is_file():
                raise EvalError(f"photo {uri}: no such file ({path})")
            return str(path)
        bucket, key = self._split(uri)
        digest = hashlib.sha256(uri.encode()).hexdigest()[:24]
        target = self.cache / f"{digest}{Path(key).suffix[:8]}"
        if not target.is_file():
            self.cache.mkdir(parents=True, exist_ok=True)
            part = target.with_suffix(".part")
            try:
                self._s3().fget_object(bucket, key, str(part))
            except Exception as exc:
                raise EvalError(f"photo {uri}: cannot fetch it: {exc}") from None
            os.replace(part, target)
        return str(target)

    def _read(self, uri: str) -> bytes:
        if uri.startswith("s3://"):
            return Path(self.fetch(uri)).read_bytes()
        try:
            return (self.base / uri).read_bytes()
        except OSError as exc:
            raise EvalError(f"{uri}: {exc}") from None

    def photos(self, item: LabelledItem) -> Photos:
        if item.folder is None:
            return Photos([self.fetch(p) for p in item.photos], item.main, dict(item.facts))
        folder = item.folder if item.folder.endswith("/") else item.folder + "/"
        manifest, problem = read_manifest(self._read(folder + MANIFEST_NAME))
        if manifest is None:
            raise EvalError(f"item {item.id}: {folder}{MANIFEST_NAME}: {problem}")
        paths = [self.fetch(folder + name) for name in manifest.photos]
        return Photos(paths, manifest.main_index, {**manifest.facts, **item.facts})


def _digest(photos: Photos) -> str:
    """What an item's cards were made from: its photos' bytes, the main one, the facts."""
    h = hashlib.sha256()
    for path in photos.paths:
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    h.update(json.dumps([photos.main, photos.facts], sort_keys=True).encode())
    return h.hexdigest()[:32]


def done_pairs(results: Path) -> set[tuple[str, int]]:
    """(item, seed) pairs already in a results file; a torn last line (the run was killed
    while writing it) is not one."""
    done: set[tuple[str, int]] = set()
    if not results.is_file():
        return done
    for line in results.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            done.add((str(record["id"]), int(record["seed"])))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def _compact_torn_line(results: Path) -> None:
    """Drop a torn last line before appending, so the file stays one record per line."""
    if not results.is_file():
        return
    data = results.read_bytes()
    if data and not data.endswith(b"\n"):
        results.write_bytes(data[: data.rfind(b"\n") + 1])


class Runner:
    def __init__(
        self,
        items: list[LabelledItem],
        set_path: Path,
        out: Path,
        candidates: list[Candidate],
        seeds: list[int],
        progress: Progress | None = None,
    ) -> None:
        self.items = items
        self.set_path = set_path
        self.out = out
        self.candidates = candidates
        self.seeds = seeds
        self.progress = progress or (lambda name, done, total: None)

    def prepare(self) -> dict[str, Any]:
        """Resolve every photo and write (or check) OUT/run.json."""
        for sub in ("results", "runs", "logs", "photos"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        source = PhotoSource(self.set_path.parent, self.out / "photos")
        resolved = []
        for item in self.items:
            photos = source.photos(item)
            resolved.append(
                {
                    "id": item.id,
                    "photos": photos.paths,
                    "main": photos.main,
                    "facts": photos.facts,
                    "digest": _digest(photos),
                }
            )
        manifest_path = self.out / "run.json"
        earlier = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if earlier is not None:
            before = {r["id"]: r.get("digest") for r in earlier.get("resolved", [])}
            changed = [r["id"] for r in resolved if before.get(r["id"], r["digest"]) != r["digest"]]
            if changed:
                raise EvalError(
                    f"the photos or facts of {len(changed)} item(s) changed since {self.out} was "
                    f"first run (e.g. {changed[0]}): their earlier cards would be scored against "
                    "other photos; use another --out"
                )
        candidates = {c.name: c.env for c in self.candidates}
        if earlier is not None:
            if earlier["seeds"] != self.seeds:
                raise EvalError(
                    f"{self.out} was run with seeds {earlier['seeds']}, not {self.seeds}: "
                    "use another --out"
                )
            for name, env in candidates.items():
                before = earlier["candidates"].get(name)
                if before is not None and before != env:
                    raise EvalError(
                        f"candidate {name} ran in {self.out} with other settings ({before}); "
                        "give it another name or delete its results/{name}.jsonl"
                    )
            candidates = {**earlier["candidates"], **candidates}
        manifest = {
            "set": str(self.set_path),
            "items": [item.model_dump(mode="json", exclude_defaults=True) for item in self.items],
            "resolved": resolved,
            "seeds": self.seeds,
            "candidates": candidates,
            "order": [c.name for c in self.candidates],
            "cpu": cpu_name(),
        }
        manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
        return manifest

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / ".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EvalError(
                    f"another eval run is writing {self.out}; wait for it or use another --out"
                ) from None
            manifest = self.prepare()
            for candidate in self.candidates:
                self._one(candidate, manifest["resolved"])
        return manifest

    def _one(self, candidate: Candidate, resolved: list[dict[str, Any]]) -> None:
        results = self.out / "results" / f"{candidate.name}.jsonl"
        _compact_torn_line(results)
        done = done_pairs(results)
        total = len(resolved) * len(self.seeds)
        todo = [
            (item["id"], seed)
            for item in resolved
            for seed in self.seeds
            if (item["id"], seed) not in done
        ]
        self.progress(candidate.name, total - len(todo), total)
        if not todo:
            return
        spec = self.out / "runs" / f"{candidate.name}.spec.json"
        spec.write_text(
            json.dumps({"items": resolved, "todo": todo, "results": str(results)}),
            encoding="utf-8",
        )
        env = {**os.environ, **candidate.env}
        env.setdefault("VITRINE_LOG_FORMAT", "json")
        log = (self.out / "logs" / f"{candidate.name}.log").open("ab")
        started = time.time()
        events: dict[str, Any] = {}
        count = total - len(todo)
        with log:
            child = subprocess.Popen(
                [sys.executable, "-m", "vitrine.eval.child", str(spec)],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                text=True,
            )
            assert child.stdout is not None
            try:
                for line in child.stdout:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("event") == "card":
                        count += 1
                        self.progress(candidate.name, count, total)
                    else:
                        events[event.get("event", "?")] = event
                code = child.wait()
            except BaseException:
                child.terminate()
                child.wait(timeout=30)
                raise
        loaded, finished = events.get("loaded"), events.get("done")
        if loaded is not None:
            run = {
                "started": started,
                "load_s": loaded["load_s"],
                "parallel": loaded["parallel"],
                "model_id": loaded["model_id"],
                "prompt_version": loaded["prompt_version"],
                "describe": loaded["describe"],
                "files": loaded.get("files", {}),
                "cpu": cpu_name(),
                **(
                    {k: finished[k] for k in ("wall_s", "cards", "peak_rss_bytes")}
                    if finished
                    else {}
                ),
                "exit_code": code,
            }
            with (self.out / "runs" / f"{candidate.name}.jsonl").open("a") as runs:
                runs.write(json.dumps(run) + "\n")
        if code != 0:
            tail = _tail(self.out / "logs" / f"{candidate.name}.log")
            raise EvalError(
                f"candidate {candidate.name} stopped (exit code {code}) after {count} of "
                f"{total} cards; rerun the same command to resume. Its log ends:\n{tail}"
            )


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
