"""`circuits compare` on SmolLM2-135M for ioi, greaterthan and docstring: every method, with and without
a ground truth (node AUC against the stored mean- and resample-ablation circuits, MIB CPR/CMD).

Each task is one `compare_methods` call (the library behind `circuits compare`), so every method sees the
same prompts, and its JSON, roc.png and faithfulness.png go to `benchmarks/results/smollm2_compare/<task>/`
(`--tag NAME` writes `<task>/NAME/` instead, for a later group of methods on the same prompts: CPR/CMD and
the random floor are deterministic in the prompts and the seed, so groups run apart are comparable).

Settings, fixed before any run and the same for the three tasks (nothing is tuned on the result):
- prompts: seed 0, 10 training + 100 scoring pairs (the SAE method scores on all 100; EAP too);
- the discrete-SAE method: the `circuits find` defaults, 5 SAE seeds;
- patching (mean; resample with 2 seeds, its draws seeded 0 and 1) on the first 12 scoring prompts: a head
  costs one pass, so 272 passes over 100 prompts would take hours on this 2-core machine;
- CPR/CMD on the first 16 scoring prompts, counterfactual and mean interventions, 3 random rankings;
- ACDC is not run: its head-level graph on 270 heads has ~35,000 edges, one batched forward each, so its
  time is estimated (a lower bound) from a measured forward pass over 12 prompts times the edge count;
- one thread (on this shared machine a second one slowed the forward pass down).

    python benchmarks/smollm2_compare.py [--tasks ioi,docstring] [--methods sae,patching,eap] [--tag NAME]
    python benchmarks/smollm2_compare.py --table   # the README table from the stored JSONs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from circuits.compare import CompareConfig, compare_methods, parse_methods, write_outputs  # noqa: E402
from circuits.discovery.config import FindConfig  # noqa: E402
from circuits.discovery.pipeline import split_prompts  # noqa: E402
from circuits.jsonio import read_json  # noqa: E402
from circuits.models import load_model  # noqa: E402
from tasks import get_task  # noqa: E402

MODEL = "smollm2-135m"
OUT = ROOT / "benchmarks" / "results" / "smollm2_compare"
TASKS = ("ioi", "greaterthan", "docstring")
SETTINGS = {"seeds": 5, "baseline_seeds": 2, "n_train": 10, "n_score": 100, "patching_prompts": 12,
            "mib_prompts": 16, "mib_random": 3, "acdc_prompts": 12}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def acdc_estimate(loaded: Any, task: Any, config: CompareConfig) -> dict[str, Any]:
    """A lower bound on ACDC's time: one forward over its prompts per edge of the head-level graph."""
    L, H = loaded.n_layers, loaded.n_heads
    n = L * H
    # input->heads, heads->output, input->output, and head->head across layers
    edges = n + n + 1 + sum(H * H * (L - 1 - layer) for layer in range(L))
    prompts = task.prompts(loaded.tokenizer, config.find.n_train + config.find.n_score, config.find.seed)
    _, score_set = split_prompts(prompts, config.find.n_train)
    tokens = score_set.positive[:config.acdc_prompts]
    with torch.no_grad():
        loaded.model(tokens)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            loaded.model(tokens)
            times.append(time.perf_counter() - start)
    per_pass = sorted(times)[1]
    return {"edges": edges, "prompts": int(tokens.shape[0]), "seconds_per_forward": per_pass,
            "lower_bound_seconds": edges * per_pass,
            "note": "ACDC tests each edge with at least one batched forward over its prompts (more when the "
                    "threshold sweep's graphs differ); this is edges x one measured forward, a lower bound; "
                    "not run because it exceeds the issue's 30-minute limit"}


