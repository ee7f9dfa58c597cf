"""Finding model files on disk, and downloading them from the hub when (and only when) asked.

Services never download: they resolve files already in the cache and fail with the exact
``vitrine models pull`` command to run.  Pulling is an explicit user action, with a fast,
plain-language failure when the hub cannot be reached (offline machines, firewalls).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from services.inference.engine.handlers import (
    GGUFMetadataError,
    HandlerChoice,
    HandlerNotDetected,
    detect_handler,
)
from services.inference.engine.presets import HandlerName, HubFile, Preset, load_registry
from services.inference.settings import EngineSettings


class ModelFilesError(Exception):
    """A user-facing problem with model files; the message says what to do."""


class ModelNotDownloaded(ModelFilesError):
    pass


class HubUnavailable(ModelFilesError):
    pass


@dataclass(frozen=True)
class ModelFiles:
    model: Path
    mmproj: Path
    handler: HandlerName
    preset: Preset | None
    quant: str | None
    handler_reason: str = ""
    """How ``handler`` was chosen, for people: given, a preset's, or detected from the files."""

    @property
    def model_id(self) -> str:
        """Stable identifier recorded with every card: preset and quant, or the file name."""
        if self.preset is not None:
            return f"{self.preset.name}:{self.quant}"
        return self.model.name


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _cached(file: HubFile, models_dir: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(file.repo, file.filename, cache_dir=models_dir)
    return Path(found) if isinstance(found, str) else None


def resolve(settings: EngineSettings) -> ModelFiles:
    """Model files for ``settings`` that exist locally; never touches the network.

    The handler is ``settings.handler`` when given, else a preset's own, else (an explicit pair)
    chosen from the files' metadata by ``handlers.detect_handler``; ``handler_reason`` says which.
    """
    if settings.model_path is not None and settings.mmproj_path is not None:
        for path in (settings.model_path, settings.mmproj_path):
            if not path.is_file():
                raise ModelFilesError(f"model file not found: {path}")
        if settings.handler is not None:
            choice = HandlerChoice(settings.handler, "given: --handler / VITRINE_HANDLER")
        else:
            try:
                choice = detect_handler(
                    settings.model_path,
                    settings.mmproj_path,
                    chat_template=settings.chat_template,
                )
            except (HandlerNotDetected, GGUFMetadataError) as exc:
                raise ModelFilesError(str(exc)) from None
        return ModelFiles(
            model=settings.model_path,
            mmproj=settings.mmproj_path,
            handler=choice.handler,
            preset=None,
            quant=None,
            handler_reason=choice.reason,
        )
    registry = load_registry()
    preset = registry.get(settings.preset or registry.default)
    quant = settings.quant or preset.default_quant
    model = _cached(preset.model_file(quant), settings.models_dir)
    mmproj = _cached(preset.mmproj_file(), settings.models_dir)
    if model is None or mmproj is None:
        raise ModelNotDownloaded(
            f"model preset {preset.name} ({quant}) is not downloaded yet; "
            f"run: vitrine models pull {preset.name} --quant {quant}"
        )
    if settings.handler is not None:
        return ModelFiles(
            model, mmproj, settings.handler, preset, quant, "given: --handler / VITRINE_HANDLER"
        )
    return ModelFiles(model, mmproj, preset.handler, preset, quant, f"preset {preset.name}")


def check_hub_reachable(timeout: float = 5.0) -> None:
    """Fail in seconds, not after the hub client's minute of retries, when offline."""
    url = urlparse(hub_endpoint())
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise HubUnavailable(
            f"cannot reach the model hub at {hub_endpoint()} ({exc.strerror or exc}). "
            "Connect to the internet, set HF_ENDPOINT to a mirror, or download the GGUF files "
            "yourself and pass --model/--mmproj (VITRINE_MODEL_PATH/VITRINE_MMPROJ_PATH)."
        ) from None


def pull(preset_name: str, quant: str | None, models_dir: Path) -> ModelFiles:
    """Download a preset's model and projector into ``models_dir`` (resumable, cached)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    preset = load_registry().get(preset_name)
    quant = quant or preset.default_quant
    files = [preset.model_file(quant), preset.mmproj_file()]
    check_hub_reachable()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    paths: list[Path] = []
    for file in files:
        try:
            paths.append(Path(hf_hub_download(file.repo, file.filename, cache_dir=models_dir)))
        except LocalEntryNotFoundError as exc:
            raise HubUnavailable(
                f"download of {file.repo}/{file.filename} failed: the hub stopped answering "
                f"({exc.__cause__ or exc})"
            ) from None
        except HfHubHTTPError as exc:
            raise ModelFilesError(
                f"the hub refused {file.repo}/{file.filename}: {exc}. "
                "Gated repos need HF_TOKEN; a renamed file needs an updated preset."
            ) from None
    return ModelFiles(paths[0], paths[1], preset.handler, preset, quant, f"preset {preset.name}")
