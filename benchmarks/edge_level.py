"""Edge- and node-level CPR/CMD on held-out prompts for every method (issues 23 and 29):
the discrete-SAE method, its null model actdiff, EAP, EAP-IG, mean patching, bounded ACDC, edge-prune, the
rank ensemble and random.

Held out: every method fits on training prompts (task.prompts(n, seed 10000): the SAE's 10 training pairs
first, then the 16 fitting prompts every method scores with, find's split) and every CPR/CMD is measured on
evaluation prompts drawn with seed 0 minus any pair equal to a fitting one. Node-only methods (sae, actdiff,
patching) are ranked at edge level by edges derived from their head scores
(`circuits.edges.graph.node_derived_edge_scores`); edge CPR ranks by the signed score where a method has one
(EAP, EAP-IG: minus the attribution, higher = holds the metric up), CMD by magnitude (MIB's rule).

Settings, fixed from a cost probe on SmolLM2 IOI (one thread) before any score,
the same for every model and task:
- 16 fitting prompts, 8 held-out evaluation prompts, 2 random rankings for the floor: evaluation (patched
  forwards, ~5 CPU s per graph per 16 SmolLM2 prompts, 9 graphs per curve) dominates the cost;
- sae: 5 SAE seeds, `circuits find` defaults otherwise; actdiff, EAP, EAP-IG (m = 5) once (deterministic);
- patching: mean ablation on the first 4 fitting prompts (one pass per head);
- ACDC bounded to the top-30 edges of an EAP pass (KL distance, paired corruption) on the first 4 fitting
  prompts: an edge test is ~3 CPU s on SmolLM2, so top-100 would cost ~5 min per task and top-1000 ~55 min;
- edge-prune: warm start from the EAP-IG run above (its cost added), 5 seeds x 10 steps at batch 4 (lr 0.1,
  target 10 % of edges): NOT the 200-step default, which alone takes ~13 CPU-min per seed on SmolLM2 IOI
  (benchmarks/edge_prune_cost.py); both objectives, "raise" (the default, key edge-prune-raise) and
  "metric" (key edge-prune: the keys predate the switch of the default);
- ensemble: mean normalised rank of |EAP-IG|, edge-prune and |EAP|, one per edge-prune seed;
- counterfactual edge CPR/CMD for every ranking; the mean intervention and node CPR/CMD for the issue-23
  methods (sae, actdiff, eap, eap-ig, patching, acdc) only, not for edge-prune / ensemble (budget);
- one thread (the machine is shared).
Mean ± population std over seeds (sae: SAE seed; edge-prune, ensemble: gate-noise seed). Passes: rows run
divided by the 16 fitting prompts (forward, backward); seconds: wall clock of the method alone.

    python benchmarks/edge_level.py --only smollm2-135m:ioi   # run (repeatable; default all) and merge
    python benchmarks/edge_level.py --merge other.json        # add runs written to another --out
    python benchmarks/edge_level.py --table                   # the markdown table
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
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import emit, written_by  # noqa: E402

# isort: off
import circuits.methods  # noqa: E402, F401  (first: circuits.edges.patching imports circuits.methods)
# isort: on
from circuits.discovery.config import FindConfig  # noqa: E402
from circuits.discovery.pipeline import split_prompts  # noqa: E402
from circuits.edges.graph import ComputeGraph  # noqa: E402
from circuits.evaluation.bootstrap import auc_interval  # noqa: E402
from circuits.evaluation.edge_mib import edge_mib_scores, run_edge_ranking  # noqa: E402
from circuits.evaluation.metrics import evaluate_heads, head_labels  # noqa: E402
from circuits.evaluation.mib import mib_scores  # noqa: E402
from circuits.jsonio import read_json  # noqa: E402
from circuits.methods.acdc import acdc  # noqa: E402
from circuits.methods.base import Cost  # noqa: E402
from circuits.methods.edge_prune import edge_prune, node_scores_from_edges  # noqa: E402
from circuits.methods.ensemble import ensemble_scores  # noqa: E402
from circuits.methods.registry import MethodInput, get_method  # noqa: E402
from circuits.models import load_model  # noqa: E402
from circuits.truths import shipped_files  # noqa: E402
from tasks import get_task  # noqa: E402
from tasks.base import PromptSet  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "edge_level.json"
RUNS = ("tiny-ioi:ioi", "tiny-greaterthan:greaterthan", "tiny-docstring:docstring", "smollm2-135m:ioi",
        "smollm2-135m:greaterthan", "smollm2-135m:docstring")
SETTINGS: dict[str, Any] = {
    "fit_seed": 10_000, "eval_seed": 0, "sae_n_train": 10, "n_fit": 16, "n_eval": 8, "n_random": 2,
    "sae_seeds": 5, "patching": "mean", "patching_prompts": 4, "acdc_prompts": 4, "acdc_candidates": 30,
    "acdc_distance": "kl", "ig_steps": 5, "prune_init": "eap-ig", "prune_seeds": 5, "prune_steps": 10,
    "prune_batch": 4, "prune_lr": 0.1, "prune_target": 0.1, "threads": 1}
ISSUE23 = ("sae", "actdiff", "eap", "eap-ig", "patching", "acdc")  # mean intervention and node CPR/CMD too
LABELS = {"sae": "discrete SAE (5 SAE seeds)", "actdiff": "actdiff (SAE's null model)", "eap": "EAP",
          "eap-ig": "EAP-IG (inputs, m=5)", "patching": "patching (mean)",
          "acdc": "ACDC (bounded, top-30 EAP edges)",
          "edge-prune": "edge-prune, objective metric (EAP-IG init, 10 steps; not the default)",
          "ensemble": "ensemble with edge-prune metric (not the default)",
          "edge-prune-raise": "edge-prune (EAP-IG init, 10 steps; objective raise, the default)",
          "ensemble-raise": "ensemble (EAP-IG, edge-prune raise, EAP; the default)"}
# (edge-prune row, ensemble row, objective): "metric" (the default until edge_prune_dev.py stage 2 on SmolLM2
# validation prompts picked "raise") and "raise", the default; the keys predate the switch
PRUNE_VARIANTS = (("edge-prune", "ensemble", "metric"), ("edge-prune-raise", "ensemble-raise", "raise"))
NODE_ONLY = ("sae", "actdiff", "patching")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict[str, Any]:
    """Mean and population std (numpy's default, ddof=0) over seeds, with the values."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)),
            "values": [float(v) for v in values]}


