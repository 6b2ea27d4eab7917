"""Scoring variants tried while looking for why the discrete-SAE method falls short on tiny-ioi.

Codes come from the default pipeline (shared SAE, hook_result, mean over positions); only the
statistic that turns codes into a head score changes. Run on the selection task (ioi) only, so
nothing here is tuned on greaterthan or docstring. Node ROC AUC, mean ± std over SAE seeds.

    python benchmarks/scoring_variants.py --seeds 5 --out benchmarks/results/scoring_variants.json

Variants: "count" (the paper: distinct positive-only codes), "mass" (share of positive prompts whose
code never occurs on negatives), "count-null" / "z-null" (count minus its mean under random pos/neg
relabelling, and that difference over the null's std + 1: removes the bias toward heads with many
distinct codes), "mi" (plug-in mutual information between a head's code and the prompt's label,
add-½ smoothing).

A second table varies the discretisation: the argmax latent alone (the paper's code) or the argmax latent
crossed with a magnitude bin (2 or 4 bins at the quantiles of the training rows' top activation: a
label-free cut), for mean and last position, shared SAE on hook_result and per-head SAEs on hook_z.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from _report import emit  # noqa: E402  (benchmarks/ is on sys.path when a script runs)
from sklearn.metrics import roc_auc_score  # noqa: E402

from circuits.discovery.activations import head_activations  # noqa: E402
from circuits.discovery.codes import (  # noqa: E402
    encode_codes,
    fit_saes,
    n_codes,  # noqa: E402
)
from circuits.discovery.config import FindConfig  # noqa: E402
from circuits.discovery.pipeline import split_prompts  # noqa: E402
from circuits.discovery.scoring import _code_counts, node_scores  # noqa: E402
from circuits.models import load_model  # noqa: E402
from circuits.stats import mean_std  # noqa: E402
from tasks import get_task  # noqa: E402


def null_corrected(codes_pos: torch.Tensor, codes_neg: torch.Tensor, c: int, perms: int = 20,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """codes_*: [n, head] -> (count - null mean, (count - null mean) / (null std + 1)): [head] each."""
    observed = node_scores(codes_pos, codes_neg, c, "count")
    pooled = torch.cat([codes_pos, codes_neg])
    n = codes_pos.shape[0]
    gen = torch.Generator().manual_seed(seed)
    null = []
    for _ in range(perms):
        idx = torch.randperm(pooled.shape[0], generator=gen)
        null.append(node_scores(pooled[idx[:n]], pooled[idx[n:]], c, "count"))
    null_t = torch.stack(null)  # [perms, head]
    diff = observed - null_t.mean(0)
    return diff, diff / (null_t.std(0) + 1)


def mutual_information(codes_pos: torch.Tensor, codes_neg: torch.Tensor, c: int) -> torch.Tensor:
    """Plug-in I(code; label) per head with add-1/2 smoothing: [head]."""
    joint = torch.stack([_code_counts(codes_pos, c), _code_counts(codes_neg, c)], -1).double() + 0.5
    joint = joint / joint.sum((1, 2), keepdim=True)  # [head, code, 2]
    p_code, p_label = joint.sum(-1, keepdim=True), joint.sum(1, keepdim=True)
    return (joint * (joint / (p_code * p_label)).log()).sum((1, 2)).float()


def magnitude_codes(latents: torch.Tensor, latents_train: torch.Tensor, bins: int) -> torch.Tensor:
    """latents: [n, head, F] -> codes [n, head]: argmax latent x magnitude bin; F * bins = silent."""
    values, idx = latents.max(-1)  # [n, head]
    n_latents = latents.shape[-1]
    if bins == 1:
        level = torch.zeros_like(idx)
    else:
        cuts = torch.quantile(latents_train.max(-1).values.flatten(), torch.linspace(0, 1, bins + 1)[1:-1])
        level = torch.bucketize(values, cuts)
    return torch.where(values > 0, idx * bins + level, torch.full_like(idx, n_latents * bins))


@torch.no_grad()
def head_latents(acts_train: torch.Tensor, acts_score: torch.Tensor, config: FindConfig
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(training latents, scoring latents), each [n, head, F], from the SAE(s) `config` describes."""
    n_heads, d = acts_train.shape[1], acts_train.shape[2]
    if config.sae == "shared":
        with torch.enable_grad():
            sae = fit_saes(acts_train.reshape(1, -1, d), config)
        return tuple(sae.encode(a.reshape(1, -1, d))[0].reshape(a.shape[0], n_heads, -1)
                     for a in (acts_train, acts_score))
    with torch.enable_grad():
        sae = fit_saes(acts_train.transpose(0, 1).contiguous(), config)
    return tuple(sae.encode(a.transpose(0, 1).contiguous()).transpose(0, 1) for a in (acts_train, acts_score))


