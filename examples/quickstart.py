"""Circuit discovery from Python: the discrete-SAE method and EAP on IOI, compared, drawn and saved.

    python examples/quickstart.py                          # bundled tiny-ioi, a few seconds on a CPU
    python examples/quickstart.py --model smollm2-135m     # a real LM, offline (minutes)
    python examples/quickstart.py --out runs/quickstart --n-score 100

What it does, step by step (each step is one call of the library behind `circuits find` / `compare`):
1. load a model and the IOI task; 2. find the circuit with the discrete-SAE method and with EAP;
3. compare them on the same prompts (node AUC against the shipped ground truth where there is one, MIB's
CPR/CMD, rank agreement); 4. draw both circuits by layer and save each as GraphML (networkx reads it back).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.compare import CompareConfig, compare_methods
from circuits.discovery.config import FindConfig
from circuits.discovery.graph import export_graph, load_graph
from circuits.discovery.pipeline import find_circuit_with
from circuits.models import load_model
from circuits.report import circuit_figure
from tasks import get_task


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-ioi", help="tiny-ioi (bundled), smollm2-135m, a model dir")
    parser.add_argument("--out", type=Path, default=Path("quickstart_out"), help="figures and graphs go here")
    parser.add_argument("--n-score", type=int, default=100, help="scoring prompt pairs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. A model and a task. load_model knows the bundled models, smollm2-135m, GGUF files and model dirs.
    task = get_task("ioi")
    loaded = load_model(args.model, task)
    config = FindConfig(n_score=args.n_score)  # every default of `circuits find`, one source

    # 2. Two methods, same prompts: the paper's discrete-SAE method and Edge Attribution Patching.
    found = {method: find_circuit_with(task, loaded, config, method) for method in ("sae", "eap")}
    for method, result in found.items():
        heads = " ".join(f"L{l}H{h}" for l, h in sorted(result.circuit))
        auc = (result.evaluation or {}).get("roc_auc")
        print(f"{method}: {len(result.circuit)} heads ({heads})"
              + (f", node ROC AUC {auc:.3f} against the shipped ground truth" if auc is not None else ""))
    sae, eap = (found[m].circuit for m in ("sae", "eap"))
    print(f"overlap of the two circuits (Jaccard): {len(sae & eap) / max(1, len(sae | eap)):.2f}")

    # 3. The same comparison `circuits compare` makes (the SAE method's null model, actdiff, comes along).
    report = compare_methods(task, loaded, CompareConfig(methods=("sae", "actdiff", "eap"), seeds=1,
                                                         find=config, mib_prompts=20))
    for m in report["methods"].values():
        cpr = (m.get("cpr_counterfactual") or {}).get("mean")
        auc = (m.get("node_roc_auc") or {}).get("mean")
        print(f"  {m['label']:<42} CPR {cpr if cpr is None else f'{cpr:.3f}'}   node AUC "
              f"{auc if auc is None else f'{auc:.3f}'}")
    rho = report["agreement"]["spearman"].get("eap|sae")
    print(f"rank agreement sae vs eap (Spearman): {rho if rho is None else f'{rho:.2f}'}")

    # 4. Draw each circuit by layer and save its graph (GraphML, GEXF, node-link JSON, DOT).
    written: dict[str, Path] = {}
    for method, result in found.items():
        png = args.out / f"{method}_circuit.png"
        png.write_bytes(circuit_figure(result.to_json()).png)
        (args.out / method).mkdir(exist_ok=True)
        files = export_graph(result.graph, args.out / method)
        graph = load_graph(Path(files["graphml"]))
        print(f"wrote {png} and {files['graphml']} ({graph.number_of_nodes()} nodes, "
              f"{graph.number_of_edges()} edges)")
        written[f"{method}_png"], written[f"{method}_graphml"] = png, Path(files["graphml"])
    return written


if __name__ == "__main__":
    main()
