"""ACDC (Conmy et al. 2023) on the residual-stream graph, with a threshold sweep for per-edge scores.

Graph and patching: `circuits.edges` (input, every head, every MLP, logits; one edge into a head feeds its
q, k and v; removing an edge s -> r gives r the input it would have with s's corrupted output: from
negative[i] ("paired") or the mean over negatives ("mean")), the same primitive edge-level CPR/CMD uses.

Pruning, as in ACDC: receivers in reverse topological order (logits, then MLPs and heads from the last
layer down); for each, its incoming edges (latest sender first); an edge is removed for good when removing
it raises the distance to the clean model by less than tau. Distance: KL(clean || patched) of the
next-token distribution at the last position ("kl", ACDC's recommended choice), or |mean clean metric -
mean patched metric| ("metric"). A receiver none of whose outgoing edges survived is dead: its incoming
edges are removed without testing.

Sweep: all thresholds tau_j = D * 2**j (D = distance with every edge removed) run side by side, one batched
forward per edge test over the distinct graphs of the sweep. An edge's score is the largest tau it survives;
a head's score the largest tau at which it keeps an outgoing edge (0 if never).

Bounded ACDC (what finishes on a real LM here): `candidates` restricts the search to the top-N edges of an
EAP pass (the others are removed from the start, as if pruned), and `time_budget` stops testing after that
many seconds (untested edges stay in the graph and keep the largest tau). The result says which it did and
how many edges it tested. Edge ranking: survivors by tau, then ties and non-survivors in EAP's order.
"""

from __future__ import annotations

import time
from typing import Literal

import torch

from circuits._compat import HookedTransformer
from circuits.edges.graph import ComputeGraph
from circuits.edges.patching import EdgePatcher
from circuits.methods.base import DEFAULT_SELECTION, BaselineResult, Timer, selected_heads
from tasks.base import PromptSet, Task

Distance = Literal["kl", "metric"]
Corruption = Literal["paired", "mean"]
DEFAULT_EXPONENTS = tuple(range(-10, 2))  # tau_j = D * 2**j, from D/1024 to 2D
BOUNDED_EXPONENTS = (-8, -6, -4, -2, 0)  # fewer thresholds when the search is bounded
# compare's and find's default: on a graph with more edges, ACDC searches only EAP's top ACDC_EDGES (full ACDC
# on SmolLM2's 44,371 edges would take days here); 0 asks for the full search
ACDC_EDGES = 300


