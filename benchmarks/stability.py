"""Circuit stability across SAE seeds on the bundled small task models (tiny-ioi, tiny-greaterthan,
tiny-docstring): per-head inclusion frequency, pairwise Jaccard of the selected circuits, and the mean ±
std of the evaluation, with the default `circuits find` settings. A model that is not shipped is reported
as missing, never replaced.

    OMP_NUM_THREADS=1 python benchmarks/stability.py --seeds 5 --out benchmarks/results/stability.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from circuits.analysis.stability import find_with_seeds  # noqa: E402
from circuits.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from circuits.discovery.config import FindConfig  # noqa: E402
from circuits.errors import CircuitsError  # noqa: E402
from circuits.models import load_model  # noqa: E402
from circuits.report import stability_figures  # noqa: E402
from tasks import get_task  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", default="ioi,greaterthan,docstring")
    parser.add_argument("--n-score", type=int, default=250)
    parser.add_argument("--steps", type=int, default=FindConfig().steps)
    parser.add_argument("--model", default="tiny-{task}", help="model per task ({task} is replaced)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    config = FindConfig(n_score=args.n_score, steps=args.steps)
    start = time.perf_counter()
    tasks: dict = {}
    for name in args.tasks.split(","):
        task = get_task(name)
        spec = args.model.format(task=name)
        try:
            loaded = load_model(spec, task)
        except CircuitsError as err:
            tasks[name] = {"model": spec, "missing": str(err)}
            continue
        _, block = find_with_seeds(task, loaded, config, args.seeds)
        tasks[name] = {"model": loaded.name, "stability": block}
        if args.out:  # inclusion-frequency heat map and Jaccard matrix, one PNG each, beside the JSON
            payload = {"stability": block, "n_layers": loaded.n_layers, "n_heads": loaded.n_heads}
            for fig in stability_figures(payload):
                path = args.out.with_name(f"{args.out.stem}.{name}.{fig.key.removeprefix('stability_')}.png")
                atomic_write_bytes(path, fig.png)
    report = {"benchmark": "stability", "config": asdict(config), "seeds": args.seeds, "tasks": tasks,
              "seconds": time.perf_counter() - start}
    text = json.dumps(report, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    brief = {name: t.get("missing") or {k: t["stability"][k] for k in
                                         ("jaccard", "circuit_size", "evaluation_mean", "evaluation_std",
                                          "core_heads", "varied")}
             for name, t in tasks.items()}
    for t in brief.values():
        if isinstance(t, dict):
            t["jaccard"] = {k: v for k, v in t["jaccard"].items() if k != "matrix"}
    sys.stdout.write(json.dumps(brief, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
