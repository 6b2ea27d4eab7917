"""Faithfulness of a circuit next to random circuits of the same size.

A circuit's faithfulness alone says little: on a small model a random half of the heads may keep
much of the metric too. The random draws (uniform over all heads, same size) give the reference.
All masks (intact, all ablated, the circuit, every random draw) run through one batched
`metric_under_masks` call.
"""

from __future__ import annotations

from typing import Any

import torch

from circuits._compat import HookedTransformer
from circuits.ablation import AblationMethod, heads_to_mask, metric_under_masks, reference_z
from tasks.base import Head, PromptSet, Task

DEFINITION = ("normalized faithfulness = (metric with only the circuit intact - metric with every head "
              "ablated) / (metric of the intact model - metric with every head ablated); heads are ablated "
              "at hook_z; random circuits: uniform draws of the same number of heads")


def random_masks(n_layers: int, n_heads: int, size: int, n_draws: int, seed: int) -> torch.Tensor:
    """[n_draws, layer, head] keep masks with `size` heads each, drawn uniformly without replacement."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n_draws, n_layers * n_heads, dtype=torch.bool)
    for i in range(n_draws):
        masks[i, torch.randperm(n_layers * n_heads, generator=gen)[:size]] = True
    return masks.reshape(n_draws, n_layers, n_heads)


def circuit_vs_random(model: HookedTransformer, task: Task, prompts: PromptSet,
                      circuit: set[Head] | frozenset[Head], ablation: AblationMethod = "mean",
                      n_random: int = 20, seed: int = 0) -> dict[str, Any]:
    """Metric kept by `circuit` (every other head ablated) and by `n_random` random circuits of its size."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    reference = reference_z(model, prompts, ablation, seed)
    keep = torch.cat([torch.ones(1, L, H, dtype=torch.bool), torch.zeros(1, L, H, dtype=torch.bool),
                      heads_to_mask(set(circuit), L, H)[None],
                      random_masks(L, H, len(circuit), n_random, seed + 1)])
    metric = metric_under_masks(model, task, prompts, keep, reference).mean(1).double()  # [3 + n_random]
    full, empty = float(metric[0]), float(metric[1])
    denom = full - empty
    normalized = (metric - empty) / denom if abs(denom) > 1e-12 else torch.full_like(metric, float("nan"))
    rand = normalized[3:]
    rand_std = float(rand.std()) if n_random > 1 else 0.0
    return {
        "ablation": ablation,
        "n_prompts": len(prompts),
        "metric_full": full,
        "metric_all_ablated": empty,
        "circuit": {"size": len(circuit), "metric": float(metric[2]), "normalized": float(normalized[2])},
        "random": {"n_draws": n_random, "size": len(circuit),
                   "normalized_mean": float(rand.mean()) if n_random else None,
                   "normalized_std": rand_std if n_random else None,
                   "normalized": rand.tolist(),
                   "fraction_at_least_circuit": float((rand >= normalized[2]).double().mean())
                   if n_random else None},
        "definition": DEFINITION,
    }
