"""``vitrine``: the command line for people who run the pipeline.

User errors (a missing file, an offline hub, an unreachable server, an unknown key) print one
``vitrine: error: ...`` line on stderr, like git or kubectl; tracebacks are kept for bugs.
Exit codes: 0 success, 1 runtime error, 2 usage error, 3 ``vitrine status`` found the pipeline
unhealthy.  The commands only parse options and print; the work is in the modules beside this one.

This module assembles the app from one module per command group (``vitrine/commands/``) and
runs it (:func:`main`, the ``vitrine`` entry point); the helpers every command shares are in
``vitrine/console.py``.  Commands are registered here, in the order ``vitrine --help`` lists
them.
"""

from __future__ import annotations

import sys

import typer

from vitrine.commands import card, catalogue, contract, ops, requeue, stack
from vitrine.commands.dlq import dlq_app
from vitrine.commands.eval import eval_app
from vitrine.commands.export import export
from vitrine.commands.models import models_app
from vitrine.commands.users import users_app
from vitrine.console import err, error_line, fail, out

__all__ = ["app", "err", "error_line", "fail", "main", "out"]

app = typer.Typer(
    help="vitrine: product photos in, validated product cards out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
app.add_typer(contract.schemas_app, name="schemas")
app.add_typer(dlq_app, name="dlq")
app.add_typer(contract.taxonomy_app, name="taxonomy")
app.add_typer(users_app, name="users")

app.command("import")(catalogue.import_products)

for _command in (
    contract.prompt,
    requeue.reprocess,
    requeue.backfill,
    stack.up,
    stack.down,
    stack.logs,
    ops.status,
    ops.config,
    catalogue.put,
    catalogue.cards,
    catalogue.show,
    export,
    card.card,
):
    app.command()(_command)


def main() -> None:
    """Run the app with our own error reporting: usage errors as one ``vitrine: error:`` line
    plus a hint (exit 2), instead of click's boxed messages."""
    from typer._click import exceptions as click  # typer's own copy of click raises these

    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            out.print(exc.ctx.get_help(), highlight=False)
        sys.exit(2)
    except click.UsageError as exc:
        error_line(exc.format_message())
        command = exc.ctx.command_path if exc.ctx else "vitrine"
        err.print(f"See '{command} --help'.", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.ClickException as exc:
        error_line(exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
