"""Node and edge scores from discrete codes: what occurs on positives and never on negatives.

Two statistics, both label-free with respect to any ground truth:
- "count": number of distinct codes (or code pairs) seen on positives and never on negatives
  (the paper's score);
- "mass": fraction of positive prompts whose code (pair) never occurs on negatives. It does not
  grow with the number of rare codes a noisy head emits, only with how much of the positive
  distribution is unreachable from the negatives;
- "pair": positives and negatives are minimal pairs (row i of each comes from one prompt and its
  corruption): the fraction of pairs whose code differs between the two (an edge: both codes differ).

Edges use sorted integer keys (pair index, code_a, code_b) and set membership, so memory is
O(prompts x pairs), never a dense heads^2 x codes^2 array.
"""

from __future__ import annotations

import torch

from circuits.discovery.config import SCORE_KINDS, ScoreKind
from circuits.errors import CircuitsError


def node_scores(codes_pos: torch.Tensor, codes_neg: torch.Tensor, n_codes: int,
                kind: ScoreKind = "count") -> torch.Tensor:
    """codes_pos: [n_pos, head], codes_neg: [n_neg, head] (long, < n_codes) -> scores: [head].

    kind "pair": row i of codes_pos and of codes_neg come from one prompt and its corruption (n_pos == n_neg).
    """
    if kind == "pair":
        return _differs(codes_pos, codes_neg).float().mean(0)
    count_pos = _code_counts(codes_pos, n_codes)  # [head, code]
    count_neg = _code_counts(codes_neg, n_codes)
    unique = (count_pos > 0) & (count_neg == 0)  # [head, code]
    if kind == "count":
        return unique.sum(1).float()
    if kind == "mass":
        return (count_pos * unique).sum(1).float() / max(codes_pos.shape[0], 1)
    raise CircuitsError(f"unknown score kind '{kind}' (known: {', '.join(SCORE_KINDS)})")


def _differs(codes_pos: torch.Tensor, codes_neg: torch.Tensor) -> torch.Tensor:
    """[n, head] x [n, head] -> [n, head] bool: the pair's codes differ (rows are aligned pairs)."""
    if codes_pos.shape != codes_neg.shape:
        raise CircuitsError(f"score 'pair' needs aligned prompt/corruption rows, got {codes_pos.shape[0]} "
                            f"positive and {codes_neg.shape[0]} negative rows")
    return codes_pos != codes_neg


def _code_counts(codes: torch.Tensor, n_codes: int) -> torch.Tensor:
    """codes: [n, head] -> counts: [head, code]."""
    n, n_heads = codes.shape
    flat = (torch.arange(n_heads).expand(n, n_heads) * n_codes + codes).reshape(-1)
    return torch.bincount(flat, minlength=n_heads * n_codes).reshape(n_heads, n_codes)


def layered_pairs(n_layers: int, n_heads: int) -> torch.Tensor:
    """All (sender, receiver) flat head indices with sender's layer < receiver's: [pairs, 2]."""
    layer = torch.arange(n_layers * n_heads) // n_heads
    sender, receiver = torch.meshgrid(torch.arange(n_layers * n_heads), torch.arange(n_layers * n_heads),
                                      indexing="ij")
    keep = layer[sender] < layer[receiver]
    return torch.stack([sender[keep], receiver[keep]], dim=1)


EDGE_KEY_BUDGET = 2**20  # elements (int64) per [prompts, chunk] key tensor in edge_scores: 8 MiB


def edge_chunk(n_rows: int, budget: int = EDGE_KEY_BUDGET) -> int:
    """Pairs per edge_scores chunk so that an [n_rows, chunk] key tensor stays within `budget` elements."""
    return max(1, min(4096, budget // max(n_rows, 1)))


def edge_scores(codes_pos: torch.Tensor, codes_neg: torch.Tensor, n_codes: int, pairs: torch.Tensor,
                kind: ScoreKind = "count", chunk: int | None = None) -> torch.Tensor:
    """Score of each head pair from joint codes. pairs: [pairs, 2] flat head indices -> [pairs].

    Pairs are processed in chunks (columns of the [prompts, pairs] key tensors); chunk=None sizes them
    so each key tensor holds at most EDGE_KEY_BUDGET elements, so peak memory does not grow with the
    number of prompts. Chunking never changes the scores (pairs are independent).
    """
    if kind not in SCORE_KINDS:
        raise CircuitsError(f"unknown score kind '{kind}' (known: {', '.join(SCORE_KINDS)})")
    if chunk is None:
        chunk = edge_chunk(max(codes_pos.shape[0], codes_neg.shape[0]))
    out = torch.empty(pairs.shape[0])
    if kind == "pair":
        differs = _differs(codes_pos, codes_neg)  # [n, head]
        for start in range(0, pairs.shape[0], chunk):
            sub = pairs[start:start + chunk]  # [p, 2]
            both = differs[:, sub[:, 0]] & differs[:, sub[:, 1]]  # [n, p]
            out[start:start + sub.shape[0]] = both.float().mean(0)
        return out
    for start in range(0, pairs.shape[0], chunk):
        sub = pairs[start:start + chunk]  # [p, 2]
        offset = torch.arange(sub.shape[0], dtype=torch.long) * (n_codes * n_codes)  # [p]
        keys_pos = offset + codes_pos[:, sub[:, 0]] * n_codes + codes_pos[:, sub[:, 1]]  # [n_pos, p]
        keys_neg = offset + codes_neg[:, sub[:, 0]] * n_codes + codes_neg[:, sub[:, 1]]  # [n_neg, p]
        if kind == "mass":
            seen_on_neg = torch.isin(keys_pos, keys_neg.unique())  # [n_pos, p]
            out[start:start + sub.shape[0]] = (~seen_on_neg).float().mean(0)
        else:
            unique_keys = _positive_only(keys_pos, keys_neg)
            pair_of_key = torch.div(unique_keys, n_codes * n_codes, rounding_mode="floor")
            out[start:start + sub.shape[0]] = torch.bincount(pair_of_key, minlength=sub.shape[0]).float()
    return out


def _positive_only(keys_pos: torch.Tensor, keys_neg: torch.Tensor) -> torch.Tensor:
    """The distinct keys of keys_pos that are not in keys_neg (any shapes, non-negative long), sorted.

    One sort: each key is tagged with its side (2·key, or 2·key + 1 on negatives); after `unique`, a
    positive key is negative-free when its successor is not its own negative tag. (unique of the negatives
    plus isin plus unique of the survivors took three sorts of the same size; this is the edge stage's cost.)
    """
    tagged = torch.cat([keys_pos.reshape(-1) * 2, keys_neg.reshape(-1) * 2 + 1])
    if tagged.numel() and int(tagged.max()) < 2**31:
        tagged = tagged.to(torch.int32)  # sorts ~1.5x faster than int64
    tagged = tagged.unique()  # sorted
    on_pos = tagged % 2 == 0
    has_neg = torch.zeros_like(on_pos)
    has_neg[:-1] = tagged[1:] == tagged[:-1] + 1
    return (tagged[on_pos & ~has_neg] // 2).long()
