"""Activation patching per head: ablate one head at a time and measure the change in the task metric.

Score of a head = |mean over prompts of (metric with that head ablated - metric of the intact model)|.
"mean" replaces the head's z by its position-wise mean over the negative prompts; "resample" by its
z on a randomly drawn negative prompt (stochastic in `seed`). Every single-head mask, plus the
intact and the fully ablated model, go through `metric_under_masks`, which batches many masks per
forward. Cost: one pass over the negatives plus (2 + layers x heads) passes over the positives.
"""

from __future__ import annotations

import torch

from circuits._compat import HookedTransformer
from circuits.ablation import AblationMethod, metric_under_masks, reference_z
from circuits.methods.base import DEFAULT_SELECTION, BaselineResult, Cost, Timer, selected_heads
from tasks.base import PromptSet, Task


def single_head_masks(n_layers: int, n_heads: int) -> torch.Tensor:
    """[2 + layer*head, layer, head] keep masks: intact, all ablated, then each head ablated alone."""
    eye = ~torch.eye(n_layers * n_heads, dtype=torch.bool).reshape(-1, n_layers, n_heads)
    return torch.cat([torch.ones(1, n_layers, n_heads, dtype=torch.bool),
                      torch.zeros(1, n_layers, n_heads, dtype=torch.bool), eye])


def activation_patching(model: HookedTransformer, task: Task, prompts: PromptSet,
                        ablation: AblationMethod = "mean", seed: int = 0,
                        selection: str = DEFAULT_SELECTION) -> BaselineResult:
    """Per-head ablation effects on the positive prompts."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    cost = Cost(len(prompts))
    with Timer() as timer:
        reference = reference_z(model, prompts, ablation, seed)
        if ablation != "zero":
            cost.add_forward(len(prompts))
        masks = single_head_masks(L, H)
        metric = metric_under_masks(model, task, prompts, masks, reference).mean(1)  # [2 + L*H]
        cost.add_forward(masks.shape[0] * len(prompts))
        full, empty = float(metric[0]), float(metric[1])
        effect = (metric[2:] - metric[0]).reshape(L, H)  # signed: ablated - intact
        scores = effect.abs()
    return BaselineResult(
        method=f"patching-{ablation}", node_scores=scores, edge_scores=None,
        selected=selected_heads(scores, selection), n_forward=cost.forward, n_backward=0.0,
        seconds=timer.seconds, stochastic=ablation == "resample",
        details={"ablation": ablation, "metric_full": full, "metric_all_ablated": empty,
                 "signed_effect": effect.tolist(),
                 "score": "|mean metric with the head ablated - mean metric of the intact model|"})
