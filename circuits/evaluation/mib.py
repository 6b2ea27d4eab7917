"""MIB's CPR and CMD (Mueller et al., ICML 2025): how good is a ranking of heads, with no ground truth.

For each fraction p of the size grid, keep the k(p) = round(p * n_heads_total) top-ranked heads and ablate
every other head (`circuits.ablation`; "counterfactual": positive[i]'s heads take negative[i]'s values,
MIB's default "patching"; or "mean": the negatives' position-wise mean). With m the task metric averaged
over the positive prompts, faithfulness(p) = (m(top k(p)) - m(nothing kept)) / (m(full) - m(nothing kept)).
- CPR = trapezoid area under faithfulness(p) over linear p in [0.001, 1] (higher is better; the largest
  possible with faithfulness <= 1 everywhere is 0.999);
- CMD = trapezoid area of |1 - faithfulness(p)| (lower is better: 0 is a ranking whose every prefix
  behaves like the whole model).
Rankings are by score, highest first, ties broken by head order (layer, then head) so they are
deterministic. Node level only (whole heads). The floor is a random ranking: the mean over a few uniform
permutations. Every ranking's grid, the random draws, the full and the empty model run through one
batched `metric_under_masks` call per intervention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from circuits.ablation import AblationMethod, metric_under_masks, reference_z
from circuits.discovery.selection import ranked_heads
from circuits.errors import CircuitsError
from circuits.evaluation.bootstrap import CI_NOTE, LEVEL, N_RESAMPLES, area_intervals, resampled_faithfulness
from tasks.base import PromptSet, Task

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer

SIZE_GRID: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
INTERVENTIONS: tuple[AblationMethod, ...] = ("counterfactual", "mean")
RANDOM = "random"
DEFINITION = ("keep the round(p * heads) top-ranked heads for p in the MIB size grid, ablate the rest at "
              "hook_z; faithfulness(p) = (m(kept) - m(none kept)) / (m(full) - m(none kept)); CPR = "
              "trapezoid area under faithfulness over linear p (higher is better), CMD = trapezoid area of "
              "|1 - faithfulness| (lower is better); random = mean over uniform random rankings")


@dataclass
class AreaScores:
    """One ranking's faithfulness curve under one intervention, and its areas."""

    intervention: str
    faithfulness: list[float]  # per grid point
    cpr: float
    cmd: float
    mean_faithfulness: float
    draws: list[dict[str, float]] = field(default_factory=list)  # the random floor's per-draw areas

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"intervention": self.intervention, "cpr": self.cpr, "cmd": self.cmd,
                               "mean_faithfulness": self.mean_faithfulness, "faithfulness": self.faithfulness}
        if self.draws:
            out["draws"] = self.draws
            out["cpr_std"] = float(np.std([d["cpr"] for d in self.draws]))
            out["cmd_std"] = float(np.std([d["cmd"] for d in self.draws]))
        return out


def grid_sizes(n_total: int, grid: tuple[float, ...] = SIZE_GRID) -> list[int]:
    """Heads kept at each grid fraction: round(p * n_total), half up."""
    return [min(n_total, int(p * n_total + 0.5)) for p in grid]


