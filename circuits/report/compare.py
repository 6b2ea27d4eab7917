"""The report of a comparison (`circuits compare --report FILE.html`): one self-contained page, figures
inlined as base64 PNG and written beside it, from the JSON `circuits compare` writes (compare.json).

Sections: the method table (node AUC, precision/recall, node and edge CPR/CMD with their spread over seeds
and any interval the JSON carries), faithfulness curves (node, and edge when `edge_mib` is present), ROC
against the ground truth (when there is one), every method's circuit side by side by layer, and the
agreement between methods. Keys that a comparison lacks (no truth, no edge-level scores, no intervals)
drop their column or section instead of failing, so older and newer compare.json files both render.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from circuits.atomic import atomic_write_bytes
from circuits.report import _CSS, ReportError, ReportFigure, _esc, _fmt, _kv_table, _png, check_report_path

COMPARE_FIGURES = ("faithfulness", "edge_faithfulness", "roc", "circuits", "agreement")  # page order
REQUIRED = ("task", "model", "n_layers", "n_heads", "methods")
INTERVENTIONS = ("counterfactual", "mean")
CSS = _CSS + "td.num{white-space:nowrap}h3{font-size:1em;margin:1.2em 0 0.3em}\n"
INTERVAL_KEYS = (("ci_low", "ci_high"), ("low", "high"), ("lo", "hi"), ("lower", "upper"))


def check_compare(report: Any, where: str = "comparison") -> None:
    if not isinstance(report, dict):
        raise ReportError(f"{where}: not a circuits comparison (expected a JSON object)")
    missing = [k for k in REQUIRED if k not in report]
    if missing:
        raise ReportError(f"{where}: not a circuits comparison (missing {', '.join(missing)})")


def compare_report_files(path: Path) -> list[Path]:
    """Every file write_compare_report may write for `path`: the page and `<stem>.<figure>.png`."""
    path = Path(path)
    return [path, *(path.with_name(f"{path.stem}.{key}.png") for key in COMPARE_FIGURES)]


# -- numbers --------------------------------------------------------------------------------------------


def interval(summary: Any, entry: dict[str, Any] | None = None, key: str = "") -> tuple[float, float] | None:
    """A confidence interval wherever the JSON keeps one: `ci` / `interval` / `bootstrap` as [low, high] or
    {low, high}, paired keys (ci_low / ci_high, ...) in the summary, or `<key>_ci` beside it in the entry."""
    candidates: list[Any] = []
    if isinstance(summary, dict):
        candidates += [summary.get(k) for k in ("ci", "interval", "bootstrap", "ci95")]
        candidates += [{"low": summary.get(lo), "high": summary.get(hi)} for lo, hi in INTERVAL_KEYS]
    if entry is not None and key:
        candidates += [entry.get(f"{key}_{suffix}") for suffix in ("ci", "interval", "bootstrap")]
    for c in candidates:
        if isinstance(c, dict):
            for lo, hi in (("low", "high"), *INTERVAL_KEYS):
                if isinstance(c.get(lo), int | float) and isinstance(c.get(hi), int | float):
                    return float(c[lo]), float(c[hi])
        if isinstance(c, list | tuple) and len(c) == 2 and all(isinstance(x, int | float) for x in c):
            return float(c[0]), float(c[1])
    return None


def cell(entry: dict[str, Any], key: str, digits: int = 3) -> str:
    """'mean ± std' over seeds (the mean alone for one run), then '[low, high]' when an interval exists."""
    summary = entry.get(key)
    if summary is None:
        return "—"
    if isinstance(summary, int | float):
        text = f"{summary:.{digits}f}"
    elif isinstance(summary, dict) and isinstance(summary.get("mean"), int | float):
        text = f"{summary['mean']:.{digits}f}"
        if len(summary.get("values") or []) > 1 and isinstance(summary.get("std"), int | float):
            text += f" ± {summary['std']:.{digits}f}"
    else:
        return "—"
    ci = interval(summary, entry, key)
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


METRICS = (  # (key in a method entry, column, digits)
    ("node_roc_auc", "node AUC", 3), ("node_roc_auc_resample", "AUC (resample GT)", 3),
    ("edge_roc_auc", "edge AUC", 3), ("precision", "precision", 2), ("recall", "recall", 2), ("f1", "F1", 2),
    ("cpr_counterfactual", "CPR cf", 3), ("cmd_counterfactual", "CMD cf", 3), ("cpr_mean", "CPR mean", 3),
    ("cmd_mean", "CMD mean", 3), ("edge_cpr_counterfactual", "edge CPR cf", 3),
    ("edge_cmd_counterfactual", "edge CMD cf", 3), ("edge_cpr_mean", "edge CPR mean", 3),
    ("edge_cmd_mean", "edge CMD mean", 3), ("n_selected", "|C|", 1), ("forward_passes", "fwd", 1),
    ("backward_passes", "bwd", 1), ("seconds", "seconds", 1),
)


GROUPS = (  # the method table in two parts, so that neither needs more than the page's width
    ("Against the ground truth, and cost", ("node_roc_auc", "node_roc_auc_resample", "edge_roc_auc",
                                            "precision", "recall", "f1", "n_selected", "forward_passes",
                                            "backward_passes", "seconds")),
    ("Faithfulness without a ground truth (MIB CPR/CMD; node, and edge where measured)",
     ("cpr_counterfactual", "cmd_counterfactual", "cpr_mean", "cmd_mean", "edge_cpr_counterfactual",
      "edge_cmd_counterfactual", "edge_cpr_mean", "edge_cmd_mean")),
)


def method_tables(report: dict[str, Any]) -> str:
    """The method table(s): a column per measure any method has, a row per method, the random floors."""
    methods = report["methods"]
    out = []
    for title, keys in GROUPS:
        columns = [m for m in METRICS
                   if m[0] in keys and any(e.get(m[0]) is not None for e in methods.values())]
        if not columns:
            continue
        head = "<tr><th>method</th>" + "".join(f"<th>{_esc(c)}</th>" for _, c, _ in columns) + "</tr>"
        rows, derived = [], False
        edge_columns = any(k.startswith(("edge_cpr", "edge_cmd")) for k, _, _ in columns)
        for entry in methods.values():
            label = _esc(entry.get("label", "?"))
            if entry.get("edge_scores_from") == "node-derived" and edge_columns:
                label += "<sup>†</sup>"
                derived = True
            rows.append(f"<tr><td>{label}</td>" + "".join(
                f"<td class='num'>{_esc(cell(entry, key, d))}</td>" for key, _, d in columns) + "</tr>")
        floor = _floor_cells(report, columns)
        if floor:
            rows.append(f"<tr><td class='muted'>random ranking (floor)</td>{floor}</tr>")
        note = ("<p class='muted'>† scores no edges: its edges are ranked by scores derived from its head "
                "scores.</p>" if derived else "")
        out.append(f"<h3>{_esc(title)}</h3><table>{head}{''.join(rows)}</table>{note}")
    return "".join(out)


def _floor_cells(report: dict[str, Any], columns: list[tuple[str, str, int]]) -> str:
    """The random rankings' CPR/CMD under each CPR/CMD column (node floor: `mib`, edge: `edge_mib`)."""
    cells, any_value = [], False
    for key, _, digits in columns:
        edge = key.startswith("edge_")
        kind, _, intervention = key.removeprefix("edge_").partition("_")
        floor = (report.get("edge_mib" if edge else "mib") or {}).get("random") or {}
        value = (floor.get(intervention) or {}).get(kind) if kind in ("cpr", "cmd") else None
        if isinstance(value, int | float):
            any_value = True
            cells.append(f"<td class='num'>{value:.{digits}f}</td>")
        else:
            cells.append("<td></td>")
    return "".join(cells) if any_value else ""


