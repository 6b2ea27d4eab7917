"""MIB's edge-level CPR and CMD: how good is a ranking of edges, with no ground truth.

For each fraction p of MIB's grid, keep the k(p) = round(p * |E|) top-ranked edges of the residual-stream
graph (`circuits.edges.graph`), prune what cannot matter (an edge stays only if its sender is reachable
from the input and its receiver reaches the logits through kept edges: MIB's removal of nodes left
without incoming or outgoing edges), and patch every other edge (`circuits.edges.patching`: the
receiver's input gets the sender's corrupted minus current output; counterfactual by default, the
counterfactuals' mean as the second intervention). faithfulness(p) = (m(C) - m(none)) / (m(full) -
m(none)), m the task metric averaged over the prompts; CPR and CMD are the trapezoid areas over linear p
of faithfulness and of |1 - faithfulness| (`circuits.evaluation.mib.areas`). As in MIB, CPR ranks by the
signed score where a method has one (edges that raise the metric first) and CMD by the absolute score.
Ties break by edge order (sender, then receiver). The floor is a random ranking: the mean over uniform
random orders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from circuits.edges.graph import ComputeGraph
from circuits.edges.patching import INTERVENTIONS, EdgePatcher, task_metric
from circuits.errors import CircuitsError
from circuits.evaluation.bootstrap import CI_NOTE, LEVEL, N_RESAMPLES, area_intervals, resampled_faithfulness
from circuits.evaluation.mib import RANDOM, SIZE_GRID, AreaScores, areas, grid_sizes
from tasks.base import PromptSet, Task

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer

DEFINITION = ("keep the round(p * edges) top-ranked edges of the residual-stream graph (input, heads, "
              "MLPs, logits; q/k/v unsplit) for p in the MIB size grid, drop edges whose sender is "
              "unreachable from the input or whose receiver cannot reach the logits, patch every other "
              "edge (receiver input += corrupted - current sender output); faithfulness(p) = (m(kept) - "
              "m(none kept)) / (m(full) - m(none kept)); CPR (ranked by signed score where the method has "
              "one) = trapezoid area under faithfulness over linear p, CMD (ranked by absolute score) = "
              "trapezoid area of |1 - faithfulness|; random = mean over uniform random rankings")


def ranked_edges(graph: ComputeGraph, scores: torch.Tensor) -> torch.Tensor:
    """scores [sender, receiver] -> edge numbers (in `graph.edge_index` order), best first, ties first."""
    vector = graph.to_vector(scores.float())
    if torch.isnan(vector).any():
        raise CircuitsError("edge scores contain NaN")
    return torch.sort(-vector, stable=True).indices


def top_edge_masks(graph: ComputeGraph, scores: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """The top-k edges for every k of `sizes`: keep [len(sizes), sender, receiver] bool."""
    order = ranked_edges(graph, scores)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    vectors = rank[None, :] < torch.tensor(sizes)[:, None]  # [k, edges]
    out = torch.zeros(len(sizes), graph.n_senders, graph.n_receivers, dtype=torch.bool)
    out[:, graph.valid] = vectors
    return out


def prune_to_paths(graph: ComputeGraph, keep: torch.Tensor) -> torch.Tensor:
    """keep [G, sender, receiver] bool -> the kept edges that lie on a path from the input to the logits."""
    keep = keep & graph.valid
    G = keep.shape[0]
    reached = torch.zeros(G, graph.n_senders, dtype=torch.bool)  # sender reachable from the input
    reached[:, 0] = True
    for r in range(graph.logits):  # receiver r is sender r + 1; receivers are in topological order
        reached[:, r + 1] = (keep[:, :, r] & reached).any(1)
    reaches = torch.zeros(G, graph.n_receivers, dtype=torch.bool)  # receiver reaches the logits
    reaches[:, graph.logits] = True
    for r in range(graph.logits - 1, -1, -1):
        reaches[:, r] = (keep[:, r + 1, :] & reaches).any(1)
    return keep & reached[:, :, None] & reaches[:, None, :]


def edge_mib_scores(model: HookedTransformer, task: Task, prompts: PromptSet,
                    rankings: dict[str, torch.Tensor],
                    signed: dict[str, torch.Tensor] | None = None,
                    interventions: tuple[str, ...] = INTERVENTIONS, grid: tuple[float, ...] = SIZE_GRID,
                    n_random: int = 3, seed: int = 0, n_resamples: int = N_RESAMPLES,
                    groups: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Edge CPR / CMD of every ranking (name -> scores [sender, receiver], higher = more important) and of the
    random floor, per intervention. `signed` (name -> signed scores) ranks that method's CPR curve. Each
    ranking's "cpr_ci" / "cmd_ci": `n_resamples` bootstrap resamples of the prompts (0: none); under
    "groups" those of each group's mean (group -> ranking names, e.g. a method's seeds).

    Returns {"grid", "sizes", "n_edges", "graph", "interventions": {intervention: {"full", "empty",
    "rankings": {name: AreaScores dict (cpr from the signed curve where given; "faithfulness" is the
    absolute ranking's curve, "faithfulness_signed" the signed one)}}}}.
    """
    if RANDOM in rankings:
        raise CircuitsError(f"'{RANDOM}' is the name of the random floor; rename that ranking")
    graph = ComputeGraph.of(model)
    signed = signed or {}
    for name, scores in [*rankings.items(), *signed.items()]:
        if tuple(scores.shape) != (graph.n_senders, graph.n_receivers):
            raise CircuitsError(f"edge ranking '{name}' has shape {tuple(scores.shape)}, the model's graph "
                                f"is {graph.n_senders}x{graph.n_receivers}")
    unknown = set(signed) - set(rankings)
    if unknown:
        raise CircuitsError(f"signed scores without a ranking: {', '.join(sorted(unknown))}")
    sizes = grid_sizes(graph.n_edges, grid)
    gen = torch.Generator().manual_seed(seed)
    draws = [torch.rand(graph.n_senders, graph.n_receivers, generator=gen) for _ in range(n_random)]
    curves = {name: top_edge_masks(graph, s, sizes) for name, s in rankings.items()}
    curves.update({f"{name}\0signed": top_edge_masks(graph, s, sizes) for name, s in signed.items()})
    curves.update({f"{RANDOM}\0{i}": top_edge_masks(graph, d, sizes) for i, d in enumerate(draws)})
    every = torch.ones(1, graph.n_senders, graph.n_receivers, dtype=torch.bool)
    masks = prune_to_paths(graph, torch.cat([every, ~every, *curves.values()]))
    unique, inverse = torch.unique(masks.reshape(masks.shape[0], -1), dim=0, return_inverse=True)
    out: dict[str, Any] = {"grid": list(grid), "sizes": sizes, "n_edges": graph.n_edges,
                           "graph": graph.describe(), "n_prompts": len(prompts), "n_random": n_random,
                           "n_graphs_run": int(unique.shape[0]), "definition": DEFINITION,
                           "interventions": {},
                           "bootstrap": {"n_resamples": n_resamples, "level": LEVEL, "note": CI_NOTE}}
    g = len(grid)
    row = {key: 2 + j * g for j, key in enumerate(curves)}  # each curve's first row among the masks

    def rows(name: str) -> tuple[list[int], list[int]]:  # (CPR rows: the signed curve where given, CMD rows)
        cpr_at = row.get(f"{name}\0signed", row[name])
        return list(range(cpr_at, cpr_at + g)), list(range(row[name], row[name] + g))
    for intervention in interventions:
        patcher = EdgePatcher(model, prompts, intervention, graph)
        keep = unique.reshape(-1, graph.n_senders, graph.n_receivers)
        per_prompt = patcher.run(keep, task_metric(task, prompts)).double()[inverse]  # [masks, n]
        metric = per_prompt.mean(1)  # [masks]
        boot = resampled_faithfulness(per_prompt, 0, 1, n_resamples) if n_resamples else None
        full, empty = float(metric[0]), float(metric[1])
        denom = full - empty
        faith = ((metric[2:] - empty) / denom if abs(denom) > 1e-12
                 else torch.full_like(metric[2:], float("nan"))).reshape(-1, g)
        by_name = dict(zip(curves, faith.tolist(), strict=True))
        scored: dict[str, Any] = {}
        for name in rankings:
            curve = by_name[name]
            cpr_curve = by_name.get(f"{name}\0signed", curve)
            entry = AreaScores(intervention, curve, areas(cpr_curve, grid)[0], areas(curve, grid)[1],
                               float(np.mean(curve))).to_dict()
            if name in signed:
                entry["faithfulness_signed"] = cpr_curve
            if boot is not None:
                entry.update(area_intervals(boot, grid, [rows(name)]))
            scored[name] = entry
        if n_random:
            rand = [by_name[f"{RANDOM}\0{i}"] for i in range(n_random)]
            per_draw = [dict(zip(("cpr", "cmd", "mean_faithfulness"), areas(row, grid), strict=True))
                        for row in rand]
            scored[RANDOM] = AreaScores(intervention, np.mean(rand, 0).tolist(),
                                        float(np.mean([d["cpr"] for d in per_draw])),
                                        float(np.mean([d["cmd"] for d in per_draw])),
                                        float(np.mean([d["mean_faithfulness"] for d in per_draw])),
                                        draws=per_draw).to_dict()
        out["interventions"][intervention] = {"full": full, "empty": empty, "rankings": scored,
                                              "forward_passes": patcher.forward_rows / len(prompts)}
        if boot is not None and groups:
            out["interventions"][intervention]["groups"] = {
                group: area_intervals(boot, grid, [rows(n) for n in members])
                for group, members in groups.items()}
    return out


EDGE_SOURCES = {"edges": "the method's own edge scores",
                "node-derived": "derived from its head scores (an edge scores the smaller of its two ends; "
                                "input, MLPs and logits count as the top head), the method scores no edges"}


def run_edge_ranking(graph: ComputeGraph, node_scores: torch.Tensor, edge_scores: torch.Tensor | None = None,
                     signed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The edge ranking a method's run is scored by -> (scores [sender, receiver], signed or None, source):
    its own edge scores where it has them, else scores derived from its node scores [layer, head], so a
    head-level method gets an edge CPR / CMD too, marked as derived (a key of EDGE_SOURCES)."""
    from circuits.edges.graph import node_derived_edge_scores

    if edge_scores is not None:
        return edge_scores.float(), None if signed is None else signed.float(), "edges"
    return node_derived_edge_scores(graph, node_scores), None, "node-derived"
