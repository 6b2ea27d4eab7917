"""Cross-seed consistency of SAE features (Paulo & Belrose 2025, arXiv 2501.16615).

N SAEs that differ only in their initialisation seed are trained on the same activations in the same
order. They are trained as ONE batched program: group i of a `groups = N` SAE starts exactly as
`make_sae(cfg, seed=seeds[i])` would, and every group sees the same minibatches, so group i is the SAE
that seed i gives alone. Latents of every pair of seeds are then matched one-to-one (Hungarian algorithm
on cosine similarity, circuits.analysis.matching), separately for decoder rows and encoder columns, and
a latent counts as shared when its match reaches `threshold` (0.7 by default; REFERENCE §8 notes the cut
is a convention, so the whole similarity distribution is reported as well).

Sparsity is matched across architectures by measurement, never by the consistency score: a k-set
setting (circuits.sae.K_ARCHS: TopK, BatchTopK, Matryoshka) with `k=None` gets k = the rounded mean L0
that the first penalty-based setting (ReLU, Gated, JumpReLU) reached on held-out rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import Tensor

from circuits.analysis.matching import histogram, match_latents
from circuits.errors import CircuitsError
from circuits.progress import Progress
from circuits.sae import ARCHS, K_ARCHS, SAE, SAEConfig, make_sae, train_sae
from circuits.sae.metrics import reconstruction_metrics

WEIGHTS = ("decoder", "encoder")


@dataclass(frozen=True)
class ArchSetting:
    """One architecture at one sparsity. k=None (K_ARCHS): match the L0 of the first penalty
    setting of the run."""

    arch: str
    l1_coefficient: float = 1.0  # relu, gated
    k: int | None = None  # K_ARCHS: topk, batchtopk, matryoshka
    l0_coefficient: float = 0.2  # jumprelu

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise CircuitsError(f"unknown SAE architecture '{self.arch}' (known: {', '.join(ARCHS)})")
        if self.k is not None and self.k < 1:
            raise CircuitsError(f"k must be positive, got {self.k}")
        if self.l1_coefficient < 0 or self.l0_coefficient < 0:
            raise CircuitsError("sparsity coefficients must be >= 0")

    @property
    def label(self) -> str:
        if self.arch in K_ARCHS:
            return f"{self.arch} k={self.k if self.k is not None else 'matched'}"
        if self.arch == "jumprelu":
            return f"jumprelu l0={self.l0_coefficient:g}"
        return f"{self.arch} l1={self.l1_coefficient:g}"

    def sae_config(self, d_in: int, d_sae: int, groups: int) -> SAEConfig:
        extra: dict[str, Any] = {}
        if self.arch == "jumprelu":  # the bandwidth / threshold that the SAE core's synthetic tests use
            extra = {"bandwidth": 0.05, "threshold_init": 0.05}
        return SAEConfig(d_in=d_in, d_sae=d_sae, arch=self.arch, groups=groups,
                         l1_coefficient=self.l1_coefficient, k=min(self.k or 1, d_sae),
                         l0_coefficient=self.l0_coefficient, **extra)


@dataclass(frozen=True)
class SeedRunConfig:
    """Training and matching settings shared by every architecture of one consistency run."""

    d_sae: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 1000
    lr: float = 5e-3
    batch_size: int = 256
    data_seed: int = 0  # minibatch order: the same for every SAE seed
    normalize_inputs: bool = False  # scale inputs so that E‖x‖² = d_in (real LM activations need it)
    threshold: float = 0.7
    bins: int = 40

    def __post_init__(self) -> None:
        if len(self.seeds) < 1:
            raise CircuitsError("at least one seed is needed")
        if len(set(self.seeds)) != len(self.seeds):
            raise CircuitsError(f"seeds must be distinct, got {list(self.seeds)}")
        if self.d_sae < 1 or self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise CircuitsError("d_sae, steps and batch size must be positive and lr > 0")
        if not -1.0 <= self.threshold <= 1.0:
            raise CircuitsError(f"threshold must be a cosine in [-1, 1], got {self.threshold}")


def stacked_sae(cfg: SAEConfig, seeds: Sequence[int]) -> SAE:
    """A `groups = len(seeds)` SAE whose group i is initialised exactly as make_sae(cfg, seed=seeds[i])
    with groups=1 (so batching seeds changes nothing about what each seed learns)."""
    single = replace(cfg, groups=1)
    stacked = make_sae(replace(cfg, groups=len(seeds)), seed=seeds[0])
    state = stacked.state_dict()
    with torch.no_grad():
        for i, seed in enumerate(seeds):  # a loop over seeds, once, at initialisation
            for name, value in make_sae(single, seed=seed).state_dict().items():
                state[name][i] = value[0]
    stacked.load_state_dict(state)
    return stacked


def train_across_seeds(x: Tensor, setting: ArchSetting, run: SeedRunConfig,
                       callback: Callable[[int, int, dict[str, float]], None] | None = None) -> SAE:
    """Train one SAE per seed on x [n, d_in] (all seeds batched as groups, the same minibatch order)."""
    if x.dim() != 2:
        raise CircuitsError(f"activations must be [n, d_in], got {tuple(x.shape)}")
    if setting.arch in K_ARCHS and setting.k is None:
        raise CircuitsError(f"{setting.arch} needs k (or an L0 to match)")
    if setting.arch in K_ARCHS and setting.k is not None and setting.k > run.d_sae:
        raise CircuitsError(f"k={setting.k} exceeds d_sae={run.d_sae}")
    groups = len(run.seeds)
    sae = stacked_sae(setting.sae_config(int(x.shape[1]), run.d_sae, groups), run.seeds)
    xs = x.unsqueeze(0).expand(groups, -1, -1)  # [seeds, n, d]: a view, rows shared
    train_sae(sae, xs, steps=run.steps, lr=run.lr, batch_size=run.batch_size, seed=run.data_seed,
              callback=callback, lr_decay_steps=run.steps // 5, dead_after_rows=20_000,
              normalize_inputs=run.normalize_inputs,
              sparsity_warmup_steps=run.steps // 20 if setting.arch in ("relu", "gated", "jumprelu") else 0)
    sae.eval()
    return sae


def latent_vectors(sae: SAE, which: str) -> Tensor:
    """Each latent's weight vector per group: decoder rows or encoder columns -> [groups, d_sae, d_in]."""
    if which == "decoder":
        return sae.W_dec.detach()
    if which == "encoder":
        return sae.W_enc.detach().transpose(1, 2)
    raise ValueError(f"which must be decoder or encoder, not {which!r}")


