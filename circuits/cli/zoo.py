"""`circuits zoo`: train the small task models and list the bundled ones with their figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from circuits.cli.common import check_writable_dir, console, print_json, progress_display, user_errors
from circuits.errors import CircuitsError
from circuits.models import CONFIG_FILE, ZOO_DIR, zoo_names

zoo_app = typer.Typer(help="Small task models trained by the project, with ablation ground truth.",
                      no_args_is_help=True, add_completion=False)


def get_task(name: str) -> Any:
    """The task by name (a seam tests replace with a toy task)."""
    from tasks import get_task as lookup

    return lookup(name)


def default_config(task: str, seed: int, **overrides: Any) -> Any:
    """The shipped training recipe for `task` (a seam tests replace with a tiny one)."""
    from circuits.zoo.train import default_config as recipe

    return recipe(task, seed=seed, **overrides)


@zoo_app.command("train")
@user_errors
def train_cmd(
    task: Annotated[str, typer.Option("--task", "-t", help="ioi | greaterthan | docstring")],
    seed: Annotated[int, typer.Option(help="training seed (weights, prompts, filler)")] = 0,
    out: Annotated[Path | None, typer.Option(help="output directory [default: the bundled tiny-<task>]")]
    = None,
    steps: Annotated[int | None, typer.Option(help="training steps [default: the shipped recipe]")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing model directory")] = False,
    edges: Annotated[bool, typer.Option(help="measure head->head edges by path ablation")] = True,
) -> None:
    """Train a small model on TASK, gate it on held-out prompts, measure its circuit, save it."""
    from circuits.zoo.ship import build_zoo_model, shipped_dir

    if steps is not None and steps <= 0:
        raise CircuitsError(f"--steps must be positive, got {steps}")
    task_obj = get_task(task)
    target = Path(out) if out is not None else shipped_dir(task_obj.name)
    if target.exists() and not target.is_dir():
        raise CircuitsError(f"--out {target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise CircuitsError(f"{target} already holds a model; pass --force to replace it")
    check_writable_dir(target.parent)
    config = default_config(task_obj.name, seed, **({"steps": steps} if steps is not None else {}))
    with progress_display() as bar:
        ids: dict[str, Any] = {}

        def tell(stage: str, done: int, total: int, note: str) -> None:
            if stage not in ids:
                ids[stage] = bar.add_task(stage, total=max(total, 1), info="")
            bar.update(ids[stage], completed=done, total=max(total, 1), info=note)

        manifest = build_zoo_model(task_obj, config, out_dir=target, progress=tell, edges=edges,
                                   overwrite=force)
    _summary(manifest, target)


def _summary(manifest: dict[str, Any], target: Path) -> None:
    q = manifest["quality"]
    need = q["gate"]["min_positive_accuracy"]
    gate = "passed" if q["gate"]["passed"] else f"[yellow]FAILED[/] (needs {need:.0%})"
    console.print(f"held-out accuracy {q['positive_accuracy']:.1%} (gate {gate}); negatives with metric > 0: "
                  f"{q['negative_fraction_metric_positive']:.1%}, "
                  f"mean metric {q['negative_mean_metric']:.3g}")
    row = _row(manifest)
    if row["circuit_heads"] is None:
        console.print(f"[yellow]no ground truth:[/] {manifest.get('ground_truth_error', 'not computed')}")
    else:
        console.print(f"circuit: {row['circuit_heads']} of {row['heads_total']} heads, normalised "
                      f"faithfulness {row['faithfulness']:.3f}, ratio {row['ratio']:.3f}")
    console.print(f"trained in {manifest['training']['seconds']:.0f} s; saved to {target}")


def _row(manifest: dict[str, Any], name: str = "") -> dict[str, Any]:
    """The figures `zoo list` shows, from a manifest."""
    from circuits.truths import MAIN_ABLATION, shipped_files

    task = manifest.get("task", "?")
    truth = manifest.get("ground_truth", {}).get(task)  # a model trained here carries its own
    faith = manifest.get("ground_truth_details", {}).get("faithfulness", {})
    if truth is None and name:  # a bundled model's lives in circuits.truths
        shipped = [f for f in shipped_files(name) if f.task == task and f.ablation == MAIN_ABLATION]
        if shipped:
            truth, faith = shipped[0].truth.to_dict(), shipped[0].details.get("faithfulness", {})
    q = manifest.get("quality", {})
    cfg = manifest.get("config", {})
    return {
        "name": name or manifest.get("name", "?"), "task": task,
        "shape": f"{cfg.get('n_layers', '?')}x{cfg.get('n_heads', '?')}"
                 f"{' attn' if cfg.get('attn_only') else ' mlp'}",
        "heads_total": manifest.get("n_heads_total"),
        "accuracy": q.get("positive_accuracy"),
        "negative_fraction_positive": q.get("negative_fraction_metric_positive"),
        "negative_mean_metric": q.get("negative_mean_metric"),
        "circuit_heads": len(truth["heads"]) if truth else None,
        "circuit": truth["heads"] if truth else None,
        "edges": len(truth.get("edges", [])) if truth else None,
        "faithfulness": faith.get("normalized"), "ratio": faith.get("ratio"),
        "train_seconds": manifest.get("training", {}).get("seconds"),
    }


def _pretrained_rows() -> list[dict[str, Any]]:
    """One row per task of each pretrained model that ships ground truths (`circuits.truths`), read from
    those files alone: the model is not loaded."""
    from circuits.truths import MAIN_ABLATION, shipped_files, shipped_models

    rows: list[dict[str, Any]] = []
    for model in [m for m in shipped_models() if m not in zoo_names()]:
        files = shipped_files(model)
        for f in [f for f in files if f.ablation == MAIN_ABLATION]:
            method, faith = f.truth.method, f.details.get("faithfulness", {})
            others = {o.ablation: len(o.truth.heads) for o in files if o.task == f.task and o is not f}
            effects = f.details.get("single_head_effects", [])  # one entry per head of the model
            shape = (f"{max(e['layer'] for e in effects) + 1}x{max(e['head'] for e in effects) + 1}"
                     if effects else "?")
            rows.append({
                "name": f"{model} ({f.task})", "task": f.task, "shape": shape,
                "heads_total": len(effects) or None,
                "accuracy": method.get("accuracy"), "negative_fraction_positive": None,
                "negative_mean_metric": None, "circuit_heads": len(f.truth.heads),
                "circuit": [list(h) for h in f.truth.heads],
                "edges": len(f.truth.edges) if method.get("edge_threshold") is not None else None,
                "faithfulness": faith.get("normalized"), "ratio": faith.get("ratio"), "train_seconds": None,
                "resample_circuit_heads": others.get("resample"), "other_circuit_heads": others,
                "ground_truth_prompts": method.get("n_prompts"), "file": str(f.path)})
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@zoo_app.command("list")
@user_errors
def list_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")]
    = False,
) -> None:
    """The bundled models with held-out accuracy, circuit size and faithfulness."""
    from circuits.zoo.ship import read_manifest

    rows = []
    for name in zoo_names():
        try:
            rows.append(_row(read_manifest(ZOO_DIR / name), name))
        except CircuitsError as err:
            rows.append({"name": name, "error": str(err)})
    rows += _pretrained_rows()
    if json_out:
        print_json({"directory": str(ZOO_DIR), "models": rows})
        return
    if not rows:
        console.print(f"no bundled models in {ZOO_DIR} (train one: circuits zoo train --task ioi)")
        return
    table = Table(title=f"bundled models ({ZOO_DIR})", box=box.MINIMAL_HEAVY_HEAD, pad_edge=False,
                  padding=(0, 0, 0, 0), show_edge=False,
                  caption="acc: held-out accuracy (metric > 0); neg>0, negavg: negatives with metric > 0, "
                          "their mean metric; heads: ablation ground-truth circuit; faith: normalised "
                          "faithfulness (circuit - empty) / (full - empty), ratio: circuit / full")
    table.add_column("model", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
    for col in ("shape", "acc", "neg>0", "negavg", "heads", "edges", "faith", "ratio", "train"):
        table.add_column(col, no_wrap=True, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], f"[red]{r['error']}[/]", *[""] * 8)
            continue
        table.add_row(
            r["name"], r["shape"], _fmt(r["accuracy"], ".1%"), _fmt(r["negative_fraction_positive"], ".0%"),
            _fmt(r["negative_mean_metric"], ".2f"),
            f"{_fmt(r['circuit_heads'], 'd')}/{_fmt(r['heads_total'], 'd')}", _fmt(r["edges"], "d"),
            _fmt(r["faithfulness"], ".3f"), _fmt(r["ratio"], ".3f"),
            "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}s")
    console.print(table)


__all__ = ["zoo_app", "CONFIG_FILE"]
