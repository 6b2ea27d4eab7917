"""Activation difference: the discrete-SAE method's null model (no SAE, no backward pass).

Per head, the L2 distance between its mean pooled output over the positive scoring prompts and over the
negative ones, read at the same hook ("result" = z @ W_O, or FindConfig.hook) with the same pooling
(FindConfig.position) as the discrete-SAE method. Whatever the SAE's codes add over this is what the
discretisation buys, so every comparison table shows it next to the SAE method.

With position "each" the means are taken per position and the distance is over positions and features
together (the SAE method treats a code at position p as a different event from the same code at q).

Cost: one forward pass over the positives and one over the negatives (2 passes, as the SAE method counts
its scoring prompts); the activations are reduced inside the forward hook, so nothing of size
[prompts, head, d] is held.
"""

from __future__ import annotations

import torch

from circuits._compat import HookedTransformer
from circuits.discovery.activations import stream_head_activations
from circuits.discovery.config import HookKind, Position
from circuits.methods.base import Timer, selected_heads
from circuits.methods.registry import MethodInput, MethodRun
from tasks.base import PromptSet


@torch.no_grad()
def activation_difference(model: HookedTransformer, prompts: PromptSet, hook: HookKind = "result",
                          position: Position = "mean", batch_size: int = 128) -> torch.Tensor:
    """[layer, head] L2 distance between each head's mean pooled output on the positives and on the
    negatives of `prompts` (the collection is `stream_head_activations`, the SAE method's own)."""
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    n = len(prompts)
    tokens = torch.cat([prompts.positive, prompts.negative])  # [2n, seq]: positives first
    rows_per_prompt = tokens.shape[1] if position == "each" else 1
    split = n * rows_per_prompt  # rows below `split` are the positives'
    sums: dict[str, torch.Tensor] = {}  # "pos" / "neg" -> [rows_per_prompt, layer*head, d] (float64)

    def add(row_start: int, layer: int, acts: torch.Tensor) -> None:  # acts: [rows, head, d]
        rows = torch.arange(row_start, row_start + acts.shape[0])
        slot = rows % rows_per_prompt  # the position of each row ("each"), else 0
        for side, keep in (("pos", rows < split), ("neg", rows >= split)):
            if not bool(keep.any()):
                continue
            if side not in sums:
                sums[side] = torch.zeros(rows_per_prompt, L * H, acts.shape[-1], dtype=torch.float64,
                                         device=acts.device)
            target = sums[side][:, layer * H:(layer + 1) * H]
            target.index_add_(0, slot[keep].to(acts.device), acts[keep.to(acts.device)].double())

    stream_head_activations(model, tokens, add, hook, position, batch_size)
    diff = (sums["pos"] - sums["neg"]) / n  # [rows_per_prompt, layer*head, d]
    return diff.pow(2).sum((0, 2)).sqrt().float().cpu().reshape(L, H)


def run_actdiff(inp: MethodInput) -> MethodRun:
    """The registered method: the scoring prompts of `inp.find` (those the SAE method scores with)."""
    from circuits.discovery.pipeline import split_prompts

    find = inp.find
    prompts = inp.task.prompts(inp.loaded.tokenizer, find.n_train + find.n_score, find.seed)
    _, score_set = split_prompts(prompts, find.n_train)
    with Timer() as timer:
        scores = activation_difference(inp.loaded.model, score_set, find.hook, find.position, find.batch_size)
    return MethodRun(node_scores=scores, selected=selected_heads(scores, find.selection), edge_scores=None,
                     seconds=timer.seconds, forward=2 * len(score_set) / find.n_score, backward=0.0,
                     details={"hook": find.hook, "position": find.position})