def discretisation_rows(task, loaded, labels: list[bool], seeds: int) -> list[dict]:
    config = FindConfig()
    prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
    train_tokens, score_set = split_prompts(prompts, config.n_train)
    tokens = torch.cat([train_tokens, score_set.positive, score_set.negative])
    n_train, n_score = train_tokens.shape[0], config.n_score
    rows = []
    for position in ("mean", "last"):
        for sae, hook in (("shared", "result"), ("per-head", "z")):
            acts = head_activations(loaded.model, tokens, hook, position)  # [n, head, d]
            aucs: dict[str, list[float]] = {}
            for seed in range(seeds):
                run = replace(config, sae_seed=seed, position=position, sae=sae, hook=hook)
                lat_train, lat = head_latents(acts[:n_train], acts[n_train:], run)
                for bins in (1, 2, 4):
                    codes = magnitude_codes(lat, lat_train, bins)
                    c = lat.shape[-1] * bins + 1
                    pos, neg = codes[:n_score], codes[n_score:]
                    scores = node_scores(pos, neg, c, "count")
                    aucs.setdefault(f"bins={bins}", []).append(float(roc_auc_score(labels, scores.numpy())))
            rows.append({"position": position, "sae": sae, "hook": hook, "score": "count",
                         "node_roc_auc": _summary(aucs)})
    return rows


def _summary(aucs: dict[str, list[float]]) -> dict[str, dict]:
    return {k: {**mean_std(v), "values": v}
            for k, v in aucs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-score", default="250,1000")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    task = get_task(args.task)
    loaded = load_model(f"tiny-{args.task}", task)
    truth = loaded.ground_truth[args.task].head_set()
    labels = [(l, h) in truth for l in range(loaded.n_layers) for h in range(loaded.n_heads)]
    rows = []
    for n_score in (int(v) for v in args.n_score.split(",")):
        config = FindConfig(n_score=n_score)
        prompts = task.prompts(loaded.tokenizer, config.n_train + n_score, config.seed)
        train_tokens, score_set = split_prompts(prompts, config.n_train)
        tokens = torch.cat([train_tokens, score_set.positive, score_set.negative])
        acts = head_activations(loaded.model, tokens, config.hook, config.position)  # [n, head, d]
        n_train = train_tokens.shape[0]
        aucs: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            run = replace(config, sae_seed=seed)
            codes = encode_codes(acts[:n_train], acts[n_train:], run)  # [2*n_score, head]
            c = n_codes(run.resolved_d_sae())
            pos, neg = codes[:n_score], codes[n_score:]
            count_null, z_null = null_corrected(pos, neg, c, seed=seed)
            variants = {"count": node_scores(pos, neg, c, "count"), "mass": node_scores(pos, neg, c, "mass"),
                        "count-null": count_null, "z-null": z_null, "mi": mutual_information(pos, neg, c)}
            for name, scores in variants.items():
                aucs.setdefault(name, []).append(float(roc_auc_score(labels, scores.numpy())))
        rows.append({"n_score": n_score, "node_roc_auc": _summary(aucs)})
    report = {"benchmark": "scoring_variants", "task": args.task, "model": loaded.name, "seeds": args.seeds,
              "config": "defaults (shared SAE, hook_result, mean over positions); only the score varies",
              "rows": rows, "discretisation": discretisation_rows(task, loaded, labels, args.seeds),
              "seconds": time.perf_counter() - start}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
