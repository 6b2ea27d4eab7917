"""Every method side by side on the same model, prompts and ground truth, in one run.

The prompts are drawn once, exactly as `find_circuit` draws them with `config.find.seed`, and every
method sees the same scoring prompts (ACDC: the first `acdc_prompts` of them). The stochastic methods
run once per method seed s = seed, seed + 1, ... (the discrete-SAE method with `sae_seed = s`, resample
patching with its draws seeded by s) and are reported as mean ± std; the deterministic ones (mean
patching, EAP, ACDC) run once. With `vary_prompts`, seed s also draws the prompts and every method runs
for every seed, so the spread includes prompt sampling. Every method is scored by the same functions
(circuits.evaluation.metrics) and its circuit is chosen by the same label-free rule on its own node scores.

Every method's node ranking is also scored without any ground truth, by MIB's CPR and CMD
(`circuits.evaluation.mib`: counterfactual and mean interventions, on the first `mib_prompts` scoring
prompts, or with `eval_seed` on as many held-out prompts no method fitted on; a random ranking as the
floor), and the methods' rankings are compared with each other (Spearman rank correlation of their first
run's node scores). So a model without a ground truth is compared too; with
one, node AUC is reported against it and, when the model ships one, against its resample-ablation circuit.

Whenever a discrete-SAE method is compared, its null model `actdiff` (each head's mean-output distance between
positives and negatives, no SAE) is compared too (`parse_methods`), so every table shows what the
discretisation adds. Every run's scores are kept (`circuits.rankings`: rankings.npz beside compare.json), so
they can be scored again without rerunning the methods.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from circuits.atomic import atomic_write
from circuits.discovery.config import FindConfig
from circuits.discovery.pipeline import split_prompts
from circuits.edges.graph import ComputeGraph
from circuits.errors import CircuitsError
from circuits.evaluation.bootstrap import CI_NOTE, auc_interval
from circuits.evaluation.edge_mib import EDGE_SOURCES, edge_mib_scores, run_edge_ranking
from circuits.evaluation.metrics import DEFINITIONS, edge_auc, evaluate_heads, head_labels, roc_curve_points
from circuits.evaluation.mib import INTERVENTIONS, RANDOM, mib_scores, random_floor
from circuits.methods import SELECTION_NOTE
from circuits.methods.acdc import ACDC_EDGES
from circuits.methods.edge_prune import INIT as PRUNE_INIT
from circuits.methods.edge_prune import LR as PRUNE_LR
from circuits.methods.edge_prune import OBJECTIVE as PRUNE_OBJECTIVE
from circuits.methods.edge_prune import PROMPT_SEED_OFFSET, PRUNE_PROMPTS, check_prune_options
from circuits.methods.edge_prune import STEPS as PRUNE_STEPS
from circuits.methods.edge_prune import TARGET as PRUNE_TARGET
from circuits.methods.registry import MethodInput, expand, get_method
from circuits.methods.sae import sae_overrides
from circuits.models import LoadedModel
from circuits.progress import Progress
from circuits.rankings import RANKINGS_FILE, Rankings
from circuits.stats import STD_NOTE, mean_std
from circuits.truths import alternative_truths, ground_truth_for
from tasks.base import GroundTruth, PromptSet, Task

DEFAULT_METHODS = "sae,patching,eap,acdc"
MIB_STAGE = "CPR/CMD (nodes, edges)"  # the progress stage after every method has run
NULL_MODEL = "actdiff"  # the discrete-SAE method's null model: what its codes discretise, without an SAE


def parse_methods(spec: str, null_model: bool = True) -> list[str]:
    """'sae,patching,eap' -> ['sae', 'actdiff', 'patching-mean', 'patching-resample', 'eap'] (order kept).

    With `null_model`, `actdiff` goes right after the first discrete-SAE method (sae or a variant) unless it
    is named already, so the paper's method is always shown beside what it discretises."""
    methods = expand(spec)
    if null_model and NULL_MODEL not in methods:
        sae = [i for i, m in enumerate(methods) if sae_overrides(get_method(m)) is not None]
        if sae:
            methods.insert(sae[0] + 1, NULL_MODEL)
    return methods


