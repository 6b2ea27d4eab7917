"""The one JSON reader for files a user hands us: every failure is one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from circuits.errors import CircuitsError


def read_json(path: Path | str, error: type[CircuitsError] = CircuitsError, expect_object: bool = False,
              missing: str | None = None) -> Any:
    """Parse `path` as UTF-8 JSON (a BOM is allowed); raise `error` with one line when it cannot.

    missing: the message for a file that does not exist (default "<path>: no such file").
    expect_object: also refuse anything but a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise error(missing or f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if expect_object and not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
