"""The `circuits` command line: one module per command group; this one builds the app.

Commands only parse, call the library and render; no science happens in `circuits/cli/`.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from circuits.cli.compare import compare
from circuits.cli.corpus import corpus_app
from circuits.cli.evaluate import evaluate
from circuits.cli.explain import explain
from circuits.cli.find import find
from circuits.cli.report import report
from circuits.cli.sae import sae_app
from circuits.cli.zoo import zoo_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Find circuits in transformer language models with discrete sparse autoencoders.")


@app.callback()
def _root() -> None:
    """Find circuits in transformer language models with discrete sparse autoencoders."""


app.command()(find)
app.command()(compare)
app.command()(evaluate)
app.command()(explain)
app.command()(report)
app.add_typer(sae_app, name="sae")
app.add_typer(zoo_app, name="zoo")
app.add_typer(corpus_app, name="corpus")


# typer vendors click: its ClickException (the base of every command-line error) is not click's
_CLICK_EXCEPTION: Any = next(c for c in typer.BadParameter.__mro__
                                         if c.__name__ == "ClickException")


def main() -> None:
    """The app; with `--json`, an error in the command line itself (a value that does not parse, an
    unknown option) also gives `{"error", "kind": "usage"}` on stdout, as every other failure does."""
    if "--json" not in sys.argv[1:]:
        app()
        return
    try:
        code = app(standalone_mode=False)
    except _CLICK_EXCEPTION as err:
        from circuits.cli.common import print_json

        print_json({"error": err.format_message().strip().splitlines()[0], "kind": "usage"})
        err.show()
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