def held_out(task: Any, tokenizer: Any, fitting: PromptSet, n: int, seed: int) -> tuple[PromptSet, int]:
    """n evaluation prompts drawn with `seed`, minus any pair whose positive or negative is a fitting prompt;
    -> (prompts, pairs dropped)."""
    kept, dropped = task.prompts(tokenizer, 4 * n, seed).without(fitting)
    return kept.subset(slice(0, n)), dropped


class Runs:
    """Every run's rankings and costs, keyed "method#seed"."""

    def __init__(self, graph: ComputeGraph):
        self.graph = graph
        self.node: dict[str, torch.Tensor] = {}
        self.edge: dict[str, torch.Tensor] = {}
        self.signed: dict[str, torch.Tensor] = {}
        self.source: dict[str, str] = {}
        self.cost: dict[str, dict[str, float]] = {}

    def add(self, key: str, node: torch.Tensor, edge: torch.Tensor | None, signed: torch.Tensor | None,
            seconds: float, forward: float, backward: float) -> None:
        scores, sgn, source = run_edge_ranking(self.graph, node, edge, signed)
        self.node[key], self.edge[key], self.source[key.split("#")[0]] = node.float(), scores, source
        if sgn is not None:
            self.signed[key] = sgn
        self.cost[key] = {"seconds": seconds, "forward": forward, "backward": backward}


