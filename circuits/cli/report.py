"""`circuits report RUN_DIR`: the HTML report of a finished run."""

from __future__ import annotations

from pathlib import Path

import typer

from circuits.cli.common import console, user_errors


@user_errors
def report(
    run_dir: Path = typer.Argument(..., help="a directory written by `circuits find --out` (or its "
                                             "result.json)"),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="HTML file to write; default RUN_DIR/report.html"),
) -> None:
    """Write the HTML report of a finished run (figures inlined, and as PNG beside the page)."""
    from circuits.report import check_report_path, load_result, write_report

    payload = load_result(run_dir)
    target = out if out is not None else (run_dir if run_dir.is_dir() else run_dir.parent) / "report.html"
    check_report_path(target)
    files = write_report(payload, target)
    console.print(f"wrote {', '.join(files.values())}")
