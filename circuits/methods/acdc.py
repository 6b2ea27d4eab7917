"""ACDC (Conmy et al. 2023) on a head-level graph, with a threshold sweep for per-head scores.

Graph: an input node (the token + position embeddings), every attention head, and an output node (the
final residual stream). Edges: input -> every head and the output, head u -> head v when u's layer is
below v's, every head -> output. An edge u -> v carries u's output into v's q, k and v inputs (one
edge covers all three: a coarser graph than ACDC's q/k/v-split one; say so when quoting numbers).
Removing an edge means v reads u's *corrupted* output (from negative[i], or the mean over negatives)
instead of u's output in the current run: v's q, k and v are recomputed from its own input
LN(resid_pre + sum of removed senders' (corrupted - current) outputs), and the output node's input is
the final residual stream plus the same sum. MLPs, where a
model has them, are not graph nodes: they stay in the residual stream and read its actual value.
With grouped-query attention, a receiver is a query head: its keys and values are recomputed from its own
input through the key/value head it reads (W_K, W_V repeated per query head, `ungrouped_kv`), so removing
an edge into v leaves the other query heads of v's group untouched.

Pruning, as in ACDC: receivers in reverse topological order (output, then heads from the last layer
down); for each, its incoming edges (latest sender first); an edge is removed for good when removing
it raises the distance to the clean model by less than tau. Distance: KL(clean || patched) of the
next-token distribution at the last position ("kl", ACDC's recommended choice), or
|mean clean metric - mean patched metric| ("metric"; the absolute value, so a removal that raises
the metric is not free). A receiver none of whose outgoing edges survived is dead: its incoming
edges are removed without testing.

Sweep: all thresholds tau_j = D * 2**j (D = distance with every edge removed) run side by side, one
batched forward per edge test over the distinct graphs of the sweep. A head's score is the largest tau
at which it still has an outgoing edge (0 if never); an edge's score is the largest tau it survives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuits._compat import HookedTransformer
from circuits.ablation import Hooks, z_hook
from circuits.errors import CircuitsError
from circuits.methods.base import (
    DEFAULT_SELECTION,
    BaselineResult,
    Cost,
    Timer,
    selected_heads,
    ungrouped_kv,
)
from tasks.base import Head, PromptSet, Task

Distance = Literal["kl", "metric"]
Corruption = Literal["paired", "mean"]
DEFAULT_EXPONENTS = tuple(range(-10, 2))  # tau_j = D * 2**j, from D/1024 to 2D
ACTIVATION_BUDGET = 2 ** 24  # floats of one [rows, pos, head, d_model] tensor per forward chunk


@dataclass
class EdgeGraph:
    """Index maps of the head-level graph: senders = [input, heads...], receivers = [heads..., output]."""

    n_layers: int
    n_heads: int

    @property
    def n_nodes(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def output(self) -> int:
        return self.n_nodes  # receiver index of the output node

    def valid(self) -> torch.Tensor:
        """[sender, receiver] bool: which edges exist (sender 0 = input, sender 1+u = head u)."""
        n, H = self.n_nodes, self.n_heads
        layer = torch.arange(n) // H
        valid = torch.zeros(n + 1, n + 1, dtype=torch.bool)
        valid[0, :] = True
        valid[1:, :n] = layer[:, None] < layer[None, :]
        valid[1:, n] = True
        return valid


class EdgePatcher:
    """Runs the model on the positives with any set of removed edges, for many graphs in one batch."""

    def __init__(self, model: HookedTransformer, task: Task, prompts: PromptSet,
                 distance: Distance = "kl", corruption: Corruption = "paired"):
        self.model, self.task, self.prompts, self.distance = model, task, prompts, distance
        cfg = model.cfg
        if cfg.use_qk_norm or cfg.parallel_attn_mlp:
            raise CircuitsError("the ACDC baseline supports standard attention blocks only (no q/k norm or "
                                "parallel attention+MLP)")
        self.graph = EdgeGraph(cfg.n_layers, cfg.n_heads)
        self.w_o = torch.stack([b.attn.W_O for b in model.blocks]).detach()  # [L, H, d_head, d_model]
        self.cost = Cost(len(prompts))
        clean = self._run_cache(prompts.positive)
        corrupt = self._run_cache(prompts.negative)
        self.cost.add_forward(2 * len(prompts))
        if corruption == "mean":
            corrupt = {k: v.mean(0, keepdim=True).expand_as(v) for k, v in corrupt.items()}
        elif corruption != "paired":
            raise ValueError(f"unknown corruption '{corruption}' (paired, mean)")
        self.d_embed = corrupt["resid"][:, 0] - clean["resid"][:, 0]  # [n, pos, d_model]
        self.z_corrupt = corrupt["z"]  # [n, L, pos, H, d_head]
        self.z_clean = clean["z"]
        self.resid_clean = clean["resid"]  # [n, L + 1, pos, d_model]: each block's input, the last output
        self.pos_embed = clean.get("pos")  # [n, pos, d_model] for shortformer models, else None
        attn = [b.attn for b in model.blocks]
        # W_K, W_V (and biases) per query head: grouped key/value heads come repeated (see `ungrouped_kv`)
        self.w_qkv = [(torch.cat([a.W_Q, a.W_K, a.W_V], -1).detach(),  # [H, d_model, 3 * d_head]
                       torch.cat([a.b_Q, a.b_K, a.b_V], -1).detach()) for a in attn]  # [H, 3 * d_head]
        # shortformer: the position embedding's share of q and k, per layer: [2][pos, H, d_head]
        pos0 = None if self.pos_embed is None else self.pos_embed[0]  # [pos, d_model]
        self.pos_qk = None if pos0 is None else [
            [torch.einsum("pm,hmd->phd", pos0, w).detach() for w in (a.W_Q, a.W_K)] for a in attn]
        self.clean_logprobs = torch.log_softmax(clean["logits"], -1)  # [n, vocab]
        self.clean_metric = float(task.metric(clean["logits"], prompts).mean())
        self.max_rows = max(1, ACTIVATION_BUDGET // (prompts.seq_len * cfg.n_heads * cfg.d_model))

    @torch.no_grad()
    def _run_cache(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        L = self.model.cfg.n_layers
        store: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, hook) -> None:
            store[hook.name] = x

        resid = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
        hooks: Hooks = [(name, save) for name in resid] + [(z_hook(l), save) for l in range(L)]
        if self.model.cfg.positional_embedding_type == "shortformer":
            hooks.append(("hook_pos_embed", save))
        logits = self.model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]
        out = {"resid": torch.stack([store[name] for name in resid], 1), "logits": logits,
               "z": torch.stack([store[z_hook(l)] for l in range(L)], 1)}
        if "hook_pos_embed" in store:
            out["pos"] = store["hook_pos_embed"].expand(tokens.shape[0], -1, -1)
        return out

    @torch.no_grad()
    def distances(self, removed: torch.Tensor) -> torch.Tensor:
        """removed: [G, sender, receiver] bool -> [G] distance of each patched graph from the clean model."""
        n = len(self.prompts)
        G = removed.shape[0]
        chunk = min(n, self.max_rows)
        graphs_per_pass = max(1, self.max_rows // chunk)
        total = torch.zeros(G, dtype=torch.float64)
        with ungrouped_kv(self.model):  # hook_k / hook_v per query head, like the graph's nodes
            for g0 in range(0, G, graphs_per_pass):
                masks = removed[g0:g0 + graphs_per_pass]
                for p0 in range(0, n, chunk):
                    idx = torch.arange(p0, min(n, p0 + chunk))
                    total[g0:g0 + masks.shape[0]] += self._patched_sum(masks, idx)
                    self.cost.add_forward(masks.shape[0] * idx.numel())
        if self.distance == "kl":
            return (total / n).float()
        return (self.clean_metric - total / n).abs().float()

    def _patched_sum(self, removed: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Sum over prompts `idx` of the KL (or of the task metric), per graph: [G].

        Layers below the lowest receiver with a removed edge run exactly as in the clean model, so the
        forward starts there from the cached clean residual stream (ACDC's reverse topological order
        makes this the common case: the last layers are pruned first). A receiver head's q, k and v are
        recomputed from its own input LN(resid_pre + delta), one normalisation and one projection per
        layer (the same input feeds q, k and v); the output node's delta is added to the final residual
        stream at the last position (the only one the distance reads).
        """
        model, graph = self.model, self.graph
        L, H = graph.n_layers, graph.n_heads
        G, c = removed.shape[0], idx.numel()
        mask = removed.to(self.w_o.dtype)  # [G, sender, receiver]
        hit_mask = removed[:, :, :graph.n_nodes].any(0).any(0).reshape(L, H)  # [L, H]: some input removed
        hit_heads = [row.nonzero().flatten() for row in hit_mask]
        head_hit = hit_mask.any(-1)  # [L]
        start = int(head_hit.nonzero()[0]) if bool(head_hit.any()) else L
        z_corrupt, z_clean = self.z_corrupt[idx], self.z_clean[idx]  # [c, L, pos, H, d_head]
        seq, d_model, d_head = self.prompts.seq_len, model.cfg.d_model, model.cfg.d_head
        saved: dict[int, torch.Tensor] = {}  # z of the layers run, [G*c, pos, H, d_head]
        resid_pre: dict[int, torch.Tensor] = {}  # input of the patched layers, [G*c, pos, d_model]
        qkv: dict[int, torch.Tensor] = {}  # recomputed q|k|v of the patched layers, [G*c, pos, H, 3*d_head]

        def delta_for(receivers: torch.Tensor, below: int, last_only: bool = False) -> torch.Tensor:
            """Input change of the receivers (receiver indices: heads, or the output), summed over removed
            senders: [G, V, c * p, d_model] (p = pos, or 1 with last_only)."""
            sel = slice(seq - 1, seq) if last_only else slice(None)
            m_in = mask[:, 0, receivers]  # [G, V]
            d_embed = self.d_embed[idx][:, sel].reshape(-1, d_model)  # [c * p, d_model]
            out = m_in[:, :, None, None] * d_embed  # [G, V, c * p, d_model]
            for sl in range(below):  # sender layer: its heads' corrupted minus current output
                m_heads = mask[:, 1 + sl * H:1 + (sl + 1) * H, receivers]  # [G, H, V]
                if not bool(m_heads.any()):
                    continue
                if sl < start:  # still the clean run: the same for every graph
                    dz = (z_corrupt[:, sl, sel] - z_clean[:, sl, sel])[None]  # [1, c, p, H, d_head]
                else:
                    dz = z_corrupt[None, :, sl, sel] - saved[sl].reshape(G, c, seq, H, d_head)[:, :, sel]
                dz = dz.permute(0, 3, 1, 2, 4).reshape(dz.shape[0], H, -1, d_head)  # [G|1, H, c * p, d_head]
                d_result = torch.matmul(dz, self.w_o[sl])  # [G|1, H, c * p, d_model]
                d_result = d_result.expand(G, -1, -1, -1).reshape(G, H, -1)
                # receiver v gets the sum of sender h's change over the removed edges h -> v
                out = torch.baddbmm(out.reshape(G, out.shape[1], -1), m_heads.transpose(1, 2), d_result)
                out = out.reshape(G, -1, dz.shape[2], d_model)
            return out

        def keep_z(z: torch.Tensor, hook) -> None:
            saved[hook.layer()] = z

        def patch(x: torch.Tensor, hook) -> torch.Tensor:  # x: [G*c, pos, H, d_head] (hook_q, _k or _v)
            layer = hook.layer()
            hit = hit_heads[layer]  # [V] heads of this layer with a removed input edge in some graph
            V = hit.numel()
            if layer not in qkv:
                delta = delta_for(layer * H + hit, layer)  # [G, V, c * pos, d_model]
                delta = delta.reshape(G, V, c, seq, d_model).permute(0, 2, 3, 1, 4).reshape(G * c, seq, V, -1)
                normed = _layer_norm(model.blocks[layer].ln1, resid_pre[layer][:, :, None] + delta)
                w, b = self.w_qkv[layer]  # [H, d_model, 3 * d_head], [H, 3 * d_head]
                qkv[layer] = torch.einsum("rpvm,vme->rpve", normed, w[hit]) + b[hit]
            part = "qkv".index(hook.name[-1])
            new = qkv[layer][..., part * d_head:(part + 1) * d_head]  # [G*c, pos, V, d_head]
            if self.pos_qk is not None and part < 2:  # shortformer: positions enter q and k after the norm
                new = new + self.pos_qk[layer][part][:, hit]
            if V == H:
                return new
            out = x.clone()
            out[:, :, hit] = new
            return out

        def keep_resid(x: torch.Tensor, hook) -> None:
            resid_pre[hook.layer()] = x

        def add_output(x: torch.Tensor) -> torch.Tensor:  # x: [G*c, pos, d_model]
            delta = delta_for(torch.tensor([graph.output]), L, last_only=True)  # [G, 1, c, d_model]
            x = x.clone()
            x[:, -1] += delta.reshape(G * c, d_model)
            return x

        start_resid = self.resid_clean[idx, start].repeat(G, 1, 1)  # [G*c, pos, d_model]
        hooks: list = []
        if start == L:  # only output edges removed: no block needs to run
            start_resid = add_output(start_resid)
        else:
            hooks += [(z_hook(l), keep_z) for l in range(start, L)]
            for layer in range(start, L):
                if bool(head_hit[layer]):
                    hooks.append((f"blocks.{layer}.hook_resid_pre", keep_resid))
                    hooks += [(f"blocks.{layer}.attn.hook_{x}", patch) for x in "qkv"]
            hooks.append((f"blocks.{L - 1}.hook_resid_post", lambda x, hook: add_output(x)))
        kwargs: dict[str, Any] = {} if self.pos_embed is None else {
            "shortformer_pos_embed": self.pos_embed[:1].expand(G * c, -1, -1)}
        logits = model.run_with_hooks(start_resid, start_at_layer=start, fwd_hooks=hooks, **kwargs)[:, -1]
        if self.distance == "kl":
            ref = self.clean_logprobs[idx].repeat(G, 1)
            kl = (ref.exp() * (ref - torch.log_softmax(logits, -1))).sum(-1)  # [G*c]
            return kl.reshape(G, c).sum(1).double()
        sub = self.prompts.subset(idx.tolist() * G)
        return self.task.metric(logits, sub).reshape(G, c).sum(1).double()


