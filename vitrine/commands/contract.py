"""``vitrine schemas``, ``vitrine taxonomy`` and ``vitrine prompt``: what the contract and the
settings make of it (the JSON Schemas, the category tree, the prompt version)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vitrine.console import fail, out

if TYPE_CHECKING:
    from schemas.taxonomy import Channel, Taxonomy

schemas_app = typer.Typer(help="Export the JSON Schemas of the contracts.", no_args_is_help=True)
taxonomy_app = typer.Typer(
    help="The category tree the settings configure: check it, see it, export its schemas.",
    no_args_is_help=True,
)


@schemas_app.command("export")
def schemas_export(
    check: Annotated[bool, typer.Option(help="Exit 1 if a committed file is stale.")] = False,
) -> None:
    """Regenerate schemas/json/*.json from the Pydantic models."""
    from schemas.export import stale_files, write_all

    if check:
        stale = stale_files()
        if stale:
            fail("stale schema files: " + ", ".join(stale) + " (run: vitrine schemas export)")
        return
    for path in write_all():
        out.print(f"wrote {path}")


def _tree(file: Path | None) -> Any:
    from schemas.taxonomy import Taxonomy, TaxonomyError
    from services.inference.settings import EngineSettings

    try:
        return Taxonomy.load(file) if file is not None else EngineSettings().tree()
    except (TaxonomyError, ValueError) as exc:
        fail(str(exc), 2)


TreeFile = Annotated[
    Path | None,
    typer.Option("--file", help="A tree file (default: what VITRINE_TAXONOMY(_FILE) configure)."),
]


@taxonomy_app.command("show")
def taxonomy_show(
    file: TreeFile = None,
    chars: Annotated[
        int | None, typer.Option(help="Outline budget (default VITRINE_TAXONOMY_PROMPT_CHARS).")
    ] = None,
    leaves: Annotated[bool, typer.Option("--leaves", help="List every leaf: id, path.")] = False,
) -> None:
    """Load the tree (errors say where), print its size, the outline the prompt shows and the
    leaves without a Google or Shopify category."""
    from services.inference.settings import EngineSettings

    tree = _tree(file)
    depth = max(len(n.path) for n in tree.nodes)
    declared = sum(len(tree.own_attributes(n)) for n in tree.nodes)
    out.print(
        f"[bold]{tree.name}[/]: {len(tree.nodes)} nodes, {len(tree.leaves)} leaves, depth "
        f"{depth}, {declared} attributes declared, {len(tree.attribute_groups())} attribute "
        "groups",
        highlight=False,
    )
    budget = chars if chars is not None else EngineSettings().taxonomy_prompt_chars * 5 // 8
    out.print(f"\n[bold]outline[/] (as the prompt shows it, {budget} characters at most)")
    out.print(tree.outline(budget), highlight=False, markup=False)
    if leaves:
        out.print("\n[bold]leaves[/]")
        for leaf in tree.leaves:
            out.print(f"{leaf.id}\t{leaf.path_text}", highlight=False, markup=False)
    out.print("\n[bold]channels[/] (the categories the exports write)")
    for line in channel_lines(tree):
        out.print(line, highlight=False, markup=False, soft_wrap=True)


UNMAPPED_SHOWN = 20
_CHANNEL_FIELDS: dict[Channel, tuple[str, str]] = {
    "google": ("Google", "google_product_category"),
    "shopify": ("Shopify", "Product category"),
}


def channel_lines(tree: Taxonomy) -> list[str]:
    """Per channel, whether every leaf has a category there, else which do not (the first
    few): a card on such a leaf reaches that channel's feed with the field empty."""
    lines: list[str] = []
    for channel, (label, column) in _CHANNEL_FIELDS.items():
        unmapped = tree.unmapped_leaves(channel)
        if not unmapped:
            lines.append(f"{label}: every leaf mapped")
            continue
        count = "1 leaf" if len(unmapped) == 1 else f"{len(unmapped)} leaves"
        lines.append(f"{label}: {count} unmapped (feeds leave their cards without {column}):")
        lines.extend(f"  {leaf.path_text}" for leaf in unmapped[:UNMAPPED_SHOWN])
        if len(unmapped) > UNMAPPED_SHOWN:
            lines.append(f"  … and {len(unmapped) - UNMAPPED_SHOWN} more")
    return lines


@taxonomy_app.command("export")
def taxonomy_export(
    directory: Annotated[Path, typer.Argument(help="Writes DIR/categories/<id>.schema.json.")],
    file: TreeFile = None,
) -> None:
    """Write every leaf's attributes JSON Schema (what a consumer validates ``attributes`` by)."""
    from schemas.export import write_tree

    written = write_tree(_tree(file), directory)
    out.print(f"wrote {len(written)} category schemas under {directory / 'categories'}")


def prompt(
    show: Annotated[bool, typer.Option("--show", help="Print the whole prompt too.")] = False,
) -> None:
    """Print the prompt version the current settings produce (taxonomy, language, limits)."""
    from schemas.card import generation_schema
    from services.inference.settings import EngineSettings

    settings = EngineSettings()
    rendered = settings.prompt(generation_schema(settings.card_type()))
    out.print(rendered.version, highlight=False)
    if show:  # the messages as the model gets them, in VITRINE_PROMPT_ORDER's order
        system, user = rendered.messages("<image>")
        after_image = user["content"][1]["text"]
        out.print(
            f"\n[bold]system[/] ({settings.prompt_order})\n{system['content']}\n\n"
            f"[bold]user[/]\n<the photo>\n{after_image}",
            highlight=False,
            markup=True,
        )