class AcdcDistance:
    """Distance of patched graphs from the clean model, on one prompt set."""

    def __init__(self, model: HookedTransformer, task: Task, prompts: PromptSet, distance: Distance = "kl",
                 corruption: Corruption = "paired"):
        if distance not in ("kl", "metric"):
            raise ValueError(f"unknown distance '{distance}' (kl, metric)")
        if corruption not in ("paired", "mean"):
            raise ValueError(f"unknown corruption '{corruption}' (paired, mean)")
        self.task, self.prompts, self.distance = task, prompts, distance
        self.patcher = EdgePatcher(model, prompts, "counterfactual" if corruption == "paired" else "mean")
        self.graph = self.patcher.graph
        every = torch.ones(1, self.graph.n_senders, self.graph.n_receivers)
        with torch.no_grad():
            full = self.patcher.logits(every, torch.arange(len(prompts)))[0]  # [n, vocab]: the clean model
        self.clean_logprobs = torch.log_softmax(full, -1).detach()
        self.clean_metric = float(task.metric(full, prompts).mean())

    def __call__(self, removed: torch.Tensor) -> torch.Tensor:
        """removed: [G, sender, receiver] bool -> [G] distance of each patched graph from the clean model."""

        def reduce(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # logits [g, c, vocab]
            if self.distance == "kl":
                ref = self.clean_logprobs[idx][None]
                return (ref.exp() * (ref - torch.log_softmax(logits, -1))).sum(-1)
            g, c = logits.shape[:2]
            subset = self.prompts.subset(idx.tolist() * g)
            return self.task.metric(logits.reshape(g * c, -1), subset).reshape(g, c)

        per_prompt = self.patcher.run((~removed).float(), reduce).double().mean(1)  # [G]
        if self.distance == "kl":
            return per_prompt.float()
        return (self.clean_metric - per_prompt).abs().float()


def acdc_sweep(dist: AcdcDistance, taus: torch.Tensor, start_removed: torch.Tensor | None = None,
               time_budget: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ACDC at every tau of `taus` [T] side by side -> (kept edges [T, sender, receiver] bool, tested edges
    [sender, receiver] bool). `start_removed` [S, R]: edges removed before the search (bounded ACDC)."""
    graph = dist.graph
    valid = graph.valid
    T = taus.numel()
    initial = ~valid if start_removed is None else (~valid | start_removed)
    removed = initial.expand(T, -1, -1).clone()  # [T, S, R]
    tested = torch.zeros_like(valid)
    current = dist(removed[:1]).expand(T).clone()  # [T]
    started = time.perf_counter()
    for r in [graph.logits, *range(graph.logits - 1, -1, -1)]:
        if r == graph.logits:
            alive = torch.ones(T, dtype=torch.bool)
        else:
            alive = (~removed[:, r + 1, :]).any(-1)  # [T]: some outgoing edge of receiver r survives
        senders = (valid[:, r] & ~initial[:, r]).nonzero().flatten().flip(0).tolist()  # latest first
        for s in senders:
            if time_budget is not None and time.perf_counter() - started > time_budget:
                return ~removed & valid, tested
            removed[~alive, s, r] = True  # a dead receiver's inputs do not matter
            tested[s, r] = True
            live = alive.nonzero().flatten()
            if live.numel() == 0:
                continue
            trial = removed[live].clone()
            trial[:, s, r] = True
            unique, inverse = torch.unique(trial, dim=0, return_inverse=True)
            new = dist(unique)[inverse]  # [live]
            accept = (new - current[live]) < taus[live]
            removed[live[accept], s, r] = True
            current[live[accept]] = new[accept]
    return ~removed & valid, tested


def acdc(model: HookedTransformer, task: Task, prompts: PromptSet, distance: Distance = "kl",
         corruption: Corruption = "paired", exponents: tuple[int, ...] | None = None,
         selection: str = DEFAULT_SELECTION, candidates: int = 0, time_budget: float | None = None
         ) -> BaselineResult:
    """ACDC threshold sweep -> per-head scores (largest surviving tau) and edge scores. `candidates` > 0:
    search only the top-N edges of an EAP pass; `time_budget`: stop testing after that many seconds."""
    from circuits.edges.attribution import edge_attributions

    with Timer() as timer:
        dist = AcdcDistance(model, task, prompts, distance, corruption)
        graph = dist.graph
        bounded = 0 < candidates < graph.n_edges or time_budget is not None
        exponents = exponents or (BOUNDED_EXPONENTS if bounded else DEFAULT_EXPONENTS)
        eap_order = torch.zeros(graph.n_senders, graph.n_receivers)
        start_removed = None
        forward_eap = backward_eap = 0.0
        if bounded:  # EAP orders the candidates and breaks ties
            from circuits.methods.base import Cost

            cost = Cost(len(prompts))
            attr = edge_attributions(model, task, prompts, graph, ig_steps=1, alphas="right", cost=cost)
            forward_eap, backward_eap = cost.forward, cost.backward
            eap_order = _rank01(graph, attr.edge.abs())
            if 0 < candidates < graph.n_edges:
                threshold = torch.sort(graph.to_vector(eap_order), descending=True).values[candidates - 1]
                start_removed = graph.valid & (eap_order < threshold)
        every = torch.ones(1, graph.n_senders, graph.n_receivers, dtype=torch.bool)
        d_all = float(dist(every)[0])
        scale = abs(d_all) if abs(d_all) > 1e-9 else 1.0
        taus = scale * 2.0 ** torch.tensor(sorted(exponents), dtype=torch.float64)  # [T] ascending
        kept, tested = acdc_sweep(dist, taus.float(), start_removed, time_budget)
        level = (kept.float() * torch.arange(1, taus.numel() + 1).float()[:, None, None]).amax(0)  # [S, R]
        edge = torch.where(graph.valid, level + eap_order, torch.zeros(()))  # levels first, then EAP's order
        edge_tau = (kept.float() * taus.float()[:, None, None]).amax(0)  # [S, R]
        # [tau, heads]
        alive = kept[:, graph.head_senders.reshape(-1), :].any(-1).float() * taus.float()[:, None]
        node = alive.amax(0).reshape(graph.n_layers, graph.n_heads)
    n_candidates = graph.n_edges if start_removed is None else int((graph.valid & ~start_removed).sum())
    n_tested = int(tested.sum())
    return BaselineResult(
        method="acdc", node_scores=node, edge_scores=graph.head_pairs(edge_tau),
        selected=selected_heads(node, selection),
        n_forward=dist.patcher.forward_rows / len(prompts) + 2 + forward_eap, n_backward=backward_eap,
        seconds=timer.seconds, stochastic=False, graph_edge_scores=edge,
        details={"distance": distance, "corruption": corruption, "distance_all_removed": d_all,
                 "taus": taus.tolist(), "edges_per_tau": [int(k.sum()) for k in kept],
                 "heads_per_tau": [int(k[graph.head_senders.reshape(-1)].any(-1).sum()) for k in kept],
                 "graph": graph.describe(), "bounded": bounded, "candidate_edges": n_candidates,
                 "tested_edges": n_tested, "time_budget_s": time_budget,
                 "label": acdc_label(bounded, n_candidates, graph.n_edges, n_tested),
                 "score": "edge: largest tau of the sweep it survives (then EAP's order when bounded); "
                          "head: largest tau at which it keeps an outgoing edge (0: never)"})


def acdc_label(bounded: bool, candidates: int, n_edges: int, tested: int) -> str:
    """What an ACDC row is, for tables: full, or bounded (and how far a time budget let it get)."""
    if not bounded:
        return "ACDC"
    scope = f"top {candidates} of {n_edges} edges by EAP" if candidates < n_edges else f"all {n_edges} edges"
    stopped = f", time budget: tested {tested}" if tested < candidates else ""
    return f"ACDC (bounded: {scope}{stopped})"


def _rank01(graph: ComputeGraph, scores: torch.Tensor) -> torch.Tensor:
    """[S, R] scores -> their rank among the edges scaled into [0, 1) (higher score, higher value)."""
    vector = graph.to_vector(scores.float())
    order = torch.sort(vector, stable=True).indices
    rank = torch.empty_like(vector)
    rank[order] = torch.arange(vector.numel(), dtype=vector.dtype) / max(vector.numel(), 1)
    return graph.to_dense(rank)
