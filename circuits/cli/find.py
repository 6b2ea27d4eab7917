"""`circuits find`: parse the options (defaults and help from FindConfig), run the pipeline, render.

`--method KEY` finds the circuit with any registered method (circuits.methods.registry) instead of the
discrete-SAE method: the same table, exports, report and evaluation, so methods are judged alike."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from circuits.atomic import atomic_write_text
from circuits.cli.common import (
    check_writable_dir,
    claim_outputs,
    claim_report,
    config_option,
    out,
    print_json,
    progress_callback,
    progress_display,
    user_errors,
)
from circuits.cli.prune_options import (
    PRUNE_METHODS,
    prune_init_option,
    prune_lr_option,
    prune_objective_option,
    prune_overrides,
    prune_steps_option,
    prune_target_option,
)
from circuits.discovery.config import FindConfig, default
from circuits.errors import CircuitsError

STAGES = {"prompts": "building prompts", "activations": "head activations", "sae": "training SAEs",
          "scoring": "scoring heads and edges"}
# Written out (not read from the registry) so that `find` fails on a bad model before the methods' heavy
# imports; `resolve_method` checks the key against the registry itself.
METHOD_HELP = ("circuit-discovery method: sae (the discrete-SAE method), an SAE variant (sae-effect, "
               "sae-pair, sae-effect-pair, sae-verify) or a baseline (actdiff, patching-mean, "
               "patching-resample, eap, eap-ig, acdc, edge-prune, ensemble: an unknown key lists them "
               "all); the SAE options (--sae, "
               "--arch, --k, --d-sae, --l1, --steps, --score, --signal, --verify, --verify-prompts, --seeds) "
               "apply to sae and its variants only, --hook and --position to those and actdiff")
SAE_ONLY = ("sae", "arch", "k", "d_sae", "l1", "steps", "score", "signal", "verify", "verify_prompts")
POOLING = ("hook", "position")  # read by the SAE methods and by their null model, actdiff
POOLING_METHODS = ("actdiff",)


@user_errors
def find(
    task: str = typer.Option(..., "--task", "-t",
                             help="ioi | greaterthan | docstring | path/to/task.jsonl (see tasks/custom.py)"),
    model: str = typer.Option("", "--model", "-m",
                              help="tiny-<task> (bundled), random:gpt2-small, a checkpoint or Hugging "
                                   "Face model dir, or a "
                                   "TransformerLens name; default: the task's bundled model"),
    n_train: int = config_option(FindConfig, "n_train"),
    n_score: int = config_option(FindConfig, "n_score"),
    seed: int = config_option(FindConfig, "seed"),
    hook: str = config_option(FindConfig, "hook"),
    position: str = config_option(FindConfig, "position"),
    sae: str = config_option(FindConfig, "sae"),
    arch: str = config_option(FindConfig, "arch"),
    k: int = config_option(FindConfig, "k"),
    d_sae: int | None = config_option(FindConfig, "d_sae"),
    l1: float = config_option(FindConfig, "l1"),
    steps: int = config_option(FindConfig, "steps"),
    score: str = config_option(FindConfig, "score"),
    signal: str = config_option(FindConfig, "signal"),
    verify: int = config_option(FindConfig, "verify"),
    verify_prompts: int = config_option(FindConfig, "verify_prompts"),
    selection: str = config_option(FindConfig, "selection"),
    edges: bool = config_option(FindConfig, "edges"),
    faithfulness: bool = config_option(FindConfig, "faithfulness"),
    method: str = typer.Option("sae", "--method", help=METHOD_HELP),
    prune_steps: int | None = prune_steps_option(),
    prune_target: float | None = prune_target_option(),
    prune_objective: str | None = prune_objective_option(),
    prune_init: str | None = prune_init_option(),
    prune_lr: float | None = prune_lr_option(),
    out_dir: Path | None = typer.Option(None, "--out", help="directory for result.json and graph exports"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="replace existing output files (atomically); default: refuse"),
    force: bool = typer.Option(False, "--force", help="run even when the memory estimate exceeds what is "
                                                      "available"),
    report_path: Path | None = typer.Option(None, "--report",
                                            help="write an HTML report here (figures also as PNG beside it)"),
    n_seeds: int = typer.Option(1, "--seeds", help="run N SAE seeds (from --seed) and report circuit "
                                                   "stability across them"),
    explain: bool = typer.Option(False, "--explain", help="explain each circuit head (codes, attention, "
                                                          "direct effect, a causal check per code; see "
                                                          "`circuits explain`)"),
    check_task: bool = typer.Option(True, help="first measure the model's accuracy on 20 held-out prompts "
                                               "and refuse a model that does not solve the task "
                                               "(skipped for random:<arch> models)"),
) -> None:
    """Find the circuit of TASK in MODEL and compare it with the ground truth."""
    from circuits.discovery.graph import export_graph
    from circuits.discovery.memory import ModelSizes, check_memory, estimate_baseline_bytes
    from circuits.discovery.pipeline import find_circuit_with, ground_truth_for
    from circuits.discovery.selection import check_rule
    from circuits.models import load_model
    from tasks import get_task

    options: dict[str, Any] = dict(n_train=n_train, n_score=n_score, seed=seed, hook=hook, position=position,
                                   sae=sae, arch=arch, k=k, d_sae=d_sae, l1=l1, steps=steps, score=score,
                                   signal=signal, verify=verify, verify_prompts=verify_prompts,
                                   selection=selection, edges=edges, faithfulness=faithfulness)
    config = FindConfig(**options)  # choice fields arrive as plain strings: validate() checks them
    config.validate()
    if n_seeds < 1:
        raise CircuitsError(f"--seeds must be positive, got {n_seeds}")
    method, overrides = resolve_method(method, options, n_seeds)
    prune = check_prune_flags(method, prune_overrides(prune_steps, prune_target, prune_objective, prune_init,
                                                      prune_lr))
    if overrides:  # an SAE variant: its FindConfig fields
        config = replace(config, **overrides)
        config.validate()
    task_obj = get_task(task)
    if not model and task.endswith((".jsonl", ".json")):
        raise CircuitsError("a task file needs --model (a model directory, random:gpt2-small, ...)")
    claim_find_outputs(out_dir, report_path, n_seeds, overwrite)
    loaded = load_model(model or f"tiny-{task_obj.name}", task_obj, seed)
    # Everything that depends on the model is checked now, before any work.
    check_rule(config.selection, loaded.n_layers * loaded.n_heads)
    truth, _ = ground_truth_for(task_obj, loaded)
    if truth is not None:  # a ground truth naming heads the model lacks fails now, not after the run
        truth.validate(loaded.n_layers, loaded.n_heads)
    quality = None
    if check_task and not loaded.name.startswith("random:"):
        from circuits.evaluation.task_quality import QUALITY_PROMPTS, require_solves

        # other prompts than the run's (seed + 1)
        quality = require_solves(loaded, task_obj, QUALITY_PROMPTS, seed=seed + 1)
    seq = int(task_obj.prompts(loaded.tokenizer, 4, seed).positive.shape[1])
    sizes = ModelSizes.of(loaded, seq)
    extra = 0 if overrides is not None or method in POOLING_METHODS else estimate_baseline_bytes(
        min(config.n_score, _method_options()["acdc_prompts"]) if method == "acdc" else config.n_score, sizes)
    check_memory(config, sizes, force, extra, what=f"find with --n-score {config.n_score}")
    with progress_display() as bar:
        stages = STAGES if overrides is not None else {"method": f"running {method}"}
        ids = {stage: bar.add_task(label, total=None) for stage, label in stages.items()}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in ids:  # a method's own steps (e.g. edge-prune's mask steps)
                ids[stage] = bar.add_task(stage, total=total)
            bar.update(ids[stage], completed=done, total=total)

        if n_seeds > 1:  # circuit stability across SAE seeds (circuits.analysis.stability)
            from circuits.analysis.stability import find_with_seeds

            ids["seeds"] = bar.add_task("SAE seeds", total=n_seeds)
            result, stability = find_with_seeds(task_obj, loaded, config, n_seeds, progress=report)
            result.extra["stability"] = stability
        else:
            result = find_circuit_with(task_obj, loaded, config, method, _method_options(prune),
                                       progress=report)
    if "method" not in result.extra:  # --seeds ran the pipeline itself
        from circuits.methods.registry import get_method

        result.extra["method"] = {"key": method, "label": get_method(method).label}
    if quality is not None:
        result.extra["task_quality"] = quality
    if hasattr(task_obj, "summary"):  # task files: pairs used and dropped
        result.extra["task_file"] = task_obj.summary()
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun every rank holds the same result: rank 0 alone writes and prints
    payload = result.to_json()
    if explain:
        from circuits.explain.run import explain_payload

        if not result.circuit:
            raise CircuitsError("--explain: the circuit is empty: nothing to explain")
        with progress_display() as bar:
            payload["explain"] = explain_payload(task_obj, loaded, payload, progress=progress_callback(bar))
    if out_dir is not None:
        payload["files"] = export_graph(result.graph, out_dir)
        if payload.get("stability"):
            from circuits.report import write_stability_figures

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


def resolve_method(key: str, options: dict[str, Any], n_seeds: int) -> tuple[str, dict[str, Any] | None]:
    """(method key, the FindConfig fields an SAE method sets, or None for any other method), checked before
    the model loads: an unknown key, or an option the method does not read, is one line."""
    key = key.strip().lower()
    if key == "sae":
        return key, {}
    from circuits.methods.registry import get_method
    from circuits.methods.sae import sae_overrides

    overrides = sae_overrides(get_method(key))
    if overrides is not None:
        for name, value in overrides.items():
            if name in options and options[name] not in (value, default(FindConfig, name)):
                raise CircuitsError(f"--{_flag(name)} {options[name]} contradicts --method {key} (which sets "
                                    f"{_flag(name)} {value})")
        return key, overrides
    unused = [name for name in (*SAE_ONLY, *(() if key in POOLING_METHODS else POOLING))
              if options[name] != default(FindConfig, name)]
    if n_seeds > 1 or unused:
        flag = "--seeds" if n_seeds > 1 else f"--{_flag(unused[0])}"
        owner = "the discrete-SAE method" + (" and actdiff" if unused and unused[0] in POOLING else "")
        raise CircuitsError(f"{flag} is an option of {owner}; --method {key} does not use it (leave it out, "
                            f"or use --method sae)")
    return key, None


def _flag(name: str) -> str:
    return name.replace("_", "-")


def check_prune_flags(method: str, prune: dict[str, Any]) -> dict[str, Any]:
    """The --prune-* options the user set, refused in one line for a method that does not read them and
    checked (with the method's defaults for the unset ones) before the model loads."""
    if not prune:
        return prune
    if method not in PRUNE_METHODS:
        raise CircuitsError(f"--{_flag(next(iter(prune)))} is an option of {' and '.join(PRUNE_METHODS)}; "
                            f"--method {method} does not use it")
    from circuits.methods.edge_prune import prune_options

    prune_options(prune)
    return prune


def _method_options(prune: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a baseline is given besides the prompts: compare's defaults (ACDC on the first 100 scoring
    prompts, KL distance) and the --prune-* options given, so `find --method M` is compare's run of M."""
    from circuits.compare import CompareConfig

    return {"acdc_prompts": default(CompareConfig, "acdc_prompts"),
            "distance": default(CompareConfig, "acdc_distance"), "patching_prompts": 0,
            **{name: default(CompareConfig, name)
               for name in ("prune_steps", "prune_target", "prune_objective", "prune_init", "prune_lr")},
            **(prune or {})}


def claim_find_outputs(out_dir: Path | None, report_path: Path | None, n_seeds: int, overwrite: bool) -> None:
    """Create --out and --report's folder, and refuse (unless --overwrite) every file the run would write
    there that already exists: checked before the model loads."""
    from circuits.discovery.graph import EXPORT_FORMATS
    from circuits.report import STABILITY_FIGURES, report_files

    if out_dir is not None:
        check_writable_dir(out_dir)
        names = ["result.json", *EXPORT_FORMATS.values()]
        if n_seeds > 1:
            names += [f"{key}.png" for key in STABILITY_FIGURES]
        claim_outputs([out_dir / n for n in names], overwrite)
    if report_path is not None:
        claim_report(report_path, report_files(report_path), overwrite)


def _render(payload: dict[str, Any]) -> None:
    """Human summary on stdout (so `> result.txt` captures it): the circuit, its evaluation, timings."""
    heads = sorted((h for h in payload["heads"] if h["in_circuit"]), key=lambda h: -h["score"])
    ev = payload["evaluation"]
    truth = {tuple(h) for h in ev.get("truth_heads", [])} if ev else None
    chosen = payload.get("method") or {}
    by = f" by {chosen['label']}" if chosen.get("key", "sae") != "sae" and chosen.get("label") else ""
    title = (f"circuit for {payload['task']} on {payload['model']}{by}: {len(heads)} of "
             f"{len(payload['heads'])} heads")
    out.print(title, highlight=False)
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
    out.print(table)
    if truth is not None:
        missed = sorted(truth - {(h["layer"], h["head"]) for h in heads})
        if missed:
            out.print("truth heads not selected: " + " ".join(f"L{l}H{h}" for l, h in missed))
    if ev is None:
        out.print(f"evaluation: {payload['evaluation_note']}")
    else:
        edge = ev.get("edge_roc_auc")
        out.print(f"node ROC AUC {ev['roc_auc']:.3f}  precision {ev['precision']:.3f}  "
                      f"recall {ev['recall']:.3f}  F1 {ev['f1']:.3f}"
                      + (f"  edge ROC AUC {edge:.3f}" if edge is not None else "")
                      + f"  (truth: {ev['n_truth']} heads, {ev['truth_source']})")
    if "forward_passes" in chosen:
        edges = "" if chosen.get("edges_scored") else "; this method scores no edges"
        out.print(f"cost: {chosen['forward_passes']:.3g} forward, {chosen['backward_passes']:.3g} backward "
                  f"passes over the scoring prompts{edges}", highlight=False)
    if payload.get("faithfulness"):
        kept = payload["faithfulness"]["normalized"]
        out.print(f"faithfulness (mean ablation, normalised): {kept:.3f}")
    if payload.get("stability"):
        _render_stability(payload["stability"])
    if payload.get("task_file"):
        info = payload["task_file"]
        drops = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in info["dropped"].items())
        out.print(f"task file: {info['usable_pairs']} of {info['pairs_in_file']} pairs usable"
                      + (f" (dropped: {drops})" if drops else ""))
    if payload.get("explain"):
        from circuits.cli.explain import render_explain

        render_explain(payload["explain"])
    timings = "  ".join(f"{k} {v:.2f}s" for k, v in payload["timings"].items())
    out.print(f"timings: {timings}")
    if payload.get("files"):
        out.print(f"wrote {', '.join(payload['files'].values())}")


