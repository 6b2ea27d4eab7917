"""Percentile bootstrap intervals for the evaluation figures, so a table says how far a point estimate
could move with other prompts (CPR / CMD) or another draw of the ground truth's heads (node AUC).

- CPR / CMD (node and edge level): the prompts are resampled with replacement; for each resample the
  task metric of every mask (full model, empty model, every grid point) is re-averaged over the drawn
  prompts, faithfulness recomputed from that resample's own full and empty values, and the areas taken
  again. The masks are not rerun: the per-prompt metrics of the one evaluation pass are reused.
- Node AUC: a method's ranking is one run on its prompts, so prompts cannot be resampled without
  rerunning it; the interval is over heads instead (circuit heads and other heads resampled separately,
  the stratified bootstrap of a ROC AUC), for the mean AUC over a method's runs.
Fixed seed, `N_RESAMPLES` resamples, `LEVEL` two-sided percentile interval.
"""

from __future__ import annotations

import numpy as np
import torch

N_RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
CI_NOTE = (f"95 % percentile bootstrap, {N_RESAMPLES} resamples, seed {SEED}: CPR / CMD over prompts "
           f"(per-prompt metrics re-averaged, full and empty included); node AUC over heads (circuit and "
           f"other heads resampled separately), for the mean over a method's runs")


def prompt_weights(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> torch.Tensor:
    """[resamples, n]: how often each prompt is drawn in each resample, divided by n (rows sum to 1)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_resamples, n), generator=gen)  # [resamples, n]
    counts = torch.zeros(n_resamples, n, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    return counts / n


def interval(values: np.ndarray | torch.Tensor, level: float = LEVEL) -> list[float]:
    """[low, high] percentile interval of the finite values (NaN, NaN when there are none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]


def resampled_faithfulness(per_prompt: torch.Tensor, full_row: int, empty_row: int,
                           n_resamples: int = N_RESAMPLES, seed: int = SEED) -> torch.Tensor:
    """per_prompt: [masks, n] task metric per mask and prompt -> faithfulness [resamples, masks], each
    resample normalised by its own full and empty means (NaN where they coincide)."""
    w = prompt_weights(per_prompt.shape[1], n_resamples, seed)  # [resamples, n]
    m = w @ per_prompt.double().T  # [resamples, masks]
    denom = m[:, full_row:full_row + 1] - m[:, empty_row:empty_row + 1]  # [resamples, 1]
    denom = torch.where(denom.abs() > 1e-12, denom, torch.full_like(denom, float("nan")))
    return (m - m[:, empty_row:empty_row + 1]) / denom


def area_intervals(faith: torch.Tensor, grid: tuple[float, ...], curves: list[tuple[list[int], list[int]]],
                   level: float = LEVEL) -> dict[str, list[float]]:
    """faith: [resamples, masks] from `resampled_faithfulness`; curves: (CPR rows, CMD rows) of each
    ranking (they differ for a signed CPR ranking) -> {"cpr_ci", "cmd_ci"}: intervals of the trapezoid
    areas averaged over the curves (one curve: its own; a method's runs: their mean), every curve read
    from the same resamples."""
    p = np.asarray(grid, dtype=float)
    cpr = np.mean([np.trapezoid(faith[:, c].numpy(), p, axis=1) for c, _ in curves], axis=0)  # [resamples]
    cmd = np.mean([np.trapezoid(np.abs(1.0 - faith[:, d].numpy()), p, axis=1) for _, d in curves], axis=0)
    return {"cpr_ci": interval(cpr, level), "cmd_ci": interval(cmd, level)}


def auc_interval(scores: list[torch.Tensor], labels: np.ndarray, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED, level: float = LEVEL) -> list[float] | None:
    """Interval of the mean node ROC AUC over runs (`scores`: each [layer, head]; labels: 1 for circuit
    heads, flat) under a stratified bootstrap of the heads; None without both kinds of head."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if pos.size == 0 or neg.size == 0 or not scores:
        return None
    rng = np.random.default_rng(seed)
    wp = _count_weights(rng, pos.size, n_resamples)  # [resamples, positives], rows sum to 1
    wn = _count_weights(rng, neg.size, n_resamples)
    total = np.zeros(n_resamples)
    for s in scores:
        flat = s.reshape(-1).double().numpy()
        diff = flat[pos][:, None] - flat[neg][None, :]  # [positives, negatives]
        wins = (diff > 0) + 0.5 * (diff == 0)  # Mann-Whitney: a tie is half a correct order
        total += np.einsum("bi,ij,bj->b", wp, wins, wn)
    return interval(total / len(scores), level)


def _count_weights(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    idx = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1.0)
    return counts / n
