"""`circuits compare` and `circuits evaluate`: plain functions that circuits/cli.py registers.

    app.command()(compare)
    app.command()(evaluate)

They only parse, call the library (circuits.methods) and render.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from circuits.atomic import atomic_write_text
from circuits.cli.common import check_writable_dir, console, print_json, user_errors
from circuits.errors import CircuitsError
from circuits.jsonio import read_json

ABLATIONS = ("mean", "resample", "zero")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                    transient=True)


@user_errors
def compare(
    task: str = typer.Option(..., "--task", "-t", help="ioi | greaterthan | docstring"),
    model: str = typer.Option("", "--model", "-m", help="default: the task's bundled model tiny-<task>"),
    methods: str = typer.Option("sae,patching,eap,acdc",
                                help="comma list of sae, patching (= patching-mean + patching-resample), "
                                     "patching-mean, patching-resample, eap, acdc"),
    seeds: int = typer.Option(3, help="seeds for the stochastic methods (sae, patching-resample)"),
    vary_prompts: bool = typer.Option(
        False, help="each seed also draws new prompts, and every method runs for every seed"),
    seed: int = typer.Option(0, help="prompt seed, and the first method seed"),
    n_train: int = typer.Option(10, help="SAE training prompts"),
    n_score: int = typer.Option(250, help="positive and negative scoring prompts each (all methods)"),
    acdc_prompts: int = typer.Option(100, help="ACDC runs on the first N scoring prompts"),
    acdc_distance: str = typer.Option("kl", help="ACDC distance: kl | metric"),
    selection: str = typer.Option("otsu",
                                  help="label-free rule on each method's scores: otsu | positive | top:K"),
    out: Path | None = typer.Option(None, help="directory for compare.json and roc.png"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Compare the discrete-SAE method with activation patching, EAP and ACDC on one model."""
    from circuits.compare import CompareConfig, compare_methods, parse_methods, write_roc_plot
    from circuits.discovery.config import FindConfig
    from circuits.models import load_model
    from tasks import get_task

    config = CompareConfig(methods=tuple(parse_methods(methods)), seeds=seeds,
                           find=FindConfig(n_train=n_train, n_score=n_score, seed=seed),
                           acdc_prompts=acdc_prompts, acdc_distance=acdc_distance, selection=selection,
                           vary_prompts=vary_prompts)
    config.validate()
    _check_selection(selection)
    task_obj = get_task(task)
    out_dir = check_writable_dir(out) if out is not None else None
    loaded = load_model(model or f"tiny-{task_obj.name}", task_obj, seed)
    with _progress() as bar:
        ids = {m: bar.add_task(m, total=seeds) for m in config.methods}

        def report(method: str, done: int, total: int) -> None:
            bar.update(ids[method], completed=done, total=total)

        result = compare_methods(task_obj, loaded, config, progress=report)
    if out_dir is not None:
        plot = write_roc_plot(result, out_dir / "roc.png")
        result["files"] = {"roc_plot": str(plot), "json": str(out_dir / "compare.json")}
        atomic_write_text(out_dir / "compare.json", json.dumps(result, indent=2, default=_default))
    if as_json:
        print_json(result)
    else:
        _render_compare(result)


def _check_selection(rule: str) -> None:
    import torch

    from circuits.discovery.selection import select_heads

    select_heads(torch.zeros(1, 2), rule)  # raises ValueError with a clear message for a bad rule


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _pm(summary: dict[str, Any] | None, digits: int = 3) -> str:
    """mean, with ±std on a second line when there are several seeds (keeps the table narrow)."""
    if summary is None:
        return "—"
    if len(summary["values"]) > 1:
        return f"{summary['mean']:.{digits}f}\n±{summary['std']:.{digits}f}"
    return f"{summary['mean']:.{digits}f}"


