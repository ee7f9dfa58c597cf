"""``vitrine models``: the model presets, what is downloaded, downloading one, and quantizing a
model to another type (``vitrine/quantize.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vitrine.console import err, fail, out

models_app = typer.Typer(
    help="List and download model presets; quantize a model.", no_args_is_help=True
)


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


@models_app.command("quantize")
def models_quantize(
    src: Annotated[
        Path,
        typer.Argument(
            metavar="SRC.gguf", help="The text model GGUF to quantize (not the mmproj)."
        ),
    ],
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            "-t",
            help="llama.cpp's type, any case: Q4_0, Q4_K_M, Q5_K_M, Q6_K, Q8_0, F16...",
        ),
    ],
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output GGUF or folder; default: beside SRC, its quant tag replaced by TYPE.",
        ),
    ] = None,
    allow_requantize: Annotated[
        bool,
        typer.Option(
            "--allow-requantize",
            help="Quantize an already-quantized model (worse than from the F16/BF16 original).",
        ),
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Threads for llama.cpp; default: every hardware thread."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing output file.")
    ] = False,
) -> None:
    """Quantize a text model with llama.cpp (the variants the report compares).

    The vision projector (mmproj) stays as it is: pair the new model with the same mmproj.
    """
    from vitrine import quantize as q

    try:
        qtype = q.parse_type(type_)
    except q.UnknownType as exc:
        fail(str(exc), code=2)
    try:
        plan = q.plan(src, qtype, out_path, force=force, allow_requantize=allow_requantize)
        files = q.source_files(plan.src, plan.info)
        size_in = sum(f.stat().st_size for f in files)
        if plan.requantize:
            err.print(
                f"requantizing {plan.info.describe()} to {qtype.name} (--allow-requantize): "
                f"the result carries {plan.info.describe()}'s rounding errors",
                highlight=False,
                soft_wrap=True,
            )
        seconds = q.quantize(plan, threads=threads)
    except q.QuantizeError as exc:
        fail(str(exc))
    size_out = plan.dst.stat().st_size
    out.print(
        f"input:  {plan.src} ({_mb(size_in)}, {plan.info.describe()})\n"
        f"output: {plan.dst} ({_mb(size_out)}, {qtype.name})\n"
        f"took {seconds:.1f} s; use it with the same projector: "
        f"vitrine card --model {plan.dst} --mmproj <the model's mmproj> ...",
        highlight=False,
        soft_wrap=True,
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"
