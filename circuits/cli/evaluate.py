"""`circuits evaluate RUN_DIR`: faithfulness of a found circuit next to random circuits of the same size.

`circuits evaluate --rankings DIR/rankings.npz [--key eap#0]`: scores saved rankings of `circuits compare`
again (circuits.rankings): node ROC AUC against the ground truth, MIB's node CPR / CMD, and (once it exists)
edge-level CPR / CMD, without rerunning the methods."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.table import Table

from circuits.cli.common import out as results  # tables on stdout, progress on stderr
from circuits.cli.common import print_json, progress_display, user_errors
from circuits.errors import CircuitsError
from circuits.jsonio import read_json

if TYPE_CHECKING:
    from circuits.ablation import AblationMethod

ABLATIONS = ("mean", "resample", "zero")


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


N_RANDOM = {"circuit": 20, "rankings": 3}  # --n-random's default per mode (rankings: compare's floor)
MIB_PROMPTS = 50  # --n-prompts with --rankings when the file does not say how many compare used


@user_errors
def evaluate(
    run: Path | None = typer.Argument(None, help="a `circuits find --out DIR` directory or its result.json "
                                                 "(or give --rankings instead)"),
    rankings: Path | None = typer.Option(None, "--rankings",
                                         help="score saved rankings instead: DIR/rankings.npz of `circuits "
                                              "compare --out DIR` (node ROC AUC, MIB CPR / CMD)"),
    key: str | None = typer.Option(None, "--key", help="with --rankings: the run(s) to score, e.g. eap#0 or "
                                                       "sae#0,actdiff#0; default: every run in the file"),
    task: str | None = typer.Option(None, "--task", "-t", help="with --rankings: override the saved task"),
    ablation: str = typer.Option("mean",
                                 help="how heads outside the circuit are ablated: mean | resample | zero "
                                      "(a circuit only; --rankings uses MIB's counterfactual and mean)"),
    n_prompts: int | None = typer.Option(None, help="positive/negative prompt pairs to measure on (default "
                                                   "100); with --rankings, the first N scoring prompts of "
                                                   "the saved draw (default: as many as compare used)"),
    n_random: int | None = typer.Option(None, help="random circuits of the same size to compare with "
                                                   "(default 20); with --rankings, random rankings behind "
                                                   "the CPR / CMD floor (default 3)"),
    seed: int | None = typer.Option(None, help="prompt and random-draw seed (default: the run's seed)"),
    model: str | None = typer.Option(None, "--model", "-m", help="override the run's model"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Faithfulness of a found circuit next to random circuits of the same size, or (--rankings) the
    saved rankings of `circuits compare` scored again."""
    from circuits.evaluation.faithfulness import circuit_vs_random
    from circuits.models import load_model
    from tasks import get_task

    if ablation not in ABLATIONS:
        raise CircuitsError(f"unknown ablation '{ablation}' (known: {', '.join(ABLATIONS)})")
    if n_prompts is not None and n_prompts < 1:
        raise CircuitsError(f"--n-prompts must be positive, got {n_prompts}")
    if n_random is not None and n_random < 0:
        raise CircuitsError(f"--n-random must be zero or more, got {n_random}")
    if seed is not None and seed < 0:
        raise CircuitsError(f"--seed must be zero or more, got {seed}")
    if rankings is not None:
        if run is not None:
            raise CircuitsError("give a RUN or --rankings, not both")
        if ablation != "mean":
            raise CircuitsError("--ablation applies to a circuit; --rankings measures MIB's counterfactual "
                                "and mean ablations")
        _evaluate_rankings(rankings, key, task, model, n_prompts,
                           N_RANDOM["rankings"] if n_random is None else n_random, seed, as_json)
        return
    if run is None:
        raise CircuitsError("give a RUN (a `circuits find --out DIR` directory) or --rankings FILE")
    if key is not None or task is not None:
        raise CircuitsError("--key and --task go with --rankings")
    n_random = N_RANDOM["circuit"] if n_random is None else n_random
    n_prompts = 100 if n_prompts is None else n_prompts
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
    with progress_display() as bar:
        bar.add_task("ablating", total=None)
        prompts = task_obj.prompts(loaded.tokenizer, n_prompts, seed)
        method = cast("AblationMethod", ablation)  # one of ABLATIONS, checked above
        result = circuit_vs_random(loaded.model, task_obj, prompts, circuit, method, n_random, seed)
    payload = {"task": task_obj.name, "model": loaded.name, "run": data["_file"], "seed": seed,
               "circuit_heads": [list(h) for h in sorted(circuit)], **result}
    if as_json:
        print_json(payload)
    else:
        _render_evaluate(payload)