def _render_stability(block: dict[str, Any]) -> None:
    """The stability lines of `circuits find`'s summary."""
    jac, size = block["jaccard"], block["circuit_size"]
    out.print(f"stability over {block['n_seeds']} seeds ({block['varied']}): Jaccard {jac['mean']:.3f} ± "
                  f"{jac['std']:.3f} (min {jac['min']:.3f}), circuit size {size['mean']:.1f} ± "
                  f"{size['std']:.1f}, "
                  f"{len(block['core_heads'])} heads in every circuit, {len(block['union_heads'])} in any"
                  + (f", score Spearman {block['score_spearman_mean']:.3f}"
                     if block.get("score_spearman_mean") is not None else ""))
    mean, std = block.get("evaluation_mean"), block.get("evaluation_std")
    if mean and std:
        parts = [f"{k} {mean[k]:.3f} ± {std[k]:.3f}" for k in mean if mean[k] is not None]
        out.print("evaluation over seeds: " + "  ".join(parts))
    freq = block["inclusion_frequency"]
    unstable = sorted(((f, l, h) for l, row in enumerate(freq) for h, f in enumerate(row) if 0 < f < 1),
                      reverse=True)
    if unstable:
        shown = ", ".join(f"L{l}H{h} {f:.2f}" for f, l, h in unstable[:8])
        out.print(f"heads in some but not all circuits: {shown}" + (" ..." if len(unstable) > 8 else ""))
