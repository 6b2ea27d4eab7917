"""A run's report: one self-contained HTML page (figures inlined as base64 PNG) plus the PNGs beside it.

Input is the JSON payload of `circuits find` (`result.json`), so a report can be rebuilt from any run
directory. Figures: the circuit drawn by layer, the head-score heat map [layer x head], the ROC curve
against ground truth (when the payload has `evaluation.roc_curve`), and circuit stability across SAE
seeds (when the payload has `stability`). matplotlib is used through its object API with the Agg
canvas, so no global backend or pyplot state is touched.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from circuits.atomic import atomic_write_bytes
from circuits.errors import CircuitsError
from circuits.jsonio import read_json
from circuits.report.explain import explain_html


class ReportError(CircuitsError):
    """A report that cannot be read or written."""


REQUIRED_KEYS = ("task", "model", "n_layers", "n_heads", "heads")
MAX_EDGES_DRAWN = 150  # the strongest circuit edges; more turn the figure into a hairball


@dataclass(frozen=True)
class ReportFigure:
    """One rendered figure: a file-name key, a caption and the PNG bytes."""

    key: str
    title: str
    caption: str
    png: bytes


def load_result(run: Path) -> dict[str, Any]:
    """RUN_DIR/result.json (or a result file given directly) -> payload; one-line errors."""
    run = Path(run)
    path = run / "result.json" if run.is_dir() else run
    payload = read_json(path, ReportError,
                        missing=f"{path} does not exist (write it with `circuits find ... --out DIR`)")
    check_payload(payload, str(path))
    return payload


def check_payload(payload: Any, where: str = "result") -> None:
    if not isinstance(payload, dict):
        raise ReportError(f"{where}: not a circuits result (expected a JSON object)")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ReportError(f"{where}: not a circuits result (missing {', '.join(missing)})")


def score_grid(payload: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """[layer, head] scores and in-circuit flags from the payload's head list."""
    shape = (int(payload["n_layers"]), int(payload["n_heads"]))
    scores, selected = np.zeros(shape), np.zeros(shape, dtype=bool)
    for h in payload["heads"]:
        scores[h["layer"], h["head"]] = h["score"]
        selected[h["layer"], h["head"]] = h["in_circuit"]
    return scores, selected


def _truth_heads(payload: dict[str, Any]) -> set[tuple[int, int]]:
    ev = payload.get("evaluation") or {}
    return {(int(l), int(h)) for l, h in ev.get("truth_heads") or []}


def _png(fig: Figure) -> bytes:
    from circuits.analysis.figures import png_bytes

    return png_bytes(fig, dpi=110)


def circuit_figure(payload: dict[str, Any]) -> ReportFigure:
    """Heads as nodes on a layer x head grid; circuit heads coloured by score; circuit edges weighted."""
    scores, selected = score_grid(payload)
    n_layers, n_heads = scores.shape
    truth = _truth_heads(payload)
    fig = Figure(figsize=(max(5.0, 0.5 * n_heads + 2), max(3.5, 0.6 * n_layers + 1.5)))
    ax = fig.add_subplot()
    circuit_edges = [e for e in payload.get("edges", []) if e.get("in_circuit")]
    edges = sorted(circuit_edges, key=lambda e: -e["score"])[:MAX_EDGES_DRAWN]
    top = max((e["score"] for e in edges), default=1.0) or 1.0
    for e in edges:
        (la, ha), (lb, hb) = e["source"], e["target"]
        w = e["score"] / top
        ax.plot([ha, hb], [la, lb], color="#e76f51", alpha=0.15 + 0.6 * w, lw=0.5 + 3 * w, zorder=1)
    grid = np.indices(scores.shape)  # [2, layer, head]
    layer_idx, head_idx = grid[0], grid[1]
    off = ~selected
    ax.scatter(head_idx[off], layer_idx[off], s=60, c="#d9d9d9", edgecolors="#9e9e9e", zorder=2)
    vmax = scores.max() if scores.max() > 0 else 1.0
    points = ax.scatter(head_idx[selected], layer_idx[selected], s=220, c=scores[selected], cmap="viridis",
                        vmin=0, vmax=vmax, edgecolors="black", zorder=3)
    if truth:
        tl = [l for l, _ in truth if l < n_layers]
        th = [h for l, h in truth if l < n_layers]
        ax.scatter(th, tl, s=420, facecolors="none", edgecolors="#d62828", linewidths=1.5, zorder=4,
                   label="ground truth")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=8, frameon=False)
    for l, h in zip(layer_idx[selected], head_idx[selected], strict=True):
        ax.annotate(f"L{l}H{h}", (h, l), textcoords="offset points", xytext=(0, 11), ha="center", fontsize=7)
    fig.colorbar(points, ax=ax, label="node score", shrink=0.8)
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlim(-0.7, n_heads - 0.3)
    ax.set_ylim(-0.7, n_layers - 0.3)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    shown = (f"strongest {len(edges)} of {len(circuit_edges)} edges" if len(edges) < len(circuit_edges)
             else f"{len(edges)} edge{'' if len(edges) == 1 else 's'}")
    ax.set_title(f"circuit: {int(selected.sum())} of {selected.size} heads, {shown}")
    caption = ("Heads by layer (bottom = first layer). Filled, coloured nodes are in the circuit (colour = "
               "node score); lines are scored edges between circuit heads (width and opacity = edge score)"
               + ("; red rings mark ground-truth heads." if truth else "."))
    return ReportFigure("circuit", "Circuit by layer", caption, _png(fig))


