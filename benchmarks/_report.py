"""How every benchmark hands back its result: one JSON object on stdout, and atomically in --out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from circuits.atomic import atomic_write_text


def emit(report: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text + "\n")
    sys.stdout.write(text + "\n")