def top_masks(scores: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """scores: [layer, head] -> keep masks [len(sizes), layer, head] of the top-k heads for each k."""
    order = ranked_heads(scores)  # ties: head order
    masks = torch.zeros(len(sizes), len(order), dtype=torch.bool)
    for j, k in enumerate(sizes):
        masks[j, order[:k]] = True
    return masks.reshape(len(sizes), *scores.shape)


def areas(faithfulness: list[float], grid: tuple[float, ...] = SIZE_GRID) -> tuple[float, float, float]:
    """(CPR, CMD, mean) of a faithfulness curve over the grid (trapezoid rule, linear p)."""
    f = np.asarray(faithfulness, dtype=float)
    p = np.asarray(grid, dtype=float)
    return (float(np.trapezoid(f, p)), float(np.trapezoid(np.abs(1.0 - f), p)), float(f.mean()))


def mib_scores(model: HookedTransformer, task: Task, prompts: PromptSet, rankings: dict[str, torch.Tensor],
               interventions: tuple[str, ...] = INTERVENTIONS, grid: tuple[float, ...] = SIZE_GRID,
               n_random: int = 3, seed: int = 0, max_rows: int = 512, n_resamples: int = N_RESAMPLES,
               groups: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """CPR / CMD of every ranking (name -> scores [layer, head]) and of the random floor, per intervention;
    each ranking's "cpr_ci" / "cmd_ci" from `n_resamples` bootstrap resamples of the prompts (0: none), and
    under "groups" those of each group's mean (group -> ranking names, e.g. a method's seeds).

    Returns {"grid", "sizes", "interventions": {intervention: {"full", "empty", "rankings": {name:
    AreaScores dict}}}}; the random floor is the ranking named "random".
    """
    if RANDOM in rankings:
        raise CircuitsError(f"'{RANDOM}' is the name of the random floor; rename that ranking")
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    for name, scores in rankings.items():
        if tuple(scores.shape) != (L, H):
            raise CircuitsError(f"ranking '{name}' has shape {tuple(scores.shape)}, the model has "
                                f"{L}x{H} heads")
    sizes = grid_sizes(L * H, grid)
    gen = torch.Generator().manual_seed(seed)
    draws = [torch.rand(L, H, generator=gen) for _ in range(n_random)]
    names = list(rankings)
    keep = torch.cat([torch.ones(1, L, H, dtype=torch.bool), torch.zeros(1, L, H, dtype=torch.bool)]
                     + [top_masks(rankings[name], sizes) for name in names]
                     + [top_masks(d, sizes) for d in draws])  # [2 + (rankings + draws) * grid, L, H]
    out: dict[str, Any] = {"grid": list(grid), "sizes": sizes, "n_prompts": len(prompts),
                           "n_random": n_random, "definition": DEFINITION, "interventions": {},
                           "bootstrap": {"n_resamples": n_resamples, "level": LEVEL, "note": CI_NOTE}}
    g = len(grid)
    for intervention in interventions:
        reference = reference_z(model, prompts, intervention, seed)  # type: ignore[arg-type]
        per_prompt = metric_under_masks(model, task, prompts, keep, reference, max_rows=max_rows).double()
        metric = per_prompt.mean(1)  # [masks]; per_prompt: [masks, n]
        boot = resampled_faithfulness(per_prompt, 0, 1, n_resamples) if n_resamples else None
        full, empty = float(metric[0]), float(metric[1])
        denom = full - empty
        faith = ((metric[2:] - empty) / denom if abs(denom) > 1e-12
                 else torch.full_like(metric[2:], float("nan"))).reshape(-1, g)  # [rankings + draws, grid]
        scored: dict[str, Any] = {}
        for i, name in enumerate(names):
            curve = faith[i].tolist()
            scored[name] = AreaScores(intervention, curve, *areas(curve, grid)).to_dict()
            if boot is not None:
                rows = list(range(2 + i * g, 2 + (i + 1) * g))
                scored[name].update(area_intervals(boot, grid, [(rows, rows)]))
        if n_random:
            rand = faith[len(names):]
            per_draw = [dict(zip(("cpr", "cmd", "mean_faithfulness"), areas(row.tolist(), grid), strict=True))
                        for row in rand]
            mean_curve = rand.mean(0).tolist()
            scored[RANDOM] = AreaScores(intervention, mean_curve,
                                        float(np.mean([d["cpr"] for d in per_draw])),
                                        float(np.mean([d["cmd"] for d in per_draw])),
                                        float(np.mean([d["mean_faithfulness"] for d in per_draw])),
                                        draws=per_draw).to_dict()
        out["interventions"][intervention] = {"full": full, "empty": empty, "rankings": scored}
        if boot is not None and groups:
            at = {name: list(range(2 + i * g, 2 + (i + 1) * g)) for i, name in enumerate(names)}
            out["interventions"][intervention]["groups"] = {
                group: area_intervals(boot, grid, [(at[n], at[n]) for n in members])
                for group, members in groups.items()}
    return out


def random_floor(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The random floor of a `mib_scores` (or edge-level) result: {intervention: {cpr, cmd, cpr_std,
    cmd_std}}."""
    return {i: {k: res["rankings"][RANDOM][k] for k in ("cpr", "cmd", "cpr_std", "cmd_std")}
            for i, res in result["interventions"].items() if RANDOM in res["rankings"]}


def scores_by_ranking(result: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """A `mib_scores` (or edge-level) result per ranking: {name: {cpr_<intervention>, cmd_<intervention>,
    faithfulness_<intervention>}}."""
    out: dict[str, dict[str, Any]] = {name: {} for name in names}
    for intervention, res in result["interventions"].items():
        for name in names:
            r = res["rankings"][name]
            out[name].update({f"cpr_{intervention}": r["cpr"], f"cmd_{intervention}": r["cmd"],
                              f"faithfulness_{intervention}": r["faithfulness"]})
    return out

