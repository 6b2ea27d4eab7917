"""Quality of `circuits find` on the bundled task models: node ROC AUC, precision, recall, F1 and
faithfulness, mean and std over SAE seeds, with one fixed configuration for every task.

Three configurations are reported: the package default (one shared SAE on hook_result, F=200, 100
Adam steps), the paper's (the same with 500 steps) and per-head SAEs on hook_z (32 latents each,
trained as one batched program). The defaults were chosen by rules read on ioi only (see the README).

    python benchmarks/quality.py --seeds 5 --out benchmarks/results/quality.json
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _report import emit  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

from circuits.discovery.config import FindConfig  # noqa: E402
from circuits.discovery.pipeline import find_circuit  # noqa: E402
from circuits.models import load_model  # noqa: E402
from circuits.stats import mean_std  # noqa: E402
from tasks import get_task  # noqa: E402

METRICS = ("roc_auc", "precision", "recall", "f1", "edge_roc_auc")


def summarise(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {**mean_std(values), "min": min(values), "max": max(values)}


def run_task(task_name: str, seeds: int, base: FindConfig) -> dict:
    task = get_task(task_name)
    loaded = load_model(f"tiny-{task_name}", task)
    runs = []
    for seed in range(seeds):
        config = FindConfig(**{**asdict(base), "sae_seed": seed, "faithfulness": True})
        result = find_circuit(task, loaded, config)
        ev = result.evaluation or {}
        runs.append({"seed": seed, **{m: ev.get(m) for m in METRICS}, "n_selected": len(result.circuit),
                     "faithfulness": result.faithfulness["normalized"] if result.faithfulness else None,
                     "seconds": result.timings["total"], "circuit": sorted(result.circuit)})
    truth = loaded.ground_truth.get(task_name)
    return {
        "model": loaded.name,
        "truth_heads": sorted(truth.heads) if truth else None,
        "runs": runs,
        "summary": {m: summarise([r[m] for r in runs]) for m in (*METRICS, "faithfulness", "seconds")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", default="ioi,greaterthan,docstring")
    parser.add_argument("--n-score", type=int, default=250)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    configs = {"default": FindConfig(n_score=args.n_score),
               "paper": FindConfig(n_score=args.n_score, steps=500),
               "per-head": FindConfig(n_score=args.n_score, sae="per-head", hook="z")}
    start = time.perf_counter()
    report: dict = {
        "benchmark": "quality",
        "defaults_chosen_on": "ioi (tiny-ioi); reported unchanged on greaterthan and docstring",
        "seeds": args.seeds,
        "configs": {}}
    for label, base in configs.items():
        report["configs"][label] = {
            "config": asdict(base) | {"d_sae": base.resolved_d_sae()},
            "tasks": {name: run_task(name, args.seeds, base) for name in args.tasks.split(",")}}
    report["seconds"] = time.perf_counter() - start
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