def pairwise_consistency(vectors: Tensor, seeds: Sequence[int], threshold: float = 0.7, bins: int = 40,
                         alive: Tensor | None = None) -> dict[str, Any]:
    """Match every pair of seeds' latents, vectors [seeds, d_sae, d_in]; the loop is over seed pairs.

    Returns the shared fraction per pair and its mean/std, and the distribution of matched cosines
    pooled over pairs (histogram and quantiles). With `alive` [seeds, d_sae] (latents that fire on
    held-out data) also the shared fraction among matched pairs whose two latents are both alive, which
    separates "learned something else" from "learned nothing".
    """
    pairs, pooled = [], []
    for i, j in combinations(range(vectors.shape[0]), 2):
        m = match_latents(vectors[i], vectors[j])
        pooled.append(m.similarity)
        pair = {"seeds": [int(seeds[i]), int(seeds[j])], "shared_fraction": m.shared_fraction(threshold),
                "mean_similarity": float(m.similarity.mean())}
        if alive is not None:
            both = (alive[i][torch.as_tensor(m.rows)] & alive[j][torch.as_tensor(m.cols)]).numpy()
            pair["both_alive"] = int(both.sum())
            shared = m.similarity[both] >= threshold
            pair["shared_fraction_alive"] = float(shared.mean()) if both.any() else 0.0
        pairs.append(pair)
    sims = np.concatenate(pooled)
    fractions = np.array([p["shared_fraction"] for p in pairs])
    extra = {}
    if alive is not None:
        extra["shared_fraction_alive"] = float(np.mean([p["shared_fraction_alive"] for p in pairs]))
    return {
        "threshold": threshold,
        "shared_fraction": float(fractions.mean()),
        "shared_fraction_std": float(fractions.std()),
        **extra,
        "mean_similarity": float(sims.mean()),
        "quantiles": {str(q): float(np.quantile(sims, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
        "histogram": histogram(sims, bins=bins),
        "pairs": pairs,
    }


def truth_recovery(sae: SAE, directions: Tensor, threshold: float = 0.9) -> dict[str, list[float]]:
    """Against known feature directions [n_f, d]: per seed, the mean max cosine (MMCS) and the fraction of
    true features some latent recovers at cosine >= threshold."""
    from circuits.analysis.matching import cosine_matrix

    best = torch.stack([cosine_matrix(directions, w).amax(dim=1) for w in latent_vectors(sae, "decoder")])
    return {"mmcs": best.mean(-1).tolist(),
            "recovered_fraction": (best >= threshold).double().mean(-1).tolist()}


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std())}


def run_seed_consistency(x_train: Tensor, x_eval: Tensor, settings: Sequence[ArchSetting],
                         run: SeedRunConfig, directions: Tensor | None = None,
                         progress: Progress | None = None) -> dict[str, Any]:
    """Train `len(run.seeds)` SAEs per setting and measure how many latents they share.

    x_train, x_eval: [n, d_in] activations (training rows; held-out rows for L0 / FVU). `directions`: the
    true features [n_f, d_in] when the data is synthetic. Settings with k=None are matched to the L0 of
    the first penalty-based setting (those are trained first).
    """
    if not settings:
        raise CircuitsError("no architecture to compare")
    if len(run.seeds) < 2:
        raise CircuitsError(f"seed consistency needs at least 2 seeds, got {len(run.seeds)}")
    order = sorted(range(len(settings)), key=lambda i: settings[i].arch in K_ARCHS)
    if any(s.arch in K_ARCHS and s.k is None for s in settings) and all(s.arch in K_ARCHS for s in settings):
        raise CircuitsError("k 'matched' needs a penalty-based architecture (relu, gated, jumprelu) "
                            "in the run")
    results: list[dict[str, Any] | None] = [None] * len(settings)
    matched_l0: float | None = None
    for done, idx in enumerate(order):
        setting = settings[idx]
        matched = setting.arch in K_ARCHS and setting.k is None
        if matched:
            setting = replace(setting, k=max(1, min(run.d_sae, round(matched_l0 or 1))))

        def cb(step: int, total: int, _m: dict[str, float], label: str = setting.label) -> None:
            if progress:
                progress(label, step, total)

        sae = train_across_seeds(x_train, setting, run, callback=cb)
        metrics = reconstruction_metrics(sae, x_eval.unsqueeze(0).expand(len(run.seeds), -1, -1))
        if matched_l0 is None and setting.arch not in K_ARCHS:
            matched_l0 = float(np.mean(metrics["l0"]))
        entry: dict[str, Any] = {
            "label": setting.label, "setting": asdict(setting),
            "k_matched_to_l0": matched_l0 if matched else None,
            "per_seed": {"seed": list(run.seeds), **{m: metrics[m] for m in ("l0", "fvu", "dead_fraction")}},
            "l0": _mean_std(metrics["l0"]), "fvu": _mean_std(metrics["fvu"]),
            "dead_fraction": _mean_std(metrics["dead_fraction"]),
        }
        with torch.no_grad():
            alive = (sae.encode(x_eval.unsqueeze(0).expand(len(run.seeds), -1, -1)) > 0).any(1)  # [seeds, F]
        for which in WEIGHTS:
            entry[which] = pairwise_consistency(latent_vectors(sae, which), run.seeds, run.threshold,
                                                run.bins, alive=alive)
        if directions is not None:
            rec = truth_recovery(sae, directions)
            entry["per_seed"].update(rec)
            entry["truth"] = {k: _mean_std(v) for k, v in rec.items()}
        results[idx] = entry
        if progress:
            progress("architectures", done + 1, len(settings))
    return {"config": asdict(run), "d_in": int(x_train.shape[1]), "n_train": int(x_train.shape[0]),
            "n_eval": int(x_eval.shape[0]), "architectures": results,
            "definitions": {
                "shared_fraction": f"fraction of latents whose Hungarian match in the other seed's SAE has "
                                   f"cosine >= {run.threshold:g}; mean (and std) over seed pairs",
                "shared_fraction_alive": "the same, over matched pairs whose two latents both fire on "
                                         "held-out rows",
                "decoder": "cosine of decoder rows W_dec[i]",
                "encoder": "cosine of encoder columns W_enc[:, i]",
                "l0": "mean active latents per held-out row", "fvu": "fraction of variance unexplained",
                "k matched": "K_ARCHS (TopK, BatchTopK, Matryoshka): k = rounded mean L0 of the first "
                             "penalty-based setting",
            }}
