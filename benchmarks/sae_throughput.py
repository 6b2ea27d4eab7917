"""Training throughput (activations per second) of every SAE architecture at one fixed size on this CPU,
and, where `sae-lens` is importable, the same architecture's training step in SAELens on the same
activations in the same run, as a ratio.

What is timed: full training steps (forward, loss, backward, Adam, decoder constraint), after warm-up
steps. Ours runs through circuits.sae.Trainer (dead-latent tracking included). SAELens runs its
TrainingSAE.training_forward_pass + backward + Adam in a plain loop (its SAETrainer needs a language
model and an activation store, so its logging/eval overhead is NOT included: a favourable comparison for
SAELens).

Statistic (robust to a busy machine): ours and SAELens's steps are timed in alternating rounds (ours,
SAELens, ours, SAELens, ...; `--repeats` rounds of `--steps` steps each, after `--warmup` steps of each),
so slow phases of the machine hit both alike; `ours_over_saelens` is the MEDIAN of the per-round ratios,
and `rows_per_second` / `saelens_rows_per_second` are the medians of the per-round rates (every round is
listed in the `*_all` fields, in order).

    python benchmarks/sae_throughput.py [--d-in 256 --d-sae 2048 --batch 1024 --steps 10 --repeats 7]
                                        [--out DIR]

Writes sae_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuits.sae import ARCHS, K_ARCHS, SAEConfig, TrainConfig, Trainer, make_sae  # noqa: E402
from circuits.sae.sources import TensorSource  # noqa: E402
from circuits.sae.synthetic import make_features  # noqa: E402

K = 32


def ours_step_fn(arch: str, x: torch.Tensor, d_sae: int, batch: int, total: int) -> Any:
    """A function running n training steps of our Trainer (to at most `total` steps in all)."""
    kw = {"k": K} if arch in K_ARCHS else {}
    sae = make_sae(SAEConfig(d_in=x.shape[-1], d_sae=d_sae, arch=arch, **kw), seed=0)
    trainer = Trainer(
        sae,
        TensorSource(x, seed=0),
        TrainConfig(steps=total, batch_size=batch, b_dec_init="mean", log_every=total),
    )

    def run(n: int) -> None:
        trainer.run(until=trainer.step + n)

    return run


def saelens_step_fn(arch: str, d_in: int, d_sae: int) -> tuple[Any, Any]:
    """(training SAE, one-step function) for the SAELens counterpart of `arch`."""
    import sae_lens
    from sae_lens.saes.sae import TrainStepInput

    if arch == "relu":
        cfg = sae_lens.StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=1.0)
        sae, coef = sae_lens.StandardTrainingSAE(cfg), {"l1": 1.0}
    elif arch == "topk":
        cfg = sae_lens.TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=K)
        sae, coef = sae_lens.TopKTrainingSAE(cfg), {}
    elif arch == "batchtopk":
        cfg = sae_lens.BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=K)
        sae, coef = sae_lens.BatchTopKTrainingSAE(cfg), {}
    elif arch == "gated":
        cfg = sae_lens.GatedTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=1.0)
        sae, coef = sae_lens.GatedTrainingSAE(cfg), {"l1": 1.0}
    elif arch == "jumprelu":
        cfg = sae_lens.JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l0_coefficient=1.0)
        sae, coef = sae_lens.JumpReLUTrainingSAE(cfg), {"l0": 1.0}
    elif arch == "matryoshka":  # same nested widths as ours
        widths = SAEConfig(d_in=d_in, d_sae=d_sae, arch="matryoshka", k=K).prefix_sizes
        cfg = sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=K,
                                                            matryoshka_widths=widths)
        sae, coef = sae_lens.MatryoshkaBatchTopKTrainingSAE(cfg), {}
    else:
        raise ValueError(f"no SAELens counterpart for '{arch}'")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    state = {"step": 0}

    def step(batch: torch.Tensor) -> None:
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=batch,
                coefficients=coef,
                dead_neuron_mask=dead,
                n_training_steps=state["step"],
                is_logging_step=False,
            )
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        state["step"] += 1

    return sae, step


def timed(fn: Any, steps: int, batch: int) -> float:
    """Rows per second of fn()."""
    start = time.perf_counter()
    fn()
    return steps * batch / (time.perf_counter() - start)


def compare(arch: str, x: torch.Tensor, d_sae: int, batch: int, steps: int, warmup: int, rounds: int,
            with_saelens: bool) -> dict[str, Any]:
    """Interleaved rounds: ours then SAELens's, `rounds` times; medians of rates and of per-round ratios."""
    run_ours = ours_step_fn(arch, x, d_sae, batch, warmup + rounds * steps)
    run_ours(warmup)
    theirs = None
    if with_saelens:
        _, step = saelens_step_fn(arch, x.shape[-1], d_sae)
        src = TensorSource(x, seed=0)

        def theirs(n: int = steps) -> None:
            for _ in range(n):
                step(src.next_batch(batch)[0])

        theirs(warmup)
    mine: list[float] = []
    other: list[float] = []
    for _ in range(rounds):
        mine.append(timed(lambda: run_ours(steps), steps, batch))
        if theirs is not None:
            other.append(timed(theirs, steps, batch))
    entry: dict[str, Any] = {
        "rows_per_second": round(statistics.median(mine), 1),
        "rows_per_second_all": [round(r, 1) for r in mine],
    }
    if other:
        ratios = [a / b for a, b in zip(mine, other, strict=True)]
        entry["saelens_rows_per_second"] = round(statistics.median(other), 1)
        entry["saelens_rows_per_second_all"] = [round(r, 1) for r in other]
        entry["ours_over_saelens_all"] = [round(r, 3) for r in ratios]
        entry["ours_over_saelens"] = round(statistics.median(ratios), 3)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed rounds (ours, then SAELens, alternating)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default; 1 is faster on a busy 2-core box)",
    )
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    feats = make_features(4 * args.d_in, args.d_in, mean_l0=16, seed=0)
    x, _ = feats.sample(16 * args.batch, seed=1)
    try:
        import sae_lens  # noqa: F401

        saelens_version: str | None = __import__("sae_lens").__version__
    except Exception as err:  # not installed, or does not import beside our pins
        saelens_version = None
        saelens_reason = f"{type(err).__name__}: {err}"
    results: dict[str, Any] = {}
    for arch in args.archs:
        entry = compare(arch, x, args.d_sae, args.batch, args.steps, args.warmup, args.repeats,
                        bool(saelens_version))
        results[arch] = entry
        print(f"{arch:10s} {json.dumps(entry)}", file=sys.stderr)
    doc = {
        "benchmark": "sae_throughput",
        "size": {"d_in": args.d_in, "d_sae": args.d_sae, "batch": args.batch, "k": K},
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "repeats": args.repeats,
        "statistic": ("interleaved rounds (ours, SAELens, ours, ...): ours_over_saelens is the median of "
                      "per-round ratios; rows/s are per-round medians; every round listed in *_all"),
        "what": "training steps: forward, loss, backward, Adam, decoder constraint",
        "saelens": saelens_version or f"not available ({saelens_reason})",
        "results": results,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "sae_throughput.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
