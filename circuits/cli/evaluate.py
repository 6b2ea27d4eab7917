"""`circuits evaluate RUN_DIR`: faithfulness of a found circuit next to random circuits of the same size."""

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
    if seed is not None and seed < 0:
        raise CircuitsError(f"--seed must be zero or more, got {seed}")
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