@dataclass(frozen=True)
class CompareConfig:
    methods: tuple[str, ...] = tuple(parse_methods(DEFAULT_METHODS))
    seeds: int = 3
    find: FindConfig = FindConfig()
    acdc_prompts: int = 100
    acdc_distance: str = "kl"
    acdc_edges: int = ACDC_EDGES  # ACDC searches EAP's top N edges on larger graphs (0: every edge)
    acdc_budget: float | None = None  # seconds after which ACDC stops testing edges (None: no limit)
    patching_prompts: int = 0  # patching runs on the first N scoring prompts (0: all n_score)
    baseline_seeds: int | None = None  # seeds of the stochastic baselines (None: `seeds`)
    selection: str = "otsu"
    vary_prompts: bool = False
    mib_prompts: int = 50  # CPR/CMD on the first N scoring prompts (0: not computed)
    mib_random: int = 3  # random rankings behind the floor
    eval_seed: int | None = None  # CPR/CMD on held-out prompts drawn with this seed (None: the scoring ones)
    edge_mib: bool = True  # edge-level CPR / CMD too (on the same prompts), for every method
    prune_steps: int = PRUNE_STEPS  # edge-prune (and the ensemble's edge-prune): mask training steps
    prune_target: float = PRUNE_TARGET  # its target: a fraction (< 1) of the edges or an edge count
    prune_objective: str = PRUNE_OBJECTIVE  # its faithfulness term (circuits.methods.edge_prune.OBJECTIVES)
    prune_init: str = PRUNE_INIT  # its warm start
    prune_lr: float = PRUNE_LR  # its Adam learning rate on the gate logits

    def validate(self) -> None:
        self.find.validate()
        if self.mib_prompts < 0 or self.mib_random < 0:
            raise CircuitsError("--mib-prompts and --mib-random must be zero or more")
        if self.seeds < 1:
            raise CircuitsError(f"--seeds must be at least 1, got {self.seeds}")
        if self.acdc_edges < 0:
            raise CircuitsError(f"--acdc-edges must be zero (every edge) or more, got {self.acdc_edges}")
        if self.acdc_budget is not None and self.acdc_budget <= 0:
            raise CircuitsError(f"--acdc-budget must be positive seconds, got {self.acdc_budget}")
        if self.acdc_prompts < 1:
            raise CircuitsError(f"--acdc-prompts must be positive, got {self.acdc_prompts}")
        if self.patching_prompts < 0:
            raise CircuitsError(f"--patching-prompts must be zero (all) or more, got {self.patching_prompts}")
        if self.baseline_seeds is not None and self.baseline_seeds < 1:
            raise CircuitsError(f"--baseline-seeds must be at least 1, got {self.baseline_seeds}")
        if self.acdc_distance not in ("kl", "metric"):
            raise CircuitsError(f"unknown ACDC distance '{self.acdc_distance}' (kl, metric)")
        check_prune_options(self.prune_steps, self.prune_target, self.prune_objective, self.prune_init,
                            self.prune_lr)
        for m in self.methods:
            get_method(m)