def _evaluate_rankings(path: Path, key: str | None, task: str | None, model: str | None,
                       n_prompts: int | None, n_random: int, seed: int | None, as_json: bool) -> None:
    """`evaluate --rankings`: load, check (before the model loads where it can), score, render."""
    from circuits.models import load_model
    from circuits.rankings import check_shapes, load_rankings, score_rankings
    from tasks import get_task

    saved = load_rankings(path)
    keys = saved.resolve(key)
    task_obj = get_task(task or str(saved.meta["task"]))
    prompt_seed = int((saved.meta.get("prompts") or {}).get("seed", 0))
    if n_prompts is None:  # compare's CPR / CMD prompts (0 there: it computed none; then its default)
        n_prompts = int(saved.meta.get("mib_prompts") or 0) or MIB_PROMPTS
    spec = model or str(saved.meta.get("model_spec") or saved.meta["model"])
    loaded = load_model(spec, task_obj, prompt_seed)
    check_shapes(saved, keys, loaded.model)
    with progress_display() as bar:
        bar.add_task("scoring rankings", total=None)
        payload = score_rankings(task_obj, loaded, saved, keys, n_prompts, n_random, seed)
    if as_json:
        print_json(payload)
    else:
        _render_rankings(payload)


def _cell(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def _render_rankings(p: dict[str, Any]) -> None:
    truth = p["ground_truth"]
    gt = (f"ground truth {truth['n_heads']} heads ({truth['source']})" if truth else
          f"no ground truth ({p['ground_truth_note']})")
    table = Table(title=f"saved rankings, {p['task']} on {p['model']}: {gt}; CPR / CMD on {p['n_prompts']} "
                        f"prompts")
    for col in ("run", "node AUC", "prec.", "recall", "CPR cf", "CMD cf", "CPR mean", "CMD mean"):
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    edges = Table(title=f"edge level, the same prompts: {p['edge_note'].split(':')[0]}")
    for col in ("run", "edges", "CPR cf", "CMD cf", "CPR mean", "CMD mean"):
        edges.add_column(col, justify="left" if col in ("run", "edges") else "right", no_wrap=True)
    areas = [f"{k}_{i}" for i in ("counterfactual", "mean") for k in ("cpr", "cmd")]
    for key, r in p["results"].items():
        table.add_row(key, _cell(r.get("node_roc_auc")), _cell(r.get("precision")), _cell(r.get("recall")),
                      *(_cell(r.get(a)) for a in areas))
        edges.add_row(key, "own" if r["edge"]["source"] == "edges" else "derived",
                      *(_cell(r["edge"].get(a)) for a in areas))
    for target, floor, pad in ((table, p["random"], 3), (edges, p["edge_random"], 1)):
        if floor:
            target.add_row("random ranking", *[""] * pad, *(_cell(floor.get(i, {}).get(k))
                                                             for i in ("counterfactual", "mean")
                                                             for k in ("cpr", "cmd")))
    results.print(table)
    results.print(edges)
    results.print(f"precision / recall: the saved selection rule ({p['selection']}); {p['edge_note']}",
                  highlight=False)
    results.print(p["definition"], highlight=False)


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
    results.print(table)
    if r["n_draws"]:
        results.print(f"random circuits at least as faithful: {r['fraction_at_least_circuit']:.0%}",
                      highlight=False)
    results.print(p["definition"], highlight=False)
