"""Feature absorption on synthetic hierarchical features (Chanin et al. 2024, arXiv 2409.14507).

On data where a parent feature is always active with its children (circuits.analysis.hierarchy), an SAE
under sparsity pressure can save a latent by folding the parent direction into each child's latent: the
"parent" latent then stays silent exactly when a child is active, although the parent is present.

Definitions (per SAE, pooled over parents; rows are held-out samples):
- parent latent of parent p: the latent whose decoder row has the highest cosine with p's direction;
- a row "with child": parent p and one of its children are active;
- absorbed: a row with child where the parent latent does not fire (activation <= 0) AND the other active
  latents together carry at least `min_carried` of the parent's coefficient along the parent direction,
  sum_{j != parent latent} f_j (W_dec[j] . u_p) >= min_carried * a_p (decoder in the caller's units);
- absorption rate = absorbed rows / rows with child. Also reported: the false-negative rate with a child
  (parent latent silent, carried or not), the parent latent's recall when the parent is alone (should stay
  high: absorption is specific to the children), and the mean carried fraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

from circuits.analysis.hierarchy import HierarchicalFeatures
from circuits.analysis.matching import normalise_rows
from circuits.analysis.seeds import ArchSetting, SeedRunConfig, train_across_seeds
from circuits.errors import CircuitsError
from circuits.progress import Progress
from circuits.sae import K_ARCHS, SAE
from circuits.sae.metrics import reconstruction_metrics
from circuits.stats import mean_std


@torch.no_grad()
def absorption_stats(sae: SAE, feats: HierarchicalFeatures, x: Tensor, coeff: Tensor, min_carried: float = 0.5
                     ) -> dict[str, Any]:
    """Absorption figures of every group of `sae` on rows x [n, d_in] with true coefficients [n, n_features].

    Returns per-group lists (one entry per group) and per-parent arrays [groups][parents].
    """
    g, P, C = sae.cfg.groups, feats.n_parents, feats.children_per_parent
    n = x.shape[0]
    latents = sae.encode(x.to(sae.W_enc.dtype).unsqueeze(0).expand(g, -1, -1)).double()  # [g, n, F]
    dec = sae.W_dec.double() / sae.input_scale.double()[:, None, None]  # [g, F, d] caller units
    u = normalise_rows(feats.directions[:P])  # [P, d]
    along = dec @ u.T  # [g, F, P]: each latent's decoder component along each parent direction
    cos = torch.einsum("gfd,pd->gfp", normalise_rows(dec.reshape(-1, dec.shape[-1])).reshape(dec.shape), u)
    parent_cos, parent_idx = cos.max(dim=1)  # [g, P]
    f_parent = latents.gather(-1, parent_idx[:, None, :].expand(g, n, P))  # [g, n, P]
    fires = f_parent > 0
    own = f_parent * along.gather(1, parent_idx[:, None, :]).squeeze(1)[:, None, :]  # [g, n, P]
    carried = latents @ along - own  # [g, n, P]: what the other latents put along u_p

    a_p = coeff[:, :P].double()  # [n, P]
    child_on = coeff[:, P:P + P * C].reshape(n, P, C).gt(0).any(-1)  # [n, P]
    with_child = (a_p > 0) & child_on
    alone = (a_p > 0) & ~child_on
    absorbed = with_child & ~fires & (carried >= min_carried * a_p)
    silent = with_child & ~fires

    n_with = with_child.double().sum()
    carried_frac = torch.where(with_child, carried / a_p.clamp_min(1e-12), torch.zeros_like(carried))
    return {
        "absorption_rate": (absorbed.double().sum((1, 2)) / n_with.clamp_min(1)).tolist(),
        "false_negative_with_child": (silent.double().sum((1, 2)) / n_with.clamp_min(1)).tolist(),
        "recall_parent_alone": ((alone & fires).double().sum((1, 2))
                                / alone.double().sum().clamp_min(1)).tolist(),
        "carried_fraction": (carried_frac.sum((1, 2)) / n_with.clamp_min(1)).tolist(),
        "parent_latent_cosine": parent_cos.mean(-1).tolist(),
        "per_parent_absorption": (absorbed.double().sum(1)
                                  / with_child.double().sum(0).clamp_min(1)).tolist(),  # [g, P]
        "rows_with_child": int(n_with),
        "rows_parent_alone": int(alone.sum()),
    }


def run_absorption_sweep(feats: HierarchicalFeatures, settings: Sequence[ArchSetting], run: SeedRunConfig,
                         n_train: int = 16384, n_eval: int = 8192, min_carried: float = 0.5,
                         progress: Progress | None = None) -> dict[str, Any]:
    """Train every setting (all seeds batched) on samples of `feats` and measure absorption on held-out
    rows. Settings with k=None use k = the data's expected L0, rounded."""
    if not settings:
        raise CircuitsError("no architecture / sparsity setting to measure")
    if n_train < 1 or n_eval < 1:
        raise CircuitsError("n_train and n_eval must be positive")
    x_train, _ = feats.sample(n_train, seed=run.data_seed * 2 + 1)
    x_eval, coeff_eval = feats.sample(n_eval, seed=run.data_seed * 2 + 2)
    rows = []
    for done, setting in enumerate(settings):
        if setting.arch in K_ARCHS and setting.k is None:
            setting = replace(setting, k=max(1, round(feats.mean_l0)))

        def cb(step: int, total: int, _m: dict[str, float], label: str = setting.label) -> None:
            if progress:
                progress(label, step, total)

        sae = train_across_seeds(x_train, setting, run, callback=cb)
        metrics = reconstruction_metrics(sae, x_eval.unsqueeze(0).expand(len(run.seeds), -1, -1))
        stats = absorption_stats(sae, feats, x_eval, coeff_eval, min_carried)
        per_seed: dict[str, Any] = {"seed": list(run.seeds), "l0": metrics["l0"], "fvu": metrics["fvu"],
                    **{k: v for k, v in stats.items() if isinstance(v, list)}}
        summary = {k: mean_std(v) for k, v in per_seed.items()
                   if k not in ("seed", "per_parent_absorption")}
        rows.append({"label": setting.label, "arch": setting.arch, "setting": asdict(setting),
                     "sparsity": _sparsity_value(setting), **summary, "per_seed": per_seed,
                     "rows_with_child": stats["rows_with_child"],
                     "rows_parent_alone": stats["rows_parent_alone"]})
        if progress:
            progress("settings", done + 1, len(settings))
    return {
        "data": {"n_parents": feats.n_parents, "children_per_parent": feats.children_per_parent,
                 "n_free": feats.n_free, "d_in": feats.d_in, "p_parent": feats.p_parent,
                 "p_child": feats.p_child, "p_free": feats.p_free, "mean_l0": feats.mean_l0,
                 "n_train": n_train, "n_eval": n_eval},
        "config": asdict(run), "min_carried": min_carried, "settings": rows,
        "trends": absorption_trends(rows),
        "definitions": {
            "absorption_rate": "rows with parent+child where the parent's latent (best decoder cosine) is "
                               f"silent and the other active latents carry >= {min_carried:g} of the "
                               "parent's coefficient along its direction, over rows with parent+child",
            "false_negative_with_child": "parent latent silent on rows with parent+child (carried or not)",
            "recall_parent_alone": "parent latent fires on rows where the parent is active without a child",
            "carried_fraction": "mean share of the parent coefficient carried by non-parent latents",
        },
        "theory": "absorption lowers the sparsity cost (one latent instead of two; L1 of "
                  "||a_p u_p + a_c u_c|| < a_p + a_c), so it should grow with sparsity pressure: larger L1 "
                  "coefficient for relu/gated, smaller k for topk/batchtopk, i.e. lower L0",
    }


def _sparsity_value(setting: ArchSetting) -> float:
    if setting.arch in K_ARCHS:
        return float(setting.k or 0)
    return float(setting.l0_coefficient if setting.arch == "jumprelu" else setting.l1_coefficient)


def absorption_trends(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per architecture with >= 2 settings: Spearman correlation of absorption rate with L0 (theory: < 0)."""
    out: dict[str, Any] = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = [r for r in rows if r["arch"] == arch]
        if len(mine) < 2:
            continue
        l0 = [r["l0"]["mean"] for r in mine]
        rate = [r["absorption_rate"]["mean"] for r in mine]
        rho = spearmanr(l0, rate).statistic if len(set(rate)) > 1 and len(set(l0)) > 1 else float("nan")
        out[arch] = {"spearman_l0_vs_absorption": None if np.isnan(rho) else float(rho),
                     "as_theory_predicts": None if np.isnan(rho) else bool(rho < 0),
                     "l0": l0, "absorption_rate": rate}
    return out
