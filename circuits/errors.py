"""User-facing errors: the CLI prints their message as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CircuitsError(Exception):
    """Bad input or an unavailable resource, explained in one line."""


class ModelLoadError(CircuitsError):
    """A model could not be loaded (unknown name, offline hub, corrupt checkpoint)."""


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """' (did you mean 'tiny-ioi'?)' for a near-miss name, else '': the one suggestion helper of every
    unknown-name error (models, tasks, hooks, methods, choices), so a typo names its fix."""
    matches = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=n, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(f"'{m}'" for m in matches) + "?)"