def _one_run(method: str, task: Task, loaded: LoadedModel, config: CompareConfig, seed: int
             ) -> dict[str, Any]:
    """Scores, selected heads, edges and cost of `method` with method seed `seed`."""
    prompt_seed = seed if config.vary_prompts else config.find.seed
    find = replace(config.find, seed=prompt_seed, selection=config.selection)
    options = {"acdc_prompts": config.acdc_prompts, "distance": config.acdc_distance,
               "acdc_edges": config.acdc_edges, "acdc_budget": config.acdc_budget,
               "patching_prompts": config.patching_prompts, "prune_steps": config.prune_steps,
               "prune_target": config.prune_target, "prune_objective": config.prune_objective,
               "prune_init": config.prune_init, "prune_lr": config.prune_lr}
    run = get_method(method).run(MethodInput(task=task, loaded=loaded, find=find, seed=seed, options=options))
    return {"node_scores": run.node_scores, "selected": run.selected, "edge_scores": run.edge_scores,
            "seconds": run.seconds, "forward": run.forward, "backward": run.backward, "details": run.details,
            "graph_edge_scores": run.graph_edge_scores,
            "signed_graph_edge_scores": run.signed_graph_edge_scores}


def _method_seeds(method: str, seeds: list[int], config: CompareConfig) -> list[int]:
    """Every seed for a stochastic method (stochastic baselines: the first `baseline_seeds`), else one."""
    if not (get_method(method).stochastic or config.vary_prompts):
        return seeds[:1]
    if get_method(method).baseline and config.baseline_seeds is not None:
        return seeds[:config.baseline_seeds]
    return seeds


def _summary(values: list[float | None]) -> dict[str, Any] | None:
    """Mean and population std over seeds (circuits.stats), with the values themselves."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {**mean_std(vals), "values": vals}


def compare_methods(task: Task, loaded: LoadedModel, config: CompareConfig,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Run every method for every seed and score them identically -> one JSON-ready object."""
    return compare_with_rankings(task, loaded, config, progress)[0]


