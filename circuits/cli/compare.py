"""`circuits compare`: parse, call the library (circuits.compare) and render."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from circuits.cli.common import (
    check_writable_dir,
    claim_outputs,
    claim_report,
    config_option,
    print_json,
    progress_display,
    user_errors,
)
from circuits.cli.common import out as results  # tables on stdout, progress on stderr
from circuits.cli.prune_options import (
    prune_init_option,
    prune_lr_option,
    prune_objective_option,
    prune_overrides,
    prune_steps_option,
    prune_target_option,
)
from circuits.discovery.config import FindConfig

ABLATIONS = ("mean", "resample", "zero")


@user_errors
def compare(
    task: str = typer.Option(..., "--task", "-t", help="ioi | greaterthan | docstring"),
    model: str = typer.Option("", "--model", "-m", help="default: the task's bundled model tiny-<task>"),
    methods: str = typer.Option("sae,patching,eap,acdc",
                                help="comma list of sae, patching (= patching-mean + patching-resample), "
                                     "patching-mean, patching-resample, eap, eap-ig, acdc, edge-prune, "
                                     "ensemble, actdiff, sae-variants (see `circuits find --method`); "
                                     "actdiff (activation difference, the SAE method's null model) is added "
                                     "right after sae or any SAE variant"),
    seeds: int = typer.Option(3, help="seeds for the stochastic methods (sae, patching-resample)"),
    vary_prompts: bool = typer.Option(
        False, help="each seed also draws new prompts, and every method runs for every seed"),
    seed: int = config_option(FindConfig, "seed"),
    n_train: int = config_option(FindConfig, "n_train"),
    n_score: int = config_option(FindConfig, "n_score"),
    acdc_prompts: int = typer.Option(100, help="ACDC runs on the first N scoring prompts"),
    acdc_distance: str = typer.Option("kl", help="ACDC distance: kl | metric"),
    acdc_edges: int | None = typer.Option(  # None: CompareConfig's default (not imported here: too heavy)
        None, help="on a graph with more edges, ACDC searches only EAP's top N edges (bounded ACDC, "
                   "labelled so); 0: every edge (days on SmolLM2); default: ACDC_EDGES (300)"),
    acdc_budget: float | None = typer.Option(
        None, help="seconds after which ACDC stops testing edges (its row says how many it tested)"),
    patching_prompts: int = typer.Option(
        0, help="patching runs on the first N scoring prompts (one pass per head: the slowest after ACDC); "
                "0: all"),
    prune_steps: int | None = prune_steps_option(),
    prune_target: float | None = prune_target_option(),
    prune_objective: str | None = prune_objective_option(),
    prune_init: str | None = prune_init_option(),
    prune_lr: float | None = prune_lr_option(),
    baseline_seeds: int | None = typer.Option(
        None, help="seeds of the stochastic baselines (patching-resample); default: --seeds"),
    mib_prompts: int = typer.Option(50, help="CPR/CMD (MIB) on the first N scoring prompts; 0: not computed"),
    mib_random: int = typer.Option(3, help="random rankings averaged into the CPR/CMD floor"),
    eval_seed: int | None = typer.Option(
        None, help="measure CPR/CMD on --mib-prompts prompts drawn with this seed, minus every pair any "
                   "method fitted on (held out); default: on the first --mib-prompts scoring prompts"),
    edge_mib: bool = typer.Option(True, help="edge-level CPR/CMD on the residual-stream graph too "
                                             "(head-level methods ranked by edges derived from their head "
                                             "scores)"),
    selection: str = typer.Option("otsu",
                                  help="label-free rule on each method's scores: otsu | positive | top:K"),
    out: Path | None = typer.Option(None, help="directory for compare.json, roc.png, faithfulness.png and "
                                               "rankings.npz (every run's node and edge scores, for "
                                               "`circuits evaluate --rankings`)"),
    report_path: Path | None = typer.Option(
        None, "--report", help="write an HTML page of the comparison here (method table, faithfulness "
                               "curves, ROC, circuits side by side, agreement; PNGs beside it)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="replace existing output files (atomically); default: refuse"),
    force: bool = typer.Option(False, "--force", help="run even when the memory estimate exceeds what is "
                                                      "available"),
) -> None:
    """Compare the discrete-SAE method with activation patching, EAP and ACDC on one model."""
    from circuits.compare import (
        NULL_MODEL,
        OUTPUT_FILES,
        CompareConfig,
        compare_with_rankings,
        parse_methods,
        write_outputs,
    )
    from circuits.discovery.memory import ModelSizes, check_memory, estimate_baseline_bytes
    from circuits.discovery.pipeline import ground_truth_for
    from circuits.discovery.selection import check_rule
    from circuits.models import load_model
    from tasks import get_task

    config = CompareConfig(methods=tuple(parse_methods(methods)), seeds=seeds,
                           find=FindConfig(n_train=n_train, n_score=n_score, seed=seed),
                           acdc_prompts=acdc_prompts, acdc_distance=acdc_distance, selection=selection,
                           vary_prompts=vary_prompts, patching_prompts=patching_prompts,
                           baseline_seeds=baseline_seeds, mib_prompts=mib_prompts, mib_random=mib_random,
                           acdc_budget=acdc_budget, edge_mib=edge_mib, eval_seed=eval_seed)
    if acdc_edges is not None:
        config = replace(config, acdc_edges=acdc_edges)
    config = replace(config, **prune_overrides(prune_steps, prune_target, prune_objective, prune_init,
                                               prune_lr))
    config.validate()
    check_rule(selection)
    task_obj = get_task(task)
    out_dir = check_writable_dir(out) if out is not None else None
    if out_dir is not None:
        claim_outputs([out_dir / name for name in OUTPUT_FILES], overwrite)
    if report_path is not None:
        from circuits.report.compare import compare_report_files

        claim_report(report_path, compare_report_files(report_path), overwrite)
    loaded = load_model(model or f"tiny-{task_obj.name}", task_obj, seed)
    check_rule(selection, loaded.n_layers * loaded.n_heads)
    truth, _ = ground_truth_for(task_obj, loaded)  # without one, compare reports CPR/CMD and agreement
    if truth is not None:  # a ground truth naming heads the model lacks fails now, not after the run
        truth.validate(loaded.n_layers, loaded.n_heads)
    sizes = ModelSizes.of(loaded, int(task_obj.prompts(loaded.tokenizer, 4, seed).positive.shape[1]))
    baselines = [m for m in config.methods if m not in ("sae", NULL_MODEL)]  # actdiff: one forward, no cache
    extra = estimate_baseline_bytes(min(n_score, acdc_prompts) if baselines == ["acdc"] else n_score, sizes
                                    ) if baselines else 0
    check_memory(config.find, sizes, force, extra, what=f"compare with --n-score {n_score}")
    with progress_display() as bar:
        ids = {m: bar.add_task(m, total=seeds) for m in config.methods}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in ids:  # a stage after the methods (CPR/CMD)
                ids[stage] = bar.add_task(stage, total=total)
            bar.update(ids[stage], completed=done, total=total)

        result, rankings = compare_with_rankings(task_obj, loaded, config, progress=report)
    spec = model or f"tiny-{task_obj.name}"  # how `evaluate --rankings` loads the model again
    rankings.meta["model_spec"] = str(Path(spec).resolve()) if Path(spec).is_dir() else spec
    if out_dir is not None:
        write_outputs(result, out_dir, rankings)
    if report_path is not None:
        from circuits.report.compare import write_compare_report

        heads = None if truth is None else {(int(l), int(h)) for l, h in truth.heads}
        result.setdefault("files", {}).update(write_compare_report(result, report_path, heads))
    if as_json:
        print_json(result)
    else:
        _render_compare(result)


def _pm(summary: dict[str, Any] | None, digits: int = 3) -> str:
    """mean, with ±std on a second line when there are several seeds and the 95 % bootstrap interval on
    the last one where compare computed it (keeps the table narrow)."""
    if summary is None:
        return "—"
    text = f"{summary['mean']:.{digits}f}"
    if len(summary["values"]) > 1:
        text += f"\n±{summary['std']:.{digits}f}"
    ci = summary.get("ci95")
    if ci is not None:
        text += f"\n[{ci[0]:.2f},{ci[1]:.2f}]"
    return text


def _render_compare(result: dict[str, Any]) -> None:
    truth = result["ground_truth"]
    gt = ("no ground truth (CPR/CMD only)" if truth is None else
          f"ground truth {truth['n_heads']} heads / {truth['n_edges']} edges ({truth['source']})")
    table = Table(title=f"{result['task']} on {result['model']}: {len(result['seeds'])} seed(s), {gt}",
                  box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False, show_edge=False,
                  caption="mean (±std over seeds); AUC rs: vs the resample-ablation circuit; CPR/CMD cf, "
                          "mean: MIB areas under counterfactual / mean ablation; [low,high]: 95 % bootstrap "
                          "interval (AUC: heads resampled; CPR/CMD: prompts resampled); |C|: heads selected; "
                          "sec: wall clock; fwd/bwd: passes over the scoring prompts")
    for col in ("method", "node\nAUC", "AUC\nrs", "edge\nAUC", "prec.", "recall", "F1", "CPR\ncf", "CMD\ncf",
                "CPR\nmean", "CMD\nmean", "|C|", "sec", "fwd", "bwd"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for m in result["methods"].values():
        table.add_row(m["label"], _pm(m["node_roc_auc"]), _pm(m.get("node_roc_auc_resample")),
                      _pm(m["edge_roc_auc"]), _pm(m["precision"], 2), _pm(m["recall"], 2), _pm(m["f1"], 2),
                      *(_pm(m.get(f"{k}_{i}")) for i in ("counterfactual", "mean") for k in ("cpr", "cmd")),
                      _pm(m["n_selected"], 1), _pm(m["seconds"], 1), _pm(m["forward_passes"], 0),
                      _pm(m["backward_passes"], 0))
    floor = (result.get("mib") or {}).get("random") or {}
    if floor:
        table.add_row("random ranking", "", "", "", "", "", "",
                      *(f"{floor[i][k]:.3f}" if i in floor else "—" for i in ("counterfactual", "mean")
                        for k in ("cpr", "cmd")), "", "", "", "")
    results.print(table)
    if result.get("edge_mib"):
        results.print(_edge_table(result))
    notes = result["notes"]
    results.print(f"selection: {notes['selection']}", highlight=False)
    acdc = f"; {notes['acdc']}" if "acdc" in result["methods"] else ""
    patching = f"; {notes['patching']}" if any(m.startswith("patching") for m in result["methods"]) else ""
    results.print(f"passes: {notes['passes']}{patching}{acdc}", highlight=False)
    if result.get("edge_mib"):
        results.print(f"edge level: {result['edge_mib']['n_edges']} edges; {notes['edge_mib']}",
                      highlight=False)
    if result.get("files"):
        results.print(f"wrote {', '.join(result['files'].values())}", highlight=False)


def _edge_table(result: dict[str, Any]) -> Table:
    """Edge-level CPR / CMD (MIB's circuit track), one row per method and the random floor."""
    edge = result["edge_mib"]
    table = Table(title=f"edge level: {edge['n_edges']} edges, {edge['n_prompts']} prompts",
                  box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False, show_edge=False,
                  caption="edges: the method's own edge scores, or derived from its head scores; CPR higher "
                          "is better, CMD lower is better")
    for col in ("method", "edges", "CPR\ncf", "CMD\ncf", "CPR\nmean", "CMD\nmean"):
        table.add_column(col, justify="left" if col in ("method", "edges") else "right", no_wrap=True)
    for m in result["methods"].values():
        table.add_row(m["label"], "own" if m.get("edge_scores_from") == "edges" else "derived",
                      *(_pm(m.get(f"edge_{k}_{i}")) for i in ("counterfactual", "mean")
                        for k in ("cpr", "cmd")))
    floor = edge.get("random") or {}
    if floor:
        table.add_row("random ranking", "", *(f"{floor[i][k]:.3f}" if i in floor else "—"
                                              for i in ("counterfactual", "mean") for k in ("cpr", "cmd")))
    return table
