"""The `circuits` command line: parse, call the library, render. No science happens here."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from circuits.atomic import atomic_write_text
from circuits.cli.common import check_writable_dir, console, print_json, user_errors
from circuits.errors import CircuitsError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Find circuits in transformer language models with discrete sparse autoencoders.")



@app.callback()
def _root() -> None:
    """Find circuits in transformer language models with discrete sparse autoencoders."""


STAGES = {"prompts": "building prompts", "activations": "head activations", "sae": "training SAEs",
          "scoring": "scoring heads and edges"}


@app.command()
@user_errors
def find(
    task: str = typer.Option(..., "--task", "-t",
                             help="ioi | greaterthan | docstring | path/to/task.jsonl (see tasks/custom.py)"),
    model: str = typer.Option("", "--model", "-m",
                              help="tiny-<task> (bundled), random:gpt2-small, a checkpoint or Hugging "
                                   "Face model dir, or a "
                                   "TransformerLens name; default: the task's bundled model"),
    n_train: int = typer.Option(10, help="prompts the SAEs are trained on (half positive, half negative)"),
    n_score: int = typer.Option(250, help="positive and negative prompts each used for scoring"),
    seed: int = typer.Option(0, help="seed for prompts and SAE initialisation"),
    hook: str = typer.Option("result", help="result (z @ W_O, d_model) | z (per-head output, d_head)"),
    position: str = typer.Option("mean", help="mean over positions | last position | each position"),
    sae: str = typer.Option("shared", help="shared (one SAE for all heads) | per-head (batched)"),
    arch: str = typer.Option("relu", help="SAE architecture: relu | topk | batchtopk | gated | jumprelu"),
    k: int = typer.Option(4, help="active latents for topk / batchtopk"),
    d_sae: int | None = typer.Option(None, help="latents per SAE (default 32 per-head, 200 shared)"),
    l1: float = typer.Option(0.02, help="L1 coefficient"),
    steps: int = typer.Option(100, help="full-batch Adam steps of the SAE(s) (the paper: 500)"),
    score: str = typer.Option("count", help="count (distinct positive-only codes) | mass"),
    selection: str = typer.Option("otsu", help="otsu | positive | top:K (label-free rules)"),
    edges: bool = typer.Option(True, help="score head->head edges"),
    faithfulness: bool = typer.Option(False, help="measure the circuit's faithfulness by mean ablation"),
    out: Path | None = typer.Option(None, help="directory for result.json and graph exports"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    report_path: Path | None = typer.Option(None, "--report",
                                            help="write an HTML report here (figures also as PNG beside it)"),
    n_seeds: int = typer.Option(1, "--seeds", help="run N SAE seeds (from --seed) and report circuit "
                                                   "stability across them"),
) -> None:
    """Find the circuit of TASK in MODEL and compare it with the ground truth."""
    from circuits.discovery.config import FindConfig
    from circuits.discovery.graph import export_graph
    from circuits.discovery.pipeline import find_circuit, ground_truth_for
    from circuits.models import load_model
    from tasks import get_task

    config = FindConfig(n_train=n_train, n_score=n_score, seed=seed, hook=hook, position=position,
                        sae=sae, arch=arch, k=k, d_sae=d_sae, l1=l1, steps=steps, score=score,
                        selection=selection, edges=edges, faithfulness=faithfulness)
    config.validate()
    if n_seeds < 1:
        raise CircuitsError(f"--seeds must be positive, got {n_seeds}")
    task_obj = get_task(task)
    out_dir = check_writable_dir(out) if out is not None else None
    if report_path is not None:
        from circuits.report import check_report_path

        check_report_path(report_path)
    if not model and task.endswith((".jsonl", ".json")):
        raise CircuitsError("a task file needs --model (a model directory, random:gpt2-small, ...)")
    loaded = load_model(model or f"tiny-{task_obj.name}", task_obj, seed)
    truth, _ = ground_truth_for(task_obj, loaded)
    if truth is not None:  # a ground truth naming heads the model lacks fails now, not after the run
        truth.validate(loaded.n_layers, loaded.n_heads)
    with _progress() as bar:
        ids = {stage: bar.add_task(label, total=None) for stage, label in STAGES.items()}

        def report(stage: str, done: int, total: int) -> None:
            if stage in ids:
                bar.update(ids[stage], completed=done, total=total)

        if n_seeds > 1:  # circuit stability across SAE seeds (circuits.analysis.stability)
            from circuits.analysis.stability import find_with_seeds

            ids["seeds"] = bar.add_task("SAE seeds", total=n_seeds)
            result, stability = find_with_seeds(task_obj, loaded, config, n_seeds, progress=report)
            result.extra["stability"] = stability
        else:
            result = find_circuit(task_obj, loaded, config, progress=report)
    if hasattr(task_obj, "summary"):  # task files: pairs used and dropped
        result.extra["task_file"] = task_obj.summary()
    payload = result.to_json()
    if out_dir is not None:
        payload["files"] = export_graph(result.graph, out_dir)
        if payload.get("stability"):
            from circuits.cli.analysis import write_stability_figures

            payload["files"].update(write_stability_figures(payload, out_dir))
    if report_path is not None:
        from circuits.report import write_report

        payload.setdefault("files", {}).update(write_report(payload, report_path))
    if out_dir is not None:
        atomic_write_text(out_dir / "result.json", json.dumps(payload, indent=2))
        payload["files"]["result"] = str(out_dir / "result.json")
    if as_json:
        print_json(payload)
    else:
        _render(payload)


@app.command("report")
@user_errors
def report_command(
    run_dir: Path = typer.Argument(..., help="a directory written by `circuits find --out` (or its "
                                             "result.json)"),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="HTML file to write; default RUN_DIR/report.html"),
) -> None:
    """Write the HTML report of a finished run (figures inlined, and as PNG beside the page)."""
    from circuits.report import check_report_path, load_result, write_report

    payload = load_result(run_dir)
    target = out if out is not None else (run_dir if run_dir.is_dir() else run_dir.parent) / "report.html"
    check_report_path(target)
    files = write_report(payload, target)
    console.print(f"wrote {', '.join(files.values())}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                    transient=True)


def _render(payload: dict) -> None:
    """Human summary on stderr: the circuit, its evaluation and the timings."""
    heads = sorted((h for h in payload["heads"] if h["in_circuit"]), key=lambda h: -h["score"])
    ev = payload["evaluation"]
    truth = {tuple(h) for h in ev.get("truth_heads", [])} if ev else None
    title = (f"circuit for {payload['task']} on {payload['model']}: {len(heads)} of "
             f"{len(payload['heads'])} heads")
    console.print(title, highlight=False)
    table = Table()
    table.add_column("head", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    if truth is not None:
        table.add_column("in truth", justify="center", no_wrap=True)
    for h in heads:
        row = [f"L{h['layer']}H{h['head']}", f"{h['score']:.3g}"]
        if truth is not None:
            row.append("yes" if (h["layer"], h["head"]) in truth else "[dim]no[/]")
        table.add_row(*row)
    console.print(table)
    if truth is not None:
        missed = sorted(truth - {(h["layer"], h["head"]) for h in heads})
        if missed:
            console.print("truth heads not selected: " + " ".join(f"L{l}H{h}" for l, h in missed))
    if ev is None:
        console.print(f"evaluation: {payload['evaluation_note']}")
    else:
        edge = ev.get("edge_roc_auc")
        console.print(f"node ROC AUC {ev['roc_auc']:.3f}  precision {ev['precision']:.3f}  "
                      f"recall {ev['recall']:.3f}  F1 {ev['f1']:.3f}"
                      + (f"  edge ROC AUC {edge:.3f}" if edge is not None else "")
                      + f"  (truth: {ev['n_truth']} heads, {ev['truth_source']})")
    if payload.get("faithfulness"):
        kept = payload["faithfulness"]["normalized"]
        console.print(f"faithfulness (mean ablation, normalised): {kept:.3f}")
    if payload.get("stability"):
        from circuits.cli.analysis import render_stability

        render_stability(payload["stability"])
    if payload.get("task_file"):
        info = payload["task_file"]
        drops = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in info["dropped"].items())
        console.print(f"task file: {info['usable_pairs']} of {info['pairs_in_file']} pairs usable"
                      + (f" (dropped: {drops})" if drops else ""))
    timings = "  ".join(f"{k} {v:.2f}s" for k, v in payload["timings"].items())
    console.print(f"timings: {timings}")
    if payload.get("files"):
        console.print(f"wrote {', '.join(payload['files'].values())}")


def _register_subcommands() -> None:
    """Commands that live in their own modules (each imports its heavy parts lazily)."""
    from circuits.cli.compare import compare, evaluate
    from circuits.cli.sae import sae_app
    from circuits.cli.zoo import zoo_app

    app.command()(compare)
    app.command()(evaluate)
    app.add_typer(sae_app, name="sae")
    app.add_typer(zoo_app, name="zoo")
    from circuits.cli.analysis import absorption, seeds

    sae_app.command()(seeds)
    sae_app.command()(absorption)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
