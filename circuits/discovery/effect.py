"""Each head's first-order effect on the task metric, the `--signal effect` alternative to its output.

Per position, the hooked quantity times the gradient of the task metric with respect to it, elementwise,
then pooled over positions as `position` says (mean | last | each):
- hook "z": z ⊙ ∂m/∂z, [batch, pos, head, d_head];
- hook "result": (z_h @ W_O[h]) ⊙ ∂m/∂(attention output of the layer), [batch, pos, head, d_model]; the
  gradient with respect to each head's result equals the gradient with respect to the layer's attention
  output (their sum plus b_O), taken at the attention module's output (before any post-attention norm).
m is the sum over the batch of `task.metric(logits, metric_prompts rows of the batch)`; prompts do not
interact, so row i's gradient is that of its own metric. A head that changes but does not matter (zero
gradient) gives ~0. Summed over d, an entry is attribution patching's estimate of zeroing the head there.

Cost: one forward and one backward pass per batch (the no-grad hook of `activations` cannot take a
gradient). Only the current batch's tensors are alive; `streamed_effect_codes` keeps only codes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from circuits.ablation import final_logits, z_hook
from circuits.discovery.activations import check_hook
from circuits.discovery.codes import streamed_codes
from circuits.discovery.config import POSITIONS, FindConfig, HookKind, Position
from circuits.errors import CircuitsError
from circuits.sae import SAE
from tasks.base import PromptSet, Task

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer


def stream_effect_activations(model: HookedTransformer, task: Task, tokens: torch.Tensor,
                              metric_prompts: PromptSet,
                              consume: Callable[[int, int, torch.Tensor], None], hook: HookKind = "z",
                              position: Position = "mean", batch_size: int = 128) -> None:
    """Call consume(row_start, layer, effect) for every layer of every batch, as `stream_head_activations`
    does with outputs. tokens: [n, seq]; row i's metric is task.metric on metric_prompts row i (its answer
    tokens: a negative prompt is scored with its positive's row). effect: [rows, head, d] float32."""
    check_hook(model, hook)
    if position not in POSITIONS:
        raise CircuitsError(f"unknown position reduction '{position}' (known: {', '.join(POSITIONS)})")
    if len(metric_prompts) != tokens.shape[0]:
        raise CircuitsError(f"{tokens.shape[0]} prompts but {len(metric_prompts)} metric rows")
    n_layers = model.cfg.n_layers
    rows_per_prompt = tokens.shape[1] if position == "each" else 1
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start:start + batch_size]
        rows = metric_prompts.subset(slice(start, start + batch.shape[0]))
        zs, grads = _batch_gradients(model, task, batch, rows, hook)
        for layer in range(n_layers):
            z, grad = zs[layer].float(), grads[layer]  # z: [b, seq, head, d_head]
            if hook == "z":  # grad None: the metric does not depend on this layer
                effect = z * (grad.float() if grad is not None else 0.0)
            else:
                result = torch.einsum("bphd,hdm->bphm", z, model.blocks[layer].attn.W_O.detach().float())
                effect = result * (grad.float()[:, :, None, :] if grad is not None else 0.0)
            if position == "mean":
                effect = effect.mean(1)
            elif position == "last":
                effect = effect[:, -1]
            else:  # "each": [b, seq, head, d] -> [b*seq, head, d], prompt-major
                effect = effect.reshape(-1, effect.shape[2], effect.shape[3])
            consume(start * rows_per_prompt, layer, effect.contiguous())


def _batch_gradients(model: HookedTransformer, task: Task, batch: torch.Tensor, rows: PromptSet,
                     hook: HookKind) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """One forward and one backward of sum(task.metric) over the batch -> per layer: z [b, seq, head,
    d_head] (detached) and the metric's gradient with respect to z (hook "z") or to the layer's attention
    output [b, seq, d_model] (hook "result"); None where the metric does not depend on it."""
    n_layers = model.cfg.n_layers
    z_of: dict[int, torch.Tensor] = {}
    out_of: dict[int, torch.Tensor] = {}

    def keep_z(z: torch.Tensor, hook: Any) -> torch.Tensor:  # z: [b, seq, head, d_head]
        if not z.requires_grad:  # frozen weights: z becomes a leaf (later layers still depend on it)
            z = z.detach().requires_grad_(True)
        z_of[hook.layer()] = z
        return z

    def keep_out(layer: int, _module: Any, _inputs: Any, out: torch.Tensor) -> None:
        out_of[layer] = out  # [b, seq, d_model]: the sum of the heads' results + b_O

    handles = [model.blocks[layer].attn.register_forward_hook(partial(keep_out, layer))
               for layer in range(n_layers)] if hook == "result" else []
    try:
        with torch.enable_grad():
            logits = final_logits(model, batch, [(z_hook(layer), keep_z) for layer in range(n_layers)])
            metric = task.metric(logits, rows).sum()
            wrt = [(z_of if hook == "z" else out_of)[layer] for layer in range(n_layers)]
            grads = torch.autograd.grad(metric, wrt, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return [z_of[layer].detach() for layer in range(n_layers)], list(grads)


def effect_activations(model: HookedTransformer, task: Task, tokens: torch.Tensor,
                       metric_prompts: PromptSet, hook: HookKind = "z", position: Position = "mean",
                       batch_size: int = 128) -> torch.Tensor:
    """tokens: [n, seq] -> effects: [n, layer*head, d], shaped as `head_activations`'s output (position
    "each": [n*seq, layer*head, d], prompt-major). Holds every row: for the training prompts."""
    n_heads = model.cfg.n_heads
    rows = tokens.shape[0] * (tokens.shape[1] if position == "each" else 1)
    out: list[torch.Tensor] = []

    def store(row_start: int, layer: int, acts: torch.Tensor) -> None:  # acts: [b, head, d]
        if not out:
            out.append(torch.empty(rows, model.cfg.n_layers * n_heads, acts.shape[-1]))
        out[0][row_start:row_start + acts.shape[0], layer * n_heads:(layer + 1) * n_heads] = acts

    stream_effect_activations(model, task, tokens, metric_prompts, store, hook, position, batch_size)
    return out[0]


def streamed_effect_codes(model: HookedTransformer, task: Task, tokens: torch.Tensor,
                          metric_prompts: PromptSet, sae: SAE, config: FindConfig,
                          batches: range | None = None) -> torch.Tensor:
    """`streamed_codes` of the effects: tokens [n, seq] -> codes [n*rows_per_prompt, layer*head]; only the
    codes are kept. batches: which batches of config.batch_size prompts to run (the others' rows stay 0)."""
    if len(metric_prompts) != tokens.shape[0]:
        raise CircuitsError(f"{tokens.shape[0]} prompts but {len(metric_prompts)} metric rows")

    def stream(rows: slice, consume: Callable[[int, int, torch.Tensor], None]) -> None:
        stream_effect_activations(model, task, tokens[rows], metric_prompts.subset(rows), consume,
                                  config.hook, config.position, config.batch_size)

    return streamed_codes(model, tokens, sae, config, batches, stream=stream)
