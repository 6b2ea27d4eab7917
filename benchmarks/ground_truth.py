"""Ablation ground truths of a pretrained model (smollm2-135m, gemma3-270m) for ioi, greaterthan, docstring,
written to `circuits/truths/<model>/<task>.<ablation>.json` (`circuits.truths`), the files every
evaluation reads.

For each task, on one fixed prompt set (seed `prompt_seed("ground_truth", 0)`, disjoint from the prompts
`circuits find` draws), `circuits.zoo.greedy_truth.greedy_ground_truth` runs twice:
- mean ablation (heads outside the set take their position-wise mean over the negative prompts), with
  head->head edges: the main circuit that AUC, precision and recall are scored against;
- resample ablation (each positive prompt's head takes a random negative prompt's value, seed 0), no
  edges, searched along the mean run's single-head ranking (no second table): reported beside it.
Threshold 0.9 on both the normalised faithfulness and the plain ratio. Nothing here is tuned against
anything. One thread (`--threads`): the machine is shared.

    python benchmarks/ground_truth.py --model smollm2-135m --tasks ioi [--n-prompts 40]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from circuits.ablation import metric_under_masks, reference_z  # noqa: E402
from circuits.models import load_model  # noqa: E402
from circuits.truths import read_truth_file, truth_path, write_truth  # noqa: E402
from circuits.zoo.data import prompt_seed  # noqa: E402
from circuits.zoo.greedy_truth import greedy_ground_truth, post_attention_norm  # noqa: E402
from circuits.zoo.ground_truth import GroundTruthResult  # noqa: E402
from tasks import get_task  # noqa: E402

TASKS = ("ioi", "greaterthan", "docstring")
N_PROMPTS = 40
THRESHOLD = 0.9
RESAMPLE_SEED = 0
POOL_SIZE = 12
MAX_EXHAUSTIVE = 100
BATCH = 8


def log(stage: str, done: int = 0, total: int = 0) -> None:
    """Progress on stderr (stdout stays free)."""
    print(f"[{time.strftime('%H:%M:%S')}] {stage} {done}/{total}", file=sys.stderr, flush=True)


def _source_version(path: str) -> str:
    """The git blob of a source file as it is on disk (the task code behind the prompts)."""
    try:
        return subprocess.run(["git", "hash-object", path], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _write(model: str, task: str, ablation: str, result: GroundTruthResult, out: Path | None) -> Path:
    return write_truth(model, task, ablation, result.truth, result.details(), directory=out)


def stored_ranking(model_name: str, task: str, n_prompts: int, seed: int, out: Path | None
                   ) -> list[tuple[int, int]] | None:
    """The single-head ranking of the stored mean-ablation search on the same prompts, so a resample-only
    run skips the table (as a run of both ablations does); None when that file is missing or differs."""
    path = truth_path(model_name, task, "mean", out)
    if not path.exists():
        return None
    stored = read_truth_file(path)
    effects = stored.details.get("single_head_effects") or []
    method = stored.truth.method
    same = method.get("n_prompts") == n_prompts and method.get("prompt_seed") == seed
    if not same or not effects:
        return None
    log(f"{task}: resample search ranked by the single-head table in {path}")
    return [(e["layer"], e["head"]) for e in sorted(effects, key=lambda e: -e["drop"])]


def run_task(model_name: str, name: str, lm: Any, n_prompts: int, ablations: list[str], out: Path | None,
             load_seconds: float, edges: bool = True) -> None:
    task = get_task(name)
    seed = prompt_seed("ground_truth", 0)
    prompts = task.prompts(lm.tokenizer, n_prompts, seed)
    L, H = lm.n_layers, lm.n_heads
    intact = metric_under_masks(lm.model, task, prompts, torch.ones(1, L, H, dtype=torch.bool),
                                reference_z(lm.model, prompts, "zero"))[0]  # [n], nothing ablated
    notes = {"model": model_name, "model_sha256": lm.manifest.get("sha256"), "prompt_seed": seed,
             "prompts": f"tasks.get_task('{name}').prompts(tokenizer, {n_prompts}, {seed})",
             "task_source": {f"tasks/{name}.py": _source_version(f"tasks/{name}.py")},
             "reference_prompts": "the negative prompts of the same set",
             "script": "benchmarks/ground_truth.py", "threads": torch.get_num_threads(),
             "model_load_seconds": load_seconds,
             "accuracy": float((intact > 0).float().mean()), "mean_metric": float(intact.mean())}
    common: dict[str, Any] = dict(
        threshold=THRESHOLD, pool_size=POOL_SIZE, max_exhaustive=MAX_EXHAUSTIVE, batch=BATCH, threads=None,
        progress=lambda stage, d, t: log(f"{model_name} {name} {stage}", d, t))
    ranking = None if "mean" in ablations else stored_ranking(model_name, name, n_prompts, seed, out)
    if "mean" in ablations:
        edges = edges and not post_attention_norm(lm.model)  # Gemma: a head's write is not linear
        mean = greedy_ground_truth(lm.model, task, prompts, edges=edges, ablation="mean", method_notes=notes,
                                   **common)
        path = _write(model_name, name, "mean", mean, out)
        log(f"{name} mean: {len(mean.truth.heads)} heads, {len(mean.truth.edges)} edges, faithfulness "
            f"{mean.faithfulness.normalized:.3f}, {mean.search['seconds']:.0f} s -> {path}")
        effects = sorted(mean.single_head_effects, key=lambda e: -e["drop"])
        ranking = [(e["layer"], e["head"]) for e in effects]
    if "resample" in ablations:
        resample_notes = {**notes, "ranking_from": "the mean-ablation single-head table (same prompts)"
                          if ranking else "this run's single-head table"}
        resample = greedy_ground_truth(lm.model, task, prompts, edges=False, ablation="resample",
                                       seed=RESAMPLE_SEED, ranking=ranking, method_notes=resample_notes,
                                       **common)
        path = _write(model_name, name, "resample", resample, out)
        log(f"{name} resample: {len(resample.truth.heads)} heads, faithfulness "
            f"{resample.faithfulness.normalized:.3f}, {resample.search['seconds']:.0f} s -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--ablations", default="mean,resample")
    parser.add_argument("--n-prompts", type=int, default=N_PROMPTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-edges", action="store_true", help="skip the mean circuit's head->head edges")
    parser.add_argument("--out", type=Path, default=None, help="truths folder (default: circuits/truths)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lm = load_model(args.model)
    load_seconds = time.perf_counter() - started
    log(f"loaded {args.model} in {load_seconds:.1f} s")
    ablations = [a.strip() for a in args.ablations.split(",") if a.strip()]
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        run_task(args.model, name, lm, args.n_prompts, ablations, args.out, load_seconds, not args.no_edges)
    log(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
