"""Peak memory of find's activation stage against the number of scoring prompts, each size in a fresh process.

    python benchmarks/memory.py [--model random:gpt2-small] [--n-score 250 1000 4000] [--held 250 1000]
                                [--out benchmarks/results/memory.json]

Stages measured (those of `find_circuit` whose inputs grow with the prompts): the training prompts' pass,
the SAE fit, the scoring pass that encodes inside the forward hook (`streamed`), then the scoring stage
(node_scores and edge_scores over the codes, chunked under a fixed element budget). For comparison,
`held` is the previous path: one pass holding every activation [prompts, heads, d], then encoding.
Each (mode, n_score) runs in its own subprocess; the figure is ru_maxrss (peak resident set) after the
stages, and its growth over ru_maxrss just before them (model loaded, prompts built);
`peak_rss_activations_mib` is the peak before the scoring stage. Each child allocates as `find` does by
default (glibc's dynamic mmap threshold); `--bound-heap` first fixes the threshold as `find` does with
CIRCUITS_BOUND_HEAP=1 (`pipeline.bound_cpu_heap`, opt-in: it slows the forward pass, see
benchmarks/results/heap_threshold.json). Writes the JSON and memory.png beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(model_name: str, task_name: str, n_score: int, mode: str, bound_heap: bool = False) -> dict:
    """One activation stage and scoring stage in this process: peak RSS before and after, MiB."""
    import torch

    from circuits.discovery.activations import head_activations
    from circuits.discovery.codes import encode_codes, fit_code_sae, n_codes, streamed_codes
    from circuits.discovery.config import FindConfig
    from circuits.discovery.pipeline import MMAP_THRESHOLD, bound_cpu_heap, split_prompts
    from circuits.discovery.scoring import edge_scores, layered_pairs, node_scores
    from circuits.models import load_model
    from tasks import get_task

    heap_bounded = bound_cpu_heap() if bound_heap else False
    task = get_task(task_name)
    loaded = load_model(model_name, task, 0)
    config = FindConfig(n_score=n_score)
    prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
    train_tokens, score_set = split_prompts(prompts, config.n_train)
    score_tokens = torch.cat([score_set.positive, score_set.negative])  # [2*n_score, seq]
    before = _rss_mib()
    start = time.perf_counter()
    if mode == "streamed":
        acts_train = head_activations(loaded.model, train_tokens, config.hook, config.position)
        codes = streamed_codes(loaded.model, score_tokens, fit_code_sae(acts_train, config), config)
    else:
        acts = head_activations(loaded.model, torch.cat([train_tokens, score_tokens]), config.hook,
                                config.position, config.batch_size)  # [n, head, d]
        codes = encode_codes(acts[:train_tokens.shape[0]], acts[train_tokens.shape[0]:], config)
        del acts
    peak_activations, activation_seconds = _rss_mib(), time.perf_counter() - start
    codes_pos, codes_neg = codes[:n_score], codes[n_score:]  # position "mean": one row per prompt
    c = n_codes(config.resolved_d_sae())
    node_scores(codes_pos, codes_neg, c, config.score)
    edge_scores(codes_pos, codes_neg, c, layered_pairs(loaded.n_layers, loaded.n_heads), config.score)
    return {"mode": mode, "n_score": n_score, "n_prompts": int(score_tokens.shape[0] + train_tokens.shape[0]),
            "codes_shape": list(codes.shape), "rss_before_mib": before,
            "peak_rss_activations_mib": peak_activations, "peak_rss_mib": _rss_mib(),
            "growth_mib": _rss_mib() - before,
            "mmap_threshold_bytes": MMAP_THRESHOLD if heap_bounded else None,
            "seconds_activations": activation_seconds, "seconds": time.perf_counter() - start}


def figure(runs: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    from circuits.analysis.figures import png_bytes
    from circuits.atomic import atomic_write_bytes

    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    for mode, colour in (("streamed", "#2a9d8f"), ("held", "#e76f51")):
        rows = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["n_score"])
        if rows:
            ax.plot([r["n_score"] for r in rows], [r["peak_rss_mib"] for r in rows], "o-", color=colour,
                    label=f"{mode} activations")
    ax.set_xscale("log")
    sizes = sorted({r["n_score"] for r in runs})
    ax.set_xticks(sizes, [str(n) for n in sizes])  # only the measured sizes: no overlapping log labels
    ax.minorticks_off()
    ax.set_xlabel("scoring prompts per side (n_score)")
    ax.set_ylabel("peak RSS, activations + scoring (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    ax.set_title("find: memory vs prompts", fontsize=10)
    atomic_write_bytes(path, png_bytes(fig))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2-small")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--n-score", type=int, nargs="+", default=[250, 1000, 4000])
    parser.add_argument("--held", type=int, nargs="*", default=[250, 1000],
                        help="sizes also run on the held-activations path (it grows: keep them small)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    parser.add_argument("--bound-heap", action="store_true",
                        help="fix glibc's mmap threshold first, as CIRCUITS_BOUND_HEAP=1 makes find do")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, n = args.child
        print(json.dumps(measure(args.model, args.task, int(n), mode, args.bound_heap)))
        return
    from _report import emit

    jobs = sorted([("streamed", n) for n in args.n_score] + [("held", n) for n in args.held],
                  key=lambda job: (job[1], job[0] != "streamed"))  # smallest first: partial results help
    runs: list[dict] = []
    for mode, n in jobs:
        res = subprocess.run([sys.executable, __file__, "--model", args.model, "--task", args.task,
                              *(["--bound-heap"] if args.bound_heap else []),
                              "--child", mode, str(n)], capture_output=True, text=True, check=True)
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        streamed = sorted((r for r in runs if r["mode"] == "streamed"), key=lambda r: r["n_score"])
        peaks = [r["peak_rss_activations_mib"] for r in streamed]
        report = {
            "benchmark": "memory",
            "model": args.model,
            "task": args.task,
            "what": "peak RSS (ru_maxrss) of find's activation stage (training pass + SAE fit + scoring "
                    "pass) and scoring stage (node_scores + edge_scores)",
            "malloc": "glibc default (dynamic mmap threshold), as find by default" if not args.bound_heap
                      else ("mmap threshold fixed as find does on CPU with CIRCUITS_BOUND_HEAP=1 "
                            "(pipeline.bound_cpu_heap)"),
            "runs": runs,
            "streamed_peak_ratio_largest_over_smallest":
                streamed[-1]["peak_rss_mib"] / streamed[0]["peak_rss_mib"] if streamed else None,
            # issue 14's flatness figure: the activation stage's peak, max over min across the sizes
            "peak_rss_max_over_min": max(peaks) / min(peaks) if peaks else None,
            "complete": len(runs) == len(jobs),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        }
        emit(report, args.out)  # after every run, so an interrupted benchmark keeps what it measured
        figure(runs, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
