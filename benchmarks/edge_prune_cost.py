"""What `circuits find --method edge-prune` costs end to end with its defaults, as a user runs it.

Issue 29 asks for <= 20 min on SmolLM2 IOI on this 2-core machine; the command runs in a child process.

Records wall seconds, the child's CPU seconds and peak resident memory (getrusage of the child), and the
method's own seconds, passes, kept edges and steps from its result.json. One run: the budget is a bound,
not a comparison, so there is nothing to interleave; the machine is shared, so the CPU seconds are the
figure to read when the wall clock is inflated by other jobs (`threads` says how many the child had).

    python benchmarks/edge_prune_cost.py --model smollm2-135m --task ioi --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import emit  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "edge_prune_cost.json"
BUDGET_SECONDS = 20 * 60


def measure(model: str, task: str, threads: int, extra: list[str]) -> dict[str, Any]:
    """Run the CLI once; -> wall, CPU and peak memory of the child and what its result.json says."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1"}
    cli = str(Path(sys.executable).parent / "circuits")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [cli, "find", "--task", task, "--model", model, "--method", "edge-prune", "--out",
               str(Path(tmp) / "run"), "--json", *extra]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"edge-prune failed ({done.returncode}): {done.stderr.strip().splitlines()[-1]}")
        result = json.loads(done.stdout)
    method = result["method"]
    details = method["details"]
    return {
        "command": " ".join(["circuits", *cmd[1:8], *extra]),
        "threads": threads, "wall_seconds": wall,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_gb": after.ru_maxrss / 2 ** 20,  # kB on Linux
        "method_seconds": result["timings"].get("edge-prune"),
        "forward_passes": method["forward_passes"], "backward_passes": method["backward_passes"],
        "steps": details["steps"], "objective": details["objective"], "init": details["init"],
        "train_prompts": details["train_prompts"]["n"], "kept_edges": details["kept_edges"],
        "within_budget": wall <= BUDGET_SECONDS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("extra", nargs="*", help="further find options after --, e.g. -- --prune-steps 50")
    args = parser.parse_args(argv)
    run = measure(args.model, args.task, args.threads, args.extra)
    emit({"what": __doc__.splitlines()[0], "budget_seconds": BUDGET_SECONDS, "run": run}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
