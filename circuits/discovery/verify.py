"""Propose-then-verify (`--verify K`): the codes propose, single-head ablations re-rank the top K.

The K best-scored heads (ties: head order) are mean-ablated one at a time (reference: the position-wise
mean z over the first `verify_prompts` negatives) on the first `verify_prompts` scoring positives, all in
one batched `metric_under_masks` call (the intact model plus one mask per head). Final node scores: the
verified heads on top, in [1, 2], ordered by |mean metric ablated - mean metric intact| (normalised by the
largest); every other head below, in [0, 1), its proposed order kept. Edges are not changed.
Cost: (1 + K) * verify_prompts masked forwards plus verify_prompts reference forwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from circuits.ablation import metric_under_masks, reference_z
from circuits.discovery.selection import ranked_heads
from tasks.base import PromptSet, Task

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer


def top_heads(scores: torch.Tensor, k: int) -> list[int]:
    """Flat indices of the k highest scores, ties broken by head order (lower flat index first)."""
    return ranked_heads(scores)[:k]


def rerank(scores: torch.Tensor, top: list[int], effect: torch.Tensor) -> torch.Tensor:
    """scores: [layer, head]; top: flat indices verified; effect: [len(top)] >= 0 -> re-ranked scores.

    Verified heads: 1 + effect / max effect (1 when every effect is 0); the others: their scores rescaled
    into [0, 1) in the same order (ties kept)."""
    flat = scores.reshape(-1).float()
    out = torch.empty_like(flat)
    others = torch.ones(flat.shape[0], dtype=torch.bool)
    others[top] = False
    if bool(others.any()):
        rest = flat[others]
        low, high = rest.min(), rest.max()
        out[others] = (rest - low) / (high - low + 1.0)
    if top:
        largest = float(effect.max())
        normalised = effect.float() / largest if largest > 0 else torch.zeros(len(top))
        out[top] = 1.0 + normalised
    return out.reshape(scores.shape)


def verify_heads(model: HookedTransformer, task: Task, score_set: PromptSet, scores: torch.Tensor,
                 n_verify: int, n_prompts: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """scores: [layer, head] -> (re-ranked scores, a record for the result: heads, effects, passes in
    units of len(score_set) prompts)."""
    n_layers, n_heads = scores.shape
    top = top_heads(scores, min(n_verify, n_layers * n_heads))
    prompts = score_set.subset(slice(0, min(n_prompts, len(score_set))))
    n = len(prompts)
    reference = reference_z(model, prompts, "mean")  # [layer, seq, head, d_head]
    keep = torch.ones(1 + len(top), n_layers * n_heads, dtype=torch.bool)
    for j, i in enumerate(top):
        keep[1 + j, i] = False
    metric = metric_under_masks(model, task, prompts, keep.reshape(-1, n_layers, n_heads),
                                reference).float().mean(1)  # [1 + K]
    effect = (metric[1:] - metric[0]).abs()
    new = rerank(scores, top, effect)
    order = sorted(range(len(top)), key=lambda j: -float(effect[j]))
    record = {
        "heads": [list(divmod(top[j], n_heads)) for j in order],  # verified, most important first
        "effect": [float(effect[j]) for j in order],  # |mean metric ablated - mean metric intact|
        "proposed": [list(divmod(i, n_heads)) for i in top],  # in proposed order
        "prompts": n,
        "metric_intact": float(metric[0]),
        "ablation": "mean",
        "forward_passes": ((1 + len(top)) * n + n) / len(score_set),  # masks + the reference pass
    }
    return new, record
