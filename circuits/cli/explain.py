"""`circuits explain RUN_DIR`: what each head of a found circuit does on the task (circuits.explain), in
discrete codes with a causal check per code; `circuits find --explain` adds the same block to a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from circuits.cli.common import (
    check_writable_dir,
    claim_outputs,
    config_option,
    out,
    print_json,
    progress_callback,
    progress_display,
    user_errors,
)
from circuits.errors import CircuitsError
from circuits.explain.config import ExplainConfig


@user_errors
def explain(
    run: Path = typer.Argument(..., help="a `circuits find --out DIR` directory (any --method) or its "
                                         "result.json"),
    task: str | None = typer.Option(None, "--task", "-t",
                                    help="override the saved task (a task file's path)"),
    model: str | None = typer.Option(None, "--model", "-m", help="override the run's model"),
    n_prompts: int = config_option(ExplainConfig, "n_prompts"),
    max_codes: int = config_option(ExplainConfig, "max_codes"),
    examples: int = config_option(ExplainConfig, "examples"),
    steps: int = config_option(ExplainConfig, "steps"),
    d_sae: int = config_option(ExplainConfig, "d_sae"),
    report_path: Path | None = typer.Option(None, "--report", help="write the run's HTML report with the "
                                                                    "explanation section here"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing report (atomically)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Explain each head of a found circuit: its codes, where it looks, what it writes, what patching it
    costs, and a role line from those measurements."""
    from circuits.cli.evaluate import load_run
    from circuits.explain.run import explain_payload
    from circuits.models import load_model
    from tasks import get_task

    config = ExplainConfig(n_prompts=n_prompts, max_codes=max_codes, examples=examples, steps=steps,
                           d_sae=d_sae)
    config.validate()
    data = load_run(run)
    payload = {k: v for k, v in data.items() if not k.startswith("_")}
    if not data["_circuit"]:
        raise CircuitsError(f"{data['_file']}: the circuit is empty: nothing to explain")
    if report_path is not None:
        from circuits.report import check_report_path, report_files

        check_writable_dir(report_path.parent, "--report")
        check_report_path(report_path)
        claim_outputs(report_files(report_path), overwrite, "--report")
    task_obj = get_task(task or str(data["task"]))
    seed = int((data.get("config") or {}).get("seed", 0))
    loaded = load_model(model or str(data["model"]), task_obj, seed)
    with progress_display() as bar:
        block = explain_payload(task_obj, loaded, payload, config, progress_callback(bar))
    result = {"task": task_obj.name, "model": loaded.name, "run": data["_file"], "explain": block}
    if report_path is not None:
        from circuits.report import write_report

        result["files"] = write_report({**payload, "explain": block}, report_path)
    if as_json:
        print_json(result)
    else:
        render_explain(block)
        if result.get("files"):
            out.print(f"wrote {', '.join(result['files'].values())}", highlight=False, soft_wrap=True)


def render_explain(block: dict[str, Any]) -> None:
    """The explanation on stdout: a role line per head, then each head's codes."""
    source = block["codes_from"]
    how = ("the run's SAE" if source["kind"] == "run" else f"a {source['d_sae']}-latent SAE per head")
    exact = "" if block["direct_effect"]["exact"] else " (approximate)"
    out.print(f"explanation on {block['n_prompts']} prompt pairs; clean metric {block['clean_metric']:.3g}; "
              f"codes from {how}; direct effect: {block['direct_effect']['of']}{exact}", highlight=False)
    roles = Table(title="roles (from the measurements, not the head index)")
    for col in ("head", "kind", "role"):
        roles.add_column(col, no_wrap=col != "role")
    for h in block["heads"]:
        roles.add_row(f"L{h['head'][0]}H{h['head'][1]}", h["role"]["kind"], h["role"]["line"])
    out.print(roles)
    unique = [f"L{h['head'][0]}H{h['head'][1]} " + ", ".join(f"{u['code']} ({u['n_positive']})"
                                                          for u in h.get("positive_unique_codes", []))
              for h in block["heads"] if h.get("positive_unique_codes")]
    out.print("codes on positives only (count): " + ("; ".join(unique) if unique else "none"),
              highlight=False)
    codes = Table(title="codes (positives carrying each; patch = counterfactual drop on those prompts)")
    for col in ("head", "code", "pos", "neg", "unique", "looks at", "direct", "patch drop", "example"):
        codes.add_column(col, justify="right" if col in ("pos", "neg", "direct", "patch drop") else "left",
                         no_wrap=col != "example")
    for h in block["heads"]:
        for c in h["codes"]:
            frac = c["patch"]["drop_fraction"]
            codes.add_row(f"L{h['head'][0]}H{h['head'][1]}", str(c["code"]), str(c["n_positive"]),
                          str(c["n_negative"]), "yes" if c["positive_unique"] else "",
                          f"{c['top_position']} {c['top_share']:.0%}", f"{c['direct_effect']:.3g}",
                          "—" if frac is None else f"{frac:.0%}", (c["examples"] or [""])[0])
    out.print(codes)
    t = block["timings"]
    out.print(f"cost: {t['total']:.1f}s ({block['seconds_per_head']:.2f}s per head)", highlight=False)
