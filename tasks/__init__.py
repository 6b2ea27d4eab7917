"""Built-in tasks (IOI, greater-than, docstring) and the lookup by name."""

from __future__ import annotations

from circuits.errors import CircuitsError, did_you_mean
from tasks.base import GroundTruth, PromptSet, Task
from tasks.docstring import DocstringTask
from tasks.greaterthan import GreaterThanTask
from tasks.ioi import IOITask

_BUILTIN: dict[str, type] = {"ioi": IOITask, "greaterthan": GreaterThanTask, "docstring": DocstringTask}
TASK_NAMES: tuple[str, ...] = tuple(_BUILTIN)


def get_task(name: str) -> Task:
    """The task called `name`: a built-in name, or a task file path ending in .jsonl / .json
    (tasks/custom.py documents the format)."""
    if name in _BUILTIN:
        return _BUILTIN[name]()
    if name.endswith((".jsonl", ".json")):
        from tasks.custom import load_task_file

        return load_task_file(name)
    raise CircuitsError(f"unknown task '{name}'{did_you_mean(name, TASK_NAMES)} "
                        f"(known: {', '.join(TASK_NAMES)}, or a .jsonl task file)")


__all__ = ["TASK_NAMES", "get_task", "Task", "PromptSet", "GroundTruth", "IOITask", "GreaterThanTask",
           "DocstringTask"]