def compare_with_rankings(task: Task, loaded: LoadedModel, config: CompareConfig,
                          progress: Progress | None = None) -> tuple[dict[str, Any], Rankings]:
    """`compare_methods`, and every run's scores (for rankings.npz: too large for the JSON report)."""
    config.validate()
    truth, note = ground_truth_for(task, loaded)
    truths: dict[str, GroundTruth] = {} if truth is None else {"mean": truth}
    if truth is not None:
        truths.update(alternative_truths(task, loaded))
    L, H = loaded.n_layers, loaded.n_heads
    seeds = [config.find.seed + i for i in range(config.seeds)]
    methods: dict[str, Any] = {}
    curves: dict[str, dict[str, list[float]] | None] = {}
    rankings: dict[str, Any] = {}  # "method#seed" -> node scores [layer, head]
    edge_rankings: dict[str, tuple[Any, Any, str]] = {}  # "method#seed" -> run_edge_ranking(...)
    graph = ComputeGraph.of(loaded.model)
    kept = Rankings(meta={
        "task": task.name, "model": loaded.name, "n_layers": L, "n_heads": H,
        "graph": graph.describe(),
        "labels": {m: get_method(m).label for m in config.methods},
        "prompts": {"seed": config.find.seed, "n_train": config.find.n_train, "n_score": config.find.n_score,
                    "vary_prompts": config.vary_prompts},
        "selection": config.selection, "mib_prompts": config.mib_prompts, "eval_seed": config.eval_seed})
    for m in config.methods:
        runs = []
        method_seeds = _method_seeds(m, seeds, config)
        for i, seed in enumerate(method_seeds):
            if progress:
                progress(m, i, len(method_seeds))
            run = _one_run(m, task, loaded, config, seed)
            rankings[f"{m}#{seed}"] = run["node_scores"]
            edge_rankings[f"{m}#{seed}"] = run_edge_ranking(
                graph, run["node_scores"], run["graph_edge_scores"], run["signed_graph_edge_scores"])
            kept.add(f"{m}#{seed}", run["node_scores"], run["graph_edge_scores"],
                     run["signed_graph_edge_scores"])
            ev: dict[str, Any] = {}
            if truth is not None:
                ev = evaluate_heads(run["node_scores"], run["selected"], truth)
                ev["edge_roc_auc"] = (edge_auc(run["edge_scores"], truth, L, H)
                                      if run["edge_scores"] is not None else None)
                for name, alt in truths.items():
                    if name != "mean":
                        alt_ev = evaluate_heads(run["node_scores"], run["selected"], alt)
                        ev[f"roc_auc_{name}"] = alt_ev["roc_auc"]
            runs.append({"seed": seed, **ev, "n_selected": len(run["selected"]), "seconds": run["seconds"],
                         "forward_passes": run["forward"], "backward_passes": run["backward"],
                         "selected": sorted(run["selected"]), "details": run["details"]})
            if i == 0 and truth is not None:
                curves[m] = roc_curve_points(run["node_scores"], truth)
        if progress:
            progress(m, len(method_seeds), len(method_seeds))
        methods[m] = {
            "label": runs[0]["details"].get("label", get_method(m).label),
            "stochastic": get_method(m).stochastic,
            "seeds": method_seeds,
            "node_roc_auc": _summary([r.get("roc_auc") for r in runs]),
            **{f"node_roc_auc_{name}": _summary([r.get(f"roc_auc_{name}") for r in runs])
               for name in truths if name != "mean"},
            "edge_roc_auc": _summary([r.get("edge_roc_auc") for r in runs]),
            "precision": _summary([r.get("precision") for r in runs]),
            "recall": _summary([r.get("recall") for r in runs]),
            "f1": _summary([r.get("f1") for r in runs]),
            "n_selected": _summary([r["n_selected"] for r in runs]),
            "seconds": _summary([r["seconds"] for r in runs]),
            "forward_passes": _summary([r["forward_passes"] for r in runs]),
            "backward_passes": _summary([r["backward_passes"] for r in runs]),
            "runs": runs,
        }
        _auc_intervals(methods[m], [rankings[f"{m}#{s}"] for s in method_seeds], truths, L, H)
    if progress and config.mib_prompts:  # the CPR/CMD passes can take as long as a method (SmolLM2: minutes)
        progress(MIB_STAGE, 0, 2)
    mib = _mib(task, loaded, config, rankings, methods)
    if progress and config.mib_prompts:
        progress(MIB_STAGE, 1, 2)
    edge_mib = _edge_mib(task, loaded, config, edge_rankings, methods)
    if progress and config.mib_prompts:
        progress(MIB_STAGE, 2, 2)
    report = {
        "task": task.name,
        "model": loaded.name,
        "n_layers": L,
        "n_heads": H,
        "seeds": seeds,
        "config": {**asdict(config), "methods": list(config.methods)},
        "ground_truth": None if truth is None else
        {"source": truth.source, "n_heads": len(truth.heads), "n_edges": len(truth.edges),
         "others": {name: {"source": t.source, "n_heads": len(t.heads)} for name, t in truths.items()
                    if name != "mean"}},
        "ground_truth_note": note,
        "methods": methods,
        "mib": mib,
        "edge_mib": edge_mib,
        "agreement": _agreement(config.methods, rankings, seeds),
        "roc_curves": curves,
        "notes": {
            "selection": SELECTION_NOTE + f" (rule: {config.selection})",
            "seeds": _seed_note(config),
            "passes": "forward/backward passes in units of one pass over the n_score scoring prompts "
                      "(a batched pass over k copies counts k; the SAE method also reads its n_train "
                      "training prompts)",
            "patching": (f"patching on the first {config.patching_prompts} scoring prompts"
                         if config.patching_prompts else "patching on every scoring prompt"),
            "acdc": f"ACDC on the first {config.acdc_prompts} scoring prompts, distance "
                    f"{config.acdc_distance}, on the residual-stream graph (input, heads, MLPs, logits; one "
                    f"edge into a head covers its q, k and v); "
                    + (f"bounded to EAP's top {config.acdc_edges} edges on larger graphs"
                       if config.acdc_edges else "every edge searched")
                    + (f", stopping after {config.acdc_budget:g} s" if config.acdc_budget else ""),
            "seconds": "wall clock of each method alone (prompt building excluded)",
            "mib": (f"CPR / CMD on {mib_prompts_note(config)}; "
                    f"{mib['definition']}") if mib else "not computed (--mib-prompts 0)",
            "edge_mib": (f"edge CPR / CMD on the same prompts; {edge_mib['definition']}; a method that "
                         f"scores no edges is ranked by edges {EDGE_SOURCES['node-derived']}") if edge_mib
            else "not computed (--no-edge-mib or --mib-prompts 0)",
            "agreement": "Spearman rank correlation between methods' node scores (each method's first run)",
            "ci95": CI_NOTE,
            "node_roc_auc_resample": "node ROC AUC against the circuit found under resample ablation "
                                     "(shipped beside the mean-ablation ground truth)",
            "actdiff": "activation difference, the discrete-SAE method's null model: per head, the L2 "
                       "distance between its mean output over the positives and over the negatives (the SAE "
                       "method's hook and pooling, no SAE); added beside every SAE method",
            **DEFINITIONS,
        },
    }
    return report, kept


