"""What every CLI command shares: one-line errors with exit code 2, atomic output writes."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from circuits.errors import CircuitsError

console = Console(stderr=True)  # progress and tables go to stderr, so --json stdout stays clean
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    """Print one error line and return the Exit(2) to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def user_errors(func: F) -> F:
    """Turn CircuitsError (bad input, unavailable resource) and OSError (the user's paths) into one line on
    stderr and exit code 2. Anything else is a bug in our code and keeps its traceback (exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CircuitsError, OSError) as err:
            raise fail(str(err).splitlines()[0] if str(err) else type(err).__name__) from None

    return wrapper  # type: ignore[return-value]


def check_writable_dir(path: Path) -> Path:
    """Create `path` if needed and check it is a writable directory; raise CircuitsError if not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CircuitsError(f"--out {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CircuitsError(f"cannot create output directory {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK):
        raise CircuitsError(f"output directory {path} is not writable")
    return path


def print_json(data: Any) -> None:
    """One JSON object on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