def fit_methods(loaded: Any, task: Any, s: dict[str, Any], wanted: frozenset[str] = frozenset(LABELS)
                ) -> tuple[Runs, PromptSet, PromptSet]:
    """Run the `wanted` methods (EAP and EAP-IG always: edge-prune and the ensemble build on them) on the
    fitting prompts -> (runs, fitting prompts, every prompt drawn for fitting)."""
    model = loaded.model
    graph = ComputeGraph.of(model)
    find = FindConfig(n_train=s["sae_n_train"], n_score=s["n_fit"], seed=s["fit_seed"])
    drawn = task.prompts(loaded.tokenizer, find.n_train + find.n_score, find.seed)
    _, fit = split_prompts(drawn, find.n_train)
    runs = Runs(graph)

    def registered(method: str, seed: int, **options: Any) -> Any:
        return get_method(method).run(MethodInput(task=task, loaded=loaded, find=find, seed=seed,
                                                  options=options))

    for seed in range(s["sae_seeds"] if "sae" in wanted else 0):
        log(f"sae seed {seed}")
        r = registered("sae", seed)
        runs.add(f"sae#{seed}", r.node_scores, None, None, r.seconds, r.forward, r.backward)
    for method, key in (("actdiff", "actdiff"), ("eap", "eap"), ("eap-ig", "eap-ig"),
                        ("patching-mean", "patching")):
        if key not in wanted | {"eap", "eap-ig"}:
            continue
        log(method)
        opts = {"patching_prompts": s["patching_prompts"]} if key == "patching" else {}
        if key == "eap-ig":
            opts = {"ig_steps": s["ig_steps"]}
        r = registered(method, 0, **opts)
        runs.add(f"{key}#0", r.node_scores, r.graph_edge_scores, r.signed_graph_edge_scores, r.seconds,
                 r.forward, r.backward)
    if "acdc" in wanted:
        log("acdc")
        sub = fit.subset(slice(0, s["acdc_prompts"]))
        a = acdc(model, task, sub, distance=s["acdc_distance"], candidates=s["acdc_candidates"])
        unit = len(sub) / len(fit)
        runs.add("acdc#0", a.node_scores, a.graph_edge_scores, None, a.seconds, a.n_forward * unit,
                 a.n_backward * unit)
    ig_cost, eap_cost = runs.cost["eap-ig#0"], runs.cost["eap#0"]
    ig_signed = runs.signed["eap-ig#0"]  # -attribution: "metric" ranks its magnitude, "raise" its sign
    for prune_key, ensemble_key, objective in PRUNE_VARIANTS:
        if not wanted & {prune_key, ensemble_key}:
            continue
        for seed in range(s["prune_seeds"]):
            log(f"{prune_key} seed {seed}")
            cost = Cost(len(fit))
            t0 = time.perf_counter()
            p = edge_prune(model, task, fit, ig_signed, steps=s["prune_steps"], lr=s["prune_lr"],
                           target_edges=s["prune_target"], batch_size=s["prune_batch"], seed=seed, cost=cost,
                           objective=objective)
            seconds = time.perf_counter() - t0
            runs.add(f"{prune_key}#{seed}", node_scores_from_edges(graph, p.log_alpha), p.log_alpha, None,
                     seconds + ig_cost["seconds"], cost.forward + ig_cost["forward"],
                     cost.backward + ig_cost["backward"])
            t0 = time.perf_counter()
            combined = ensemble_scores([runs.edge["eap-ig#0"], p.log_alpha, runs.edge["eap#0"]],
                                       graph).float()
            total = {k: runs.cost[f"{prune_key}#{seed}"][k] + eap_cost[k]
                     for k in ("seconds", "forward", "backward")}
            runs.add(f"{ensemble_key}#{seed}", node_scores_from_edges(graph, combined), combined, None,
                     total["seconds"] + time.perf_counter() - t0, total["forward"], total["backward"])
    return runs, fit, drawn


def node_aucs(loaded: Any, task_name: str, runs: Runs, method: str, keys: list[str]) -> dict[str, Any]:
    """Node ROC AUC of a method's runs against every ground truth shipped for the model and task (mean and
    resample ablation): mean ± std over the runs and a 95 % interval (heads resampled, stratified)."""
    out: dict[str, Any] = {}
    for f in shipped_files(loaded.name):
        if f.task != task_name:
            continue
        labels = head_labels(f.truth, loaded.n_layers, loaded.n_heads)
        values = [evaluate_heads(runs.node[k], set(), f.truth)["roc_auc"] for k in keys]
        if any(v is None for v in values):
            continue
        out[f"node_auc_{f.ablation}"] = {**summary([float(v) for v in values if v is not None]),
                                         "ci95": auc_interval([runs.node[k] for k in keys], labels),
                                         "n_truth_heads": len(f.truth.heads),
                                         "truth_n_prompts": f.truth.method.get("n_prompts")}
    return out


def with_interval(entry: dict[str, Any], res: dict[str, Any], method: str, metric: str) -> dict[str, Any]:
    """A summary plus "ci95": the 95 % bootstrap interval (prompts resampled) of the mean over its runs."""
    ci = res.get("groups", {}).get(method, {}).get(f"{metric}_ci")
    return {**entry, "ci95": ci} if ci is not None else entry


