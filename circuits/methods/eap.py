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
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from circuits._compat import HookedTransformer
from circuits.ablation import z_hook
from circuits.methods.base import (
    DEFAULT_SELECTION,
    BaselineResult,
    Cost,
    Timer,
    layer_pairs_dict,
    selected_heads,
    split_qkv_inputs,
)
from tasks.base import PromptSet, Task

QKV = ("q", "k", "v")


def _z_hooks(n_layers: int, store: dict[str, torch.Tensor]) -> list:
    def save(z: torch.Tensor, hook) -> None:  # z: [b, pos, head, d_head]
        store[hook.name] = z

    return [(z_hook(layer), save) for layer in range(n_layers)]


@dataclass
class Attributions:
    """Signed mean attributions (estimated metric change when corrupting)."""

    node: torch.Tensor  # [layer, head]
    edge: torch.Tensor  # [sender head, receiver head], flat indices; zero unless sender layer < receiver
    metric_clean: float  # mean metric on the positives
    metric_corrupt: float  # mean metric (same answers) on the negatives


MAX_BATCH = 32
# floats of the largest per-batch tensor, [batch, pos, layer*head, d_model] (delta_result; the saved q/k/v
# inputs and their graph are of the same order): 2**25 floats = 128 MiB. Without it, SmolLM2 docstring
# (40 tokens, 270 heads) at 32 prompts a batch took 18 GB and was killed.
BATCH_BUDGET = 2**25


def auto_batch_size(model: HookedTransformer, seq_len: int) -> int:
    """Prompts per EAP batch: at most MAX_BATCH, fewer when a prompt's per-head residual writes are large."""
    per_prompt = seq_len * model.cfg.n_layers * model.cfg.n_heads * model.cfg.d_model
    return max(1, min(MAX_BATCH, BATCH_BUDGET // max(per_prompt, 1)))


def eap_attributions(model: HookedTransformer, task: Task, prompts: PromptSet, edges: bool = True,
                     batch_size: int | None = None, cost: Cost | None = None) -> Attributions:
    """Node and edge attributions over `prompts`, in batches of `batch_size` (None: `auto_batch_size`).
    Sums over prompts, so the batch size changes nothing but float rounding and memory."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    w_o = torch.stack([b.attn.W_O for b in model.blocks]).detach()  # [layer, head, d_head, d_model]
    node = torch.zeros(L, H, dtype=torch.float64)
    edge = torch.zeros(L * H, L * H, dtype=torch.float64)
    metric_clean = metric_corrupt = 0.0
    n = len(prompts)
    if batch_size is None:
        batch_size = auto_batch_size(model, int(prompts.positive.shape[1]))
    for start in range(0, n, batch_size):
        rows = list(range(start, min(n, start + batch_size)))
        sub = prompts.subset(rows)
        b = len(rows)
        corrupt: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            logits = model.run_with_hooks(sub.negative, fwd_hooks=_z_hooks(L, corrupt))
            metric_corrupt += float(task.metric(logits[:, -1], sub).sum())
        z_corrupt = torch.stack([corrupt[z_hook(l)] for l in range(L)], 1)  # [b,L,p,H,d]

        clean: dict[str, torch.Tensor] = {}

        def needs_grad(x: torch.Tensor, hook) -> torch.Tensor:
            return x if x.requires_grad else x.detach().requires_grad_(True)

        def save(x: torch.Tensor, hook, clean: dict[str, torch.Tensor] = clean) -> None:
            clean[hook.name] = x

        hooks = [("blocks.0.hook_resid_pre", needs_grad)] + _z_hooks(L, clean)
        if edges:
            hooks += [(f"blocks.{l}.hook_{x}_input", save) for l in range(1, L) for x in QKV]
        with torch.enable_grad(), (split_qkv_inputs(model) if edges else nullcontext()):
            logits = model.run_with_hooks(sub.positive, fwd_hooks=hooks)
            metric = task.metric(logits[:, -1], sub)
            names = [z_hook(l) for l in range(L)]
            if edges:
                names += [f"blocks.{l}.hook_{x}_input" for l in range(1, L) for x in QKV]
            grads = torch.autograd.grad(metric.sum(), [clean[k] for k in names], allow_unused=True)
        metric_clean += float(metric.detach().sum())
        grad = {k: torch.zeros_like(clean[k]) if g is None else g for k, g in zip(names, grads, strict=True)}
        if cost is not None:
            cost.add_forward(2 * b)
            cost.add_backward(b)

        z_clean = torch.stack([clean[z_hook(l)].detach() for l in range(L)], 1)
        g_z = torch.stack([grad[z_hook(l)] for l in range(L)], 1)  # [b, L, p, H, d]
        delta_z = z_corrupt - z_clean  # [b, L, pos, H, d_head]
        node += torch.einsum("blphd,blphd->lh", delta_z, g_z).double()
        if edges:
            # delta_result: [b, pos, L*H, d_model]
            delta_result = torch.einsum("blphd,lhdm->bplhm", delta_z, w_o).reshape(
                b, delta_z.shape[2], L * H, cfg.d_model)
            for l in range(1, L):
                g_in = sum(grad[f"blocks.{l}.hook_{x}_input"] for x in QKV)  # [b, pos, H, d_model]
                block = torch.einsum("bpum,bpvm->uv", delta_result[:, :, :l * H], g_in)
                edge[:l * H, l * H:(l + 1) * H] += block.double()
    return Attributions(node=(node / n).float(), edge=(edge / n).float(), metric_clean=metric_clean / n,
                        metric_corrupt=metric_corrupt / n)


def edge_attribution_patching(model: HookedTransformer, task: Task, prompts: PromptSet, edges: bool = True,
                              batch_size: int | None = None, selection: str = DEFAULT_SELECTION
                              ) -> BaselineResult:
    """EAP node (and edge) scores: |mean (corrupt - clean) . gradient|."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    cost = Cost(len(prompts))
    with Timer() as timer:
        attr = eap_attributions(model, task, prompts, edges, batch_size, cost)
        node = attr.node
        scores = node.abs()
        edge_scores = layer_pairs_dict(attr.edge.abs(), L, H) if edges else None
    return BaselineResult(
        method="eap", node_scores=scores, edge_scores=edge_scores, selected=selected_heads(scores, selection),
        n_forward=cost.forward, n_backward=cost.backward, seconds=timer.seconds, stochastic=False,
        details={"corruption": "paired (negative[i] for positive[i])",
                 "metric_clean": attr.metric_clean, "metric_corrupt": attr.metric_corrupt,
                 "sum_of_node_attributions": float(node.sum()),
                 "signed_node_attribution": node.tolist(),
                 "score": "|mean over prompts of (z_corrupt - z_clean) . d metric / d z|, summed over "
                          "positions and d_head; edges through the receiver's q/k/v inputs"})