def _auc_intervals(entry: dict[str, Any], scores: list[Any], truths: dict[str, GroundTruth],
                   n_layers: int, n_heads: int) -> None:
    """Each node AUC summary gets "ci95": the mean AUC over the runs, heads resampled (circuits.evaluation.
    bootstrap: a run is one ranking, so its prompts cannot be resampled without rerunning it)."""
    for name, truth in truths.items():
        summary = entry.get("node_roc_auc" if name == "mean" else f"node_roc_auc_{name}")
        if summary is not None:
            summary["ci95"] = auc_interval(scores, head_labels(truth, n_layers, n_heads))


def _groups(methods: dict[str, Any]) -> dict[str, list[str]]:
    """Method -> its runs' ranking names: CPR / CMD intervals are for the mean over a method's seeds."""
    return {m: [f"{m}#{seed}" for seed in entry["seeds"]] for m, entry in methods.items()}


def _mib(task: Task, loaded: LoadedModel, config: CompareConfig, rankings: dict[str, Any],
         methods: dict[str, Any]) -> dict[str, Any] | None:
    """CPR / CMD of every run's ranking (one batched call per intervention); summaries into `methods`."""
    if config.mib_prompts == 0 or not rankings:
        return None
    score_set = _mib_prompts(task, loaded, config)
    result = mib_scores(loaded.model, task, score_set, rankings, INTERVENTIONS, n_random=config.mib_random,
                        seed=config.find.seed, groups=_groups(methods))
    _summarise_areas(result, methods, "")
    return result


def _summarise_areas(result: dict[str, Any], methods: dict[str, Any], prefix: str) -> None:
    """Per method, CPR / CMD mean ± std over its seeds (`<prefix>cpr_<intervention>`, with "ci95": the
    prompt-bootstrap interval of that mean) and each run's areas (`<prefix>mib_<intervention>`); the random
    floor into `result`."""
    for m, entry in methods.items():
        for intervention, res in result["interventions"].items():
            runs = [res["rankings"][f"{m}#{seed}"] for seed in entry["seeds"]]
            for key in ("cpr", "cmd"):
                summary = _summary([r[key] for r in runs])
                ci = res.get("groups", {}).get(m, {}).get(f"{key}_ci")
                if summary is not None and ci is not None:
                    summary["ci95"] = ci
                entry[f"{prefix}{key}_{intervention}"] = summary
            for r, run in zip(runs, entry["runs"], strict=True):
                run[f"{prefix}mib_{intervention}"] = r
    result["random"] = random_floor(result)


