"""Paper-style PNG figures for the analyses (matplotlib object API, Agg canvas: no pyplot state)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLOURS = ["#264653", "#e76f51", "#2a9d8f", "#e9c46a", "#8d5a97", "#f4a261", "#457b9d"]


def png_bytes(fig: Figure, dpi: int = 130) -> bytes:
    """The figure rendered to PNG bytes with the Agg backend (no display, no global pyplot state)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def seeds_figure(result: dict[str, Any]) -> bytes:
    """Matched-cosine distributions (decoder, encoder) per architecture and the shared fractions."""
    archs = result["architectures"]
    threshold = result["config"]["threshold"]
    fig = Figure(figsize=(13.5, 3.8))
    axes = fig.subplots(1, 3)
    for ax, which in zip(axes[:2], ("decoder", "encoder"), strict=True):
        for i, entry in enumerate(archs):
            hist = entry[which]["histogram"]
            edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"], dtype=float)
            density = counts / max(counts.sum(), 1.0)
            ax.stairs(density, edges, color=COLOURS[i % len(COLOURS)], lw=1.8,
                      label=f"{entry['label']} (L0 {entry['l0']['mean']:.1f})")
        ax.axvline(threshold, ls="--", color="#9e9e9e", lw=1)
        ax.set_xlim(-0.2, 1.0)
        ax.set_xlabel(f"cosine of Hungarian-matched {which} vectors")
        ax.set_ylabel("fraction of latents")
        ax.set_title(f"{which}: matched similarity across seeds")
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    x = np.arange(len(archs))
    for j, which in enumerate(("decoder", "encoder")):
        means = [e[which]["shared_fraction"] for e in archs]
        stds = [e[which]["shared_fraction_std"] for e in archs]
        ax.bar(x + (j - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, label=which,
               color=COLOURS[j * 2], alpha=0.9)
    ax.set_xticks(x)
    ax.set_xticklabels([e["label"] for e in archs], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"fraction shared (cosine >= {threshold:g})")
    ax.set_title(f"shared latents, {len(result['config']['seeds'])} seeds, d_sae {result['config']['d_sae']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def absorption_figure(result: dict[str, Any]) -> bytes:
    """Absorption rate (and parent recall when alone) against measured L0, one line per architecture."""
    rows = result["settings"]
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    for i, arch in enumerate(dict.fromkeys(r["arch"] for r in rows)):
        mine = sorted((r for r in rows if r["arch"] == arch), key=lambda r: r["l0"]["mean"])
        l0 = [r["l0"]["mean"] for r in mine]
        colour = COLOURS[i % len(COLOURS)]
        for ax, key in ((ax1, "absorption_rate"), (ax2, "recall_parent_alone")):
            ax.errorbar(l0, [r[key]["mean"] for r in mine], yerr=[r[key]["std"] for r in mine], marker="o",
                        capsize=3, color=colour, label=arch)
        for r, x in zip(mine, l0, strict=True):
            ax1.annotate(r["label"].split(" ", 1)[1], (x, r["absorption_rate"]["mean"]), fontsize=7,
                         textcoords="offset points", xytext=(4, 4))
    data = result["data"]
    ax1.axvline(data["mean_l0"], ls=":", color="#9e9e9e", lw=1, label="data L0")
    ax1.set_xlabel("L0 (held-out rows)")
    ax1.set_ylabel("absorption rate")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_title("parent latent silent, child latents carry the parent")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("L0 (held-out rows)")
    ax2.set_ylabel("parent latent recall (parent alone)")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_title("control: parent without children")
    fig.suptitle(f"hierarchical features: {data['n_parents']} parents x {data['children_per_parent']} "
                 f"children, d_in {data['d_in']}, {len(result['config']['seeds'])} seeds", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def first_letter_figure(result: dict[str, Any]) -> bytes:
    """Left: false-negative and absorption rates per SAE setting (mean ± std over seeds). Right: per
    letter, for the run with the most absorption."""
    summary, runs = result["summary"], result["runs"]
    fig = Figure(figsize=(11, 3.8))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    x = np.arange(len(summary))
    for j, (key, name) in enumerate((("false_negative_rate", "false negatives"),
                                     ("absorption_rate", "absorbed (token-specific)"))):
        ax1.bar(x + (j - 0.5) * 0.38, [r[key]["mean"] for r in summary], 0.38,
                yerr=[r[key]["std"] for r in summary], capsize=3, color=COLOURS[j], label=name)
    ax1.set_xticks(x)
    ax1.set_xticklabels([r["label"] + (f"\nL0 {r['l0']['mean']:.1f}" if "l0" in r else "") for r in summary],
                        fontsize=7)
    ax1.set_ylabel("fraction of probe-correct tokens")
    ax1.set_title(f"first-letter absorption by SAE ({result['model']}, {result['hook']})", fontsize=10)
    ax1.legend(fontsize=8)
    worst = max(runs, key=lambda r: r["absorption_rate"])
    per = worst["per_letter"]
    xl = np.arange(len(per))
    ax2.bar(xl - 0.2, [p["false_negative_rate"] for p in per], 0.4, color=COLOURS[0], label="false negatives")
    ax2.bar(xl + 0.2, [p["absorption_rate"] for p in per], 0.4, color=COLOURS[1], label="absorbed")
    ax2.set_xticks(xl)
    ax2.set_xticklabels([p["letter"] for p in per])
    ax2.set_xlabel("first letter")
    ax2.set_title(f"per letter: {worst['label']} (probe test accuracy "
                  f"{result['probe']['test_accuracy']:.2f})", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)
