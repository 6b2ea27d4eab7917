"""L0-vs-FVU frontier of every SAE architecture on synthetic data with known sparse features, and an
honest check of the Gated SAE paper's claim (Rajamanoharan et al. 2024): at equal reconstruction (FVU),
a Gated SAE needs fewer active latents than a ReLU+L1 SAE.

Each architecture is trained over a sweep of its sparsity knob (L1 / L0 coefficient, or k) and several
seeds; L0 and FVU are measured on held-out rows. The claim is checked at fixed FVU levels by interpolating
each architecture's mean L0 along its frontier (log L0 vs log FVU, piecewise linear); the JSON says at
which levels the claim holds, with the per-seed spread, whatever the outcome.

    python benchmarks/sae_frontier.py [--quick] [--out benchmarks/results]

Writes sae_frontier.json and sae_frontier.png. FVU is the pooled definition of circuits.sae.metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuits.sae import SAEConfig, make_sae, train_sae  # noqa: E402
from circuits.sae.metrics import reconstruction_metrics  # noqa: E402
from circuits.sae.synthetic import make_features, mean_max_cosine  # noqa: E402
from circuits.stats import mean_std  # noqa: E402

# Series: name -> (architecture, sparsity knob, sweep values, extra config). Inputs are normalised so
# that E‖x‖² = d_in. "relu" is the modern recipe (free decoder, L1 weighted by decoder norms);
# "relu_unit" is the classic unit-norm-decoder ReLU+L1 that the Gated paper's baseline resembles.
SERIES: dict[str, tuple[str, str, list[float], dict[str, Any]]] = {
    "relu": ("relu", "l1_coefficient", [0.25, 0.5, 1, 1.5, 2, 3], {}),
    "relu_unit": ("relu", "l1_coefficient", [0.25, 0.5, 1, 1.5, 2, 3], {"normalize_decoder": True}),
    "topk": ("topk", "k", [2, 4, 6, 8, 12, 16], {}),
    "batchtopk": ("batchtopk", "k", [2, 4, 6, 8, 12, 16], {}),
    "gated": ("gated", "l1_coefficient", [0.25, 0.5, 1, 2, 4, 8], {}),
    "jumprelu": (
        "jumprelu",
        "l0_coefficient",
        [0.1, 0.3, 1, 3, 10, 30],
        {"bandwidth": 0.05, "threshold_init": 0.05},
    ),
}


def run_point(
    series: str, value: float, seed: int, data: dict[str, Any], steps: int, d_sae: int
) -> dict[str, Any]:
    arch, knob, _, extra = SERIES[series]
    kw = {knob: int(value) if knob == "k" else float(value), **extra}
    cfg = SAEConfig(d_in=data["d_in"], d_sae=d_sae, arch=arch, **kw)
    sae = make_sae(cfg, seed=seed)
    start = time.perf_counter()
    train_sae(
        sae,
        data["train"],
        steps=steps,
        lr=3e-3,
        batch_size=256,
        seed=seed,
        lr_decay_steps=steps // 5,
        sparsity_warmup_steps=steps // 20 if knob != "k" else 0,
        normalize_inputs=True,
        dead_after_rows=50_000,
    )
    seconds = time.perf_counter() - start
    m = reconstruction_metrics(sae, data["test"])
    return {
        "series": series,
        "arch": arch,
        "knob": knob,
        "value": value,
        "seed": seed,
        "l0": m["l0"][0],
        "fvu": m["fvu"][0],
        "shrinkage": m["shrinkage"][0],
        "dead_fraction": m["dead_fraction"][0],
        "mmcs": mean_max_cosine(sae.W_dec[0], data["features"]),
        "seconds": round(seconds, 3),
    }


def interpolate_l0(points: list[tuple[float, float]], fvu: float) -> float | None:
    """Mean L0 at `fvu` on the frontier through (fvu, l0) points: the lower envelope, interpolated
    linearly in (log fvu, log l0); None outside the measured FVU range."""
    pts = sorted((f, l) for f, l in points if f > 0 and l > 0)
    if not pts or not pts[0][0] <= fvu <= pts[-1][0]:
        return None
    best = None
    for (f0, l0), (f1, l1) in zip(pts, pts[1:], strict=False):
        if f0 <= fvu <= f1:
            t = 0.0 if f1 == f0 else (math.log(fvu) - math.log(f0)) / (math.log(f1) - math.log(f0))
            value = math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0)))
            best = value if best is None else min(best, value)
    return best


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per series and knob value: mean ± std over seeds."""
    out: dict[str, list[dict[str, Any]]] = {}
    for series, (_, knob, values, _) in SERIES.items():
        points = []
        for v in values:
            group = [r for r in rows if r["series"] == series and r["value"] == v]
            if not group:
                continue
            entry: dict[str, Any] = {knob: v, "n_seeds": len(group)}
            for key in ("l0", "fvu", "shrinkage", "mmcs", "dead_fraction"):
                vals = [r[key] for r in group]
                summary = mean_std(vals)
                entry[key], entry[f"{key}_std"] = summary["mean"], summary["std"]
            points.append(entry)
        if points:
            out[series] = points
    return out