def _edge_mib(task: Task, loaded: LoadedModel, config: CompareConfig,
              edge_rankings: dict[str, tuple[Any, Any, str]], methods: dict[str, Any]
              ) -> dict[str, Any] | None:
    """Edge CPR / CMD of every run (its own edge scores, or derived from its head scores; one batched call
    per intervention on the prompts node CPR / CMD uses); summaries `edge_cpr_<intervention>` etc. into
    `methods`."""
    if config.mib_prompts == 0 or not config.edge_mib or not edge_rankings:
        return None
    score_set = _mib_prompts(task, loaded, config)
    scores = {key: r[0] for key, r in edge_rankings.items()}
    signed = {key: r[1] for key, r in edge_rankings.items() if r[1] is not None}
    result = edge_mib_scores(loaded.model, task, score_set, scores, signed, INTERVENTIONS,
                             n_random=config.mib_random, seed=config.find.seed, groups=_groups(methods))
    for m, entry in methods.items():
        entry["edge_scores_from"] = edge_rankings[f"{m}#{entry['seeds'][0]}"][2]
    _summarise_areas(result, methods, "edge_")
    result["sources"] = EDGE_SOURCES
    return result


def _mib_prompts(task: Task, loaded: LoadedModel, config: CompareConfig) -> PromptSet:
    """Where node and edge CPR / CMD are measured: the first `mib_prompts` scoring prompts, or with
    `eval_seed` that many prompts drawn with it minus every pair any method fitted on (held out)."""
    n = config.find.n_train + config.find.n_score
    if config.eval_seed is None:
        _, score_set = split_prompts(task.prompts(loaded.tokenizer, n, config.find.seed), config.find.n_train)
        return score_set.subset(slice(0, min(len(score_set), config.mib_prompts)))
    drawn = task.prompts(loaded.tokenizer, 4 * config.mib_prompts, config.eval_seed)
    seeds = [config.find.seed + i for i in range(config.seeds)] if config.vary_prompts else [config.find.seed]
    for seed in seeds:
        drawn, _ = drawn.without(task.prompts(loaded.tokenizer, n, seed))
        if {"edge-prune", "ensemble"} & set(config.methods):  # their own training split
            drawn, _ = drawn.without(task.prompts(loaded.tokenizer, PRUNE_PROMPTS, seed + PROMPT_SEED_OFFSET))
    if not len(drawn):
        raise CircuitsError(f"every prompt drawn with --eval-seed {config.eval_seed} is one the methods fit "
                            "on: choose another seed")
    return drawn.subset(slice(0, min(len(drawn), config.mib_prompts)))


def mib_prompts_note(config: CompareConfig) -> str:
    """Which prompts the CPR / CMD were measured on, for compare.json's notes."""
    if config.eval_seed is None:
        return f"the first {config.mib_prompts} scoring prompts (the prompts the methods fit on)"
    return (f"{config.mib_prompts} held-out prompts drawn with seed {config.eval_seed}, minus every pair a "
            "method fitted on (fewer when the task has few distinct prompts)")


