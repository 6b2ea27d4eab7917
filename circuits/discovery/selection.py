"""Label-free rules that turn head scores into a circuit.

"otsu" (default): split the scores into two groups maximising the between-group variance
(Otsu's threshold on the 1-D score distribution); the upper group is the circuit. It needs no
labels and no size hint. "positive": every head with a score above zero (the paper's own rule
before tuning). "top:K": the K highest-scoring heads (a user-given size).
"""

from __future__ import annotations

import torch

from circuits.errors import CircuitsError

RULES_HELP = "otsu, positive, top:K"


def check_rule(rule: str, n_heads: int | None = None) -> None:
    """Raise a one-line CircuitsError for a rule that is not otsu, positive or top:K (0 < K <= n_heads)."""
    if rule in ("otsu", "positive"):
        return
    if not rule.startswith("top:"):
        raise CircuitsError(f"unknown selection rule '{rule}' (known: {RULES_HELP})")
    try:
        k = int(rule.split(":", 1)[1])
    except ValueError:
        raise CircuitsError(f"bad selection rule '{rule}' (use top:K with an integer K)") from None
    if k < 1 or (n_heads is not None and k > n_heads):
        bound = f" <= {n_heads} heads" if n_heads is not None else ""
        raise CircuitsError(f"selection top:K needs 0 < K{bound}, got {k}")


def otsu_threshold(scores: torch.Tensor) -> float:
    """Threshold between the two groups of a 1-D score set with maximal between-group variance."""
    values = torch.sort(scores.reshape(-1).double()).values
    n = values.numel()
    if n < 2 or float(values[0]) == float(values[-1]):
        return float("inf")  # no split: nothing stands out
    best, best_t = -1.0, float("inf")
    cumsum = torch.cumsum(values, 0)
    total = float(cumsum[-1])
    for i in range(1, n):
        if float(values[i]) == float(values[i - 1]):
            continue
        w0, w1 = i / n, (n - i) / n
        mu0 = float(cumsum[i - 1]) / i
        mu1 = (total - float(cumsum[i - 1])) / (n - i)
        between = w0 * w1 * (mu0 - mu1) ** 2
        if between > best:
            best, best_t = between, (float(values[i - 1]) + float(values[i])) / 2
    return best_t


def ranked_heads(scores: torch.Tensor) -> list[int]:
    """scores: [layer, head] -> flat head indices, highest score first, ties in head order (layer, then
    head), so every ranking of heads (top:K, MIB's kept sets, --verify's proposals) is deterministic."""
    flat = scores.detach().reshape(-1).double()
    return torch.argsort(flat, descending=True, stable=True).tolist()


def select_heads(node_scores: torch.Tensor, rule: str = "otsu") -> torch.Tensor:
    """node_scores: [layer, head] -> in_circuit: [layer, head] bool."""
    flat = node_scores.reshape(-1)
    if rule == "otsu":
        return node_scores > otsu_threshold(flat)
    if rule == "positive":
        return node_scores > 0
    check_rule(rule, flat.numel())
    k = int(rule.split(":", 1)[1])
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[ranked_heads(node_scores)[:k]] = True
    return mask.reshape(node_scores.shape)
