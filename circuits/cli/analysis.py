"""`circuits sae seeds`, `circuits sae absorption`, and the stability summary of `circuits find --seeds N`.
Parsing and rendering only; the science is in circuits.analysis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress
from rich.table import Table

from circuits.atomic import atomic_write_bytes, atomic_write_text
from circuits.cli.common import (
    check_writable_dir,
    console,
    print_json,
    progress_callback,
    progress_display,
    user_errors,
)
from circuits.errors import CircuitsError

ACTIVATION_SUFFIXES = (".safetensors", ".npy")


# ---- shared helpers ----------------------------------------------------------------------------------
def _bars(enabled: bool) -> tuple[Progress, Callable[[str, int, int], None]]:
    """A progress display and a callback (label, done, total) that keeps one bar per label."""
    bar = progress_display(enabled)
    return bar, progress_callback(bar)


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CircuitsError(f"{name} must be a comma-separated list of numbers, got '{text}'") from None
    if not values:
        raise CircuitsError(f"{name} is empty")
    return values


def _ints(text: str, name: str) -> list[int]:
    values = _floats(text, name)
    if any(v != int(v) or v < 1 for v in values):
        raise CircuitsError(f"{name} must be positive integers, got '{text}'")
    return [int(v) for v in values]


def _archs(text: str) -> list[str]:
    from circuits.sae import ARCHS

    archs = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or not archs:
        raise CircuitsError(f"unknown --archs {', '.join(unknown) or '(none)'} (known: {', '.join(ARCHS)})")
    return archs


def _write_outputs(out: Path | None, stem: str, result: dict[str, Any], png: bytes) -> dict[str, str]:
    """Write STEM.json and STEM.png into `out` atomically; returns their paths."""
    if out is None:
        return {}
    files = {"json": str(out / f"{stem}.json"), "figure": str(out / f"{stem}.png")}
    atomic_write_bytes(out / f"{stem}.png", png)
    result["files"] = files
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2))
    return files


def _activation_rows(data: Path, model: str, hook: str, contexts: int, context_size: int, text_field: str
                     ) -> tuple[Any, dict[str, Any]]:
    """Rows [n, d] of a saved activation file, or of a model hook over a text corpus (BOS dropped)."""
    from circuits.sae.sources import check_hook, hook_activations, load_activations, token_batches

    if data.suffix.lower() in ACTIVATION_SUFFIXES:
        x = load_activations(data)
        if x.shape[0] != 1:
            raise CircuitsError(f"{data}: holds {x.shape[0]} groups of activations; give one [n, d_in] set")
        return x[0], {"kind": "activations", "path": str(data)}
    if not data.is_file():
        raise CircuitsError(f"--data {data} does not exist")
    if not model or not hook:
        raise CircuitsError("a text corpus needs --model and --hook (or pass a saved activation file)")
    from circuits.models import load_model

    loaded = load_model(model)
    check_hook(loaded.model, hook)
    tokens = token_batches(data, loaded.tokenizer, min(context_size, int(loaded.model.cfg.n_ctx)), contexts,
                           text_field)
    acts = hook_activations(loaded.model, tokens, hook)  # [b, seq, d]
    rows = acts[tokens != int(getattr(loaded.tokenizer, "bos_token_id", -1))]
    return rows, {"kind": "corpus", "path": str(data), "model": loaded.name, "hook": hook,
                  "contexts": int(tokens.shape[0])}


def _settings(archs: list[str], l1: list[float], k: list[int] | None, l0_coef: list[float]) -> list[Any]:
    """One ArchSetting per architecture and sparsity value (k None: matched)."""
    from circuits.analysis.seeds import K_ARCHS, ArchSetting

    out = []
    for arch in archs:
        if arch in K_ARCHS:
            ks: list[int | None] = list(k) if k else [None]
            out += [ArchSetting(arch, k=v) for v in ks]
        elif arch == "jumprelu":
            out += [ArchSetting(arch, l0_coefficient=v) for v in l0_coef]
        else:
            out += [ArchSetting(arch, l1_coefficient=v) for v in l1]
    return out


# ---- circuits sae seeds ------------------------------------------------------------------------------
@user_errors
def seeds(
    archs: str = typer.Option("relu,topk", help="comma-separated: relu, topk, batchtopk, gated, jumprelu"),
    n_seeds: int = typer.Option(3, "--seeds", help="SAEs per architecture, differing only in seed"),
    first_seed: int = typer.Option(0, help="seeds are first-seed, first-seed+1, ..."),
    l1: str = typer.Option("1.0", help="L1 coefficient(s) for relu / gated (comma list)"),
    k: str = typer.Option("matched", help="k for topk / batchtopk: 'matched' (= the L0 the first relu/gated/"
                                          "jumprelu setting reaches) or a comma list"),
    l0_coef: str = typer.Option("0.2", "--l0-coef", help="L0 coefficient(s) for jumprelu"),
    d_sae: int = typer.Option(128, "--d-sae", help="latents per SAE"),
    steps: int = typer.Option(1000, help="Adam steps"),
    lr: float = typer.Option(5e-3, help="Adam learning rate"),
    batch_size: int = typer.Option(256, help="rows per step"),
    threshold: float = typer.Option(0.7, help="cosine at which a matched latent counts as shared"),
    data: Path | None = typer.Option(None, "--data", help="activations (.safetensors/.npy) or a text corpus "
                                                          "(with --model/--hook); default: synthetic"),
    model: str = typer.Option("", "--model", "-m", help="model for a text corpus"),
    hook: str = typer.Option("", "--hook", help="hook for a text corpus, e.g. blocks.0.hook_resid_post"),
    contexts: int = typer.Option(256, help="corpus contexts to read"),
    context_size: int = typer.Option(64, help="tokens per corpus context"),
    text_field: str = typer.Option("text", help="JSONL field holding the text"),
    n_features: int = typer.Option(64, help="synthetic: true features"),
    d_in: int = typer.Option(32, "--d-in", help="synthetic: dimensions"),
    data_l0: float = typer.Option(4.0, help="synthetic: mean active features per row"),
    rows: int = typer.Option(16384, help="synthetic: training rows (a quarter more are held out)"),
    data_seed: int = typer.Option(0, help="seed of the synthetic data and of the minibatch order"),
    out: Path | None = typer.Option(None, help="directory for seeds.json and seeds.png"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Train SAEs that differ only in seed and measure how many latents they share (Hungarian matching)."""
    from circuits.analysis.figures import seeds_figure
    from circuits.analysis.seeds import SeedRunConfig, run_seed_consistency

    settings = _settings(_archs(archs), _floats(l1, "--l1"),
                         None if k.strip() == "matched" else _ints(k, "--k"), _floats(l0_coef, "--l0-coef"))
    run = SeedRunConfig(d_sae=d_sae, seeds=tuple(range(first_seed, first_seed + n_seeds)), steps=steps, lr=lr,
                        batch_size=batch_size, data_seed=data_seed, threshold=threshold)
    out_dir = check_writable_dir(out) if out is not None else None
    directions = None
    if data is None:
        from circuits.sae.synthetic import make_features

        if rows < 8:
            raise CircuitsError(f"--rows must be at least 8, got {rows}")
        feats = make_features(n_features, d_in, mean_l0=data_l0, seed=data_seed)
        x_train, _ = feats.sample(rows, seed=data_seed + 1)
        x_eval, _ = feats.sample(max(rows // 4, 1), seed=data_seed + 2)
        directions = feats.directions
        source = {"kind": "synthetic", "n_features": n_features, "d_in": d_in, "mean_l0": data_l0,
                  "rows": rows, "seed": data_seed}
    else:
        x, source = _activation_rows(data, model, hook, contexts, context_size, text_field)
        if x.shape[0] < 8:
            raise CircuitsError(f"only {x.shape[0]} activation rows; need at least 8")
        import torch

        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(data_seed))
        cut = int(0.8 * x.shape[0])  # 80 % train, 20 % held out for L0 / FVU
        x_train, x_eval = x[perm[:cut]], x[perm[cut:]]
    bar, update = _bars(not as_json)
    with bar:
        result = run_seed_consistency(x_train, x_eval, settings, run, directions=directions, progress=update)
    result["data"] = source
    result["files"] = _write_outputs(out_dir, "seeds", result, seeds_figure(result)) if out_dir else {}
    if as_json:
        print_json(result)
        return
    table = Table(title=f"latents shared across {n_seeds} seeds (cosine >= {threshold:g}, d_sae {d_sae})")
    for col in ("setting", "L0", "FVU", "dead", "decoder shared", "encoder shared", "median dec cos"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for e in result["architectures"]:
        table.add_row(e["label"] + (f" (k={e['setting']['k']})" if e["k_matched_to_l0"] else ""),
                      f"{e['l0']['mean']:.2f}", f"{e['fvu']['mean']:.3f}",
                      f"{e['dead_fraction']['mean']:.2f}",
                      f"{e['decoder']['shared_fraction']:.3f} ± {e['decoder']['shared_fraction_std']:.3f}",
                      f"{e['encoder']['shared_fraction']:.3f} ± {e['encoder']['shared_fraction_std']:.3f}",
                      f"{e['decoder']['quantiles']['0.5']:.3f}")
    console.print(table)
    if result["files"]:
        console.print(f"wrote {', '.join(result['files'].values())}")


# ---- circuits sae absorption -----------------------------------------------------------------------
@user_errors
def absorption(
    archs: str = typer.Option("relu,topk", help="comma-separated architectures"),
    l1: str = typer.Option("0.1,0.3,1", help="L1 coefficients for relu / gated (comma list)"),
    k: str = typer.Option("2,4,8", help="k values for topk / batchtopk (comma list)"),
    l0_coef: str = typer.Option("0.1,0.3,1", "--l0-coef", help="L0 coefficients for jumprelu"),
    n_seeds: int = typer.Option(2, "--seeds", help="SAE seeds per setting (mean ± std)"),
    d_sae: int = typer.Option(64, "--d-sae", help="latents per SAE"),
    steps: int = typer.Option(1000, help="Adam steps"),
    lr: float = typer.Option(5e-3, help="Adam learning rate"),
    batch_size: int = typer.Option(256, help="rows per step"),
    parents: int = typer.Option(4, help="synthetic: parent features"),
    children: int = typer.Option(4, help="synthetic: children per parent"),
    free: int = typer.Option(32, help="synthetic: independent features"),
    d_in: int = typer.Option(32, "--d-in", help="synthetic: dimensions"),
    p_parent: float = typer.Option(0.15, help="synthetic: probability a parent is active"),
    p_child: float = typer.Option(0.7, help="synthetic: probability an active parent has a child"),
    p_free: float = typer.Option(0.04, help="synthetic: probability of each free feature"),
    rows: int = typer.Option(16384, help="synthetic: training rows; first-letter: Zipf-sampled rows"),
    min_carried: float = typer.Option(0.5, help="synthetic: share of the parent that the other latents "
                                                "must carry"),
    data_seed: int = typer.Option(0, help="seed of the data and the minibatch order"),
    model: str = typer.Option("", "--model", "-m",
                              help="run the first-letter pipeline on this model instead (letters-toy: a "
                                   "built-in toy whose embeddings encode first letters)"),
    hook: str = typer.Option("blocks.0.hook_resid_pre", help="first-letter: hook to read"),
    sae_dir: Path | None = typer.Option(None, "--sae", help="first-letter: a trained SAE directory to judge "
                                                            "(default: train the settings above)"),
    min_per_letter: int = typer.Option(5, help="first-letter: word tokens a letter needs"),
    max_tokens: int | None = typer.Option(None, help="first-letter: at most this many word tokens"),
    f1_jump: float = typer.Option(0.03, help="first-letter: F1 rise that adds a main latent"),
    min_cosine: float = typer.Option(0.025, help="first-letter: absorber's decoder cosine with the probe"),
    max_absorber_tokens: int = typer.Option(5, help="first-letter: token-specific = fires on at most N "
                                                    "tokens"),
    out: Path | None = typer.Option(None, help="directory for absorption.json / first_letter.json and PNG"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Feature absorption: synthetic hierarchical features per architecture and sparsity, or (with --model)
    the first-letter pipeline of Chanin et al."""
    from circuits.analysis.seeds import SeedRunConfig

    arch_list = _archs(archs)
    settings = _settings(arch_list, _floats(l1, "--l1"), _ints(k, "--k"), _floats(l0_coef, "--l0-coef"))
    if n_seeds < 1:
        raise CircuitsError(f"--seeds must be positive, got {n_seeds}")
    if rows < 8:
        raise CircuitsError(f"--rows must be at least 8, got {rows}")
    run = SeedRunConfig(d_sae=d_sae, seeds=tuple(range(n_seeds)), steps=steps, lr=lr, batch_size=batch_size,
                        data_seed=data_seed)
    out_dir = check_writable_dir(out) if out is not None else None
    bar, update = _bars(not as_json)
    if model:
        from circuits.analysis.first_letter import run_first_letter
        from circuits.analysis.letters_toy import TOY_NAME, build_letter_model

        if model == TOY_NAME:
            loaded = build_letter_model(seed=run.data_seed)
            hook = "hook_embed" if hook == "blocks.0.hook_resid_pre" else hook
        else:
            from circuits.models import load_model

            loaded = load_model(model)
        sae = None
        if sae_dir is not None:
            from circuits.sae.io import load_sae

            sae = load_sae(sae_dir)
            if sae.cfg.groups != 1:
                raise CircuitsError(f"{sae_dir}: holds {sae.cfg.groups} SAEs; give a single SAE")
        with bar:
            result = run_first_letter(loaded, hook, settings, run, rows, min_per_letter, max_tokens, f1_jump,
                                      min_cosine, max_absorber_tokens, sae=sae, sae_label=str(sae_dir),
                                      progress=update)
        from circuits.analysis.figures import first_letter_figure

        stem, figure = "first_letter", first_letter_figure(result)
    else:
        from circuits.analysis.absorption import run_absorption_sweep
        from circuits.analysis.figures import absorption_figure
        from circuits.analysis.hierarchy import make_hierarchy

        feats = make_hierarchy(parents, children, free, d_in, p_parent, p_child, p_free, seed=data_seed)
        with bar:
            result = run_absorption_sweep(feats, settings, run, n_train=rows, n_eval=max(rows // 2, 1),
                                          min_carried=min_carried, progress=update)
        stem, figure = "absorption", absorption_figure(result)
    result["files"] = _write_outputs(out_dir, stem, result, figure) if out_dir else {}
    if as_json:
        print_json(result)
        return
    if model:
        _render_first_letter(result)
    else:
        _render_absorption(result)
    if result["files"]:
        console.print(f"wrote {', '.join(result['files'].values())}")


def _render_absorption(result: dict[str, Any]) -> None:
    data = result["data"]
    table = Table(title=f"absorption on hierarchical features ({data['n_parents']} parents x "
                        f"{data['children_per_parent']} children, data L0 {data['mean_l0']:.2f}, "
                        f"{len(result['config']['seeds'])} seeds)")
    for col in ("setting", "L0", "FVU", "absorption", "FN with child", "recall alone", "parent cos"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for r in result["settings"]:
        table.add_row(r["label"], f"{r['l0']['mean']:.2f}", f"{r['fvu']['mean']:.3f}",
                      f"{r['absorption_rate']['mean']:.3f} ± {r['absorption_rate']['std']:.3f}",
                      f"{r['false_negative_with_child']['mean']:.3f}",
                      f"{r['recall_parent_alone']['mean']:.3f}",
                      f"{r['parent_latent_cosine']['mean']:.3f}")
    console.print(table)
    for arch, t in result["trends"].items():
        rho = t["spearman_l0_vs_absorption"]
        verdict = "n/a" if rho is None else ("as theory predicts (more absorption at lower L0)"
                                             if t["as_theory_predicts"] else "NOT as theory predicts")
        shown = "n/a" if rho is None else f"{rho:.2f}"
        console.print(f"{arch}: Spearman(L0, absorption) = {shown}: {verdict}")


def _render_first_letter(result: dict[str, Any]) -> None:
    console.print(f"{result['model']} {result['hook']}: {result['n_tokens']} word tokens, "
                  f"{len(result['letters'])} letters, probe test accuracy "
                  f"{result['probe']['test_accuracy']:.3f}")
    table = Table(title="first-letter absorption (Chanin et al.)")
    for col in ("SAE", "runs", "L0", "false negatives", "absorbed"):
        table.add_column(col, justify="left" if col == "SAE" else "right")
    for row in result["summary"]:
        def fmt(key: str, row: dict[str, Any] = row) -> str:
            return f"{row[key]['mean']:.3f} ± {row[key]['std']:.3f}" if key in row else "-"
        table.add_row(row["label"], str(row["n_runs"]), fmt("l0"), fmt("false_negative_rate"),
                      fmt("absorption_rate"))
    console.print(table)