def _layer_norm(ln: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's ln1 on [..., d_model]; the fused kernel for plain LayerNorm (with or without weights)."""
    kind = type(ln).__name__
    params: Any = ln  # TransformerLens's LayerNorm: w, b (tensors) and eps (float)
    if kind == "LayerNorm":
        return torch.nn.functional.layer_norm(x, x.shape[-1:], params.w, params.b, params.eps)
    if kind == "LayerNormPre":
        return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=params.eps)
    return ln(x)  # RMSNorm variants, Identity: TransformerLens's own module handles any leading shape


def acdc_sweep(patcher: EdgePatcher, taus: torch.Tensor) -> torch.Tensor:
    """Run ACDC at every tau of `taus` [T] side by side -> kept edges [T, sender, receiver] bool."""
    graph = patcher.graph
    valid = graph.valid()
    T, n = taus.numel(), graph.n_nodes
    removed = (~valid).expand(T, -1, -1).clone()  # [T, sender, receiver]
    current = patcher.distances(removed[:1]).expand(T).clone()  # [T]
    receivers = [graph.output] + list(range(n - 1, -1, -1))
    for r in receivers:
        if r == graph.output:
            alive = torch.ones(T, dtype=torch.bool)
        else:
            alive = (~removed[:, 1 + r, :]).any(-1)  # [T]: some outgoing edge of head r survives
        senders = valid[:, r].nonzero().flatten().flip(0).tolist()  # latest head first, input last
        for s in senders:
            removed[~alive, s, r] = True  # a dead receiver's inputs do not matter
            live = alive.nonzero().flatten()
            if live.numel() == 0:
                continue
            trial = removed[live].clone()
            trial[:, s, r] = True
            unique, inverse = torch.unique(trial, dim=0, return_inverse=True)
            new = patcher.distances(unique)[inverse]  # [live]
            accept = (new - current[live]) < taus[live]
            removed[live[accept], s, r] = True
            current[live[accept]] = new[accept]
    return ~removed & valid


