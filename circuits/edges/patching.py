"""Patch any set of edges of the residual-stream graph, many graphs per forward, with weights that can carry
a gradient: the one primitive behind edge-level CPR/CMD, ACDC and learned edge masks.

Each edge s -> r has a keep weight k in [0, 1] (1: r reads s's current output; 0: r reads s's corrupted
output). In one forward on the clean prompts every receiver's input becomes

    input_r = residual stream as computed + sum_s (1 - k_sr) * (corrupt_s - current_s)

(auto-circuit's and MIB's form), where current_s is s's output in this very run (so patches upstream
propagate) and corrupt_s is s's output on the prompt's counterfactual ("counterfactual", MIB's default) or
its position-wise mean over the counterfactuals ("mean": the mean of what the sender wrote, which for a head
under a norm after attention is not the write of its mean z). Every keep = 1 is the clean model, every
keep = 0 the corrupted run (up to the attention output biases, which no head owns and which corruption does
not change). A head's input is its own copy of the residual stream feeding its q, k and v (TransformerLens's
split q/k/v inputs; grouped key/value heads ungrouped, so an edge into one query head leaves its group's
other heads alone); an MLP's input is hook_mlp_in; the logits read the final residual stream at the last
position. A sender's output is what it adds to the residual stream: the embeddings (blocks.0.hook_resid_pre),
a head's z @ W_O (no b_O), an MLP's hook_mlp_out. With a norm after attention (Gemma), a head's output is
z @ W_O times that norm's scale in the same run (exact in sum when b_O is zero, as in Gemma).

Speed: without a gradient, layers below the lowest receiver with a patched edge run as in the clean model,
so the forward starts there from the cached clean residual stream; senders below that start read cached
clean outputs. Many graphs run in one batch (rows = graph-major copies of the prompts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch

from circuits.ablation import Hooks, final_logits, z_hook
from circuits.edges.graph import ComputeGraph
from circuits.edges.writes import head_writes, mlp_inputs
from circuits.errors import CircuitsError
from tasks.base import PromptSet

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer

Intervention = Literal["counterfactual", "mean"]
INTERVENTIONS: tuple[Intervention, ...] = ("counterfactual", "mean")
ACTIVATION_BUDGET = 2 ** 26  # floats of the stored sender differences of one forward chunk


class EdgePatcher:
    """The clean and corrupted caches of one prompt set, and forwards with any edge weights."""

    def __init__(self, model: HookedTransformer, prompts: PromptSet, intervention: str = "counterfactual",
                 graph: ComputeGraph | None = None, budget: int = ACTIVATION_BUDGET):
        if intervention not in INTERVENTIONS:
            raise CircuitsError(f"unknown intervention '{intervention}' ({', '.join(INTERVENTIONS)})")
        cfg = model.cfg
        self.model, self.prompts, self.intervention = model, prompts, intervention
        self.graph = graph or ComputeGraph.of(model)
        self.shortformer = cfg.positional_embedding_type == "shortformer"
        self.w_o = [b.attn.W_O.detach() for b in model.blocks]  # [H, d_head, d_model] per layer
        clean = self._cache(prompts.positive, resid=True)
        corrupt = self._cache(prompts.negative, resid=False)
        if intervention == "mean":  # the mean of what each sender wrote (a head: its writes, not its z,
            #                          which differ under a norm after attention)
            writes = torch.stack([head_writes(model, l, corrupt["z"][:, l]).mean(0)
                                  for l in range(self.graph.n_layers)])  # [L, p, H, d_model]
            corrupt = {k: v.mean(0, keepdim=True) for k, v in corrupt.items() if k != "z"}
            corrupt["writes"] = writes[None]
        self.clean, self.corrupt = clean, corrupt
        p, d = prompts.seq_len, int(cfg.d_model)
        per_row = p * d * max(self.graph.n_senders, 3 * self.graph.n_heads)
        self.max_rows = max(1, budget // per_row)
        self.forward_rows = 0  # prompt rows run so far (cost accounting: rows / n = passes)

    # ---- caches ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def _cache(self, tokens: torch.Tensor, resid: bool) -> dict[str, torch.Tensor]:
        """embed [n, p, d], z [n, L, p, H, d_head], mlp [n, L, p, d] (MLP models), and with `resid` the
        residual stream entering each block and leaving the last: [n, L + 1, p, d]."""
        L = self.graph.n_layers
        store: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, hook: Any) -> None:
            store[hook.name] = x.detach()

        names = ["blocks.0.hook_resid_pre"] + [z_hook(l) for l in range(L)]
        if self.graph.has_mlp:
            names += [f"blocks.{l}.hook_mlp_out" for l in range(L)]
        if resid:
            names += [f"blocks.{l}.hook_resid_pre" for l in range(1, L)] + [f"blocks.{L - 1}.hook_resid_post"]
        out: dict[str, list[torch.Tensor]] = {}
        for start in range(0, tokens.shape[0], 64):
            store.clear()
            self.model.run_with_hooks(tokens[start:start + 64], stop_at_layer=L,
                                      fwd_hooks=[(name, save) for name in dict.fromkeys(names)])
            parts = {"embed": store["blocks.0.hook_resid_pre"],
                     "z": torch.stack([store[z_hook(l)] for l in range(L)], 1)}
            if self.graph.has_mlp:
                parts["mlp"] = torch.stack([store[f"blocks.{l}.hook_mlp_out"] for l in range(L)], 1)
            if resid:
                parts["resid"] = torch.stack([store[f"blocks.{l}.hook_resid_pre"] for l in range(L)]
                                             + [store[f"blocks.{L - 1}.hook_resid_post"]], 1)
            for k, v in parts.items():
                out.setdefault(k, []).append(v)
        return {k: torch.cat(v) for k, v in out.items()}

    def head_writes(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        return head_writes(self.model, layer, z)

    def corrupt_writes(self, layer: int, idx: torch.Tensor) -> torch.Tensor:
        """Each head's corrupted write at `layer` for prompts `idx`: [c, p, H, d_model] (mean: the mean
        write over the counterfactuals, the same row for every prompt)."""
        if "writes" in self.corrupt:
            return self._rows(self.corrupt["writes"], idx)[:, layer]
        return self.head_writes(layer, self.corrupt["z"][idx, layer])

    # ---- forwards ------------------------------------------------------------------------------------
    def logits(self, keep: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """keep [G, sender, receiver] (bool or float; may require grad) on prompts `idx` [c] ->
        last-position logits [G, c, vocab]. Differentiable in `keep`."""
        graph = self.graph
        if tuple(keep.shape[1:]) != (graph.n_senders, graph.n_receivers):
            raise CircuitsError(f"edge weights of shape {tuple(keep.shape)}; the graph is "
                                f"[G, {graph.n_senders}, {graph.n_receivers}]")
        dtype = self.clean["embed"].dtype
        removed = (1.0 - keep.to(dtype)) * graph.valid.to(dtype)  # [G, S, R]
        G, c = int(keep.shape[0]), int(idx.numel())
        L, H, p = graph.n_layers, graph.n_heads, self.prompts.seq_len
        start = self._start(removed, keep.requires_grad)
        # (sender slice, [G|1, s, c, p, d] contiguous), topological: senders first, so that each receiver's
        # weighted sum is one matrix product on a view (autograd keeps a reference, not a permuted copy per
        # receiver layer: with a gradient that copy was most of edge-prune's memory)
        blocks: list[tuple[slice, torch.Tensor]] = []

        def clean_diff(l: int) -> None:  # senders of layer l below `start`: cached outputs, shared by graphs
            diff = self.corrupt_writes(l, idx) - self.head_writes(l, self.clean["z"][idx, l])  # [c, p, H, d]
            if graph.has_mlp:
                d_mlp = self._rows(self.corrupt["mlp"], idx)[:, l] - self.clean["mlp"][idx, l]
                diff = torch.cat([diff, d_mlp[:, :, None]], 2)
            blocks.append((graph.layer_senders(l), diff.permute(2, 0, 1, 3).contiguous()[None]))

        d_embed = self._rows(self.corrupt["embed"], idx) - self.clean["embed"][idx]  # [c, p, d]
        blocks.append((slice(0, 1), d_embed[None, None]))
        for l in range(start):
            clean_diff(l)

        def delta(receivers: slice, last_only: bool = False) -> torch.Tensor:
            """Input change of `receivers`: [G, c, p', r, d] (p' = 1 with last_only)."""
            total: torch.Tensor | None = None
            r = receivers.stop - receivers.start
            for senders, diff in blocks:  # diff [G|1, s, c, p, d]
                w = removed[:, senders, receivers]  # [G, s, r]
                if not keep.requires_grad and not bool(w.any()):
                    continue
                d = diff[:, :, :, -1:].contiguous() if last_only else diff  # [G|1, s, c, p', d]
                g_d, n_s, _, p_d, d_model = d.shape
                flat = d.reshape(g_d, n_s, -1)  # [G|1, s, c p' d], a view
                if g_d == 1:  # shared by every graph: one [G r, s] @ [s, c p' d] product
                    part = (w.transpose(1, 2).reshape(G * r, n_s) @ flat[0]).reshape(G, r, c, p_d, d_model)
                else:
                    part = torch.bmm(w.transpose(1, 2), flat).reshape(G, r, c, p_d, d_model)
                part = part.permute(0, 2, 3, 1, 4)  # [G, c, p', r, d]
                total = part if total is None else total + part
            if total is None:
                total = torch.zeros(G, c, 1 if last_only else p, r, int(self.model.cfg.d_model), dtype=dtype)
            return total

        head_delta: dict[int, torch.Tensor] = {}

        def on_z(z: torch.Tensor, hook: Any) -> None:  # z: [G*c, p, H, d_head], the current run
            l = hook.layer()
            current = self.head_writes(l, z).reshape(G, c, p, H, -1)
            corrupt = self.corrupt_writes(l, idx)[None]
            senders = slice(graph.head_sender(l, 0), graph.head_sender(l, H - 1) + 1)
            diff = (corrupt - current).permute(0, 3, 1, 2, 4).contiguous()  # [G, H, c, p, d]
            blocks.append((senders, diff))

        def on_mlp_out(x: torch.Tensor, hook: Any) -> None:  # [G*c, p, d]
            l = hook.layer()
            corrupt = self._rows(self.corrupt["mlp"], idx)[:, l][None]
            blocks.append((slice(graph.mlp_sender(l), graph.mlp_sender(l) + 1),
                           (corrupt - x.reshape(G, c, p, -1))[:, None]))  # [G, 1, c, p, d]

        def on_head_input(x: torch.Tensor, hook: Any) -> torch.Tensor:  # [G*c, p, H, d]
            l = hook.layer()
            if l not in head_delta:
                rec = graph.layer_receivers(l)
                heads = slice(rec.start, rec.start + H)
                head_delta[l] = delta(heads).reshape(G * c, p, H, -1)
            return x + head_delta[l]

        def on_mlp_in(x: torch.Tensor, hook: Any) -> torch.Tensor:  # [G*c, p, d]
            r = graph.mlp_receiver(hook.layer())
            return x + delta(slice(r, r + 1)).reshape(G * c, p, -1)

        def on_final(x: torch.Tensor, hook: Any = None) -> torch.Tensor:  # [G*c, p, d]
            d_last = delta(slice(graph.logits, graph.logits + 1), last_only=True).reshape(G * c, 1, -1)
            return torch.cat([x[:, :-1], x[:, -1:] + d_last], 1)

        hooks: Hooks = []
        for l in range(start, L):
            hooks.append((z_hook(l), on_z))
            hooks += [(f"blocks.{l}.hook_{x}_input", on_head_input) for x in "qkv"]
            if graph.has_mlp:
                hooks += [(f"blocks.{l}.hook_mlp_out", on_mlp_out), (f"blocks.{l}.hook_mlp_in", on_mlp_in)]
        model = self.model
        self.forward_rows += G * c
        if start == L:  # only edges into the logits: no block runs
            resid = on_final(self.clean["resid"][idx, L].repeat(G, 1, 1))
            return final_logits(model, resid, start_at_layer=L).reshape(G, c, -1)
        hooks.append((f"blocks.{L - 1}.hook_resid_post", on_final))
        first = self.prompts.positive[idx].repeat(G, 1) if start == 0 else \
            self.clean["resid"][idx, start].repeat(G, 1, 1)
        from circuits.methods.base import split_qkv_inputs  # here: circuits.methods imports this module

        with split_qkv_inputs(model), mlp_inputs(model):
            logits = final_logits(model, first, hooks, start_at_layer=start)
        return logits.reshape(G, c, -1)

    def _rows(self, cached: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows `idx` of a corrupted cache (the mean intervention keeps one row for all prompts)."""
        if cached.shape[0] == 1:
            return cached.expand(len(self.prompts), *cached.shape[1:])[idx]
        return cached[idx]

    def _start(self, removed: torch.Tensor, grad: bool) -> int:
        """The first block that must run: the lowest layer with a patched input (0 with a gradient, or for a
        shortformer model: its blocks need the position embeddings TransformerLens passes from the start)."""
        graph = self.graph
        if grad or self.shortformer:
            return 0
        hit = removed.detach().abs().sum((0, 1))[:graph.logits] > 0  # [receivers without logits]
        layers = hit.reshape(graph.n_layers, graph.block).any(-1).nonzero()
        return int(layers[0]) if layers.numel() else graph.n_layers

    @torch.no_grad()
    def run(self, keep: torch.Tensor, reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
            ) -> torch.Tensor:
        """keep [G, S, R] -> reduce(logits [g, c, vocab], idx [c]) -> [g, c] per prompt, for every graph and
        prompt in memory-bounded chunks: [G, n]."""
        n = len(self.prompts)
        chunk = min(n, self.max_rows)
        per_pass = max(1, self.max_rows // chunk)
        rows = []
        for g0 in range(0, keep.shape[0], per_pass):
            part = keep[g0:g0 + per_pass]
            cols = [reduce(self.logits(part, idx), idx)
                    for idx in torch.arange(n).split(chunk)]
            rows.append(torch.cat(cols, 1))
        return torch.cat(rows)


def task_metric(task: Any, prompts: PromptSet) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A reducer for `EdgePatcher.run`: the task metric per graph and prompt."""

    def reduce(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # logits [g, c, vocab]
        g, c = logits.shape[:2]
        sub = prompts.subset(idx.tolist() * g)
        return task.metric(logits.reshape(g * c, -1), sub).reshape(g, c)

    return reduce
