"""`circuits sae train|eval`: train feature SAEs on a model hook over a local corpus (or a saved
activation file) and judge them. Parsing and rendering only; the work is in circuits.sae."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from circuits.atomic import atomic_write_text
from circuits.cli.common import (
    check_writable_dir,
    claim_outputs,
    console,
    keep_on_failure,
    print_json,
    progress_display,
    user_errors,
)
from circuits.cli.common import out as results  # results on stdout, progress and notes on stderr
from circuits.errors import CircuitsError

sae_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train and evaluate feature SAEs (ReLU+L1, TopK, BatchTopK, Gated, JumpReLU, Matryoshka).",
)

ACTIVATION_SUFFIXES = (".safetensors", ".npy")
TRAINING_FILE = "training.json"
# Checked against the formula in tests/sae/test_ce_recovered.py (a reconstruction alpha * x has a known CE).
CE_ABOVE_ONE_NOTE = ("ce_loss_recovered > 1 because ce_sae < ce_clean: the model predicts this text better "
                     "with the SAE's reconstruction spliced in than intact. Legitimate (the ratio is not "
                     "capped), typical off the model's training distribution, and no evidence of a good "
                     "SAE: compare ce_sae with ce_clean directly.")


def _is_activation_file(path: Path) -> bool:
    return path.suffix.lower() in ACTIVATION_SUFFIXES


def _load_model(spec: str) -> Any:
    from circuits.models import load_model

    return load_model(spec)


@sae_app.callback()
def _root() -> None:
    """Train and evaluate feature SAEs."""


@sae_app.command()
@user_errors
def train(
    data: Path = typer.Option(
        ...,
        "--data",
        help="text corpus (.txt: one document per line; .jsonl: 'text' field; a directory built by "
        "`circuits corpus build`) or saved activations (.safetensors/.npy)",
    ),
    out: Path = typer.Option(
        ..., "--out", help="directory for cfg.json, sae_weights.safetensors, training.json"
    ),
    model: str = typer.Option(
        "", "--model", "-m", help="model for a text corpus: checkpoint dir, zoo name, or TransformerLens name"
    ),
    hook: str = typer.Option("", "--hook", help="hook name, e.g. blocks.0.hook_resid_post"),
    arch: str = typer.Option("relu", help="relu | topk | batchtopk | gated | jumprelu | matryoshka"),
    d_sae: int = typer.Option(0, "--d-sae", help="latents (default 8 × d_in)"),
    k: int | None = typer.Option(
        None, help="active latents per row for topk / batchtopk / matryoshka (default 32)"),
    l1: float | None = typer.Option(None, help="L1 coefficient for relu / gated (default 3 / 4)"),
    l0: float | None = typer.Option(None, help="L0 coefficient for jumprelu (default 1)"),
    tokens: int = typer.Option(200_000, help="activations (rows) to train on"),
    batch_size: int = typer.Option(1024, help="rows per step (across all processes)"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    lr_warmup: float = typer.Option(0.0, help="fraction of steps of linear lr warm-up"),
    lr_decay: float = typer.Option(0.2, help="fraction of steps of linear lr decay at the end"),
    sparsity_warmup: float = typer.Option(0.05, help="fraction of steps of L1/L0 coefficient warm-up"),
    b_dec_init: str = typer.Option("geometric_median", help="geometric_median | mean | zeros"),
    normalize: bool = typer.Option(
        True, help="scale inputs so that E‖x‖² = d_in (folded into the saved SAE)"
    ),
    context_size: int = typer.Option(128, help="tokens per context for a text corpus"),
    text_field: str = typer.Option("text", help="JSONL field holding the text"),
    head: int | None = typer.Option(None, help="one head of a [batch, pos, head, d] hook (hook_z ...)"),
    seed: int = typer.Option(0, help="seed for initialisation and data order"),
    checkpoint_every: int = typer.Option(1000, help="steps between checkpoints (0: none)"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly from OUT/checkpoint.pt"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an SAE already in OUT"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Train an SAE on one hook of MODEL over a text corpus, or on saved activations."""
    from circuits.errors import did_you_mean
    from circuits.sae import ARCHS, K_ARCHS, SAEConfig, make_sae
    from circuits.sae.distributed import device_for_rank, distributed_context
    from circuits.sae.io import CFG_FILE, WEIGHTS_FILE, save_sae
    from circuits.sae.trainer import CHECKPOINT_FILE, TrainConfig, Trainer

    if arch not in ARCHS:
        raise CircuitsError(f"unknown --arch '{arch}'{did_you_mean(arch, ARCHS)} (known: {', '.join(ARCHS)})")
    if seed < 0:
        raise CircuitsError(f"--seed must be zero or more, got {seed}")
    if k is not None and (k < 1 or (d_sae and k > d_sae)):
        raise CircuitsError(f"k must be between 1 and d_sae={d_sae}, got {k} (--k, --d-sae)" if d_sae
                            else f"--k must be positive, got {k}")
    if head is not None and head < 0:
        raise CircuitsError(f"--head must be zero or more, got {head}")
    for name, value in (("--tokens", tokens), ("--batch-size", batch_size), ("--context-size", context_size)):
        if value < 1:
            raise CircuitsError(f"{name} must be positive, got {value}")
    if d_sae < 0:
        raise CircuitsError(f"--d-sae must be positive, got {d_sae}")
    if l1 is not None and arch not in ("relu", "gated"):
        raise CircuitsError(f"--l1 applies to relu and gated, not {arch} (use --k or --l0)")
    if k is not None and arch not in K_ARCHS:
        raise CircuitsError(f"--k applies to {', '.join(K_ARCHS)}, not {arch}")
    if l0 is not None and arch != "jumprelu":
        raise CircuitsError(f"--l0 applies to jumprelu, not {arch}")
    out = check_writable_dir(out)
    ckpt = out / CHECKPOINT_FILE
    if resume and not ckpt.is_file():
        raise CircuitsError(f"--resume: no checkpoint at {ckpt}")
    if not resume and not overwrite and ((out / CFG_FILE).exists() or ckpt.exists()):
        raise CircuitsError(
            f"{out} already holds an SAE or a checkpoint; use --resume, --overwrite or another --out"
        )
    if not resume:
        claim_outputs([out / CFG_FILE, out / WEIGHTS_FILE, out / TRAINING_FILE], overwrite)
    keep_on_failure(ckpt)  # an interrupted run keeps its last checkpoint for --resume
    device = device_for_rank(device)

    with distributed_context(device) as (rank, world):
        source, provenance = _make_source(
            data, model, hook, head, context_size, text_field, seed, rank, world, device
        )
        d = source.d_in
        n_latents = d_sae or 8 * d
        if k is not None and k > n_latents:
            raise CircuitsError(f"k must be between 1 and d_sae={n_latents}, got {k} (--k, --d-sae)")
        # Defaults put L0 near the true L0 of benchmarks/sae_frontier.py's synthetic data (inputs
        # normalised); no default fits every model: sweep them.
        defaults = {"relu": 3.0, "gated": 4.0}
        cfg = SAEConfig(
            d_in=d,
            d_sae=n_latents,
            arch=arch,
            groups=source.groups,
            l1_coefficient=l1 if l1 is not None else defaults.get(arch, 1.0),
            k=k if k is not None else min(32, n_latents),
            l0_coefficient=l0 if l0 is not None else 1.0,
            bandwidth=0.05,
            threshold_init=0.05,
            model_name=provenance.get("model", ""),
            hook_name=hook,
            hook_layer=provenance.get("hook_layer", -1),
            hook_head_index=head,
            context_size=context_size if provenance["kind"] == "corpus" else 0,
        )
        steps = max(1, math.ceil(tokens / batch_size))
        tcfg = TrainConfig(
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            lr_warmup_steps=int(lr_warmup * steps),
            lr_decay_steps=int(lr_decay * steps),
            sparsity_warmup_steps=int(sparsity_warmup * steps)
            if arch in ("relu", "gated", "jumprelu")
            else 0,
            b_dec_init=b_dec_init,
            normalize_inputs=normalize,
            checkpoint_every=checkpoint_every,
            checkpoint_dir=str(out),
            log_every=max(1, min(50, steps // 100 or 1)),
        )
        sae = make_sae(cfg, seed=seed).to(device)
        show = rank == 0 and not as_json
        with progress_display(show) as bar:
            task = bar.add_task(f"training {arch} SAE", total=steps, info="")

            def report(step: int, total: int, metrics: dict[str, float]) -> None:
                bar.update(
                    task,
                    completed=step,
                    info=f"mse {metrics.get('mse', float('nan')):.4g}  L0 {metrics.get('l0', 0):.1f}",
                )

            trainer = Trainer(sae, source, tcfg, callback=report)
            if resume:
                trainer.load_checkpoint(ckpt)
                bar.update(task, completed=trainer.step)
            stats = trainer.run()
        if rank == 0:
            save_sae(sae, out, metadata={"dataset_path": str(data), "training_tokens": stats.rows_seen})
            summary: dict[str, Any] = {
                "out": str(out),
                "sae": cfg.to_dict(),
                "train": tcfg.to_dict(),
                "data": provenance,
                "world_size": world,
                "resumed": resume,
                "steps": stats.steps,
                "rows_seen": stats.rows_seen,
                "seconds": round(stats.seconds, 3),
                "rows_per_second": round(stats.rows_seen / max(stats.seconds, 1e-9), 1),
                "final": {k_: v[0] if len(v) == 1 else v for k_, v in stats.final_losses.items()},
                "dead_fraction": stats.dead_fraction,
                "history": stats.history,
            }
            if provenance["kind"] == "corpus":
                summary["data"].update(passes=getattr(source, "passes", 0), **getattr(source, "stats", {}))
            atomic_write_text(out / TRAINING_FILE, json.dumps(summary, indent=2))
            ckpt.unlink(missing_ok=True)
            if as_json:
                print_json(summary)
            else:
                results.print(
                    f"[green]saved[/] {arch} SAE d_in={d} d_sae={n_latents} to {out} "
                    f"({stats.steps} steps, {summary['rows_per_second']:.0f} rows/s, "
                    f"final mse {summary['final'].get('mse')}, L0 {summary['final'].get('l0')})"
                )


def _make_source(
    data: Path,
    model: str,
    hook: str,
    head: int | None,
    context_size: int,
    text_field: str,
    seed: int,
    rank: int,
    world: int,
    device: str,
) -> tuple[Any, dict[str, Any]]:
    """The activation source for --data, and a description of it for training.json."""
    from circuits.sae.sources import ModelActivationSource, TensorSource, hook_layer, load_activations

    if _is_activation_file(data):
        if model or hook:
            console.print("[yellow]note:[/] --data is an activation file; --model/--hook are only recorded")
        x = load_activations(data)
        return TensorSource(x.to(device), seed=seed, rank=rank, world=world), {
            "kind": "activations",
            "path": str(data),
            "rows": int(x.shape[1]),
            "model": model,
        }
    if not data.exists():
        raise CircuitsError(f"--data {data} does not exist")
    if not model or not hook:
        raise CircuitsError("a text corpus needs --model and --hook (or pass a saved activation file)")
    loaded = _load_model(model)
    if device != "cpu":
        with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints "Moving model to device"
            loaded.model.to(device)
    source = ModelActivationSource(
        loaded.model,
        loaded.tokenizer,
        hook,
        data,
        context_size=context_size,
        seed=seed,
        rank=rank,
        world=world,
        text_field=text_field,
        head_index=head,
        device=device,
    )
    layer = hook_layer(hook)
    return source, {
        "kind": "corpus",
        "path": str(data),
        "model": loaded.name,
        "hook_layer": -1 if layer is None else layer,
    }


@sae_app.command("eval")
@user_errors
def evaluate(
    sae_dir: Path = typer.Argument(..., help="SAE directory (cfg.json + sae_weights.safetensors)"),
    data: Path = typer.Option(..., "--data", help="text corpus (.txt / .jsonl) or saved activations"),
    model: str = typer.Option("", "--model", "-m", help="model the SAE was trained on (for a text corpus)"),
    hook: str = typer.Option("", "--hook", help="hook name (default: the one in the SAE's cfg.json)"),
    contexts: int = typer.Option(64, help="contexts of the corpus to evaluate on"),
    context_size: int = typer.Option(0, help="tokens per context (default: the SAE's, else 128)"),
    text_field: str = typer.Option("text", help="JSONL field holding the text"),
    ce: bool = typer.Option(True, help="measure CE loss recovered by splicing the SAE into the model"),
    dense_threshold: float = typer.Option(0.1, help="firing frequency above which a latent is dense"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """L0, MSE, FVU, dead / dense latents, shrinkage and CE loss recovered of a saved SAE."""
    from circuits.sae.io import load_sae, read_sae_config
    from circuits.sae.metrics import ce_loss_recovered, reconstruction_metrics
    from circuits.sae.sources import check_hook, hook_activations, load_activations, token_batches

    if contexts < 1:
        raise CircuitsError(f"--contexts must be positive, got {contexts}")
    if context_size < 0:
        raise CircuitsError(f"--context-size must be positive, got {context_size}")
    cfg, _ = read_sae_config(sae_dir)
    result: dict[str, Any] = {
        "sae": str(sae_dir),
        "arch": cfg.arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "groups": cfg.groups,
        "data": str(data),
    }
    if _is_activation_file(data):
        x = load_activations(data)
        sae = load_sae(sae_dir, d_in=int(x.shape[-1]))
        result["rows"] = int(x.shape[1])
        metrics = reconstruction_metrics(sae, x, dense_threshold=dense_threshold)
    else:
        if not data.exists():
            raise CircuitsError(f"--data {data} does not exist")
        if not model:
            raise CircuitsError("a text corpus needs --model (or pass a saved activation file)")
        hook_name = hook or cfg.hook_name
        if not hook_name:
            raise CircuitsError(f"{sae_dir}: cfg.json names no hook; pass --hook")
        loaded = _load_model(model)
        check_hook(loaded.model, hook_name)
        size = context_size or cfg.context_size or 128
        size = min(size, int(loaded.model.cfg.n_ctx))
        tokens = token_batches(data, loaded.tokenizer, size, contexts, text_field)
        head = cfg.hook_head_index
        with progress_display(not as_json) as bar:
            bar.add_task("evaluating", total=None, info="")
            acts = hook_activations(loaded.model, tokens, hook_name, head)  # [n, seq, d]
            sae = load_sae(sae_dir, d_in=int(acts.shape[-1]))
            bos = int(getattr(loaded.tokenizer, "bos_token_id", -1))
            rows = acts[tokens != bos]
            result.update(
                model=loaded.name,
                hook=hook_name,
                contexts=int(tokens.shape[0]),
                context_size=int(tokens.shape[1]),
                rows=int(rows.shape[0]),
            )
            metrics = reconstruction_metrics(sae, rows, dense_threshold=dense_threshold)
            if ce:
                result.update(
                    ce_loss_recovered(loaded.model, sae, hook_name, tokens, bos_token_id=bos, head_index=head)
                )
    result.update({k: v[0] if len(v) == 1 else v for k, v in metrics.items()})
    result["definitions"] = {
        "l0": "mean active latents per row",
        "mse": "mean squared error per element",
        "fvu": "sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (pooled, per-dimension mean)",
        "dead_fraction": "latents never active on the evaluated rows",
        "dense_fraction": f"latents active on more than {dense_threshold:g} of the rows",
        "shrinkage": "relative reconstruction bias E[x_hat.x_hat]/E[x_hat.x] (1 = none, < 1 = shrinkage)",
        "ce_loss_recovered": "(CE_zero_ablation - CE_sae) / (CE_zero_ablation - CE_clean)",
    }
    if isinstance(result.get("ce_loss_recovered"), float) and result["ce_loss_recovered"] > 1:
        result["notes"] = {"ce_loss_recovered": CE_ABOVE_ONE_NOTE}
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{cfg.arch} SAE {sae_dir}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "rows",
        "l0",
        "mse",
        "fvu",
        "dead_fraction",
        "dense_fraction",
        "shrinkage",
        "ce_clean",
        "ce_sae",
        "ce_zero",
        "ce_loss_recovered",
    ):
        if key in result:
            value = result[key]
            text = (
                ", ".join(f"{v:.4g}" for v in value)
                if isinstance(value, list)
                else (f"{value:.4g}" if isinstance(value, float) else str(value))
            )
            table.add_row(key, text)
    results.print(table)
    if result.get("notes"):
        results.print(f"note: {result['notes']['ce_loss_recovered']}", highlight=False, soft_wrap=True)


def _attach_analyses() -> None:
    """`sae seeds` and `sae absorption` belong to this app wherever it is entered from (torchrun runs
    `python -m circuits.cli.sae`)."""
    from circuits.cli.analysis import absorption, seeds

    sae_app.command()(seeds)
    sae_app.command()(absorption)


_attach_analyses()

if __name__ == "__main__":  # `torchrun --nproc_per_node N -m circuits.cli.sae train ...`
    sae_app()