def acdc(model: HookedTransformer, task: Task, prompts: PromptSet, distance: Distance = "kl",
         corruption: Corruption = "paired", exponents: tuple[int, ...] = DEFAULT_EXPONENTS,
         selection: str = DEFAULT_SELECTION) -> BaselineResult:
    """ACDC threshold sweep -> per-head scores (largest surviving tau) and edge scores."""
    with Timer() as timer:
        patcher = EdgePatcher(model, task, prompts, distance, corruption)
        graph = patcher.graph
        n_nodes = graph.n_nodes + 1
        d_all = float(patcher.distances(torch.ones(1, n_nodes, n_nodes, dtype=torch.bool))[0])
        scale = abs(d_all) if abs(d_all) > 1e-9 else 1.0
        taus = scale * 2.0 ** torch.tensor(sorted(exponents), dtype=torch.float64)  # [T] ascending
        kept = acdc_sweep(patcher, taus.float())  # [T, sender, receiver]
        node_scores, edge_scores = _sweep_scores(kept, taus, graph)
    circuits = [int(k[1:, :].any(-1).sum()) for k in kept]  # heads per tau
    return BaselineResult(
        method="acdc", node_scores=node_scores, edge_scores=edge_scores,
        selected=selected_heads(node_scores, selection), n_forward=patcher.cost.forward, n_backward=0.0,
        seconds=timer.seconds, stochastic=False,
        details={"distance": distance, "corruption": corruption, "distance_all_removed": d_all,
                 "taus": taus.tolist(), "heads_per_tau": circuits,
                 "edges_per_tau": [int(k.sum()) for k in kept],
                 "graph": "input, heads, output; one edge per head pair covers q, k and v",
                 "score": "largest tau of the sweep at which the head keeps an outgoing edge (0: never)"})


def _sweep_scores(kept: torch.Tensor, taus: torch.Tensor, graph: EdgeGraph
                  ) -> tuple[torch.Tensor, dict[tuple[Head, Head], float]]:
    """kept: [T, sender, receiver], taus ascending [T] -> node scores [layer, head] and head->head
    edge scores (the largest tau at which each survives, 0 if never)."""
    weights = taus.float()[:, None, None] * kept.float()  # [T, S, R]
    edge_tau = weights.max(0).values  # [S, R]
    alive = kept[:, 1:, :].any(-1).float() * taus.float()[:, None]  # [T, heads]
    node = alive.max(0).values.reshape(graph.n_layers, graph.n_heads)
    H, n = graph.n_heads, graph.n_nodes
    values = edge_tau.tolist()
    edges: dict[tuple[Head, Head], float] = {}
    for u in range(n):
        for v in range((u // H + 1) * H, n):
            edges[(divmod(u, H), divmod(v, H))] = float(values[1 + u][v])
    return node, edges