def _render_compare(result: dict[str, Any]) -> None:
    truth = result["ground_truth"]
    table = Table(title=f"{result['task']} on {result['model']}: {len(result['seeds'])} seed(s), "
                        f"ground truth {truth['n_heads']} heads / {truth['n_edges']} edges "
                        f"({truth['source']})",
                  box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False, show_edge=False,
                  caption="mean (±std over seeds); |C|: heads selected; sec: wall clock; fwd/bwd: passes "
                          "over the scoring prompts")
    for col in ("method", "node\nAUC", "edge\nAUC", "prec.", "recall", "F1", "|C|", "sec", "fwd", "bwd"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for m in result["methods"].values():
        table.add_row(m["label"], _pm(m["node_roc_auc"]), _pm(m["edge_roc_auc"]), _pm(m["precision"], 2),
                      _pm(m["recall"], 2), _pm(m["f1"], 2), _pm(m["n_selected"], 1), _pm(m["seconds"], 1),
                      _pm(m["forward_passes"], 0), _pm(m["backward_passes"], 0))
    console.print(table)
    notes = result["notes"]
    console.print(f"selection: {notes['selection']}", highlight=False)
    acdc = f"; {notes['acdc']}" if "acdc" in result["methods"] else ""
    console.print(f"passes: {notes['passes']}{acdc}", highlight=False)
    if result.get("files"):
        console.print(f"wrote {', '.join(result['files'].values())}", highlight=False)


def load_run(path: Path) -> dict[str, Any]:
    """A `circuits find --out DIR` result: DIR/result.json or the JSON file itself."""
    path = Path(path)
    file = path / "result.json" if path.is_dir() else path
    data = read_json(file, expect_object=True, missing=f"{file}: no such result file (give a `circuits find "
                                                       f"--out DIR` directory or its result.json)")
    missing = [k for k in ("task", "model", "heads") if k not in data]
    if missing:
        raise CircuitsError(f"{file}: missing field(s) {', '.join(missing)}")
    try:
        heads = [((int(h["layer"]), int(h["head"])), bool(h["in_circuit"])) for h in data["heads"]]
        data["_circuit"] = frozenset(head for head, inside in heads if inside)
    except (KeyError, TypeError, ValueError):
        raise CircuitsError(f"{file}: 'heads' must be a list of {{layer, head, score, in_circuit}}") from None
    data["_file"] = str(file)
    return data


@user_errors
def evaluate(
    run: Path = typer.Argument(..., help="a `circuits find --out DIR` directory or its result.json"),
    ablation: str = typer.Option("mean",
                                 help="how heads outside the circuit are ablated: mean | resample | zero"),
    n_prompts: int = typer.Option(100, help="positive/negative prompt pairs to measure on"),
    n_random: int = typer.Option(20, help="random circuits of the same size to compare with"),
    seed: int | None = typer.Option(None, help="prompt and random-draw seed (default: the run's seed)"),
    model: str | None = typer.Option(None, "--model", "-m", help="override the run's model"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Faithfulness of a found circuit, next to random circuits of the same size."""
    from circuits.evaluation.faithfulness import circuit_vs_random
    from circuits.models import load_model
    from tasks import get_task

    if ablation not in ABLATIONS:
        raise CircuitsError(f"unknown ablation '{ablation}' (known: {', '.join(ABLATIONS)})")
    if n_prompts < 1:
        raise CircuitsError(f"--n-prompts must be positive, got {n_prompts}")
    if n_random < 0:
        raise CircuitsError(f"--n-random must be zero or more, got {n_random}")
    data = load_run(run)
    run_seed = int((data.get("config") or {}).get("seed", 0))
    seed = run_seed if seed is None else seed
    task_obj = get_task(str(data["task"]))
    loaded = load_model(model or str(data["model"]), task_obj, run_seed)
    circuit = data["_circuit"]
    L, H = loaded.n_layers, loaded.n_heads
    bad = [h for h in circuit if not (0 <= h[0] < L and 0 <= h[1] < H)]
    if bad:
        raise CircuitsError(f"head {bad[0]} of the circuit does not exist in {loaded.name} ({L}x{H} heads)")
    with _progress() as bar:
        bar.add_task("ablating", total=None)
        prompts = task_obj.prompts(loaded.tokenizer, n_prompts, seed)
        result = circuit_vs_random(loaded.model, task_obj, prompts, circuit, ablation, n_random, seed)
    payload = {"task": task_obj.name, "model": loaded.name, "run": data["_file"], "seed": seed,
               "circuit_heads": [list(h) for h in sorted(circuit)], **result}
    if as_json:
        print_json(payload)
    else:
        _render_evaluate(payload)


def _render_evaluate(p: dict[str, Any]) -> None:
    table = Table(title=f"faithfulness of {p['circuit']['size']} heads, {p['task']} on {p['model']} "
                        f"({p['ablation']} ablation, {p['n_prompts']} prompts)")
    table.add_column("")
    table.add_column("mean metric", justify="right")
    table.add_column("normalised", justify="right")
    table.add_row("intact model", f"{p['metric_full']:.4g}", "1")
    table.add_row("every head ablated", f"{p['metric_all_ablated']:.4g}", "0")
    table.add_row("circuit", f"{p['circuit']['metric']:.4g}", f"{p['circuit']['normalized']:.3f}")
    r = p["random"]
    if r["n_draws"]:
        table.add_row(f"random, same size ({r['n_draws']} draws)", "",
                      f"{r['normalized_mean']:.3f} ± {r['normalized_std']:.3f}")
    console.print(table)
    if r["n_draws"]:
        console.print(f"random circuits at least as faithful: {r['fraction_at_least_circuit']:.0%}",
                      highlight=False)
    console.print(p["definition"], highlight=False)
