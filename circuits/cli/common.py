"""What every CLI command shares: one-line errors with exit code 2, output checks, progress display."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

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


class _InfoColumn(ProgressColumn):
    """A task's optional `info` field (e.g. the latest loss), empty when the task has none."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("info", "")))


class _PlainProgress(Progress):
    """When stderr is not a terminal (a pipe, a log file): a plain line per task every few seconds, so a
    long run shows it is alive instead of rich's silence; a run shorter than that prints nothing."""

    def __init__(self, interval_s: float = 5.0, **kwargs: Any) -> None:
        super().__init__(disable=True, **kwargs)
        self._interval_s = interval_s
        self._last: dict[TaskID, float] = {}

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._last[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        now = time.monotonic()
        task = self._tasks[task_id]
        if now - self._last.get(task_id, now) >= self._interval_s:  # quiet for runs shorter than that
            self._last[task_id] = now
            total = f"/{task.total:g}" if task.total else ""
            info = task.fields.get("info", "")
            console.print(f"{task.description}: {task.completed:g}{total} ({task.elapsed or 0:.0f}s)"
                          + (f" {info}" if info else ""), highlight=False, soft_wrap=True)


def progress_display(enabled: bool = True) -> Progress:
    """The progress display of every long command (stderr): bars on a terminal, plain lines elsewhere."""
    if enabled and not console.is_terminal:
        return _PlainProgress()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               _InfoColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True, disable=not enabled)


def progress_callback(bar: Progress) -> Callable[[str, int, int], None]:
    """A (label, done, total) callback for the library that keeps one task per label on `bar`."""
    ids: dict[str, TaskID] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in ids:
            ids[label] = bar.add_task(label, total=total or None)
        bar.update(ids[label], completed=done, total=total or None)

    return update


def config_option(config_cls: type, name: str, *flags: str, **kwargs: Any) -> Any:
    """A typer option whose default and help come from field `name` of a config dataclass."""
    from circuits.discovery.config import default, help_text

    return typer.Option(default(config_cls, name), *flags, help=help_text(config_cls, name), **kwargs)
