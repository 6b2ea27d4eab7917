"""How every benchmark hands back its result: one JSON object on stdout, and atomically in --out, headed by
`written_by` (the script and the command line that wrote it; docs/results.md shows it beside the numbers)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from circuits.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def written_by(argv: list[str] | None = None) -> dict[str, str]:
    """{"script": path from the repository root, "command": the command line that ran it}."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    rel = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else argv[0]
    return {"script": rel, "command": shlex.join(["python", rel, *argv[1:]])}


def emit(report: dict[str, Any], out: Path | None) -> None:
    report = {"written_by": report.get("written_by") or written_by(), **report}
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text + "\n")
    sys.stdout.write(text + "\n")
