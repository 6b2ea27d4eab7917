"""Baseline circuit-discovery methods behind one interface: `run_baseline(name, ...)` -> BaselineResult.

Methods (all our own code: auto-circuit does not import with transformer-lens 3.x):
- "patching-mean", "patching-resample": activation patching per head (patching.py);
- "eap": Edge Attribution Patching, node and head->head edge scores (eap.py);
- "acdc": ACDC with a threshold sweep, node and edge scores (acdc.py).
"""

from __future__ import annotations

from typing import Any

from circuits._compat import HookedTransformer
from circuits.errors import CircuitsError
from circuits.methods.acdc import acdc
from circuits.methods.base import DEFAULT_SELECTION, SELECTION_NOTE, BaselineResult
from circuits.methods.eap import edge_attribution_patching
from circuits.methods.patching import activation_patching
from tasks.base import PromptSet, Task

BASELINES = ("patching-mean", "patching-resample", "eap", "acdc")

__all__ = ["BASELINES", "BaselineResult", "DEFAULT_SELECTION", "SELECTION_NOTE", "acdc",
           "activation_patching", "edge_attribution_patching", "run_baseline"]


def run_baseline(name: str, model: HookedTransformer, task: Task, prompts: PromptSet, seed: int = 0,
                 selection: str = DEFAULT_SELECTION, **options: Any) -> BaselineResult:
    """Run baseline `name` on `prompts` (positives vs their negatives); `options` go to the method."""
    if name == "patching-mean":
        return activation_patching(model, task, prompts, "mean", seed, selection, **options)
    if name == "patching-resample":
        return activation_patching(model, task, prompts, "resample", seed, selection, **options)
    if name == "eap":
        return edge_attribution_patching(model, task, prompts, selection=selection, **options)
    if name == "acdc":
        return acdc(model, task, prompts, selection=selection, **options)
    raise CircuitsError(f"unknown baseline '{name}' (known: {', '.join(BASELINES)})")
