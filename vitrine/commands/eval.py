"""``vitrine eval``: run candidates over a labelled set, report, export the desk's labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitrine.commands.eval_export import export_reviewed
from vitrine.console import err, fail, out

eval_app = typer.Typer(
    help="Measure card accuracy on labelled photos: compare models, quantizations, prompts.",
    no_args_is_help=True,
)
eval_app.command("export-reviewed")(export_reviewed)


def _need_extra() -> None:
    """The report's packages come with the ``eval`` extra, not with the services."""
    try:
        import matplotlib  # noqa: F401
        import rapidfuzz  # noqa: F401
    except ImportError as exc:
        fail(
            f"vitrine eval needs the eval extra ({exc.name} is missing): "
            "pip install 'vitrine[eval]'"
        )


@eval_app.command("run")
def run(
    labelled_set: Annotated[
        Path, typer.Argument(metavar="SET", help="The labelled set (.jsonl or .csv).")
    ],
    candidate: Annotated[
        list[str] | None,
        typer.Option(
            "--candidate",
            "-c",
            help="NAME=key=value,key=value: engine settings (by setting name or VITRINE_* "
            "variable) on top of the environment; repeat for each candidate. The first is the "
            "baseline. None: one candidate, the environment as it is.",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Results and report; rerun with the same --out to resume."),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Seeds per photo.")] = 1,
    first_seed: Annotated[int, typer.Option(min=0, help="The first seed.")] = 1000,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the set's first N items (a quick look).")
    ] = None,
) -> None:
    """Generate every item's card with every candidate, same photos, same seeds, then report.

    Candidates run one after the other, each in a process of its own (one model loaded at a
    time); an interrupted run continues where it stopped when run again with the same --out.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
    )

    from vitrine.eval.candidates import CandidateError, engine_setting_names, parse_candidates
    from vitrine.eval.labels import LabelError, read_set
    from vitrine.eval.runner import EvalError, Runner

    _need_extra()
    try:
        items = read_set(labelled_set)
        candidates = parse_candidates(candidate or [], engine_setting_names())
    except (LabelError, CandidateError) as exc:
        fail(str(exc), 2)
    if limit is not None:
        items = items[:limit]
    target = out_dir or Path("eval-runs") / labelled_set.stem
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def show(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        runner = Runner(
            items, labelled_set, target, candidates, [first_seed + i for i in range(seeds)], show
        )
        try:
            runner.run()
        except EvalError as exc:
            first, _, rest = str(exc).partition("\n")
            if rest:
                err.print(rest, highlight=False, markup=False)
            fail(first)
    _report(target)


@eval_app.command("report")
def report_command(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="An `eval run` --out directory.")],
) -> None:
    """Redraw the report from a run's results (also mid-run, or after adding candidates)."""
    if not (out_dir / "run.json").is_file():
        fail(f"{out_dir} holds no eval run (no run.json)", 2)
    _need_extra()
    _report(out_dir)


def _report(target: Path) -> None:
    from vitrine.eval import report

    data = report.write(target)
    for finding in data["findings"]:
        out.print(f"- {finding}", highlight=False, markup=False)
    out.print(
        f"report: {target / 'report.html'} (Markdown: report.md, data: report.json)",
        highlight=False,
        markup=False,
    )
