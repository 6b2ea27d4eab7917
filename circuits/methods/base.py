"""What every baseline returns, and how its cost is counted, so methods compare like for like.

Cost unit: one *pass* is the model run over the n scoring prompts (one side: positives or
negatives). A batched forward over k copies of the prompts counts k passes; a forward over a
subset counts its fraction. Backward passes are counted the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from circuits._compat import HookedTransformer
from circuits.discovery.selection import select_heads
from tasks.base import Head

DEFAULT_SELECTION = "otsu"
SELECTION_NOTE = ("every method's circuit is chosen by the same label-free rule on its own node scores "
                  "(default: Otsu's threshold, the upper of the two groups that maximise between-group "
                  "variance), so the comparison is of the scores, not of the rules")


@dataclass
class Cost:
    """Forward / backward passes (in units of one pass over the n scoring prompts) and wall clock."""

    n_prompts: int
    forward: float = 0.0
    backward: float = 0.0

    def add_forward(self, rows: int) -> None:
        self.forward += rows / self.n_prompts

    def add_backward(self, rows: int) -> None:
        self.backward += rows / self.n_prompts


@dataclass
class BaselineResult:
    """Per-head scores (higher = more important) and, where the method has them, edge scores."""

    method: str
    node_scores: torch.Tensor  # [layer, head]
    edge_scores: dict[tuple[Head, Head], float] | None
    selected: frozenset[Head]
    n_forward: float
    n_backward: float
    seconds: float
    stochastic: bool  # whether the seed changes the scores (prompts fixed)
    details: dict[str, Any] = field(default_factory=dict)
    # every edge of the residual-stream graph (`circuits.edges.graph.ComputeGraph`), for methods that score
    # them: [sender, receiver], higher = more important, and the signed scores (MIB's CPR ranks by sign).
    # Too big for result JSON: `to_json` leaves them out.
    graph_edge_scores: torch.Tensor | None = None
    signed_graph_edge_scores: torch.Tensor | None = None

    def to_json(self) -> dict[str, Any]:
        n_layers, n_heads = self.node_scores.shape
        return {
            "method": self.method,
            "node_scores": self.node_scores.tolist(),
            "selected": [list(h) for h in sorted(self.selected)],
            "n_edges_scored": None if self.edge_scores is None else len(self.edge_scores),
            "forward_passes": self.n_forward,
            "backward_passes": self.n_backward,
            "seconds": self.seconds,
            "stochastic": self.stochastic,
            "n_layers": n_layers,
            "n_heads": n_heads,
            "details": self.details,
        }


def selected_heads(node_scores: torch.Tensor, rule: str = DEFAULT_SELECTION) -> frozenset[Head]:
    """The label-free selection rule shared by every method (see SELECTION_NOTE)."""
    mask = select_heads(node_scores, rule)
    return frozenset((int(l), int(h)) for l, h in mask.nonzero().tolist())


class Timer:
    """Wall-clock seconds of a block: `with Timer() as t: ...; t.seconds`."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


@contextmanager
def ungrouped_kv(model: HookedTransformer) -> Iterator[None]:
    """Give every query head its own key/value projection for the duration (grouped-query attention).

    Why: with grouped-query attention (`cfg.n_key_value_heads` < `n_heads`) several query heads share one
    key/value head, but the head-level graph has one node per query head, so an edge into head v must change
    v's keys and values only. Ungrouped (TransformerLens's `ungroup_grouped_query_attention`: W_K, W_V
    repeated per query head, as `repeat_interleave` does inside the grouped forward) the model computes the
    same function with hook_k / hook_v / hook_{k,v}_input of shape [..., n_heads, ...]. No-op otherwise.
    """
    before = bool(model.cfg.ungroup_grouped_query_attention)
    if model.cfg.n_key_value_heads is not None:
        model.set_ungroup_grouped_query_attention(True)
    try:
        yield
    finally:
        model.set_ungroup_grouped_query_attention(before)


@contextmanager
def split_qkv_inputs(model: HookedTransformer) -> Iterator[None]:
    """Give every head its own copy of its q/k/v input (hook_{q,k,v}_input: [batch, pos, n_heads, d_model])
    for the duration; grouped key/value heads are ungrouped (`ungrouped_kv`) so k and v inputs are per query
    head too."""
    before = bool(model.cfg.use_split_qkv_input)
    model.set_use_split_qkv_input(True)
    try:
        with ungrouped_kv(model):
            yield
    finally:
        model.set_use_split_qkv_input(before)


def w_o_flat(model: HookedTransformer) -> torch.Tensor:
    """W_O of every head: [layer*head, d_head, d_model]."""
    cfg = model.cfg
    return torch.stack([b.attn.W_O for b in model.blocks]).reshape(cfg.n_layers * cfg.n_heads, cfg.d_head,
                                                                   cfg.d_model)


def layer_pairs_dict(matrix: torch.Tensor, n_layers: int, n_heads: int) -> dict[tuple[Head, Head], float]:
    """matrix: [sender head, receiver head] (flat indices) -> {(sender, receiver): score} for every
    pair whose sender layer is below the receiver layer."""
    out: dict[tuple[Head, Head], float] = {}
    values = matrix.tolist()
    for u in range(n_layers * n_heads):
        lu, hu = divmod(u, n_heads)
        for v in range((lu + 1) * n_heads, n_layers * n_heads):
            out[((lu, hu), divmod(v, n_heads))] = float(values[u][v])
    return out