def heatmap_figure(payload: dict[str, Any]) -> ReportFigure:
    """Head scores as a [layer x head] heat map; circuit heads boxed, ground-truth heads dotted."""
    scores, selected = score_grid(payload)
    n_layers, n_heads = scores.shape
    truth = _truth_heads(payload)
    fig = Figure(figsize=(max(4.5, 0.45 * n_heads + 2), max(3.0, 0.4 * n_layers + 1.5)))
    ax = fig.add_subplot()
    image = ax.imshow(scores, cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(image, ax=ax, label="node score")
    for l, h in zip(*np.nonzero(selected), strict=True):
        ax.add_patch(_box(h, l))
    for l, h in truth:
        if l < n_layers and h < n_heads:
            ax.plot(h, l, marker="o", ms=4, color="#d62828")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("head scores [layer x head]")
    caption = ("Node score of every head. White boxes: selected circuit"
               + ("; red dots: ground-truth heads." if truth else "."))
    return ReportFigure("heatmap", "Head scores", caption, _png(fig))


def _box(x: int, y: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.5)


def roc_figure(payload: dict[str, Any]) -> ReportFigure | None:
    """Node ROC curve against ground truth, with the selected circuit's operating point."""
    ev = payload.get("evaluation") or {}
    curve = ev.get("roc_curve")
    if not curve:
        return None
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.add_subplot()
    auc = ev.get("roc_auc")
    ax.plot(curve["fpr"], curve["tpr"], color="#264653", lw=2,
            label=f"node ROC (AUC {auc:.3f})" if auc is not None else "node ROC")
    ax.plot([0, 1], [0, 1], ls="--", color="#9e9e9e", lw=1, label="chance")
    n_total = int(payload["n_layers"]) * int(payload["n_heads"])
    n_truth, n_sel, tp = ev.get("n_truth"), ev.get("n_selected"), ev.get("true_positives")
    if n_truth is not None and n_sel is not None and tp is not None and 0 < n_truth < n_total:
        ax.plot((n_sel - tp) / (n_total - n_truth), tp / n_truth, "o", color="#e76f51", ms=8,
                label="selected circuit")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC against ground truth")
    ax.legend(loc="lower right", fontsize=8)
    caption = (f"Heads ranked by node score against the ground truth ({ev.get('truth_source') or 'given'}). "
               "The dot is the selected circuit (precision/recall in the table below).")
    return ReportFigure("roc", "ROC curve", caption, _png(fig))


def stability_figures(payload: dict[str, Any]) -> list[ReportFigure]:
    """Figures for the `stability` block (circuit stability across SAE seeds), whatever parts it has.

    Understood parts: `inclusion_frequency` as a [layer][head] grid, a list of {layer, head,
    frequency} or a {"L0H1": frequency} map; `jaccard` as a square matrix of pairwise Jaccard indices
    or a flat list of them, either directly or under "matrix" / "pairwise" / "pairs" / "values".
    Other parts are shown as tables.
    """
    stability = payload.get("stability")
    if not isinstance(stability, dict):
        return []
    figures = []
    freq = _frequency_grid(stability.get("inclusion_frequency"), payload)
    if freq is not None:
        fig = Figure(figsize=(max(4.5, 0.45 * freq.shape[1] + 2), max(3.0, 0.4 * freq.shape[0] + 1.5)))
        ax = fig.add_subplot()
        image = ax.imshow(freq, cmap="magma", vmin=0, vmax=1, origin="lower", aspect="auto")
        fig.colorbar(image, ax=ax, label="fraction of seeds")
        ax.set_xticks(range(freq.shape[1]))
        ax.set_yticks(range(freq.shape[0]))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title("inclusion frequency across SAE seeds")
        figures.append(ReportFigure("stability_inclusion", "Stability: inclusion frequency",
                               "Fraction of SAE seeds whose circuit contains each head.", _png(fig)))
    jac = stability.get("jaccard")
    if isinstance(jac, dict):
        lists = [jac[k] for k in ("matrix", "pairwise", "pairs", "values") if isinstance(jac.get(k), list)]
        jac = lists[0] if lists else None
    values = _jaccard_values(jac)
    if values is not None:
        fig = Figure(figsize=(4.5, 3.6))
        ax = fig.add_subplot()
        matrix = np.asarray(jac, dtype=float) if _is_square(jac) else None
        if matrix is not None:
            image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
            fig.colorbar(image, ax=ax, label="Jaccard")
            ax.set_xticks(range(matrix.shape[0]))
            ax.set_yticks(range(matrix.shape[0]))
            ax.set_xlabel("seed")
            ax.set_ylabel("seed")
        else:
            ax.hist(values, bins=min(20, max(5, len(values))), range=(0, 1), color="#2a9d8f")
            ax.set_xlabel("Jaccard index")
            ax.set_ylabel("seed pairs")
        ax.set_title(f"pairwise Jaccard (mean {np.mean(values):.3f})")
        figures.append(ReportFigure("stability_jaccard", "Stability: circuit overlap",
                                    "Jaccard index of the selected circuits between pairs of SAE seeds.",
                                    _png(fig)))
    return figures


def _frequency_grid(value: Any, payload: dict[str, Any]) -> np.ndarray | None:
    shape = (int(payload["n_layers"]), int(payload["n_heads"]))
    try:
        if isinstance(value, dict) and value:
            grid = np.zeros(shape)
            for name, freq in value.items():
                layer, head = name.upper().lstrip("L").split("H")
                grid[int(layer), int(head)] = float(freq)
            return grid
        if isinstance(value, list) and value and isinstance(value[0], dict):
            grid = np.zeros(shape)
            for item in value:
                freq = item.get("frequency", item.get("freq", item.get("value")))
                grid[int(item["layer"]), int(item["head"])] = float(freq)
            return grid
        if isinstance(value, list) and value:
            grid = np.asarray(value, dtype=float)
            return grid if grid.shape == shape else None
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return None


def _is_square(value: Any) -> bool:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return arr.ndim == 2 and arr.shape[0] == arr.shape[1] and arr.shape[0] > 1


def _jaccard_values(value: Any) -> list[float] | None:
    if not isinstance(value, list) or not value:
        return None
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    if _is_square(value):
        upper = arr[np.triu_indices(arr.shape[0], k=1)]
        return upper.tolist()
    return arr.ravel().tolist() if arr.ndim == 1 else None


def build_figures(payload: dict[str, Any]) -> list[ReportFigure]:
    check_payload(payload)
    figures = [circuit_figure(payload), heatmap_figure(payload)]
    roc = roc_figure(payload)
    if roc is not None:
        figures.append(roc)
    return figures + stability_figures(payload)


# -- HTML --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222;background:#fff}
h1{font-size:1.5em;margin-bottom:0.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.92em}
td,th{border:1px solid #ddd;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.85em;color:#555;max-width:640px}
.muted{color:#666}.summary{font-size:1.05em}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, int | float | str | bool) or v is None}


def _evaluation_html(payload: dict[str, Any]) -> str:
    ev = payload.get("evaluation")
    if not ev:
        note = payload.get("evaluation_note") or "no ground truth"
        return f"<p class='muted'>No evaluation: {_esc(note)}.</p>"
    keys = ("roc_auc", "edge_roc_auc", "precision", "recall", "f1", "n_selected", "n_truth", "true_positives",
            "truth_source")
    out = _kv_table({k: ev.get(k) for k in keys if k in ev})
    if isinstance(ev.get("definitions"), dict):
        out += "<p class='muted'>Definitions:</p>" + _kv_table(ev["definitions"])
    return out


def _circuit_table(payload: dict[str, Any]) -> str:
    heads = sorted((h for h in payload["heads"] if h["in_circuit"]), key=lambda h: -h["score"])
    truth = _truth_heads(payload)
    rows = "".join(
        f"<tr><td>L{h['layer']}H{h['head']}</td><td class='num'>{h['score']:.4g}</td>"
        + (f"<td>{'yes' if (h['layer'], h['head']) in truth else 'no'}</td>" if truth else "") + "</tr>"
        for h in heads)
    head = "<tr><th>head</th><th>score</th>" + ("<th>in ground truth</th>" if truth else "") + "</tr>"
    return f"<table>{head}{rows}</table>" if heads else "<p class='muted'>The circuit is empty.</p>"


def _timings_html(timings: dict[str, Any]) -> str:
    total = timings.get("total")
    rows = "".join(
        f"<tr><td>{_esc(k)}</td><td class='num'>{v:.3f}</td>"
        f"<td class='num'>{(100 * v / total if total and k != 'total' else 100.0):.0f}%</td></tr>"
        for k, v in timings.items() if isinstance(v, int | float))
    return f"<table><tr><th>stage</th><th>seconds</th><th>share</th></tr>{rows}</table>"


def _stability_html(payload: dict[str, Any]) -> str:
    stability = payload.get("stability")
    if not isinstance(stability, dict):
        return ""
    scalars = _scalars(stability)
    nested = {k: v for k, v in stability.items() if isinstance(v, dict)}
    parts = [_kv_table(scalars)] if scalars else []
    parts += [f"<p>{_esc(k)}</p>" + _kv_table(_scalars(v)) for k, v in nested.items() if _scalars(v)]
    return "".join(parts)


def render_html(payload: dict[str, Any], figures: list[ReportFigure]) -> str:
    """The page: summary, figures (inline PNG), evaluation, circuit, stability, configuration, timings."""
    n_sel = sum(1 for h in payload["heads"] if h["in_circuit"])
    ev = payload.get("evaluation") or {}
    summary = f"{n_sel} of {len(payload['heads'])} heads selected"
    if ev.get("roc_auc") is not None:
        summary += (f"; node ROC AUC {ev['roc_auc']:.3f}, precision {ev['precision']:.3f}, "
                    f"recall {ev['recall']:.3f}")
    if payload.get("faithfulness"):
        summary += f"; faithfulness {payload['faithfulness'].get('normalized', float('nan')):.3f}"
    figs = "".join(
        f"<figure id='fig-{_esc(f.key)}'><img alt='{_esc(f.title)}' "
        f"src='data:image/png;base64,{base64.b64encode(f.png).decode('ascii')}'>"
        f"<figcaption><b>{_esc(f.title)}.</b> {_esc(f.caption)}</figcaption></figure>" for f in figures)
    config = dict(payload.get("config") or {})
    sections = [
        f"<h1>Circuit for {_esc(payload['task'])} on {_esc(payload['model'])}</h1>",
        f"<p class='summary'>{_esc(summary)}.</p>",
        f"<p class='muted'>Report generated {_esc(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))} "
        "by circuits.</p>",
        "<h2>Figures</h2>", figs, "<h2>Evaluation</h2>", _evaluation_html(payload),
    ]
    if payload.get("faithfulness"):
        sections += ["<h2>Faithfulness</h2>", _kv_table(_scalars(payload["faithfulness"]))]
    sections += ["<h2>Circuit heads</h2>", _circuit_table(payload)]
    explained = explain_html(payload)
    if explained:
        sections += ["<h2>What each head does</h2>", explained]
    stability = _stability_html(payload)
    if stability:
        sections += ["<h2>Stability across SAE seeds</h2>", stability]
    sections += ["<h2>Configuration</h2>",
                 _kv_table({"task": payload["task"], "model": payload["model"], **config})]
    if isinstance(payload.get("task_file"), dict):
        sections += ["<h2>Task file</h2>", _kv_table(payload["task_file"])]
    if isinstance(payload.get("timings"), dict):
        sections += ["<h2>Timings</h2>", _timings_html(payload["timings"])]
    title = _esc(f"circuits: {payload['task']} on {payload['model']}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n")


STABILITY_FIGURES = ("stability_inclusion", "stability_jaccard")
FIGURES = ("circuit", "heatmap", "roc", *STABILITY_FIGURES)  # keys of build_figures, in page order


def report_files(path: Path) -> list[Path]:
    """Every file write_report may write for `path`: the page and `<stem>.<figure>.png` beside it."""
    path = Path(path)
    return [path, *(path.with_name(f"{path.stem}.{key}.png") for key in FIGURES)]


def check_report_path(path: Path) -> Path:
    """Refuse, before any work, a report path that cannot be written (directory, missing parent)."""
    path = Path(path)
    if path.is_dir():
        raise ReportError(f"--report {path} is a directory; give a file name such as {path / 'report.html'}")
    if not path.parent.is_dir():
        raise ReportError(f"--report {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ReportError(f"--report {path}: directory {path.parent} is not writable")
    return path


def write_report(payload: dict[str, Any], path: Path) -> dict[str, str]:
    """Write the HTML page to `path` and each figure as `<stem>.<figure>.png` beside it (atomically).

    Returns {"report": html path, "<figure>": png path, ...}.
    """
    path = check_report_path(path)
    check_payload(payload)
    figures = build_figures(payload)
    written: dict[str, str] = {}
    for fig in figures:
        png_path = path.with_name(f"{path.stem}.{fig.key}.png")
        atomic_write_bytes(png_path, fig.png)
        written[fig.key] = str(png_path)
    atomic_write_bytes(path, render_html(payload, figures).encode("utf-8"))
    return {"report": str(path), **written}


def write_stability_figures(payload: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """The report's stability figures as PNG files in `out_dir` (atomically)."""
    files = {}
    for fig in stability_figures(payload):
        path = out_dir / f"{fig.key}.png"
        atomic_write_bytes(path, fig.png)
        files[fig.key] = str(path)
    return files
