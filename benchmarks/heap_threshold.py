"""What fixing glibc's mmap threshold (pipeline.bound_cpu_heap, CIRCUITS_BOUND_HEAP=1) costs in time.

Each round runs, in fresh processes, a forward pass of random:gpt2-small over 2 batches of 128 IOI prompts
(one thread) with the threshold fixed, then with glibc's default; rounds interleave so load drifts hit both.
The JSON has every round and the median of per-round ratios.

    python benchmarks/heap_threshold.py [--rounds 3] [--out benchmarks/results/heap_threshold.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import sys, time, torch
torch.set_num_threads(1)
from circuits.models import load_model
from tasks import get_task
task = get_task("ioi"); lm = load_model("random:gpt2-small", task, 0)
if sys.argv[1] == "bound":
    from circuits.discovery.pipeline import bound_cpu_heap
    assert bound_cpu_heap()
tokens = task.prompts(lm.tokenizer, 256, 0).positive  # [256, seq]
with torch.no_grad():
    lm.model(tokens[:16])
    start = time.perf_counter()
    for i in range(0, 256, 128):
        lm.model(tokens[i:i + 128])
    print(time.perf_counter() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "heap_threshold.json")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    rounds = []
    for _ in range(args.rounds):
        rounds.append({mode: float(subprocess.run([sys.executable, "-c", CHILD, mode], env=env, check=True,
                                                  capture_output=True, text=True).stdout.split()[-1])
                       for mode in ("bound", "default")})
    ratios = [r["bound"] / r["default"] for r in rounds]
    out = {"benchmark": "heap_threshold", "what": __doc__.splitlines()[2].strip(),
           "seconds_per_round": rounds, "bound_over_default_per_round": ratios,
           "bound_over_default_median": statistics.median(ratios)}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
