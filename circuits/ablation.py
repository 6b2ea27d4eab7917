"""Ablate sets of heads and measure the task metric: shared by ground truth, faithfulness and baselines.

A head is ablated by replacing its `hook_z` output (before W_O) with a reference value:
- "mean": its position-wise mean over the negative (corrupted) prompts,
- "zero": zeros,
- "resample": its value on a randomly chosen negative prompt,
- "counterfactual": its value on the prompt's own negative (positive[i] takes negative[i]'s z; MIB's
  default intervention).
Many head masks are evaluated in one batched forward pass by repeating the prompts per mask, and only
the last position is unembedded (the metric reads nothing else; at a 49k vocabulary the full unembedding
costs more than the blocks). Every module that ablates heads (ground truth, faithfulness, patching,
CPR/CMD) goes through `metric_under_masks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from circuits.errors import CircuitsError
from tasks.base import PromptSet, Task

if TYPE_CHECKING:  # TransformerLens is imported only when a model is built or loaded
    from circuits._compat import HookedTransformer

# TransformerLens forward hooks: (hook name, fn(activation, hook) -> activation or None)
Hooks = list[tuple[str | Callable[..., Any], Callable[..., Any]]]
AblationMethod = Literal["mean", "zero", "resample", "counterfactual"]
ABLATION_METHODS: tuple[str, ...] = ("mean", "zero", "resample", "counterfactual")


def z_hook(layer: int) -> str:
    """TransformerLens's name of layer `layer`'s per-head output z: [batch, pos, head, d_head]."""
    return f"blocks.{layer}.attn.hook_z"


def final_logits(model: HookedTransformer, tokens: torch.Tensor,
                 hooks: Hooks | None = None, start_at_layer: int = 0) -> torch.Tensor:
    """tokens: [rows, seq] -> logits at the last position only: [rows, vocab].

    Same values as `model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]`, without unembedding the other
    positions. With start_at_layer = s > 0, `tokens` is the residual stream entering block s:
    [rows, seq, d_model] (s = n_layers: the final residual stream).
    """
    n_layers = model.cfg.n_layers
    if start_at_layer >= n_layers:
        resid = tokens
    elif start_at_layer > 0:
        resid = model.run_with_hooks(tokens, fwd_hooks=hooks or [], start_at_layer=start_at_layer,
                                     stop_at_layer=n_layers)
    else:
        resid = model.run_with_hooks(tokens, fwd_hooks=hooks or [], stop_at_layer=n_layers)
    last = resid[:, -1:]  # [rows, 1, d_model]
    if model.cfg.normalization_type is not None:
        last = model.ln_final(last)
    logits = model.unembed(last)[:, 0]  # [rows, vocab]
    cap = model.cfg.output_logits_soft_cap
    if cap is not None and cap > 0:  # Gemma-style soft cap, as TransformerLens's forward applies it
        logits = cap * torch.tanh(logits / cap)
    return logits


@torch.no_grad()
def collect_z(model: HookedTransformer, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """tokens: [n, seq] -> z of every head: [n, layer, seq, head, d_head]."""
    n_layers = model.cfg.n_layers
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        store: dict[int, torch.Tensor] = {}

        def save(z: torch.Tensor, hook, store=store) -> None:  # z: [b, seq, head, d_head]
            store[hook.layer()] = z.detach()

        model.run_with_hooks(tokens[start:start + batch_size], stop_at_layer=n_layers,
                             fwd_hooks=[(z_hook(layer), save) for layer in range(n_layers)])
        out.append(torch.stack([store[layer] for layer in range(n_layers)], dim=1))
    return torch.cat(out)


def reference_z(model: HookedTransformer, prompts: PromptSet, method: AblationMethod,
                seed: int = 0) -> torch.Tensor:
    """Replacement values: [layer, seq, head, d_head] (mean, zero) or [n, layer, seq, head, d_head]
    (resample, counterfactual: one row per positive prompt)."""
    if method == "zero":
        cfg = model.cfg
        return torch.zeros(cfg.n_layers, prompts.seq_len, cfg.n_heads, cfg.d_head)
    z_neg = collect_z(model, prompts.negative)  # [n, layer, seq, head, d_head]
    if method == "mean":
        return z_neg.mean(0)
    if method == "resample":
        gen = torch.Generator().manual_seed(seed)
        return z_neg[torch.randint(0, len(prompts), (len(prompts),), generator=gen)]
    if method == "counterfactual":
        return z_neg
    raise CircuitsError(f"unknown ablation method '{method}' ({', '.join(ABLATION_METHODS)})")


@dataclass
class PassCount:
    """Work done by `metric_under_masks`, in passes over the prompts: a mask run from layer s of L counts
    (L - s) / L (the layers below were reused), a base run counts 1."""

    forward: float = 0.0
    masks: int = 0


# masks of one call above which the intact and the all-ablated runs are cached and reused
REUSE_PREFIX_MIN_MASKS = 4


@torch.no_grad()
def metric_under_masks(model: HookedTransformer, task: Task, prompts: PromptSet, keep: torch.Tensor,
                       reference: torch.Tensor, max_rows: int = 512, reuse_prefix: bool | None = None,
                       count: PassCount | None = None, base_runs: dict[int, torch.Tensor] | None = None,
                       base_masks: torch.Tensor | None = None) -> torch.Tensor:
    """Task metric on the positive prompts with every head where keep is False ablated.

    keep: [k, layer, head] bool (k masks); reference from `reference_z`.
    Returns [k, n]: the metric per mask and prompt.

    With `reuse_prefix` (default: when k >= REUSE_PREFIX_MIN_MASKS and the model has no shortformer position
    embedding), the intact and the all-ablated model run once with their residual streams cached, and each
    mask starts at the first layer where it differs from the closer of the two: exact (the layers below
    compute the same values) and, for single-head ablations or small circuits, about half the work.
    base_runs: a dict kept by a caller that scores many batches on the same prompts and reference (it holds
    those cached runs, 0 intact and 1 all ablated: [n, layer + 1, seq, d_model]; filled on first use); with
    it, prefixes are reused by default whatever k.
    base_masks: [b, layer, head] further keep masks whose runs a mask may continue (run once in this call,
    1 pass each, when some mask starts later from one of them than from the intact or all-ablated run):
    e.g. a set S when scoring its leave-one-out subsets, which then start at the removed head's layer.
    """
    keep = keep.bool()
    k, n_layers, n_heads = keep.shape
    n = len(prompts)
    if k == 0:
        return torch.empty(0, n)
    per_prompt_ref = reference.dim() == 5
    masks_per_pass = max(1, max_rows // n)
    if reuse_prefix is None:
        reuse_prefix = k >= REUSE_PREFIX_MIN_MASKS or base_runs is not None
    reuse_prefix = reuse_prefix and model.cfg.positional_embedding_type != "shortformer"

    def hooks_for(sub: torch.Tensor, first: int) -> Hooks:
        """Patch hooks for masks `sub` [m, layer, head] on layers >= first (none where all are kept)."""
        m = sub.shape[0]
        hooks: Hooks = []
        for layer in range(first, n_layers):
            if bool(sub[:, layer].all()):
                continue
            # keep_rows: [m*n, 1, head, 1] broadcast over seq and d_head
            keep_rows = sub[:, layer].repeat_interleave(n, dim=0)[:, None, :, None]
            ref = reference[:, layer].repeat(m, 1, 1, 1) if per_prompt_ref else reference[layer][None]

            def patch(z: torch.Tensor, hook, keep_rows=keep_rows, ref=ref) -> torch.Tensor:
                return torch.where(keep_rows, z, ref.to(z.dtype))

            hooks.append((z_hook(layer), patch))
        return hooks

    # per mask: which run it continues (0 intact, 1 all ablated, 2 + j base_masks[j]) and from which layer
    base = torch.zeros(k, dtype=torch.long)
    start = torch.zeros(k, dtype=torch.long)
    shared = {} if base_runs is None else base_runs  # 0, 1 -> residual stream [n, layer + 1, seq, d_model]
    bases: dict[int, torch.Tensor] = {b: run for b, run in shared.items() if b in (0, 1)}
    if reuse_prefix:
        extra = torch.zeros(0, n_layers, n_heads) if base_masks is None else base_masks
        candidates = torch.cat([torch.ones(2, n_layers, n_heads), extra.float()]).bool()  # [c, L, H]
        candidates[1] = False  # 0 intact, 1 all ablated, then the given masks
        differs = (keep[:, None] != candidates[None]).any(-1)  # [k, c, layer]
        first_diff = torch.where(differs.any(-1), differs.int().argmax(-1), n_layers)  # [k, c]
        start, base = first_diff.max(-1)  # ties: torch.max returns the first (the shared runs)
        for b in sorted(set(base[start > 0].tolist()) - set(bases)):
            bases[b] = _residual_stream(model, prompts.positive, hooks_for(candidates[b][None], 0))
            if b in (0, 1):
                shared[b] = bases[b]
            if count is not None:
                count.forward += 1.0
    out: torch.Tensor | None = None  # [k, n], in the metric's dtype
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(k):
        groups.setdefault((int(base[i]), int(start[i])), []).append(i)
    for (b, first), members in sorted(groups.items()):
        for m0 in range(0, len(members), masks_per_pass):
            idx = members[m0:m0 + masks_per_pass]
            sub = keep[idx]  # [m, layer, head]
            m = sub.shape[0]
            if first == 0:
                inputs = prompts.positive.repeat(m, 1)  # [m*n, seq]
            else:
                inputs = bases[b][:, first].repeat(m, 1, 1)  # [m*n, seq, d_model]
            logits = final_logits(model, inputs, hooks_for(sub, first), start_at_layer=first)  # [m*n, vocab]
            metric = task.metric(logits, _repeat_prompts(prompts, m)).reshape(m, n)
            if out is None:
                out = metric.new_empty(k, n)
            out[idx] = metric
            if count is not None:
                count.forward += m * (n_layers - first) / n_layers
    if count is not None:
        count.masks += k
    assert out is not None
    return out


@torch.no_grad()
def _residual_stream(model: HookedTransformer, tokens: torch.Tensor, hooks: Hooks
                     ) -> torch.Tensor:
    """tokens: [n, seq] -> every block's input and the last block's output: [n, layer + 1, seq, d_model]."""
    n_layers = model.cfg.n_layers
    store: dict[int, torch.Tensor] = {}

    def save(x: torch.Tensor, hook: Any) -> None:
        store[hook.layer()] = x

    final = model.run_with_hooks(tokens, stop_at_layer=n_layers, fwd_hooks=hooks + [
        (f"blocks.{layer}.hook_resid_pre", save) for layer in range(n_layers)])  # [n, seq, d_model]
    return torch.stack([store[layer] for layer in range(n_layers)] + [final], dim=1)


def _repeat_prompts(prompts: PromptSet, m: int) -> PromptSet:
    if m == 1:
        return prompts
    return prompts.subset(list(range(len(prompts))) * m)


@dataclass(frozen=True)
class Faithfulness:
    """How much of the task metric a circuit keeps when every other head is ablated."""

    full: float  # mean metric of the intact model
    empty: float  # every head ablated
    circuit: float  # only the circuit's heads intact
    method: str

    @property
    def normalized(self) -> float:
        """(circuit - empty) / (full - empty): 1 = all of the behaviour, 0 = none of it."""
        denom = self.full - self.empty
        return float("nan") if abs(denom) < 1e-12 else (self.circuit - self.empty) / denom

    @property
    def ratio(self) -> float:
        """circuit / full, the plain fraction of the metric kept."""
        return float("nan") if abs(self.full) < 1e-12 else self.circuit / self.full

    def to_dict(self) -> dict[str, float | str]:
        return {"full": self.full, "empty": self.empty, "circuit": self.circuit, "method": self.method,
                "normalized": self.normalized, "ratio": self.ratio,
                "definition": "normalized = (circuit - empty) / (full - empty); heads outside the "
                              "circuit ablated at hook_z"}


def heads_to_mask(heads: set[tuple[int, int]] | frozenset[tuple[int, int]], n_layers: int,
                  n_heads: int) -> torch.Tensor:
    """A set of (layer, head) -> keep mask [layer, head] bool."""
    mask = torch.zeros(n_layers, n_heads, dtype=torch.bool)
    for layer, h in heads:
        mask[layer, h] = True
    return mask


def faithfulness(model: HookedTransformer, task: Task, prompts: PromptSet,
                 circuit_heads: set[tuple[int, int]] | frozenset[tuple[int, int]],
                 method: AblationMethod = "mean", seed: int = 0) -> Faithfulness:
    """Metric kept by `circuit_heads` alone (others ablated), next to the full and empty model."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    reference = reference_z(model, prompts, method, seed)
    keep = torch.stack([torch.ones(L, H, dtype=torch.bool), torch.zeros(L, H, dtype=torch.bool),
                        heads_to_mask(circuit_heads, L, H)])
    scores = metric_under_masks(model, task, prompts, keep, reference).mean(1)  # [3]
    return Faithfulness(full=float(scores[0]), empty=float(scores[1]), circuit=float(scores[2]),
                        method=method)
