"""Every attention head's output for a batch of prompts, in one forward pass per batch.

Only `hook_z` is hooked. Positions are reduced inside the hook, so nothing of size
[batch, pos, head, d] outlives the forward pass. The residual-space output of a head
(`hook_result`, z @ W_O without b_O) is linear in z, so it is computed after the reduction:
mean_pos(z) @ W_O == mean_pos(z @ W_O), at a fraction of the cost and without `use_attn_result`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from circuits.ablation import z_hook
from circuits.discovery.config import HOOKS, POSITIONS, HookKind, Position
from circuits.errors import CircuitsError

if TYPE_CHECKING:  # TransformerLens is imported only when a model is built or loaded
    from circuits._compat import HookedTransformer



def head_index(layer: int, head: int, n_heads: int) -> int:
    """Flat head index used along the `head` axis: layer * n_heads + head."""
    return layer * n_heads + head


def check_hook(model: HookedTransformer, hook: str) -> None:
    """Raise a one-line error when the model has no such per-head hook."""
    if hook not in HOOKS:
        raise CircuitsError(f"unknown hook '{hook}' (known: {', '.join(HOOKS)})")
    if not hasattr(model.blocks[0].attn, "hook_z"):
        raise CircuitsError("this model has no per-head hook_z")


@torch.no_grad()
def head_activations(model: HookedTransformer, tokens: torch.Tensor, hook: HookKind = "z",
                     position: Position = "mean", batch_size: int = 128) -> torch.Tensor:
    """tokens: [n, seq] -> acts: [n, layer*head, d] (d = d_head for "z", d_model for "result").

    position "each" keeps every position as its own row: [n*seq, layer*head, d], prompt-major.
    """
    check_hook(model, hook)
    if position not in POSITIONS:
        raise CircuitsError(f"unknown position reduction '{position}' (known: {', '.join(POSITIONS)})")
    cfg = model.cfg
    n_layers = cfg.n_layers
    chunks: list[torch.Tensor] = []
    for start in range(0, tokens.shape[0], batch_size):
        reduced: dict[int, torch.Tensor] = {}

        def reduce(z: torch.Tensor, hook, reduced=reduced) -> None:  # z: [b, seq, head, d_head]
            if position == "mean":
                reduced[hook.layer()] = z.mean(1)
            elif position == "last":
                reduced[hook.layer()] = z[:, -1]
            else:  # "each": [b, seq, head, d_head] -> [b*seq, head, d_head]
                reduced[hook.layer()] = z.reshape(-1, z.shape[2], z.shape[3])

        model.run_with_hooks(tokens[start:start + batch_size], stop_at_layer=n_layers,
                             fwd_hooks=[(z_hook(layer), reduce)
                                        for layer in range(n_layers)])
        chunks.append(torch.stack([reduced[layer] for layer in range(n_layers)], dim=1))
    z = torch.cat(chunks)  # [n, layer, head, d_head]
    if hook == "result":
        # w_o: [layer, head, d_head, d_model]
        w_o = torch.stack([model.blocks[layer].attn.W_O for layer in range(n_layers)])
        out = torch.einsum("nlhd,lhdm->nlhm", z, w_o)
    else:
        out = z
    return out.reshape(out.shape[0], n_layers * cfg.n_heads, out.shape[-1]).float()
