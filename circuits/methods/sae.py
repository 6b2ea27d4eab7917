"""The discrete-SAE method (circuits.discovery) as a registered method beside the baselines."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from circuits.methods.registry import Method, MethodInput, MethodRun


def run_sae(inp: MethodInput, **overrides: Any) -> MethodRun:
    """`find_circuit` with `sae_seed` = the method seed (and FindConfig `overrides`, the variants).

    Cost, in passes over the n_score scoring prompts: one forward over train + positive + negative; with
    signal "effect" as many backward passes; with verify, its masked and reference forwards."""
    from dataclasses import replace

    from circuits.discovery.pipeline import find_circuit

    find = replace(inp.find, sae_seed=inp.seed, **overrides)
    result = find_circuit(inp.task, inp.loaded, find)
    passes = (find.n_train + 2 * find.n_score) / find.n_score
    forward, backward = passes, passes if find.signal == "effect" else 0.0
    details: dict[str, Any] = {}
    if "verify" in result.extra:
        forward += result.extra["verify"]["forward_passes"]
        details["verify"] = result.extra["verify"]
    return MethodRun(node_scores=result.node_scores, selected=result.circuit,
                     edge_scores=result.edge_scores if find.edges else None,
                     seconds=result.timings["total"] - result.timings.get("prompts", 0.0),
                     forward=forward, backward=backward, details=details)


def sae_variant(**overrides: Any) -> Callable[[MethodInput], MethodRun]:
    """run_sae with these FindConfig fields replaced (e.g. signal="effect"); a partial, so that
    `sae_overrides` can read them back."""
    return partial(run_sae, **overrides)


def sae_overrides(method: Method) -> dict[str, Any] | None:
    """The FindConfig fields a discrete-SAE method sets ({} for "sae"), None for any other method: so
    `circuits find --method sae-effect` runs the full SAE pipeline with --signal effect."""
    if method.run is run_sae:
        return {}
    if isinstance(method.run, partial) and method.run.func is run_sae:
        return dict(method.run.keywords)
    return None
