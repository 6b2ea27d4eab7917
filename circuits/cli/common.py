"""What every CLI command shares: one-line errors with exit code 2 (and a JSON error under --json), output
checks (never overwrite; a failed run removes what it created), progress display, results on stdout."""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
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

console = Console(stderr=True)  # progress, logs and errors: stderr, so stdout holds only results
# Results (tables, summaries) go to stdout, so `circuits find ... > result.txt` captures them; wide enough
# off a terminal that tables are not squeezed into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 120)
F = TypeVar("F", bound=Callable[..., Any])
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class _Ledger:
    """What the running command created, so that a failure can remove it: output files that did not
    exist before (declared up front by `claim_outputs`) and folders `check_writable_dir` made."""

    def __init__(self) -> None:
        self.new_files: list[Path] = []
        self.new_dirs: list[Path] = []
        self.kept: list[Path] = []  # files deliberately left on failure (e.g. a --resume checkpoint)

    def undo(self) -> None:
        for path in self.new_files:
            path.unlink(missing_ok=True)
        for folder in sorted(self.new_dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty: never anything the user put there meanwhile
            except OSError:
                pass

    def kept_files(self) -> list[Path]:
        return [p for p in self.kept if p.exists()]


_ledger = _Ledger()


def keep_on_failure(path: Path) -> None:
    """Mark a file that a failed or interrupted run leaves on purpose (named in the interrupt line)."""
    _ledger.kept.append(Path(path))


def fail(message: str) -> typer.Exit:
    """Print one error line and return the Exit(2) to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def error_kind(err: BaseException) -> str:
    """The `kind` of a JSON error: the exception class in snake case (circuits_error, model_load_error,
    file_not_found_error, ...), so scripts can branch without parsing the message."""
    name = type(err).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def user_errors(func: F) -> F:
    """Turn CircuitsError (bad input, unavailable resource) and OSError (the user's paths) into one line on
    stderr and exit code 2 (with `--json`, also `{"error", "kind"}` on stdout); Ctrl-C into one line and
    exit 130. Either way, files and folders this run created are removed first. Anything else is a bug in
    our code and keeps its traceback (exit 1), after the same clean-up."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _ledger
        _ledger = _Ledger()
        as_json = bool(kwargs.get("as_json") or kwargs.get("json_out"))
        try:
            return func(*args, **kwargs)
        except (CircuitsError, OSError) as err:
            _ledger.undo()
            message = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
            if as_json:
                print_json({"error": message, "kind": error_kind(err)})
            raise fail(message) from None
        except KeyboardInterrupt:
            _ledger.undo()
            kept = _ledger.kept_files()
            message = "interrupted: nothing written" + (
                f" (kept {', '.join(map(str, kept))} to resume from)" if kept else "")
            console.print(message, highlight=False, soft_wrap=True)
            if as_json:
                print_json({"error": message, "kind": "interrupted"})
            raise typer.Exit(code=INTERRUPTED_EXIT) from None
        except BaseException:
            _ledger.undo()
            raise

    return wrapper  # type: ignore[return-value]


def check_writable_dir(path: Path, option: str = "--out") -> Path:
    """Create `path` if needed and check it is a writable directory; raise CircuitsError if not.
    Folders made here are removed again if the run fails and leaves them empty."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CircuitsError(f"{option} {path} exists and is not a directory")
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CircuitsError(f"cannot create output directory {path}: {err.strerror}") from None
    _ledger.new_dirs.extend(missing)
    if not os.access(path, os.W_OK):
        raise CircuitsError(f"output directory {path} is not writable")
    return path


def claim_outputs(paths: list[Path], overwrite: bool, option: str = "--out") -> None:
    """Refuse, before any work, output files that already exist (one line naming them) unless `overwrite`;
    remember the new ones, so that a failed run removes whatever of them it wrote. Files are written
    atomically (circuits.atomic), so with --overwrite an old file is replaced whole or not at all."""
    existing = [p for p in map(Path, paths) if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (f" and {len(existing) - 3} more"
                                                            if len(existing) > 3 else "")
        raise CircuitsError(f"{option}: {shown} already exist{'s' if len(existing) == 1 else ''}; "
                            f"pass --overwrite to replace, or choose another path")
    dirs = [p for p in existing if p.is_dir()]
    if dirs:
        raise CircuitsError(f"{option}: {dirs[0]} is a directory; cannot write a file there")
    _ledger.new_files.extend(p for p in map(Path, paths) if p not in existing)


def claim_report(path: Path, files: list[Path], overwrite: bool) -> None:
    """`--report FILE.html` (find, compare): refuse a directory, create the parent folder, and claim the
    page and its PNGs (`files`) like every other output, before any work."""
    from circuits.report import check_report_path

    if path.is_dir():
        check_report_path(path)  # its one-line message for a directory
    check_writable_dir(path.parent, "--report")
    check_report_path(path)
    claim_outputs(files, overwrite, "--report")


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
    """When stderr is not a terminal (a pipe, a log file): a plain line per unfinished task every few
    seconds, so a long run shows it is alive instead of rich's silence, even while one step (an ACDC
    sweep, a patching pass) reports nothing for minutes; a run shorter than that prints nothing."""

    def __init__(self, interval_s: float = 5.0, **kwargs: Any) -> None:
        super().__init__(disable=True, **kwargs)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def start(self) -> None:
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="circuits-progress")
            self._beat.start()

    def stop(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=1.0)
            self._beat = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                tasks = [t for t in self._tasks.values() if not t.finished and t.started]
            for task in tasks:
                console.print(self.line(task), highlight=False, soft_wrap=True)

    @staticmethod
    def line(task: Task) -> str:
        """`label: done/total (12s) info` for one task."""
        total = f"/{task.total:g}" if task.total else ""
        info = task.fields.get("info", "")
        eta = f", eta {task.time_remaining:.0f}s" if task.total and task.time_remaining is not None else ""
        return f"{task.description}: {task.completed:g}{total} ({task.elapsed or 0:.0f}s{eta})" + (
            f" {info}" if info else "")


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
