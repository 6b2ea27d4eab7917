"""The computational graph edge-level circuits live on, laid out as MIB's circuit track lays it out.

Nodes: `input` (the embeddings entering block 0), every attention head `a{l}.h{h}`, every MLP `m{l}` (models
that have them) and `logits` (the final residual stream, read before the final norm). Every node that writes
the residual stream is a *sender*; every node that reads it is a *receiver*. An edge s -> r exists when s
writes the residual stream before r reads it: input -> everything; a head of layer l -> heads and MLPs of
later layers, the MLP of its own layer (unless attention and MLP run in parallel) and logits; an MLP of
layer l -> later heads and MLPs and logits.

Head inputs are **not split into q, k and v**: one edge into a head feeds its query, key and value inputs
alike (MIB splits them, so its edge counts are about 3x ours; say so when quoting numbers). With
grouped-query attention a receiver is a query head (its own copy of the shared key/value projection).

Indices. Senders: 0 = input, then per layer l its heads (l * B + 1 + h) and its MLP (l * B + 1 + H), with
B = H + 1 (MLP) or H (attention only). Receivers: per layer l its heads (l * B + h) and its MLP (l * B + H),
then logits (L * B). So a component's sender index is its receiver index + 1, and both orders are
topological. Edge tensors are dense [sender, receiver]; `valid` says which entries are edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from tasks.base import Head

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer

INPUT, LOGITS = "input", "logits"


@dataclass(frozen=True)
class ComputeGraph:
    """Senders, receivers and edges of one model's residual-stream graph (see the module docstring)."""

    n_layers: int
    n_heads: int
    has_mlp: bool
    parallel_attn_mlp: bool = False

    @classmethod
    def of(cls, model: HookedTransformer) -> ComputeGraph:
        cfg = model.cfg
        return cls(int(cfg.n_layers), int(cfg.n_heads), not bool(cfg.attn_only), bool(cfg.parallel_attn_mlp))

    @property
    def block(self) -> int:
        """Components per layer: H heads (+ 1 MLP)."""
        return self.n_heads + int(self.has_mlp)

    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * self.block

    @property
    def n_receivers(self) -> int:
        return self.n_layers * self.block + 1

    @property
    def logits(self) -> int:
        """Receiver index of the logits node."""
        return self.n_layers * self.block

    # ---- index maps ---------------------------------------------------------------------------------
    def head_sender(self, layer: int, head: int) -> int:
        return layer * self.block + 1 + head

    def head_receiver(self, layer: int, head: int) -> int:
        return layer * self.block + head

    def mlp_sender(self, layer: int) -> int:
        return layer * self.block + 1 + self.n_heads

    def mlp_receiver(self, layer: int) -> int:
        return layer * self.block + self.n_heads

    def layer_receivers(self, layer: int) -> slice:
        """Receiver indices of layer `layer`'s heads (and MLP)."""
        return slice(layer * self.block, (layer + 1) * self.block)

    def layer_senders(self, layer: int) -> slice:
        """Sender indices of layer `layer`'s heads (and MLP)."""
        return slice(layer * self.block + 1, (layer + 1) * self.block + 1)

    # ---- names --------------------------------------------------------------------------------------
    def _component(self, offset: int) -> str:
        layer, within = divmod(offset, self.block)
        return f"m{layer}" if within == self.n_heads else f"a{layer}.h{within}"

    def sender_name(self, s: int) -> str:
        return INPUT if s == 0 else self._component(s - 1)

    def receiver_name(self, r: int) -> str:
        return LOGITS if r == self.logits else self._component(r)

    @cached_property
    def sender_names(self) -> list[str]:
        return [self.sender_name(s) for s in range(self.n_senders)]

    @cached_property
    def receiver_names(self) -> list[str]:
        return [self.receiver_name(r) for r in range(self.n_receivers)]

    @cached_property
    def node_names(self) -> list[str]:
        """Every node once, in topological order: input, components, logits."""
        return [INPUT, *self.receiver_names]

    # ---- edges --------------------------------------------------------------------------------------
    def _order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Topological stage of each sender and receiver: input -1; heads of layer l 2l; its MLP 2l + 1
        (2l when parallel: it reads the same residual stream as the heads); logits 2L."""
        L, H, B = self.n_layers, self.n_heads, self.block
        comp = torch.arange(L * B)
        layer, within = comp // B, comp % B
        is_mlp = within == H
        stage = 2 * layer + (is_mlp & (not self.parallel_attn_mlp)).long()
        senders = torch.cat([torch.tensor([-1]), stage])
        receivers = torch.cat([stage, torch.tensor([2 * L])])
        return senders, receivers

    @cached_property
    def valid(self) -> torch.Tensor:
        """[sender, receiver] bool: which entries are edges."""
        s, r = self._order()
        return s[:, None] < r[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    @cached_property
    def edge_index(self) -> torch.Tensor:
        """[n_edges, 2] (sender, receiver) of every edge, row-major: the order of edge score vectors."""
        return self.valid.nonzero()

    def edge_names(self) -> list[str]:
        """'sender->receiver' for every edge, in `edge_index` order."""
        return [f"{self.sender_names[s]}->{self.receiver_names[r]}" for s, r in self.edge_index.tolist()]

    def to_vector(self, dense: torch.Tensor) -> torch.Tensor:
        """[..., sender, receiver] -> [..., n_edges] in `edge_index` order."""
        return dense[..., self.valid]

    def to_dense(self, vector: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """[..., n_edges] -> [..., sender, receiver] with `fill` where there is no edge."""
        out = torch.full((*vector.shape[:-1], self.n_senders, self.n_receivers), fill, dtype=vector.dtype)
        out[..., self.valid] = vector
        return out

    # ---- heads --------------------------------------------------------------------------------------
    @cached_property
    def head_senders(self) -> torch.Tensor:
        """[layer, head] sender index of each head."""
        return torch.tensor([[self.head_sender(l, h) for h in range(self.n_heads)]
                             for l in range(self.n_layers)])

    @cached_property
    def head_receivers(self) -> torch.Tensor:
        """[layer, head] receiver index of each head."""
        return self.head_senders - 1

    def head_pairs(self, dense: torch.Tensor) -> dict[tuple[Head, Head], float]:
        """[sender, receiver] scores -> {(head, head): score} over head -> head edges (the toolkit's older
        head-level edge dictionaries: graph exports, edge AUC against head-level ground truths)."""
        out: dict[tuple[Head, Head], float] = {}
        L, H = self.n_layers, self.n_heads
        values = dense.tolist()
        for lu in range(L):
            for hu in range(H):
                s = self.head_sender(lu, hu)
                for lv in range(lu + 1, L):
                    for hv in range(H):
                        out[((lu, hu), (lv, hv))] = float(values[s][self.head_receiver(lv, hv)])
        return out

    def describe(self) -> dict[str, Any]:
        """What the graph is, for result files."""
        return {"n_layers": self.n_layers, "n_heads": self.n_heads, "mlp_nodes": self.has_mlp,
                "parallel_attn_mlp": self.parallel_attn_mlp, "n_senders": self.n_senders,
                "n_receivers": self.n_receivers, "n_edges": self.n_edges, "qkv": "unsplit",
                "nodes": "input, a{layer}.h{head}, m{layer}, logits (MIB's names)"}


def node_derived_edge_scores(graph: ComputeGraph, node_scores: torch.Tensor) -> torch.Tensor:
    """Edge scores for a method that scores heads only: [layer, head] -> [sender, receiver].

    An edge scores the smaller of its two ends' scores, where input, logits and MLPs (which a head-level
    method does not score) count as the largest head score, so an edge's rank is set by its heads. Ties (many)
    break by edge order in the evaluation. Invalid entries are 0."""
    top = float(node_scores.max()) if node_scores.numel() else 0.0
    sender = torch.full((graph.n_senders,), top)
    receiver = torch.full((graph.n_receivers,), top)
    flat = node_scores.float().reshape(-1)
    sender[graph.head_senders.reshape(-1)] = flat
    receiver[graph.head_receivers.reshape(-1)] = flat
    dense = torch.minimum(sender[:, None], receiver[None, :])
    return torch.where(graph.valid, dense, torch.zeros(()))
