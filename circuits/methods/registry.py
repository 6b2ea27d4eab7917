"""One registry of circuit-discovery methods, so `compare` dispatches by key instead of an `if` chain.

A method is a key, a label for tables, a run function and whether its seed matters. Every run function
takes the same `MethodInput` and returns the same `MethodRun`; a new method is one `register` call (in
the spirit of auto-circuit's PruneAlgo and SAELens's register_sae_class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from circuits.discovery.config import FindConfig
from circuits.errors import CircuitsError, did_you_mean
from circuits.models.loaded import LoadedModel
from circuits.progress import Progress
from tasks.base import Head, Task


@dataclass(frozen=True)
class MethodInput:
    """What one run of a method sees: the model, the task, the prompt recipe and the method seed."""

    task: Task
    loaded: LoadedModel
    find: FindConfig  # prompts: find.seed, n_train, n_score; selection: find.selection
    seed: int  # the method's own seed (SAE initialisation, resample draws)
    options: dict[str, Any] = field(default_factory=dict)  # method-specific (e.g. ACDC's distance)
    progress: Progress | None = None  # long methods report their steps (e.g. edge-prune's mask steps)


@dataclass(frozen=True)
class MethodRun:
    """Scores, the selected circuit and the cost of one run, in passes over the n_score scoring prompts."""

    node_scores: torch.Tensor  # [layer, head]
    selected: frozenset[Head]
    edge_scores: dict[tuple[Head, Head], float] | None
    seconds: float
    forward: float
    backward: float
    details: dict[str, Any] = field(default_factory=dict)
    # [sender, receiver] on `circuits.edges.graph.ComputeGraph.of(model)`, higher = more important (kept in
    # compare's rankings.npz for edge-level evaluation); signed: the same before any absolute value, for
    # MIB's CPR, which keeps the edges that push the metric up first.
    graph_edge_scores: torch.Tensor | None = None
    signed_graph_edge_scores: torch.Tensor | None = None


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    run: Callable[[MethodInput], MethodRun]
    stochastic: bool  # whether the seed changes the result (then compare runs every seed)
    baseline: bool = True  # False for the discrete-SAE method and its variants (--baseline-seeds skips them)


REGISTRY: dict[str, Method] = {}
GROUPS: dict[str, tuple[str, ...]] = {}  # a short name for several methods, e.g. patching -> mean, resample


def register(method: Method) -> Method:
    if method.key in REGISTRY or method.key in GROUPS:
        raise ValueError(f"method '{method.key}' is registered twice")
    REGISTRY[method.key] = method
    return method


def register_group(name: str, keys: tuple[str, ...]) -> None:
    GROUPS[name] = keys


def get_method(key: str) -> Method:
    """The registered method `key`; one line naming the known ones otherwise."""
    if key not in REGISTRY:
        known = [*REGISTRY, *GROUPS]
        raise CircuitsError(f"unknown method '{key}'{did_you_mean(key, known)} (known: {', '.join(known)})")
    return REGISTRY[key]


def expand(spec: str) -> list[str]:
    """'sae,patching,eap' -> ['sae', 'patching-mean', 'patching-resample', 'eap'] (order kept, no repeats)."""
    out: list[str] = []
    for raw in spec.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        for key in GROUPS.get(name, (name,)):
            get_method(key)
            if key not in out:
                out.append(key)
    if not out:
        raise CircuitsError("no methods given (e.g. --methods sae,patching,eap,acdc)")
    return out
