"""The causal check: on the positives, each circuit head's output (z, every position) replaced by its
counterfactual, the same head's output on the prompt's own negative; the metric's drop per prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from circuits.ablation import metric_under_masks, reference_z
from tasks.base import Head, PromptSet, Task

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer


@torch.no_grad()
def patch_drops(model: HookedTransformer, task: Task, prompts: PromptSet, heads: list[Head]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (clean metric [n], drop [c, n] = clean - metric with head c counterfactually patched). One masked
    pass per head, each starting at that head's layer (ablation.metric_under_masks reuses the prefix)."""
    cfg = model.cfg
    keep = torch.ones(len(heads) + 1, cfg.n_layers, cfg.n_heads, dtype=torch.bool)  # row 0: intact
    for i, (layer, head) in enumerate(heads, 1):
        keep[i, layer, head] = False
    reference = reference_z(model, prompts, "counterfactual")  # [n, layer, seq, head, d_head]
    metric = metric_under_masks(model, task, prompts, keep, reference).float()  # [c + 1, n]
    return metric[0], metric[0][None] - metric[1:]
