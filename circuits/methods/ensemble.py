"""Rank ensembles of edge rankings: the mean of each edge's normalised rank over several methods.

Why: attribution (EAP, EAP-IG) and learned masks (edge-prune) err differently (first-order estimates with
every other edge present vs an optimisation at one circuit size); averaging ranks, not raw scores, puts
methods with incomparable score scales on one footing (published follow-up work on MIB's circuit track
reached its best CPR with such an ensemble). A normalised rank is 1 - rank / n_edges (best edge 1, ties
broken by edge order as the evaluation breaks them), so the ensemble of one ranking, or of copies of it,
orders the edges exactly as that ranking does.

The registered `ensemble` runs its components itself (EAP-IG, edge-prune warm-started from that EAP-IG run,
EAP), all on edge-prune's training split (`circuits.methods.edge_prune.training_prompts`), so its CPR/CMD
are on held-out prompts too; its cost is the sum of theirs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuits.edges.attribution import edge_attributions
from circuits.edges.graph import ComputeGraph
from circuits.errors import CircuitsError
from circuits.methods.base import Cost, Timer, selected_heads
from circuits.methods.edge_prune import (
    edge_prune,
    evaluation_prompts,
    node_scores_from_edges,
    prune_options,
    split_note,
    training_prompts,
)
from circuits.methods.registry import MethodInput, MethodRun

COMPONENTS: tuple[str, ...] = ("eap-ig", "edge-prune", "eap")


def normalised_ranks(scores: torch.Tensor, graph: ComputeGraph | None = None) -> torch.Tensor:
    """scores [S, R] (higher = more important) -> 1 - rank / n [S, R] (best 1), over `graph`'s edges (0
    elsewhere) or, without a graph, over every entry. Ties break by position (row-major), the evaluation's
    rule, so each edge's normalised rank is distinct."""
    if scores.ndim != 2:
        raise CircuitsError(f"an edge ranking is [sender, receiver], not {tuple(scores.shape)}")
    valid = graph.valid if graph is not None else torch.ones(scores.shape, dtype=torch.bool)
    if tuple(valid.shape) != tuple(scores.shape):
        raise CircuitsError(f"edge ranking of shape {tuple(scores.shape)}; the graph is {tuple(valid.shape)}")
    vector = scores.double()[valid]  # [n_edges]
    if torch.isnan(vector).any():
        raise CircuitsError("edge scores contain NaN")
    n = vector.numel()
    order = torch.sort(-vector, stable=True).indices  # best first
    rank = torch.empty(n, dtype=torch.float64)
    rank[order] = torch.arange(n, dtype=torch.float64)
    out = torch.zeros(scores.shape, dtype=torch.float64)
    out[valid] = 1.0 - rank / n
    return out


def ensemble_scores(rankings: Sequence[torch.Tensor], graph: ComputeGraph | None = None,
                    weights: Sequence[float] | None = None) -> torch.Tensor:
    """The (weighted) mean normalised rank of every edge over `rankings` (each [S, R], higher = more
    important): [S, R] float64, higher = more important."""
    if not rankings:
        raise CircuitsError("an ensemble needs at least one ranking")
    w = [1.0] * len(rankings) if weights is None else [float(x) for x in weights]
    if len(w) != len(rankings) or sum(w) <= 0:
        raise CircuitsError("one positive weight per ranking")
    shape = tuple(rankings[0].shape)
    if any(tuple(r.shape) != shape for r in rankings):
        raise CircuitsError(f"rankings differ in shape: {[tuple(r.shape) for r in rankings]}")
    total = sum(wi * normalised_ranks(r, graph) for wi, r in zip(w, rankings, strict=True))
    assert isinstance(total, torch.Tensor)
    return total / sum(w)


def run_ensemble(inp: MethodInput) -> MethodRun:
    """`ensemble` for the registry: EAP-IG, edge-prune (warm-started from that EAP-IG) and EAP on edge-prune's
    training split, combined by `ensemble_scores`; cost: all three (option `ensemble_methods`: a subset)."""
    find, model = inp.find, inp.loaded.model
    names = [m.strip() for m in str(inp.options.get("ensemble_methods", ",".join(COMPONENTS))).split(",")
             if m.strip()]
    unknown = [m for m in names if m not in COMPONENTS]
    if unknown or not names:
        raise CircuitsError(f"ensemble components must be among {', '.join(COMPONENTS)}; got {names}")
    opts = prune_options(inp.options)
    n_prompts, init_name = opts.pop("n_prompts"), opts.pop("init")
    held_out = evaluation_prompts(inp.task, inp.loaded.tokenizer, find)
    train = training_prompts(inp.task, inp.loaded.tokenizer, n_prompts, find.seed, held_out)
    graph = ComputeGraph.of(model)
    cost = Cost(find.n_score)
    parts: dict[str, torch.Tensor] = {}
    with Timer() as timer:
        ig = None
        if "eap-ig" in names or ("edge-prune" in names and init_name == "eap-ig"):
            ig = edge_attributions(model, inp.task, train, graph, ig_steps=5, alphas="left", cost=cost).edge
            if "eap-ig" in names:
                parts["eap-ig"] = ig.abs()
        if "edge-prune" in names:
            signed = None if ig is None else -ig  # higher = holds the metric up (the "raise" warm start)
            parts["edge-prune"] = edge_prune(model, inp.task, train, signed, seed=inp.seed, cost=cost,
                                             **opts).log_alpha
        if "eap" in names:
            parts["eap"] = edge_attributions(model, inp.task, train, graph, ig_steps=1, alphas="right",
                                             cost=cost).edge.abs()
        combined = ensemble_scores([parts[m] for m in names], graph).float()
    nodes = node_scores_from_edges(graph, combined)
    return MethodRun(
        node_scores=nodes, selected=selected_heads(nodes, find.selection),
        edge_scores=graph.head_pairs(combined), seconds=timer.seconds, forward=cost.forward,
        backward=cost.backward, graph_edge_scores=combined,
        details={**split_note(find, train, n_prompts), "components": names, "prune_init": init_name,
                 "graph": graph.describe(),
                 "score": "mean over components of 1 - rank / n_edges (EAP, EAP-IG: |attribution|; "
                          "edge-prune: gate logits); heads: max over their edges"})
