"""Every attention head's output for a batch of prompts, in one forward pass per batch.

Only `hook_z` is hooked. Positions are reduced inside the hook, so nothing of size
[batch, pos, head, d] outlives the forward pass. The residual-space output of a head
(`hook_result`, z @ W_O without b_O) is linear in z, so it is computed after the reduction:
mean_pos(z) @ W_O == mean_pos(z @ W_O), at a fraction of the cost and without `use_attn_result`.
"""

from __future__ import annotations

from collections.abc import Callable
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


class _Done(Exception):
    """Raised by the last layer's hook: nothing after it (W_O, MLP, unembedding) is needed."""


@torch.no_grad()
def stream_head_activations(model: HookedTransformer, tokens: torch.Tensor,
                            consume: Callable[[int, int, torch.Tensor], None], hook: HookKind = "z",
                            position: Position = "mean", batch_size: int = 128) -> None:
    """Call consume(row_start, layer, acts) inside the forward hook of every layer of every batch.

    tokens: [n, seq]; acts: [rows, head, d] float (d = d_head for "z", d_model for "result"), rows =
    batch prompts (or batch*seq for position "each", prompt-major) starting at row `row_start`. Nothing of
    one batch outlives its hook, so memory does not grow with n; the forward stops after the last
    layer's hook_z.
    """
    check_hook(model, hook)
    if position not in POSITIONS:
        raise CircuitsError(f"unknown position reduction '{position}' (known: {', '.join(POSITIONS)})")
    n_layers, kind = model.cfg.n_layers, hook
    rows_per_prompt = tokens.shape[1] if position == "each" else 1
    for start in range(0, tokens.shape[0], batch_size):
        row_start = start * rows_per_prompt

        def reduce(z: torch.Tensor, hook, row_start: int = row_start) -> None:  # z: [b, seq, head, d_head]
            layer = hook.layer()
            if position == "mean":
                z = z.mean(1)
            elif position == "last":
                z = z[:, -1]
            else:  # "each": [b, seq, head, d_head] -> [b*seq, head, d_head]
                z = z.reshape(-1, z.shape[2], z.shape[3])
            if kind == "result":  # w_o: [head, d_head, d_model]
                z = torch.einsum("nhd,hdm->nhm", z, model.blocks[layer].attn.W_O)
            consume(row_start, layer, z.float())
            if layer == n_layers - 1:
                raise _Done

        try:
            model.run_with_hooks(tokens[start:start + batch_size], stop_at_layer=n_layers,
                                 fwd_hooks=[(z_hook(layer), reduce)
                                            for layer in range(n_layers)])
        except _Done:
            pass


def head_activations(model: HookedTransformer, tokens: torch.Tensor, hook: HookKind = "z",
                     position: Position = "mean", batch_size: int = 128) -> torch.Tensor:
    """tokens: [n, seq] -> acts: [n, layer*head, d] (d = d_head for "z", d_model for "result").

    position "each" keeps every position as its own row: [n*seq, layer*head, d], prompt-major.
    Holds every activation: for the training prompts or analyses; find streams the scoring prompts.
    """
    n_heads = model.cfg.n_heads
    rows = tokens.shape[0] * (tokens.shape[1] if position == "each" else 1)
    out: list[torch.Tensor] = []  # one [rows, layer*head, d], allocated once d is known

    def store(row_start: int, layer: int, acts: torch.Tensor) -> None:  # acts: [b, head, d]
        if not out:
            out.append(torch.empty(rows, model.cfg.n_layers * n_heads, acts.shape[-1]))
        out[0][row_start:row_start + acts.shape[0], layer * n_heads:(layer + 1) * n_heads] = acts

    stream_head_activations(model, tokens, store, hook, position, batch_size)
    return out[0]