def run_task(task_name: str, methods: str, out: Path, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    task = get_task(task_name)
    start = time.perf_counter()
    loaded = load_model(MODEL, task, 0)
    load_seconds = time.perf_counter() - start
    s = SETTINGS
    config = CompareConfig(methods=tuple(parse_methods(methods)), seeds=s["seeds"],
                           baseline_seeds=s["baseline_seeds"],
                           find=FindConfig(n_train=s["n_train"], n_score=s["n_score"], seed=0),
                           patching_prompts=s["patching_prompts"], mib_prompts=s["mib_prompts"],
                           mib_random=s["mib_random"], acdc_prompts=s["acdc_prompts"])

    def progress(method: str, done: int, total: int) -> None:
        log(f"{task_name}: {method} {done}/{total}")

    start = time.perf_counter()
    result = compare_methods(task, loaded, config, progress=progress)
    result["benchmark"] = {"script": "benchmarks/smollm2_compare.py", "settings": s, "threads": threads,
                           "load_seconds": load_seconds, "wall_seconds": time.perf_counter() - start}
    if "acdc" not in config.methods:
        result["acdc_estimate"] = acdc_estimate(loaded, task, config)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(result, out)
    log(f"{task_name}: wrote {out}")
    return result


def _pm(summary: dict[str, Any] | None, digits: int = 3) -> str:
    """mean ± population std over seeds (the mean alone for one run, or when every run costs the same)."""
    if summary is None:
        return "—"
    if len(summary["values"]) > 1 and summary["std"] > 0:
        return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
    return f"{summary['mean']:.{digits}f}"


def table(root: Path = OUT) -> str:
    """One markdown table: every method of every stored compare.json (tagged groups included)."""
    rows = ["| task | method | node AUC (mean GT) | node AUC (resample GT) | CPR cf | CMD cf | CPR mean | "
            "CMD mean | fwd passes | bwd | seconds |", "|" + " --- |" * 11]
    for task in TASKS:
        files = sorted((root / task).glob("**/compare.json"))
        reports = [read_json(f) for f in files]
        # a method run again in a later group (tagged subdirectory) is shown from that later run only
        latest = {key: i for i, report in enumerate(reports) for key in report["methods"]}
        floor_done = False
        for i, report in enumerate(reports):
            for key, m in report["methods"].items():
                if latest[key] != i:
                    continue
                rows.append(f"| {task} | {m['label']} | {_pm(m['node_roc_auc'])} | "
                            f"{_pm(m.get('node_roc_auc_resample'))} | {_pm(m.get('cpr_counterfactual'))} | "
                            f"{_pm(m.get('cmd_counterfactual'))} | {_pm(m.get('cpr_mean'))} | "
                            f"{_pm(m.get('cmd_mean'))} | {_pm(m['forward_passes'], 1)} | "
                            f"{_pm(m['backward_passes'], 1)} | {_pm(m['seconds'], 0)} |")
            floor = (report.get("mib") or {}).get("random") or {}
            if floor and not floor_done:
                cf, mean = floor.get("counterfactual", {}), floor.get("mean", {})
                rows.append(f"| {task} | random ranking | 0.5 (expected) | 0.5 (expected) | "
                            f"{cf.get('cpr', float('nan')):.3f} | {cf.get('cmd', float('nan')):.3f} | "
                            f"{mean.get('cpr', float('nan')):.3f} | {mean.get('cmd', float('nan')):.3f} | "
                            "— | — | — |")
                floor_done = True
            est = report.get("acdc_estimate")
            if est and i == 0:  # the first group's estimate (later groups repeat it)
                hours = est["lower_bound_seconds"] / 3600
                rows.append(f"| {task} | ACDC (not run) | — | — | — | — | — | — | ≥ {est['edges']:,} "
                            f"forwards over {est['prompts']} prompts | — | ≥ {hours:.1f} h |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default="sae,patching,eap")
    parser.add_argument("--tag", default="", help="write <task>/<tag>/ (a later group of methods)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the markdown table of the stored runs")
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    for task_name in args.tasks.split(","):
        out = OUT / task_name / args.tag if args.tag else OUT / task_name
        run_task(task_name, args.methods, out, args.threads)


if __name__ == "__main__":
    main()
