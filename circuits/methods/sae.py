"""The discrete-SAE method (circuits.discovery) as a registered method beside the baselines."""

from __future__ import annotations

from circuits.methods.registry import MethodInput, MethodRun


def run_sae(inp: MethodInput) -> MethodRun:
    """`find_circuit` with `sae_seed` = the method seed; cost: one pass over train + positive + negative."""
    from dataclasses import replace

    from circuits.discovery.pipeline import find_circuit

    find = replace(inp.find, sae_seed=inp.seed)
    result = find_circuit(inp.task, inp.loaded, find)
    return MethodRun(node_scores=result.node_scores, selected=result.circuit,
                     edge_scores=result.edge_scores if find.edges else None,
                     seconds=result.timings["total"] - result.timings.get("prompts", 0.0),
                     forward=(find.n_train + 2 * find.n_score) / find.n_score, backward=0.0)