def _agreement(methods: tuple[str, ...], rankings: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """Spearman correlation of node scores between every pair of methods (first run of each)."""
    from scipy.stats import spearmanr

    first = {m: rankings[f"{m}#{seeds[0]}"].reshape(-1).double().numpy() for m in methods}
    out: dict[str, Any] = {}
    for a in methods:
        for b in methods:
            if a < b:
                rho = spearmanr(first[a], first[b]).statistic
                out[f"{a}|{b}"] = None if np.isnan(rho) else float(rho)
    return {"spearman": out}


def _seed_note(config: CompareConfig) -> str:
    if config.vary_prompts:
        note = ("seed s draws the prompts, the SAE initialisation and the resample draws; every method runs "
                "for every seed and sees the same prompts within a seed")
    else:
        note = (f"prompts drawn once with seed {config.find.seed}; the stochastic methods (sae: SAE "
                "initialisation, patching-resample: resample draws) run once per seed, the deterministic "
                "ones (patching-mean, eap, acdc, actdiff) once")
    return f"{note}; {STD_NOTE}"


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` for compare reports: tensors, arrays, sets and tuples as lists."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


OUTPUT_FILES = ("compare.json", "roc.png", "faithfulness.png", RANKINGS_FILE)  # what write_outputs may write


def write_outputs(report: dict[str, Any], out_dir: Path, rankings: Rankings | None = None) -> dict[str, str]:
    """roc.png, faithfulness.png (when CPR/CMD were computed), rankings.npz (when `rankings` are given) and
    compare.json into out_dir, each atomically; the JSON, written last, lists the files under "files"."""
    import json

    from circuits.atomic import atomic_write_text

    files = {"roc_plot": str(write_roc_plot(report, out_dir / "roc.png")),
             "json": str(out_dir / "compare.json")}
    if rankings is not None:
        files["rankings"] = str(rankings.save(out_dir / RANKINGS_FILE))
    faith_plot = write_faithfulness_plot(report, out_dir / "faithfulness.png")
    if faith_plot is not None:
        files["faithfulness_plot"] = str(faith_plot)
    report["files"] = files
    atomic_write_text(out_dir / "compare.json", json.dumps(report, indent=2, default=json_default))
    return files


def write_roc_plot(report: dict[str, Any], path: Path) -> Path:
    """One ROC curve per method (first seed), AUC mean +- std in the legend; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
    for m, curve in report["roc_curves"].items():
        if curve is None:
            continue
        auc = report["methods"][m]["node_roc_auc"]
        label = report["methods"][m]["label"]
        if auc is not None and len(auc["values"]) > 1:
            label += f" (AUC {auc['mean']:.3f} ± {auc['std']:.3f}, {len(auc['values'])} seeds)"
        elif auc is not None:
            label += f" (AUC {auc['mean']:.3f})"
        ax.plot(curve["fpr"], curve["tpr"], linewidth=1.6, label=label)
    ax.set_xlabel("false positive rate (heads)")
    ax.set_ylabel("true positive rate (heads)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(f"{report['task']} on {report['model']}: node ROC (seed {report['seeds'][0]})", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def write_faithfulness_plot(report: dict[str, Any], path: Path) -> Path | None:
    """MIB faithfulness curves (first seed of each method, and the random floor), one panel per
    intervention, CPR mean +- std in the legend; written atomically. None when CPR/CMD were not computed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mib = report.get("mib")
    if not mib:
        return None
    interventions = list(mib["interventions"])
    fig = Figure(figsize=(5.5 * len(interventions), 4.8))
    FigureCanvasAgg(fig)
    grid = mib["grid"]
    for j, intervention in enumerate(interventions):
        ax = fig.add_subplot(1, len(interventions), j + 1)
        scored = mib["interventions"][intervention]["rankings"]
        for m, entry in report["methods"].items():
            curve = scored.get(f"{m}#{entry['seeds'][0]}")
            if curve is None:
                continue
            cpr = entry.get(f"cpr_{intervention}")
            label = entry["label"]
            if cpr is not None:
                label += (f" (CPR {cpr['mean']:.3f} ± {cpr['std']:.3f})" if len(cpr["values"]) > 1
                          else f" (CPR {cpr['mean']:.3f})")
            ax.plot(grid, curve["faithfulness"], marker="o", markersize=3, linewidth=1.4, label=label)
        if RANDOM in scored:
            ax.plot(grid, scored[RANDOM]["faithfulness"], color="0.5", linestyle="--", linewidth=1,
                    label=f"random ranking (CPR {scored[RANDOM]['cpr']:.3f})")
        ax.axhline(1.0, color="0.8", linewidth=0.8)
        ax.set_xlabel("fraction of heads kept (top of the ranking)")
        ax.set_ylabel("faithfulness")
        ax.set_title(f"{report['task']} on {report['model']}: {intervention} ablation "
                     f"({mib['n_prompts']} prompts)", fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path
