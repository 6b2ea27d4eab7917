"""The one home of shipped ablation ground truths, read by every evaluation (find, compare, evaluate).

One JSON file per model x task x ablation: `circuits/truths/<model>/<task>.<ablation>.json`, so adding a
model's truths is adding files, no code. A file holds the circuit (`tasks.base.GroundTruth.to_dict()`:
heads, edges, classes, source, method) and how it was computed: `method` names at least the ablation,
the number of prompts and their seed, the search algorithm, the threshold and the circuit's normalised
faithfulness (`REQUIRED_METHOD`); the search's own record (single-head table, timings) sits beside it.

The "mean"-ablation circuit is a model's main ground truth (AUC, precision, recall); the others (e.g.
"resample") are reported beside it. Loaders attach a model's files (`attach_shipped`); evaluation asks
`ground_truth_for` / `alternative_truths`, which fall back to a task's published circuit for a model name
(e.g. gpt2-small's IOI heads from the paper) when nothing ships.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.atomic import atomic_write_text
from circuits.errors import CircuitsError, ModelLoadError
from circuits.jsonio import read_json
from tasks.base import GroundTruth, Task

if TYPE_CHECKING:
    from circuits.models.loaded import LoadedModel

TRUTHS_DIR = Path(__file__).resolve().parent
MAIN_ABLATION = "mean"  # the circuit AUC / precision / recall are scored against
# what every shipped file's `method` must say about how it was computed
REQUIRED_METHOD = ("ablation_method", "n_prompts", "prompt_seed", "search", "threshold",
                   "normalized_faithfulness")
_RECORD_KEYS = ("model", "task", "ablation")


@dataclass(frozen=True)
class TruthFile:
    """One shipped file: the circuit and everything recorded about its search."""

    model: str
    task: str
    ablation: str
    truth: GroundTruth
    details: dict[str, Any] = field(default_factory=dict)  # faithfulness, single-head table, search record
    path: Path | None = None


def truth_path(model: str, task: str, ablation: str, directory: Path | None = None) -> Path:
    return (directory or TRUTHS_DIR) / model / f"{task}.{ablation}.json"


def read_truth_file(path: Path) -> TruthFile:
    """Parse and check one file; any problem is one ModelLoadError line naming the file and the field."""
    data = read_json(path, ModelLoadError, expect_object=True)
    for key in _RECORD_KEYS:
        if not isinstance(data.get(key), str):
            raise ModelLoadError(f"{path}: '{key}' must be a string")
    expected = f"{data['task']}.{data['ablation']}.json"
    if path.name != expected or path.parent.name != data["model"]:
        raise ModelLoadError(f"{path}: says model '{data['model']}', task '{data['task']}', ablation "
                             f"'{data['ablation']}', so it belongs at {data['model']}/{expected}")
    try:
        truth = GroundTruth.from_dict({k: data[k] for k in ("heads", "edges", "classes", "source", "method")
                                       if k in data}, str(path))
    except CircuitsError as err:
        raise ModelLoadError(str(err)) from None
    missing = [k for k in REQUIRED_METHOD if k not in truth.method]
    if missing:
        raise ModelLoadError(f"{path}: method does not say how it was computed "
                             f"(missing {', '.join(missing)})")
    details = {k: v for k, v in data.items()
               if k not in (*_RECORD_KEYS, "heads", "edges", "classes", "source", "method")}
    return TruthFile(model=data["model"], task=data["task"], ablation=data["ablation"], truth=truth,
                     details=details, path=path)


def shipped_files(model: str, directory: Path | None = None) -> list[TruthFile]:
    """Every file shipped for `model` (none: an empty list), sorted by task, then ablation."""
    folder = (directory or TRUTHS_DIR) / model
    if not folder.is_dir():
        return []
    return [read_truth_file(p) for p in sorted(folder.glob("*.*.json"))]


def shipped_models(directory: Path | None = None) -> list[str]:
    """Models with at least one shipped file."""
    root = directory or TRUTHS_DIR
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.*.json")))


def shipped_truths(model: str, directory: Path | None = None) -> dict[str, dict[str, GroundTruth]]:
    """Task -> ablation -> GroundTruth for `model`."""
    out: dict[str, dict[str, GroundTruth]] = {}
    for f in shipped_files(model, directory):
        out.setdefault(f.task, {})[f.ablation] = f.truth
    return out


def attach_shipped(loaded: LoadedModel, directory: Path | None = None) -> LoadedModel:
    """Give a loaded model its shipped truths (the main one per task in `ground_truth`, the rest in
    `other_truths`); heads the model lacks are one ModelLoadError line naming the file."""
    for f in shipped_files(loaded.name, directory):
        try:
            f.truth.validate(loaded.n_layers, loaded.n_heads, str(f.path))
        except CircuitsError as err:
            raise ModelLoadError(str(err)) from None
        if f.ablation == MAIN_ABLATION:
            loaded.ground_truth[f.task] = f.truth
        else:
            loaded.other_truths.setdefault(f.task, {})[f.ablation] = f.truth
    return loaded


def write_truth(model: str, task: str, ablation: str, truth: GroundTruth, details: dict[str, Any],
                directory: Path | None = None) -> Path:
    """Write one file atomically (read back through `read_truth_file`, so a bad record fails here)."""
    path = truth_path(model, task, ablation, directory)
    record = {"model": model, "task": task, "ablation": ablation, **truth.to_dict(), **details}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    read_truth_file(path)
    return path


def ground_truth_for(task: Task, loaded: LoadedModel) -> tuple[GroundTruth | None, str | None]:
    """The model's own main ground truth (shipped, or carried by its checkpoint), else the task's published
    one for this model name; with a note saying why there is none."""
    if task.name in loaded.ground_truth:
        return loaded.ground_truth[task.name], None
    if loaded.name.startswith("random:"):
        return None, f"no ground truth: {loaded.name} has random weights"
    truth = task.ground_truth(loaded.name)
    if truth is None:
        return None, f"no ground truth for task '{task.name}' on model '{loaded.name}'"
    return truth, None


def alternative_truths(task: Task, loaded: LoadedModel) -> dict[str, GroundTruth]:
    """The circuits shipped beside the main one, by ablation (e.g. "resample")."""
    return dict(loaded.other_truths.get(task.name, {}))
