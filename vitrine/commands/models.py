"""``vitrine models``: the model presets, what is downloaded, and downloading one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from vitrine.console import fail, out

models_app = typer.Typer(help="List and download model presets.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """Show the presets, their files and whether they are downloaded."""
    from services.inference.engine.model_files import ModelFilesError, resolve
    from services.inference.engine.presets import load_registry
    from services.inference.settings import EngineSettings

    registry = load_registry()
    table = Table(title="model presets", title_justify="left")
    for column in ("preset", "model", "handler", "quants", "GB", "downloaded"):
        table.add_column(column)
    for name, preset in registry.presets.items():
        have = []
        for quant in preset.quants:
            try:
                resolve(EngineSettings(preset=name, quant=quant))
                have.append(quant)
            except ModelFilesError:
                pass
        label = f"{name} (default)" if name == registry.default else name
        table.add_row(
            label,
            preset.title,
            preset.handler,
            ", ".join(preset.quants),
            f"{preset.size_gb:.1f}",
            ", ".join(have) or "-",
        )
    out.print(table)


@models_app.command("pull")
def models_pull(
    preset: Annotated[str, typer.Argument(help="Preset name (see `vitrine models list`).")],
    quant: Annotated[str | None, typer.Option(help="Quantisation, e.g. Q4_K_M.")] = None,
) -> None:
    """Download a preset's model and vision projector from the Hugging Face hub."""
    from services.inference.engine.model_files import ModelFilesError, pull
    from services.inference.settings import EngineSettings

    settings = EngineSettings()
    try:
        files = pull(preset, quant, settings.models_dir)
    except (ModelFilesError, KeyError) as exc:
        fail(str(exc).strip("'\""))
    out.print(f"model:  {files.model}\nmmproj: {files.mmproj}")
