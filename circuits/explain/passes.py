"""The forward passes an explanation reads: one over the positives (attention from the answer position,
each circuit head's write there, the final norm's scale, the metric) and one over the negatives (their
writes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from circuits.ablation import Hooks, final_logits, z_hook
from circuits.edges.writes import head_writes
from tasks.base import Head, PromptSet, Task

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer


@dataclass
class Trace:
    """What the positives and negatives show at the answer (last) position, for the circuit heads."""

    attention: torch.Tensor  # [n, c, seq]: each circuit head's attention from the last position (positives)
    writes_pos: torch.Tensor  # [n, c, d_model]: each head's write to the residual stream, last position
    writes_neg: torch.Tensor  # [n, c, d_model]: the same on the negatives
    final_scale: torch.Tensor  # [n]: the final norm's scale at the last position (1 without a norm)
    metric: torch.Tensor  # [n]: the task metric on the positives


@torch.no_grad()
def trace(model: HookedTransformer, task: Task, prompts: PromptSet, heads: list[Head],
          batch_size: int = 64) -> Trace:
    """One pass over the positives and one over the negatives (batches of `batch_size` prompts)."""
    pos = [_run(model, prompts.positive[s:s + batch_size], heads, True)
           for s in range(0, len(prompts), batch_size)]
    neg = [_run(model, prompts.negative[s:s + batch_size], heads, False)
           for s in range(0, len(prompts), batch_size)]
    logits = torch.cat([p["logits"] for p in pos])  # [n, vocab]
    return Trace(attention=torch.cat([p["attention"] for p in pos]),
                 writes_pos=torch.cat([p["writes"] for p in pos]),
                 writes_neg=torch.cat([p["writes"] for p in neg]),
                 final_scale=torch.cat([p["scale"] for p in pos]),
                 metric=task.metric(logits, prompts).float())


def _run(model: HookedTransformer, tokens: torch.Tensor, heads: list[Head], full: bool) -> dict[str, Any]:
    """tokens: [b, seq] -> the circuit heads' last-position writes (and, with `full`, their attention from
    the last position, the final norm's scale and the last-position logits)."""
    layers = sorted({layer for layer, _ in heads})
    z: dict[int, torch.Tensor] = {}
    pattern: dict[int, torch.Tensor] = {}
    scale: list[torch.Tensor] = []

    def save_z(act: torch.Tensor, hook: Any) -> None:  # act: [b, seq, head, d_head]
        z[hook.layer()] = act[:, -1:].detach()

    def save_pattern(act: torch.Tensor, hook: Any) -> None:  # act: [b, head, query, key]
        pattern[hook.layer()] = act[:, :, -1].detach()

    def save_scale(act: torch.Tensor, hook: Any) -> None:  # act: [b, seq, 1]
        scale.append(act[:, -1, 0].detach())

    hooks: Hooks = [(z_hook(layer), save_z) for layer in layers]
    if full:
        hooks += [(f"blocks.{layer}.attn.hook_pattern", save_pattern) for layer in layers]
        resid = model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=model.cfg.n_layers)[:, -1:]
        # the last position alone is unembedded (a 49k vocabulary costs more than the blocks)
        normed = model.cfg.normalization_type is not None
        with model.hooks(fwd_hooks=[("ln_final.hook_scale", save_scale)] if normed else []):
            logits = final_logits(model, resid, start_at_layer=model.cfg.n_layers)  # [b, vocab]
    else:
        model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=max(layers) + 1)
    writes = {layer: head_writes(model, layer, z[layer])[:, 0] for layer in layers}  # [b, head, d_model]
    out: dict[str, Any] = {"writes": torch.stack([writes[l][:, h] for l, h in heads], 1).float()}
    if full:
        out["attention"] = torch.stack([pattern[l][:, h] for l, h in heads], 1).float()
        out["scale"] = scale[0].float() if scale else torch.ones(tokens.shape[0])
        out["logits"] = logits
    return out