def claim_check(
    summary: dict[str, Any], rows: list[dict[str, Any]], levels: list[float], baseline: str
) -> dict[str, Any]:
    """L0 of Gated vs a ReLU series at equal FVU, on the mean frontier and per seed."""
    result: dict[str, Any] = {"baseline": baseline, "levels": []}
    seeds = sorted({r["seed"] for r in rows})

    def seed_l0(series: str, seed: int, fvu: float) -> float | None:
        pts = [(x["fvu"], x["l0"]) for x in rows if x["series"] == series and x["seed"] == seed]
        return interpolate_l0(pts, fvu)

    for fvu in levels:
        entry: dict[str, Any] = {"fvu": fvu}
        for series in summary:
            entry[f"l0_{series}"] = interpolate_l0([(p["fvu"], p["l0"]) for p in summary[series]], fvu)
        g, r = entry.get("l0_gated"), entry.get(f"l0_{baseline}")
        entry["gated_over_baseline"] = g / r if g and r else None
        ratios = []
        for s_ in seeds:
            gs, rs = seed_l0("gated", s_, fvu), seed_l0(baseline, s_, fvu)
            if gs and rs:
                ratios.append(gs / rs)
        entry["gated_over_baseline_per_seed"] = ratios
        entry["claim_holds"] = (
            None if entry["gated_over_baseline"] is None else entry["gated_over_baseline"] < 1.0
        )
        result["levels"].append(entry)
    decided = [e["claim_holds"] for e in result["levels"] if e["claim_holds"] is not None]
    result["verdict"] = (
        "not testable (no overlapping FVU range)"
        if not decided
        else "holds at every tested FVU level"
        if all(decided)
        else "fails at every tested FVU level"
        if not any(decided)
        else "holds at some FVU levels only"
    )
    return result


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=150)
    for name, series in summary.items():
        pts = sorted(series, key=lambda p: p["l0"])
        ax.errorbar(
            [p["l0"] for p in pts],
            [p["fvu"] for p in pts],
            xerr=[p["l0_std"] for p in pts],
            yerr=[p["fvu_std"] for p in pts],
            marker="o",
            ms=4,
            capsize=2,
            label=name,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("L0 (mean active latents per row)")
    ax.set_ylabel("FVU (held-out)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """Rows of earlier files (keyed by arch and knob name) in the current form."""
    if "series" not in row:
        row = {**row, "series": row["arch"]}
        knob = SERIES[row["series"]][1]
        row.update(knob=knob, value=row[knob])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 points per series, fewer steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids contention stalls)")
    parser.add_argument("--only", default="", help="comma-separated series to run (default: all)")
    parser.add_argument(
        "--merge", type=Path, default=None, help="earlier sae_frontier.json whose runs fill the other series"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds, steps = (1, 600) if args.quick else (args.seeds, args.steps)
    if args.quick:
        for name, (arch, knob, values, extra) in SERIES.items():
            SERIES[name] = (arch, knob, values[::2], extra)
    only = [s_.strip() for s_ in args.only.split(",") if s_.strip()] or list(SERIES)
    unknown = [s_ for s_ in only if s_ not in SERIES]
    if unknown:
        parser.error(f"unknown series {unknown} (known: {', '.join(SERIES)})")

    d_in, n_features, mean_l0, d_sae, magnitude = 32, 96, 5.0, 128, (0.5, 1.5)
    feats = make_features(n_features, d_in, mean_l0=mean_l0, seed=0, frequency_decay=0.5, magnitude=magnitude)
    train, _ = feats.sample(32768, seed=1)
    test, _ = feats.sample(8192, seed=2)
    data = {"d_in": d_in, "train": train, "test": test, "features": feats.directions}
    data_doc = {
        "kind": "synthetic sparse features in superposition",
        "d_in": d_in,
        "n_features": n_features,
        "mean_l0": mean_l0,
        "frequency_decay": 0.5,
        "magnitude": list(magnitude),
        "train_rows": int(train.shape[0]),
        "test_rows": int(test.shape[0]),
    }
    training_doc = {"d_sae": d_sae, "steps": steps, "batch_size": 256, "lr": 3e-3, "normalize_inputs": True}

    rows: list[dict[str, Any]] = []
    seconds = 0.0
    if args.merge is not None:
        earlier = json.loads(args.merge.read_text())
        if earlier.get("data") != data_doc or earlier.get("training") != training_doc:
            parser.error(f"{args.merge} was made with other data or training settings")
        rows = [r for r in map(_normalise_row, earlier["runs"]) if r["series"] not in only]
        seconds = float(earlier.get("seconds", 0.0))
    start = time.perf_counter()
    for name in only:
        for v in SERIES[name][2]:
            for s_ in range(seeds):
                rows.append(run_point(name, v, s_, data, steps, d_sae))
                print(
                    f"{name:9s} {v:>6} seed {s_}: L0 {rows[-1]['l0']:.2f} FVU {rows[-1]['fvu']:.4f}",
                    file=sys.stderr,
                )
    summary = summarise(rows)
    levels = [0.02, 0.05, 0.1, 0.2]
    result = {
        "benchmark": "sae_frontier",
        "question": "At equal FVU, does a Gated SAE need fewer active latents (L0) than ReLU+L1?",
        "data": data_doc,
        "training": training_doc,
        "definitions": {
            "l0": "mean active latents per held-out row",
            "fvu": "sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 on held-out rows",
            "shrinkage": "E[x_hat.x_hat]/E[x_hat.x] (1 = none)",
            "mmcs": "mean over true features of max cosine to a decoder row",
            "claim_check": "L0 interpolated on each series' mean frontier (log-log) at fixed FVU",
        },
        "seeds": seeds,
        "series": {n: {"arch": a, "knob": k, "values": v, "extra": e} for n, (a, k, v, e) in SERIES.items()},
        "frontier": summary,
        "gated_claim": {
            base: claim_check(summary, rows, levels, base)
            for base in ("relu", "relu_unit")
            if base in summary
        },
        "runs": rows,
        "seconds": round(seconds + time.perf_counter() - start, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "sae_frontier.json"
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, json_path)
    plot(
        summary,
        args.out / "sae_frontier.png",
        f"L0 vs FVU, synthetic ({n_features} features in {d_in} dims, L0={mean_l0:g}); {seeds} seed(s)",
    )
    verdicts = {base: c["verdict"] for base, c in result["gated_claim"].items()}
    print(json.dumps({"gated_claim": verdicts, "json": str(json_path)}, indent=2))


if __name__ == "__main__":
    main()
