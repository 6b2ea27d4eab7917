"""The `circuits` command line: one module per command group; this one builds the app.

Commands only parse, call the library and render; no science happens in `circuits/cli/`.
"""

from __future__ import annotations

import typer

from circuits.cli.compare import compare
from circuits.cli.corpus import corpus_app
from circuits.cli.evaluate import evaluate
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
app.command()(report)
app.add_typer(sae_app, name="sae")
app.add_typer(zoo_app, name="zoo")
app.add_typer(corpus_app, name="corpus")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
