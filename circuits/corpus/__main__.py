"""`python -m circuits.corpus OUT_DIR [--max-chars N] [--overwrite]`: build the offline corpus and print
its manifest summary (until the CLI grows a `circuits corpus build` command)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from circuits.corpus.build import build_corpus
from circuits.errors import CircuitsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuits.corpus", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-chars", type=int, default=None)
    parser.add_argument("--max-chars-per-source", type=int, default=4_000_000)
    parser.add_argument("--min-doc-chars", type=int, default=200)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = build_corpus(args.out, min_doc_chars=args.min_doc_chars, max_chars=args.max_chars,
                                max_chars_per_source=args.max_chars_per_source, overwrite=args.overwrite)
    except CircuitsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {k: manifest[k] for k in ("documents", "characters", "bytes", "sha256")}
    summary.update(sources=len(manifest["sources"]), skipped_sources=len(manifest["skipped_sources"]),
                   shards=len(manifest["shards"]), seconds=round(time.perf_counter() - start, 1))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
