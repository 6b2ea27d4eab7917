"""Circuit stability across SAE seeds: does the discrete-SAE method find the same circuit every time?

`find_circuit` is run once per seed (`FindConfig.sae_seed` when the config has it, else `seed`, which also
redraws the prompts: the payload says which). From the circuits and evaluations:

- inclusion_frequency [layer][head]: fraction of seeds whose circuit contains the head;
- jaccard: the matrix of pairwise Jaccard indices |A ∩ B| / |A ∪ B| (1 when both are empty), with the mean
  and std of its upper triangle;
- evaluation mean ± std over seeds (roc_auc, precision, recall, f1, edge_roc_auc) when there is ground truth;
- circuit size mean ± std, the heads in every circuit (core) and in any (union);
- the mean Spearman correlation of node scores between seed pairs (is the ranking stable, not just the cut?).

The block goes to `--json` under `stability` in the shape circuits/report.py draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from itertools import combinations
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from circuits.errors import CircuitsError
from circuits.progress import Progress

Head = tuple[int, int]
EVAL_KEYS = ("roc_auc", "precision", "recall", "f1", "edge_roc_auc")


def jaccard(a: frozenset[Head] | set[Head], b: frozenset[Head] | set[Head]) -> float:
    """|a ∩ b| / |a ∪ b|; two empty circuits agree (1.0)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def jaccard_matrix(circuits: Sequence[frozenset[Head]]) -> np.ndarray:
    """[n, n] pairwise Jaccard indices of the circuits."""
    n = len(circuits)
    m = np.ones((n, n))
    for i, j in combinations(range(n), 2):  # seed pairs, not heads
        m[i, j] = m[j, i] = jaccard(circuits[i], circuits[j])
    return m


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals))}


def circuit_stability(circuits: Sequence[frozenset[Head]], scores: Sequence[torch.Tensor],
                      evaluations: Sequence[dict[str, Any] | None], seeds: Sequence[int],
                      varied: str = "seed") -> dict[str, Any]:
    """The `stability` block from per-seed circuits, node scores [layer, head] and evaluations."""
    n = len(circuits)
    if n < 1 or not (n == len(scores) == len(evaluations) == len(seeds)):
        raise CircuitsError("stability needs one circuit, score grid and evaluation per seed")
    n_layers, n_heads = scores[0].shape
    member = torch.zeros(n, n_layers, n_heads)
    for i, circuit in enumerate(circuits):
        for layer, head in circuit:
            member[i, layer, head] = 1.0
    freq = member.mean(0)  # [layer, head]
    jac = jaccard_matrix(circuits)
    upper = jac[np.triu_indices(n, k=1)]
    flat = torch.stack([s.reshape(-1).double() for s in scores]).numpy()  # [seeds, heads]
    rhos = [spearmanr(flat[i], flat[j]).statistic for i, j in combinations(range(n), 2)
            if flat[i].std() > 0 and flat[j].std() > 0]
    sizes = [len(c) for c in circuits]
    has_eval = any(e is not None for e in evaluations)
    eval_mean = {k: _mean_std([(e or {}).get(k) for e in evaluations])["mean"] for k in EVAL_KEYS}
    eval_std = {k: _mean_std([(e or {}).get(k) for e in evaluations])["std"] for k in EVAL_KEYS}
    core = frozenset.intersection(*map(frozenset, circuits)) if circuits else frozenset()
    union = frozenset().union(*circuits)
    return {
        "n_seeds": n,
        "seeds": [int(s) for s in seeds],
        "varied": varied,
        "inclusion_frequency": freq.tolist(),
        "jaccard": {"matrix": jac.tolist(),
                    "mean": float(upper.mean()) if upper.size else 1.0,
                    "std": float(upper.std()) if upper.size else 0.0,
                    "min": float(upper.min()) if upper.size else 1.0},
        "score_spearman_mean": float(np.mean(rhos)) if rhos else None,
        "circuit_size": _mean_std(sizes),
        "core_heads": [list(h) for h in sorted(core)],
        "union_heads": [list(h) for h in sorted(union)],
        "evaluation_mean": eval_mean if has_eval else None,
        "evaluation_std": eval_std if has_eval else None,
        "per_seed": [{"seed": int(s), "circuit": [list(h) for h in sorted(c)],
                      **{k: (e or {}).get(k) for k in EVAL_KEYS}}
                     for s, c, e in zip(seeds, circuits, evaluations, strict=True)],
    }


def seed_field(config: Any) -> str:
    """The FindConfig field that sets the SAE seed: `sae_seed` where it exists, else `seed`."""
    names = {f.name for f in fields(config)}
    return "sae_seed" if "sae_seed" in names else "seed"


def find_with_seeds(task: Any, loaded: Any, config: Any, n_seeds: int, progress: Progress | None = None
                    ) -> tuple[Any, dict[str, Any]]:
    """Run `find_circuit` for n_seeds consecutive seeds from the config's own; returns (the config seed's
    result, the stability block)."""
    from circuits.discovery.pipeline import find_circuit

    if n_seeds < 1:
        raise CircuitsError(f"--seeds must be positive, got {n_seeds}")
    name = seed_field(config)
    base = getattr(config, name)
    base = int(base if base is not None else config.seed)
    seeds = [base + i for i in range(n_seeds)]
    results = []
    for i, seed in enumerate(seeds):
        if progress:
            progress("seeds", i, n_seeds)
        results.append(find_circuit(task, loaded, replace(config, **{name: seed}), progress=progress))
    if progress:
        progress("seeds", n_seeds, n_seeds)
    varied = "SAE initialisation only (sae_seed)" if name == "sae_seed" else \
        "seed (SAE initialisation and the prompt sample)"
    block = circuit_stability([r.circuit for r in results], [r.node_scores for r in results],
                              [r.evaluation for r in results], seeds, varied)
    block["seconds"] = float(sum(r.timings.get("total", 0.0) for r in results))
    return results[0], block
