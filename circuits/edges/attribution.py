"""Attribution scores for every edge of the residual-stream graph: EAP and EAP-IG (MIB's "inputs" variant).

Each positive prompt is paired with its counterfactual (negative[i]). The score of an edge u -> v is the
first-order estimate of the metric change when v reads u's corrupted output instead of its clean one,

    s(u -> v) = mean over prompts of  sum_{pos, d_model} (out_u^corrupt - out_u^clean) . g_v,
    g_v = (1/m) sum_k d metric / d input_v  at input embeddings  e_corr + alpha_k (e_clean - e_corr),

where out_u is what u adds to the residual stream (input: the embeddings, blocks.0.hook_resid_pre; a head:
z @ W_O without b_O, which corruption does not change, post-norm scaled as `circuits.edges.writes` defines
it; an MLP: hook_mlp_out) and input_v is what v reads (a head: its own copy of the residual stream feeding
its q, k and v, the three gradients summed since the graph does not split them, grouped key/value heads
ungrouped; an MLP: hook_mlp_in; the logits: the final residual stream). With one point at
alpha = 1 this is EAP (Syed et al. 2023): the gradient at the clean input. With alpha_k = k/m ("left", the
clean end not evaluated) it is MIB's EAP-IG-inputs (Hanna et al., `hannamw/EAP-IG`, m = 5): a Riemann sum of
the integrated gradient along the straight path from the corrupted to the clean embeddings, which is
better than EAP where the metric saturates near the clean input.

Node scores (heads) use the same points: (z_corr - z_clean) . mean_k d metric / d z.

Cost per batch: a forward on the negatives, a forward on the positives (skipped when alpha = 1 is a point:
that forward is the clean run) and m forward + backward passes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from circuits.ablation import Hooks, z_hook
from circuits.edges.graph import ComputeGraph
from circuits.edges.writes import head_writes, mlp_inputs
from circuits.errors import CircuitsError
from tasks.base import PromptSet, Task

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer
    from circuits.methods.base import Cost

Alphas = Literal["left", "right"] | Sequence[float]
QKV = ("q", "k", "v")

MAX_BATCH = 32
# floats of the largest tensor a batch holds, [batch, pos, sender, d_model] (the sender output differences;
# the accumulated receiver gradients are of the same size, the autograd graph of the split q/k/v inputs some
# 20 times larger): 2**25 floats = 128 MiB. Without a bound, SmolLM2 docstring (40 tokens, 270 heads) at 32
# prompts a batch took 18 GB and was killed.
BATCH_BUDGET = 2**25


@dataclass
class EdgeAttributions:
    """Signed mean attributions (estimated metric change when corrupting) over the prompts."""

    edge: torch.Tensor  # [sender, receiver] float32 on the CPU; 0 where not graph.valid
    node: torch.Tensor  # [layer, head] float32 on the CPU
    metric_clean: float  # mean metric on the positives
    metric_corrupt: float  # mean metric (same answers) on the negatives
    alphas: tuple[float, ...]  # the interpolation points (0: corrupted embeddings, 1: clean)
    graph: ComputeGraph


def interpolation_points(ig_steps: int, alphas: Alphas = "left") -> tuple[float, ...]:
    """The alphas the gradient is averaged over: "left" k/m (k = 0..m-1; MIB's EAP-IG-inputs), "right"
    (k+1)/m (m = 1: plain EAP at the clean input), or an explicit list (then `ig_steps` is not used)."""
    if isinstance(alphas, str):
        if ig_steps < 1:
            raise CircuitsError(f"ig_steps must be at least 1, not {ig_steps}")
        if alphas == "left":
            return tuple(k / ig_steps for k in range(ig_steps))
        if alphas == "right":
            return tuple((k + 1) / ig_steps for k in range(ig_steps))
        raise CircuitsError(f"unknown alphas '{alphas}' (left, right or a list of numbers)")
    points = tuple(float(a) for a in alphas)
    if not points:
        raise CircuitsError("alphas is empty: give at least one interpolation point")
    return points


def edge_batch_size(model: HookedTransformer, seq_len: int, graph: ComputeGraph | None = None) -> int:
    """Prompts per batch: at most MAX_BATCH, fewer when a prompt's sender outputs are large."""
    graph = graph or ComputeGraph.of(model)
    per_prompt = seq_len * max(graph.n_senders, graph.n_receivers) * int(model.cfg.d_model)
    return max(1, min(MAX_BATCH, BATCH_BUDGET // max(per_prompt, 1)))


def _check_graph(model: HookedTransformer, graph: ComputeGraph) -> None:
    own = ComputeGraph.of(model)
    if graph != own:
        raise CircuitsError(f"the graph ({graph.describe()}) is not this model's ({own.describe()})")


@contextmanager
def _receiver_inputs(model: HookedTransformer, graph: ComputeGraph) -> Iterator[None]:
    """Per-head q/k/v input copies (grouped key/value heads ungrouped) and hook_mlp_in for the duration."""
    from circuits.methods.base import split_qkv_inputs  # here: circuits.methods imports this module

    with split_qkv_inputs(model), mlp_inputs(model):
        yield


def _outputs(graph: ComputeGraph, store: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Saved hook values -> embed [b, p, d], z [b, L, p, H, d_head], mlp [b, L, p, d] (MLP models)."""
    L = graph.n_layers
    out = {"embed": store["blocks.0.hook_resid_pre"].detach(),
           "z": torch.stack([store[z_hook(l)].detach() for l in range(L)], 1)}
    if graph.has_mlp:
        out["mlp"] = torch.stack([store[f"blocks.{l}.hook_mlp_out"].detach() for l in range(L)], 1)
    return out


def _output_names(graph: ComputeGraph) -> list[str]:
    names = [z_hook(l) for l in range(graph.n_layers)]
    if graph.has_mlp:
        names += [f"blocks.{l}.hook_mlp_out" for l in range(graph.n_layers)]
    return names


@torch.no_grad()
def _plain_run(model: HookedTransformer, task: Task, tokens: torch.Tensor, sub: PromptSet, graph: ComputeGraph
               ) -> tuple[dict[str, torch.Tensor], float]:
    """Sender outputs of a plain forward and the summed metric."""
    store: dict[str, torch.Tensor] = {}

    def save(x: torch.Tensor, hook: Any) -> None:
        store[hook.name] = x

    names = ["blocks.0.hook_resid_pre", *_output_names(graph)]
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, save) for name in names])
    return _outputs(graph, store), float(task.metric(logits[:, -1], sub).sum())


@torch.no_grad()
def _sender_diffs(model: HookedTransformer, graph: ComputeGraph, corrupt: dict[str, torch.Tensor],
                  clean: dict[str, torch.Tensor]) -> torch.Tensor:
    """out^corrupt - out^clean of every sender, in sender order: [b, p, S, d_model]."""
    parts = [(corrupt["embed"] - clean["embed"])[:, :, None]]
    for l in range(graph.n_layers):
        parts.append(head_writes(model, l, corrupt["z"][:, l]) - head_writes(model, l, clean["z"][:, l]))
        if graph.has_mlp:
            parts.append((corrupt["mlp"][:, l] - clean["mlp"][:, l])[:, :, None])
    return torch.cat(parts, 2)


def _receiver_names(graph: ComputeGraph) -> list[str]:
    """Hooks holding every receiver's input: per-head q/k/v copies, hook_mlp_in, the final residual stream."""
    L = graph.n_layers
    names = [f"blocks.{l}.hook_{x}_input" for l in range(L) for x in QKV]
    if graph.has_mlp:
        names += [f"blocks.{l}.hook_mlp_in" for l in range(L)]
    return [*names, f"blocks.{L - 1}.hook_resid_post"]


def _gradients_at(model: HookedTransformer, task: Task, sub: PromptSet, graph: ComputeGraph,
                  e_corr: torch.Tensor, alpha: float, targets: list[str], keep_outputs: bool
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, float]:
    """One forward + backward on the positives with embeddings e_corr + alpha (e_clean - e_corr):
    d (summed metric) / d each hook in `targets`, the sender outputs when `keep_outputs` (alpha = 1: this
    is the clean run) and the summed metric."""
    store: dict[str, torch.Tensor] = {}

    def interpolate(x: torch.Tensor, hook: Any) -> torch.Tensor:  # x: the clean embeddings [b, p, d]
        store["blocks.0.hook_resid_pre"] = x.detach()
        return torch.lerp(e_corr, x.detach(), alpha).requires_grad_(True)  # exact at alpha 0 and 1

    def save(x: torch.Tensor, hook: Any) -> None:
        store[hook.name] = x

    names = targets + (_output_names(graph) if keep_outputs else [])
    hooks: Hooks = [("blocks.0.hook_resid_pre", interpolate)]
    hooks += [(n, save) for n in dict.fromkeys(names)]
    with torch.enable_grad():
        logits = model.run_with_hooks(sub.positive, fwd_hooks=hooks)
        metric = task.metric(logits[:, -1], sub).sum()
        grads = torch.autograd.grad(metric, [store[n] for n in targets], allow_unused=True)
    grad = {n: torch.zeros_like(store[n]) if g is None else g for n, g in zip(targets, grads, strict=True)}
    return grad, _outputs(graph, store) if keep_outputs else None, float(metric.detach())


def _batch(model: HookedTransformer, task: Task, sub: PromptSet, graph: ComputeGraph,
           points: tuple[float, ...], edges: bool, cost: Cost | None
           ) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """One batch: summed (not averaged) edge [S, R] and node [L, H] attributions (float64, CPU) and the
    summed clean and corrupted metrics."""
    L, H, m = graph.n_layers, graph.n_heads, len(points)
    b, p = len(sub), sub.seq_len
    corrupt, metric_corrupt = _plain_run(model, task, sub.negative, sub, graph)
    e_corr = corrupt["embed"]  # [b, p, d]
    clean: dict[str, torch.Tensor] | None = None
    metric_clean = 0.0
    z_names = [z_hook(l) for l in range(L)]
    in_names = _receiver_names(graph) if edges else []
    # gradients summed over the points: receiver inputs in receiver order [b, p, R, d]; z [b, L, p, H, d_head]
    g_in = e_corr.new_zeros(b, p, graph.n_receivers, e_corr.shape[-1]) if edges else None
    g_z = torch.zeros_like(corrupt["z"])
    with ExitStack() as stack:
        if edges:
            stack.enter_context(_receiver_inputs(model, graph))
        for alpha in points:
            keep = alpha == 1.0 and clean is None
            grad, outputs, metric = _gradients_at(model, task, sub, graph, e_corr, alpha, z_names + in_names,
                                                  keep)
            if outputs is not None:
                clean, metric_clean = outputs, metric
            g_z += torch.stack([grad[n] for n in z_names], 1)
            if g_in is not None:
                for l in range(L):
                    first = graph.head_receiver(l, 0)
                    for x in QKV:
                        g_in[:, :, first:first + H] += grad[f"blocks.{l}.hook_{x}_input"]
                    if graph.has_mlp:
                        g_in[:, :, graph.mlp_receiver(l)] += grad[f"blocks.{l}.hook_mlp_in"]
                g_in[:, :, graph.logits] += grad[f"blocks.{L - 1}.hook_resid_post"]
            del grad
    if cost is not None:
        cost.add_forward(b * (m + 1))  # m interpolated runs and the corrupted run
        cost.add_backward(b * m)
    if clean is None:
        clean, metric_clean = _plain_run(model, task, sub.positive, sub, graph)
        if cost is not None:
            cost.add_forward(b)

    delta_z = corrupt["z"] - clean["z"]  # [b, L, p, H, d_head]
    node = torch.einsum("blphd,blphd->lh", delta_z, g_z).to("cpu", torch.float64) / m
    edge = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.float64)
    if g_in is not None:
        delta = _sender_diffs(model, graph, corrupt, clean)  # [b, p, S, d]
        valid = graph.valid
        for l in range(L):
            recv = graph.layer_receivers(l)
            s_end = int(valid[:, recv].any(1).nonzero().max()) + 1  # senders written before layer l reads
            block = torch.einsum("bpsd,bprd->sr", delta[:, :, :s_end], g_in[:, :, recv])  # [s_end, R_layer]
            edge[:s_end, recv] += block.to("cpu", torch.float64)
        to_logits = torch.einsum("bpsd,bpd->s", delta, g_in[:, :, graph.logits])  # [S]
        edge[:, graph.logits] += to_logits.to("cpu", torch.float64)
        edge = torch.where(valid, edge / m, torch.zeros((), dtype=torch.float64))
    return edge, node, metric_clean, metric_corrupt


def edge_attributions(model: HookedTransformer, task: Task, prompts: PromptSet,
                      graph: ComputeGraph | None = None, ig_steps: int = 1, alphas: Alphas = "left",
                      batch_size: int | None = None, cost: Cost | None = None, edges: bool = True
                      ) -> EdgeAttributions:
    """Signed EAP / EAP-IG attributions of every edge (and head) of `graph` (default: the model's), averaged
    over `prompts` in batches of `batch_size` (None: `edge_batch_size`); see the module docstring.

    ig_steps=1, alphas="right" is EAP; ig_steps=m, alphas="left" is MIB's EAP-IG-inputs. edges=False skips
    the receiver gradients (node scores only; `edge` is all zeros). Sums over prompts, so the batch size
    changes nothing but float rounding and memory. Passes are added to `cost`."""
    graph = graph or ComputeGraph.of(model)
    _check_graph(model, graph)
    points = interpolation_points(ig_steps, alphas)
    n = len(prompts)
    if n == 0:
        raise CircuitsError("no prompts to attribute over")
    if batch_size is None:
        batch_size = edge_batch_size(model, prompts.seq_len, graph)
    edge = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.float64)
    node = torch.zeros(graph.n_layers, graph.n_heads, dtype=torch.float64)
    metric_clean = metric_corrupt = 0.0
    for start in range(0, n, batch_size):
        sub = prompts.subset(list(range(start, min(n, start + batch_size))))
        e, v, mc, mx = _batch(model, task, sub, graph, points, edges, cost)
        edge += e
        node += v
        metric_clean += mc
        metric_corrupt += mx
    return EdgeAttributions(edge=(edge / n).float(), node=(node / n).float(), metric_clean=metric_clean / n,
                            metric_corrupt=metric_corrupt / n, alphas=points, graph=graph)
