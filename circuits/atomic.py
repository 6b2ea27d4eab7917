"""Atomic file writes: a temporary file in the target's folder, renamed over the target at the end.

A crash or an error mid-write leaves the user's previous file untouched. The temporary file is
given the permissions an ordinary `open(path, "w")` would (0o666 minus the umask), not mkstemp's 0o600.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode() -> int:
    return 0o666 & ~_umask()


def atomic_write(path: Path | str, writer: Callable[[str], object]) -> None:
    """Call writer(temporary path), then rename the result onto `path`; clean up on any error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        # After the writer: some writers (safetensors) replace the file and give it mode 0o600 themselves.
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; fill it, and on success it is renamed to `path`.

    Readers never see a half-written folder. When `path` appeared meanwhile (a concurrent writer of
    the same content, e.g. a cache entry), that folder is kept and ours discarded; on any error ours
    is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # what os.mkdir would give, not mkdtemp's 0o700
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
