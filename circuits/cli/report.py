"""`circuits report RUN_DIR`: the HTML report of a finished run."""

from __future__ import annotations

from pathlib import Path

import typer

from circuits.cli.common import check_writable_dir, claim_outputs, out, user_errors


@user_errors
def report(
    run_dir: Path = typer.Argument(..., help="a directory written by `circuits find --out` (or its "
                                             "result.json)"),
    target: Path | None = typer.Option(None, "--out", "-o",
                                       help="HTML file to write (its folder is created); default "
                                            "RUN_DIR/report.html"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing report (atomically)"),
) -> None:
    """Write the HTML report of a finished run (figures inlined, and as PNG beside the page)."""
    from circuits.report import check_report_path, load_result, report_files, write_report

    payload = load_result(run_dir)
    if target is None:
        target = (run_dir if run_dir.is_dir() else run_dir.parent) / "report.html"
    if target.is_dir():
        check_report_path(target)  # its one-line message for a directory
    check_writable_dir(target.parent, "--out")
    check_report_path(target)
    claim_outputs(report_files(target), overwrite)
    files = write_report(payload, target)
    out.print(f"wrote {', '.join(files.values())}", highlight=False, soft_wrap=True)
