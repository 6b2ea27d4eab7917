"""Edge Attribution Patching (Syed et al. 2023): a first-order estimate of patching effects.

Each positive prompt is paired with its corruption (negative[i]). With g = d(metric)/d(activation)
on the clean run, the estimated change of the metric when an activation takes its corrupted value is
(a_corrupt - a_clean) . g:
- node (head u): (z_corrupt(u) - z_clean(u)) . d metric / d z(u), summed over positions and d_head;
- edge (u -> v, layer u < layer v): (result_corrupt(u) - result_clean(u)) . d metric / d input(v),
  where input(v) is v's own copy of the residual stream feeding its q, k and v (TransformerLens's
  split q/k/v inputs; the three gradients are summed: the edge covers all three), and
  result(u) = z(u) @ W_O(u) (no bias, which does not change under corruption).
  With grouped-query attention the key/value heads are ungrouped for the run (`ungrouped_kv`): input(v) is
  the copy feeding query head v's own q, k and v, not the shared key/value head's (same function, one
  node per query head).
Scores are |mean over prompts| of these estimates. Cost: 2 forwards + 1 backward per prompt.
Computed by `circuits.edges.attribution.edge_attributions` with one point at the clean input (EAP-IG with
m = 1, alpha = 1), which also scores the edges from the embeddings and MLPs and into MLPs and the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuits._compat import HookedTransformer
from circuits.edges.attribution import BATCH_BUDGET, MAX_BATCH, edge_attributions
from circuits.edges.graph import ComputeGraph
from circuits.methods.base import DEFAULT_SELECTION, BaselineResult, Cost, Timer, selected_heads
from tasks.base import PromptSet, Task

__all__ = ["BATCH_BUDGET", "MAX_BATCH", "Attributions", "auto_batch_size", "eap_attributions",
           "edge_attribution_patching"]


@dataclass
class Attributions:
    """Signed mean attributions (estimated metric change when corrupting), heads only."""

    node: torch.Tensor  # [layer, head]
    edge: torch.Tensor  # [sender head, receiver head], flat indices; zero unless sender layer < receiver
    metric_clean: float  # mean metric on the positives
    metric_corrupt: float  # mean metric (same answers) on the negatives


def auto_batch_size(model: HookedTransformer, seq_len: int) -> int:
    """Prompts per batch by the head-level size, [batch, pos, layer*head, d_model], under BATCH_BUDGET (the
    edge-level `edge_attributions` sizes its batches by its sender count, `edge_batch_size`)."""
    per_prompt = seq_len * model.cfg.n_layers * model.cfg.n_heads * model.cfg.d_model
    return max(1, min(MAX_BATCH, BATCH_BUDGET // max(per_prompt, 1)))


def eap_attributions(model: HookedTransformer, task: Task, prompts: PromptSet, edges: bool = True,
                     batch_size: int | None = None, cost: Cost | None = None) -> Attributions:
    """Head node and head -> head edge attributions: the head sub-block of `edge_attributions` at the clean
    input (ig_steps=1, alphas="right"). Batches of `batch_size` (None: sized by memory) change nothing but
    float rounding."""
    graph = ComputeGraph.of(model)
    attr = edge_attributions(model, task, prompts, graph, ig_steps=1, alphas="right", batch_size=batch_size,
                             cost=cost, edges=edges)
    heads_out, heads_in = graph.head_senders.reshape(-1), graph.head_receivers.reshape(-1)
    return Attributions(node=attr.node, edge=attr.edge[heads_out][:, heads_in],
                        metric_clean=attr.metric_clean, metric_corrupt=attr.metric_corrupt)


def edge_attribution_patching(model: HookedTransformer, task: Task, prompts: PromptSet, edges: bool = True,
                              batch_size: int | None = None, selection: str = DEFAULT_SELECTION
                              ) -> BaselineResult:
    """EAP node and edge scores: |mean (corrupt - clean) . gradient|; head -> head edges in `edge_scores`,
    every edge of the residual-stream graph in `graph_edge_scores` (signed: `signed_graph_edge_scores`)."""
    graph = ComputeGraph.of(model)
    cost = Cost(len(prompts))
    with Timer() as timer:
        attr = edge_attributions(model, task, prompts, graph, ig_steps=1, alphas="right",
                                 batch_size=batch_size, cost=cost, edges=edges)
        node = attr.node
        scores = node.abs()
        magnitude = attr.edge.abs()
        edge_scores = graph.head_pairs(magnitude) if edges else None
    return BaselineResult(
        method="eap", node_scores=scores, edge_scores=edge_scores, selected=selected_heads(scores, selection),
        n_forward=cost.forward, n_backward=cost.backward, seconds=timer.seconds, stochastic=False,
        graph_edge_scores=magnitude if edges else None,
        signed_graph_edge_scores=-attr.edge if edges else None,  # higher = holds the metric up
        details={"corruption": "paired (negative[i] for positive[i])",
                 "metric_clean": attr.metric_clean, "metric_corrupt": attr.metric_corrupt,
                 "sum_of_node_attributions": float(node.sum()),
                 "signed_node_attribution": node.tolist(),
                 "graph": graph.describe() if edges else None,
                 "score": "|mean over prompts of (z_corrupt - z_clean) . d metric / d z|, summed over "
                          "positions and d_head; edges: |mean (out_corrupt(u) - out_clean(u)) . d metric "
                          "/ d input(v)| through the receiver's q/k/v inputs (summed), hook_mlp_in or the "
                          "final residual stream"})