def run_one(model_name: str, task_name: str, s: dict[str, Any], wanted: frozenset[str] = frozenset(LABELS),
            evaluate: bool = True) -> dict[str, Any]:
    """Fit the `wanted` methods and score them (edge and node CPR/CMD on held-out prompts unless not
    `evaluate`, node AUC against the shipped ground truths always) -> the model x task's result (the
    random floor only when evaluating)."""
    task = get_task(task_name)
    loaded = load_model(model_name, task, 0)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    runs, fit, drawn = fit_methods(loaded, task, s, wanted)
    fit_cpu = time.process_time() - cpu0
    evaluation, dropped = held_out(task, loaded.tokenizer, drawn, s["n_eval"], s["eval_seed"])
    graph = runs.graph
    keys_of = {m: [k for k in runs.edge if k.split("#")[0] == m] for m in LABELS if m in wanted}
    keys_of = {m: keys for m, keys in keys_of.items() if keys}
    scored = [k for keys in keys_of.values() for k in keys]
    main = [k for k in scored if k.split("#")[0] in ISSUE23]
    edge_res: dict[str, Any] = {}
    node_res: dict[str, Any] = {}
    if evaluate:
        log("edge CPR/CMD, counterfactual")
        cf = edge_mib_scores(loaded.model, task, evaluation, {k: runs.edge[k] for k in scored},
                             {k: v for k, v in runs.signed.items() if k in scored}, ("counterfactual",),
                             n_random=s["n_random"], seed=s["eval_seed"], groups=keys_of)
        edge_res.update(cf["interventions"])
        main_groups = {m: keys for m, keys in keys_of.items() if m in ISSUE23}
        if main:
            log("edge CPR/CMD, mean")
            mean = edge_mib_scores(loaded.model, task, evaluation, {k: runs.edge[k] for k in main},
                                   {k: v for k, v in runs.signed.items() if k in main}, ("mean",),
                                   n_random=s["n_random"], seed=s["eval_seed"], groups=main_groups)
            edge_res.update(mean["interventions"])
            log("node CPR/CMD")
            node_res = mib_scores(loaded.model, task, evaluation, {k: runs.node[k] for k in main},
                                  n_random=s["n_random"], seed=s["eval_seed"],
                                  groups=main_groups)["interventions"]
    methods: dict[str, Any] = {}
    for method, keys in keys_of.items():
        entry: dict[str, Any] = {"label": LABELS[method], "edge_source": runs.source[method],
                                 "runs": len(keys)}
        for prefix, results in (("edge", edge_res), ("node", node_res)):
            for intervention, res in results.items():
                if keys[0] in res["rankings"]:
                    for metric in ("cpr", "cmd"):
                        entry[f"{prefix}_{metric}_{intervention}"] = with_interval(
                            summary([res["rankings"][k][metric] for k in keys]), res, method, metric)
        entry.update(node_aucs(loaded, task_name, runs, method, keys))
        for field in ("seconds", "forward", "backward"):
            entry[field] = summary([runs.cost[k][field] for k in keys])
        methods[method] = entry
    if evaluate:
        floor: dict[str, Any] = {"label": "random ranking", "runs": s["n_random"]}
        for prefix, results in (("edge", edge_res), ("node", node_res)):
            for intervention, res in results.items():
                r = res["rankings"].get("random")
                if r:
                    for metric in ("cpr", "cmd"):
                        floor[f"{prefix}_{metric}_{intervention}"] = summary(
                            [d[metric] for d in r.get("draws", [])] or [r[metric]])
        methods["random"] = floor
    return {"model": model_name, "task": task_name, "n_edges": graph.n_edges, "graph": graph.describe(),
            "n_fit": len(fit), "n_eval": len(evaluation), "eval_pairs_dropped_as_fitting": dropped,
            "metric": {i: {"full": r["full"], "empty": r["empty"]} for i, r in edge_res.items()},
            "methods": methods, "fit_cpu_seconds": fit_cpu,
            "eval_cpu_seconds": time.process_time() - cpu0 - fit_cpu,
            "wall_seconds": time.perf_counter() - wall0, "command": written_by()["command"]}


