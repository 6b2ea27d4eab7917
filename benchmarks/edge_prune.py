"""Edge CPR/CMD (counterfactual) on held-out prompts: EAP, EAP-IG, edge-prune (seeds), ensemble and random.

Every method sees only the training prompts (task.prompts(tokenizer, n_train, seed + 10000) minus any pair
that is also an evaluation prompt, `circuits.methods.edge_prune.training_prompts`); CPR/CMD are measured on
the evaluation prompts (task.prompts(tokenizer, n_eval, seed)), which no method fitted on. EAP and EAP-IG
rank CPR by their signed scores and CMD by magnitude (MIB's rule), the signed score being minus the
attribution (the metric drop when the edge is corrupted: edges that hold the metric up first); "cpr_abs"
ranks by magnitude, "cpr_shipped_sign" by the attribution itself (what eap.py / eap_ig.py hand to
compare as signed_graph_edge_scores). edge-prune and the ensemble have one ranking. edge-prune runs
`--seeds` seeds (gate noise, initial noise, batch order) from each init; the
ensemble (mean normalised rank of |EAP-IG|, edge-prune, |EAP|) runs once per edge-prune seed. Mean and
population std over seeds; seconds and passes (rows run / training prompts) per method, the EAP-IG warm start
included in edge-prune's and every component in the ensemble's.

    OMP_NUM_THREADS=2 python benchmarks/edge_prune.py --out benchmarks/results/edge_prune.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import emit  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

# isort: off
import circuits.methods  # noqa: E402, F401  (first: circuits.edges.patching imports circuits.methods)
# isort: on
from circuits.edges.attribution import edge_attributions  # noqa: E402
from circuits.edges.graph import ComputeGraph  # noqa: E402
from circuits.evaluation.edge_mib import edge_mib_scores  # noqa: E402
from circuits.evaluation.mib import areas  # noqa: E402
from circuits.methods.base import Cost  # noqa: E402
from circuits.methods.edge_prune import LR, STEPS, TARGET, edge_prune, training_prompts  # noqa: E402
from circuits.methods.ensemble import ensemble_scores  # noqa: E402
from circuits.models import load_model  # noqa: E402
from tasks import get_task  # noqa: E402

TINY = (("tiny-ioi", "ioi"), ("tiny-greaterthan", "greaterthan"), ("tiny-docstring", "docstring"))


def _summary(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


def run_one(model_name: str, task_name: str, args: argparse.Namespace) -> dict[str, Any]:
    loaded = load_model(model_name)
    task = get_task(task_name)
    model, tok = loaded.model, loaded.tokenizer
    graph = ComputeGraph.of(model)
    held_out = task.prompts(tok, args.n_eval, args.seed)
    train = training_prompts(task, tok, args.n_train, args.seed, held_out)
    n = len(train)
    rankings: dict[str, torch.Tensor] = {}
    signed: dict[str, torch.Tensor] = {}
    cost: dict[str, dict[str, float]] = {}

    def timed_attr(ig_steps: int, alphas: Literal["left", "right"]) -> tuple[torch.Tensor, dict[str, float]]:
        c = Cost(n)
        t0 = time.perf_counter()
        edge = edge_attributions(model, task, train, graph, ig_steps=ig_steps, alphas=alphas, cost=c).edge
        return edge, {"seconds": time.perf_counter() - t0, "forward": c.forward, "backward": c.backward}

    eap, cost["eap"] = timed_attr(1, "right")
    ig, cost["eap-ig"] = timed_attr(5, "left")
    for name, edge in (("eap", eap), ("eap-ig", ig)):
        # attributions estimate the metric change when an edge is corrupted: an edge that holds the metric
        # up scores negative, so "pushes the metric up first" (MIB's signed CPR) ranks by -attribution
        rankings[name], signed[name] = edge.abs(), -edge
        rankings[f"{name}@shipped"], signed[f"{name}@shipped"] = edge.abs(), edge  # as eap.py passes it
    prune_runs: dict[str, list[dict[str, Any]]] = {}
    for init in args.inits:
        for seed in range(args.seeds):
            c = Cost(n)
            t0 = time.perf_counter()
            result = edge_prune(model, task, train, ig if init == "eap-ig" else None, steps=args.steps,
                                lr=args.lr, target_edges=args.target, seed=seed, cost=c)
            seconds = time.perf_counter() - t0
            extra = cost["eap-ig"] if init == "eap-ig" else {"seconds": 0.0, "forward": 0.0, "backward": 0.0}
            key = f"edge-prune[{init}]#{seed}"
            rankings[key] = result.log_alpha
            prune_runs.setdefault(init, []).append({
                "seed": seed, "seconds": seconds + extra["seconds"], "forward": c.forward + extra["forward"],
                "backward": c.backward + extra["backward"], **result.details()})
            if init == "eap-ig":
                rankings[f"ensemble#{seed}"] = ensemble_scores([ig.abs(), result.log_alpha, eap.abs()],
                                                               graph).float()
    t0 = time.perf_counter()
    report = edge_mib_scores(model, task, held_out, rankings, signed, interventions=("counterfactual",),
                             n_random=args.n_random, seed=args.seed)
    eval_seconds = time.perf_counter() - t0
    res = report["interventions"]["counterfactual"]
    scored = res["rankings"]
    methods: dict[str, Any] = {}
    for name in ("eap", "eap-ig"):
        methods[name] = {"cpr": scored[name]["cpr"], "cmd": scored[name]["cmd"],
                         "cpr_abs": areas(scored[name]["faithfulness"], tuple(report["grid"]))[0],
                         "cpr_shipped_sign": scored[f"{name}@shipped"]["cpr"], **cost[name],
                         "faithfulness_signed": scored[name]["faithfulness_signed"]}
    for init, runs in prune_runs.items():
        keys = [f"edge-prune[{init}]#{r['seed']}" for r in runs]
        methods[f"edge-prune[{init}]"] = {
            "cpr": _summary([scored[k]["cpr"] for k in keys]),
            "cmd": _summary([scored[k]["cmd"] for k in keys]),
            "seconds": _summary([r["seconds"] for r in runs]),
            "forward": _summary([r["forward"] for r in runs]),
            "backward": _summary([r["backward"] for r in runs]), "runs": runs,
            "faithfulness": [scored[k]["faithfulness"] for k in keys]}
        if init == "eap-ig":
            ens = [f"ensemble#{r['seed']}" for r in runs]
            methods["ensemble"] = {
                "cpr": _summary([scored[k]["cpr"] for k in ens]),
                "cmd": _summary([scored[k]["cmd"] for k in ens]),
                "seconds": _summary([r["seconds"] + cost["eap"]["seconds"] for r in runs]),
                "forward": _summary([r["forward"] + cost["eap"]["forward"] for r in runs]),
                "backward": _summary([r["backward"] + cost["eap"]["backward"] for r in runs])}
    if "random" in scored:
        floor = scored["random"]
        methods["random"] = {"cpr": floor["cpr"], "cmd": floor["cmd"], "cpr_std": floor.get("cpr_std"),
                             "cmd_std": floor.get("cmd_std")}
    return {"model": model_name, "task": task_name, "n_edges": graph.n_edges, "n_train": n,
            "n_eval": len(held_out), "metric_full": res["full"], "metric_empty": res["empty"],
            "eval_seconds": eval_seconds, "grid": report["grid"], "methods": methods}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(m for m, _ in TINY), help="comma list of tiny models")
    parser.add_argument("--seeds", type=int, default=5, help="edge-prune seeds per init")
    parser.add_argument("--inits", default="eap-ig,zeros")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-eval", type=int, default=50)
    parser.add_argument("--n-random", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="evaluation prompts; training: seed + 10000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.inits = [s for s in args.inits.split(",") if s]
    torch.set_num_threads(args.threads)
    tasks = dict(TINY)
    report: dict[str, Any] = {
        "what": __doc__.splitlines()[0], "intervention": "counterfactual",
        "settings": {"steps": args.steps, "lr": args.lr, "target": args.target, "n_train": args.n_train,
                     "n_eval": args.n_eval, "seeds": args.seeds, "inits": args.inits,
                     "mask": "hard-concrete, faithfulness (m(z) - m(full))^2 / (m(full) - m(empty))^2, "
                             "augmented Lagrangian on E[L0]",
                     "std": "population std over edge-prune seeds",
                     "passes": "rows run / training prompts (forward and backward)"},
        "results": []}
    for name in args.models.split(","):
        report["results"].append(run_one(name, tasks[name], args))
        emit(report, args.out)  # after every model, so an interrupted run keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
