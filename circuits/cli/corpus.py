"""`circuits corpus build OUT`: the offline text corpus (circuits.corpus) with its manifest. Parsing and
rendering only; the work is in circuits.corpus.build."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from circuits.cli.common import console, print_json, progress_display, user_errors
from circuits.cli.common import out as results
from circuits.errors import CircuitsError

corpus_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Build the offline text corpus (stdlib and installed packages' docs).")


@corpus_app.callback()
def _root() -> None:
    """Build the offline text corpus."""


@corpus_app.command()
@user_errors
def build(
    out: Path = typer.Argument(..., help="directory for the JSONL shards and corpus.json"),
    max_chars: int | None = typer.Option(None, help="stop once the corpus holds this many characters"),
    max_chars_per_source: int = typer.Option(4_000_000, help="characters at most from one source "
                                                             "(keeps one huge package from dominating)"),
    min_doc_chars: int = typer.Option(200, help="drop documents shorter than this"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a corpus already in OUT"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest summary as one JSON object"),
) -> None:
    """Build a text corpus from the docstrings, comments and docs of the standard library and of every
    installed distribution with licence metadata; licences, sizes and sha256 go to OUT/corpus.json."""
    from circuits.corpus import build_corpus

    if max_chars is not None and max_chars < 1:
        raise CircuitsError(f"--max-chars must be positive, got {max_chars}")
    if max_chars_per_source < 1:
        raise CircuitsError(f"--max-chars-per-source must be positive, got {max_chars_per_source}")
    start = time.perf_counter()
    bar = progress_display(not as_json)
    task = bar.add_task("corpus sources", total=None, info="")

    def progress(name: str, done: int, total: int) -> None:  # one bar, the source's name as its info
        bar.update(task, completed=done, total=total, info=name)

    with bar:
        manifest = build_corpus(out, min_doc_chars=min_doc_chars, max_chars=max_chars,
                                max_chars_per_source=max_chars_per_source, overwrite=overwrite,
                                progress=progress)
    summary = {"out": str(out), **{k: manifest[k] for k in ("documents", "characters", "bytes", "sha256")},
               "sources": len(manifest["sources"]), "skipped_sources": len(manifest["skipped_sources"]),
               "shards": len(manifest["shards"]), "seconds": round(time.perf_counter() - start, 1)}
    if as_json:
        print_json(summary)
        return
    results.print(f"[green]built[/] {out}: {summary['documents']} documents, {summary['characters']:,} "
                  f"characters from {summary['sources']} sources ({summary['skipped_sources']} skipped: no "
                  f"licence metadata), sha256 {summary['sha256'][:16]}…, {summary['seconds']} s")
    console.print(f"manifest: {out / 'corpus.json'}")