def merge_result(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A partial run's methods (and their fields) laid over a stored result of the same model x task: every
    field it measured replaces the stored one, the rest stays (e.g. node AUCs added to a stored row)."""
    if old is None:
        return new
    methods = {m: dict(e) for m, e in old["methods"].items()}
    for m, e in new["methods"].items():
        methods[m] = {**methods.get(m, {}), **e}
    partial = {k: v for k, v in new.items() if k not in ("methods", "metric", "fit_cpu_seconds",
                                                          "eval_cpu_seconds", "wall_seconds", "command",
                                                          "partial_methods")}
    runs = [*old.get("partial_runs", []), {"command": new["command"], "methods": sorted(new["methods"]),
                                           "wall_seconds": new["wall_seconds"]}]
    return {**old, **partial, "methods": methods, "metric": {**old.get("metric", {}), **new["metric"]},
            "partial_runs": runs}


def report_skeleton() -> dict[str, Any]:
    notes = {
        "std": "population std over seeds (numpy ddof=0)",
        "held_out": "fitting prompts: task.prompts(sae_n_train + n_fit, fit_seed), the last n_fit score "
                    "every method; evaluation: task.prompts(4 n_eval, eval_seed) minus any pair equal to a "
                    "fitting prompt, first n_eval",
        "edge_source": "node-derived: edges scored from head scores (an edge scores the smaller of its two "
                       "ends; input, MLPs, logits count as the top head)",
        "cpr_sign": "edge CPR ranks EAP / EAP-IG by minus the attribution (signed), CMD by |.|",
        "passes": "rows run / n_fit fitting prompts",
        "edge_prune_cost": "includes the EAP-IG warm start; ensemble: edge-prune + EAP"}
    return {"what": __doc__.splitlines()[0] + " " + __doc__.splitlines()[1], "settings": SETTINGS,
            "notes": notes, "results": {}}


def markdown(report: dict[str, Any]) -> str:
    """The table docs/results.md shows (one source: benchmarks/render_results.py)."""
    from render_results import edge_level_markdown

    return edge_level_markdown(report)


def relabel(report: dict[str, Any]) -> None:
    """Stored rows take today's LABELS (labels are presentation: e.g. which edge-prune objective is the
    default changed after those rows were measured; the numbers are untouched)."""
    for row in report["results"].values():
        for method, entry in row["methods"].items():
            if method in LABELS:
                entry["label"] = LABELS[method]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="MODEL:TASK (repeatable); default: all")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true", help="print the markdown table of the stored JSON")
    parser.add_argument("--merge", nargs="*", type=Path, default=[],
                        help="add the results of these JSONs (runs written elsewhere) into --out, then stop")
    parser.add_argument("--methods", default="",
                        help=f"comma list among {', '.join(LABELS)}: fit and score only these and lay them "
                             "over the stored row (default: every method, replacing the row)")
    parser.add_argument("--auc-only", action="store_true",
                        help="no CPR/CMD: fit and add the node AUCs against the shipped ground truths")
    args = parser.parse_args(argv)
    if args.table:
        sys.stdout.write(markdown(read_json(args.out)) + "\n")
        return 0
    if args.merge:
        merged = read_json(args.out) if args.out.exists() else report_skeleton()
        merged.update({k: v for k, v in report_skeleton().items() if k != "results"})
        for path in args.merge:
            for spec, row in read_json(path)["results"].items():  # a partial row is laid over the stored one
                stored = merged["results"].get(spec)
                merged["results"][spec] = merge_result(stored, row) if row.get("partial_methods") else row
        relabel(merged)
        emit(merged, args.out)
        return 0
    wanted = frozenset(m.strip() for m in args.methods.split(",") if m.strip()) or frozenset(LABELS)
    unknown = wanted - set(LABELS)
    if unknown:
        parser.error(f"unknown methods {', '.join(sorted(unknown))} (choose among {', '.join(LABELS)})")
    torch.set_num_threads(SETTINGS["threads"])
    report = read_json(args.out) if args.out.exists() else report_skeleton()
    report.update({k: v for k, v in report_skeleton().items() if k != "results"})
    relabel(report)
    for spec in args.only or list(RUNS):
        model_name, task_name = spec.split(":")
        log(f"{model_name} {task_name}")
        result = run_one(model_name, task_name, SETTINGS, wanted, evaluate=not args.auc_only)
        if args.auc_only:  # the stored costs stay those of the run that measured the CPR/CMD
            for entry in result["methods"].values():
                for field in ("seconds", "forward", "backward"):
                    entry.pop(field, None)
        partial = bool(args.methods) or args.auc_only
        if partial:
            result["partial_methods"] = sorted(result["methods"])
        report["results"][spec] = merge_result(report["results"].get(spec), result) if partial else result
        report["written_by"] = written_by()
        emit(report, args.out)  # after every model x task: an interrupted run keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
