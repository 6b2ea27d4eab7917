"""Reading a built corpus directory: its manifest and its shard files, in order.

A leaf of the corpus package (it imports nothing of the SAE core), so the SAE sources can read corpus
directories without an import cycle with the corpus builder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from circuits.errors import CircuitsError
from circuits.jsonio import read_json

CORPUS_MANIFEST = "corpus.json"
CORPUS_FORMAT = "circuits-text-corpus-1"


def read_manifest(corpus_dir: Path) -> dict[str, Any]:
    """The manifest of a built corpus directory (CircuitsError, one line, when missing or corrupt)."""
    path = Path(corpus_dir) / CORPUS_MANIFEST
    if not path.is_file():
        raise CircuitsError(f"{corpus_dir}: no {CORPUS_MANIFEST} (not a built corpus)")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != CORPUS_FORMAT:
        raise CircuitsError(f"{path}: not a {CORPUS_FORMAT} manifest")
    return manifest


def corpus_files(corpus_dir: Path) -> list[Path]:
    """The shard files of a corpus directory, in order: the manifest's list when there is one, else
    every *.jsonl then *.txt file, sorted."""
    corpus_dir = Path(corpus_dir)
    if (corpus_dir / CORPUS_MANIFEST).exists():
        files = [corpus_dir / s["file"] for s in read_manifest(corpus_dir)["shards"]]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CircuitsError(f"{corpus_dir}: shard {missing[0]} listed in {CORPUS_MANIFEST} is missing")
        return files
    files = sorted(corpus_dir.glob("*.jsonl")) + sorted(corpus_dir.glob("*.txt"))
    if not files:
        raise CircuitsError(f"corpus directory {corpus_dir} has no .jsonl or .txt files")
    return files