def agreement_table(report: dict[str, Any]) -> str:
    pairs = ((report.get("agreement") or {}).get("spearman") or {})
    if not pairs:
        return ""
    labels = {k: e.get("label", k) for k, e in report["methods"].items()}
    rows = "".join(f"<tr><td>{_esc(labels.get(a, a))}</td><td>{_esc(labels.get(b, b))}</td>"
                   f"<td class='num'>{_esc('—' if rho is None else f'{rho:.3f}')}</td></tr>"
                   for a, b, rho in ((*pair.split("|", 1), rho) for pair, rho in sorted(pairs.items())))
    return f"<table><tr><th>method</th><th>method</th><th>Spearman ρ</th></tr>{rows}</table>"


# -- figures ---------------------------------------------------------------------------------------------


def faithfulness_figure(report: dict[str, Any], block: str = "mib") -> ReportFigure | None:
    """Faithfulness against the fraction kept, one panel per intervention, each method's first run."""
    mib = report.get(block)
    if not isinstance(mib, dict) or not mib.get("interventions") or not mib.get("grid"):
        return None
    edge = block == "edge_mib"
    panels = [i for i in mib["interventions"] if isinstance(mib["interventions"][i].get("rankings"), dict)]
    if not panels:
        return None
    fig = Figure(figsize=(5.2 * len(panels), 4.4))
    for j, intervention in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        scored = mib["interventions"][intervention]["rankings"]
        for key, entry in report["methods"].items():
            seeds = entry.get("seeds") or []
            curve = scored.get(f"{key}#{seeds[0]}") if seeds else None
            if not curve or len(curve.get("faithfulness") or []) != len(mib["grid"]):
                continue
            cpr = curve.get("cpr", float("nan"))
            ax.plot(mib["grid"], curve["faithfulness"], marker="o", ms=3, lw=1.4,
                    label=f"{entry.get('label', key)} ({'edge ' if edge else ''}CPR {cpr:.3f})")
        floor = scored.get("random")
        if floor and len(floor.get("faithfulness") or []) == len(mib["grid"]):
            ax.plot(mib["grid"], floor["faithfulness"], color="0.5", ls="--", lw=1, label="random ranking")
        ax.axhline(1.0, color="0.85", lw=0.8)
        wide = min(mib["grid"]) > 0 and max(mib["grid"]) / min(mib["grid"]) > 50  # edge grids start at 0.1 %
        ax.set_xscale("log" if wide else "linear")
        ax.set_xlabel(f"fraction of {'edges' if edge else 'heads'} kept (top of the ranking)")
        ax.set_ylabel("faithfulness")
        ax.set_title(f"{intervention} ablation ({mib.get('n_prompts', '?')} prompts)", fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    what = "edges" if edge else "heads"
    caption = (f"Faithfulness when only the top-ranked {what} are kept and every other one is ablated "
               "(MIB). CPR is the area under the curve: higher is better; the dashed line is a random "
               "ranking. First run of each method.")
    key = "edge_faithfulness" if edge else "faithfulness"
    return ReportFigure(key, f"Faithfulness curves ({'edges' if edge else 'nodes'})", caption, _png(fig))


def roc_figure(report: dict[str, Any]) -> ReportFigure | None:
    curves = {k: c for k, c in (report.get("roc_curves") or {}).items() if c and c.get("fpr")}
    if not curves:
        return None
    fig = Figure(figsize=(5.0, 4.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=1, label="chance")
    for key, curve in curves.items():
        entry = report["methods"].get(key, {})
        ax.plot(curve["fpr"], curve["tpr"], lw=1.6,
                label=f"{entry.get('label', key)} (AUC {cell(entry, 'node_roc_auc')})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (heads)")
    ax.set_ylabel("true positive rate (heads)")
    ax.set_title("node ROC against the ground truth", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    truth = report.get("ground_truth") or {}
    caption = (f"Heads ranked by each method's scores against the ground truth ({truth.get('n_heads', '?')} "
               f"heads, {truth.get('source', 'given')}); first run of each method.")
    return ReportFigure("roc", "ROC curves", caption, _png(fig))


def circuits_figure(report: dict[str, Any], truth_heads: set[tuple[int, int]] | None = None
                    ) -> ReportFigure | None:
    """Every method's selected circuit (first run) on the same layer x head grid, side by side."""
    n_layers, n_heads = int(report["n_layers"]), int(report["n_heads"])
    chosen = []
    for key, entry in report["methods"].items():
        runs = entry.get("runs") or []
        if runs and isinstance(runs[0].get("selected"), list):
            heads = {(int(l), int(h)) for l, h in runs[0]["selected"] if l < n_layers and h < n_heads}
            chosen.append((entry.get("label", key), heads))
    if not chosen:
        return None
    cols = min(4, len(chosen))
    rows = (len(chosen) + cols - 1) // cols
    fig = Figure(figsize=(cols * max(2.6, 0.22 * n_heads + 1.2), rows * max(2.4, 0.16 * n_layers + 1.2)))
    grid = np.indices((n_layers, n_heads))  # [2, layer, head]
    for i, (label, heads) in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.scatter(grid[1].ravel(), grid[0].ravel(), s=10, c="#d9d9d9", zorder=1)
        if heads:
            ax.scatter([h for _, h in heads], [l for l, _ in heads], s=40, c="#2a9d8f", edgecolors="black",
                       lw=0.5, zorder=2)
        if truth_heads:
            ax.scatter([h for _, h in truth_heads], [l for l, _ in truth_heads], s=90, facecolors="none",
                       edgecolors="#d62828", lw=1.2, zorder=3)
        ax.set_title(f"{label}: {len(heads)} heads", fontsize=8)
        ax.set_xlim(-0.7, n_heads - 0.3)
        ax.set_ylim(-0.7, n_layers - 0.3)
        ax.set_xticks(range(0, n_heads, max(1, n_heads // 8)))
        ax.set_yticks(range(0, n_layers, max(1, n_layers // 8)))
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    caption = ("Each method's selected circuit (its first run; the same label-free rule on its own scores), "
               "heads by layer, first layer at the bottom"
               + ("; red rings: ground-truth heads." if truth_heads else "."))
    return ReportFigure("circuits", "Circuits side by side", caption, _png(fig))


def agreement_figure(report: dict[str, Any]) -> ReportFigure | None:
    pairs = (report.get("agreement") or {}).get("spearman") or {}
    keys = list(report["methods"])
    if len(keys) < 2 or not pairs:
        return None
    matrix = np.eye(len(keys))
    for pair, rho in pairs.items():
        a, _, b = pair.partition("|")
        if a in keys and b in keys:
            value = np.nan if rho is None else rho
            matrix[keys.index(a), keys.index(b)] = matrix[keys.index(b), keys.index(a)] = value
    labels = keys  # the short method keys: labels are long (the table below has them)
    fig = Figure(figsize=(1.2 + 0.75 * len(keys), 1.0 + 0.6 * len(keys)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="viridis", vmin=-1, vmax=1)
    fig.colorbar(image, ax=ax, label="Spearman ρ")
    for i in range(len(keys)):
        for j in range(len(keys)):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] < 0.5 else "black")
    ax.set_xticks(range(len(keys)), labels, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(keys)), labels, fontsize=7)
    ax.set_title("agreement of the node rankings", fontsize=9, pad=10)
    fig.tight_layout()
    return ReportFigure("agreement", "Agreement between methods",
                        "Spearman rank correlation between the methods' head scores (first run of each).",
                        _png(fig))


def build_compare_figures(report: dict[str, Any], truth_heads: set[tuple[int, int]] | None = None
                          ) -> list[ReportFigure]:
    check_compare(report)
    made = [faithfulness_figure(report, "mib"), faithfulness_figure(report, "edge_mib"), roc_figure(report),
            circuits_figure(report, truth_heads), agreement_figure(report)]
    return [f for f in made if f is not None]


# -- the page ------------------------------------------------------------------------------------------------


def _figure_html(fig: ReportFigure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (f"<figure id='fig-{_esc(fig.key)}'><img alt='{_esc(fig.title)}' "
            f"src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{_esc(fig.title)}.</b> {_esc(fig.caption)}</figcaption></figure>")


def render_compare_html(report: dict[str, Any], figures: list[ReportFigure]) -> str:
    by_key = {f.key: f for f in figures}
    truth = report.get("ground_truth")
    gt = (f"ground truth: {truth.get('n_heads')} heads, {truth.get('n_edges')} edges ({truth.get('source')})"
          if truth else f"no ground truth ({report.get('ground_truth_note') or 'none shipped'}): CPR/CMD")
    seeds = report.get("seeds") or []
    sections = [
        f"<h1>{_esc(report['task'])} on {_esc(report['model'])}: "
        f"{len(report['methods'])} methods compared</h1>",
        f"<p class='summary'>{_esc(gt)}; {len(seeds)} seed(s); {report['n_layers']} layers × "
        f"{report['n_heads']} heads.</p>",
        f"<p class='muted'>Report generated {_esc(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))} by "
        "circuits. Cells: mean ± population std over seeds (one run: the mean); [low, high]: an interval "
        "where the comparison has one.</p>",
        "<h2 id='methods'>Methods</h2>", method_tables(report),
    ]
    faith = [by_key[k] for k in ("faithfulness", "edge_faithfulness") if k in by_key]
    if faith:
        sections += ["<h2 id='faithfulness'>Faithfulness</h2>", *map(_figure_html, faith)]
    if "roc" in by_key:
        sections += ["<h2 id='roc'>ROC against the ground truth</h2>", _figure_html(by_key["roc"])]
    if "circuits" in by_key:
        sections += ["<h2 id='circuits'>Circuits side by side</h2>", _figure_html(by_key["circuits"])]
    agreement = agreement_table(report)
    if agreement:
        sections += ["<h2 id='agreement'>Agreement between methods</h2>",
                     *([_figure_html(by_key["agreement"])] if "agreement" in by_key else []), agreement]
    notes = {k: v for k, v in (report.get("notes") or {}).items() if isinstance(v, str)}
    if notes:
        sections += ["<h2 id='notes'>Notes</h2>", _kv_table(notes)]
    config = report.get("config")
    if isinstance(config, dict):
        sections += ["<h2 id='configuration'>Configuration</h2>",
                     _kv_table({k: _fmt(v) for k, v in config.items()})]
    title = _esc(f"circuits compare: {report['task']} on {report['model']}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")


def write_compare_report(report: dict[str, Any], path: Path,
                         truth_heads: set[tuple[int, int]] | None = None) -> dict[str, str]:
    """Write the page to `path` and each figure as `<stem>.<figure>.png` beside it (atomically).

    Returns {"report": html path, "<figure>": png path, ...}."""
    path = check_report_path(path)
    check_compare(report)
    figures = build_compare_figures(report, truth_heads)
    written: dict[str, str] = {}
    for fig in figures:
        png_path = path.with_name(f"{path.stem}.{fig.key}.png")
        atomic_write_bytes(png_path, fig.png)
        written[fig.key] = str(png_path)
    atomic_write_bytes(path, render_compare_html(report, figures).encode("utf-8"))
    return {"report": str(path), **written}
