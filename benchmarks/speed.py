"""Speed of `circuits find` next to one plain forward pass and to EAP, on the same prompts, in one run.

    python benchmarks/speed.py [--model random:gpt2-small] [--task ioi] [--n-train 10] [--n-score 250]
                               [--out speed.json]

Prints one JSON object (and writes it to --out): seconds per stage of find_circuit, one plain forward
pass over the same prompts find reads (n_train training + n_score positive + n_score negative),
EAP (2 forwards + 1 backward, node and edge scores) over the n_score positive/negative pairs, and the
ratios find / forward and find / EAP. Everything runs in this process after one small warm-up forward,
on the CPU with the package's thread policy (circuits/threads.py), in `--repeats` rounds (each round
times every contender once); the JSON reports medians over rounds and keeps every round.

Contended scenario (`--contended-models`, default tiny-ioi and the main model): the same find (and one
forward pass) timed alone and while a second process runs a small torch training loop with torch's
default thread settings (as a researcher's other job would), rounds interleaved; the contender is started
and stopped by this script and bounded in time (`--contender-seconds`). Reported: contended / alone.

Sharded find (`--skip-sharded` to leave out): `circuits find` on tiny-ioi under torchrun with 2 CPU
processes (gloo) and in one process, same settings, each as a subprocess; reported: whether the two JSON
results are equal (timings aside), the largest absolute difference of a head or edge score, and seconds.

Memory (`--memory-sizes`, empty to leave out): benchmarks/memory.py's runs (each size in a fresh process,
find's default allocator) embedded, with peak RSS max / min over the streamed sizes. SAE throughput
(`--skip-sae-throughput`): benchmarks/sae_throughput.py's report (ours over SAELens, same data, same run)
embedded. `criteria` lists issue 14's targets with the measured value and whether each is met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# isort: off
import circuits  # noqa: E402, F401  (first: sets the OpenMP wait policy before torch loads)
# isort: on
import torch  # noqa: E402
from _report import emit  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

from circuits.discovery.config import FindConfig  # noqa: E402
from circuits.discovery.pipeline import find_circuit, split_prompts  # noqa: E402
from circuits.methods.eap import edge_attribution_patching  # noqa: E402
from circuits.models import load_model  # noqa: E402
from tasks import get_task  # noqa: E402


@torch.no_grad()
def forward_seconds(model, tokens: torch.Tensor, batch_size: int, **kwargs) -> float:
    """Wall clock of model(tokens) in batches of `batch_size` (logits computed unless kwargs stop early)."""
    start = time.perf_counter()
    for i in range(0, tokens.shape[0], batch_size):
        model(tokens[i:i + batch_size], **kwargs)
    return time.perf_counter() - start


CONTENDER = """
import sys, time, torch
end = time.time() + float(sys.argv[1])
net = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))
opt = torch.optim.Adam(net.parameters())
x = torch.randn(64, 256)
print("ready", flush=True)
while time.time() < end:
    loss = net(x).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
"""


class Contender:
    """A second torch process training a small MLP with default threads, for at most `seconds`."""

    def __init__(self, seconds: float):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        self.proc = subprocess.Popen([sys.executable, "-c", CONTENDER, str(seconds)], env=env,
                                     stdout=subprocess.PIPE, text=True)

    def __enter__(self) -> Contender:
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready": torch imported, the loop starts now
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def contended(model_name: str, args: argparse.Namespace) -> dict:
    """find and one forward pass of `model_name`, alone and beside a Contender, rounds interleaved."""
    task = get_task(args.task)
    loaded = load_model(model_name, task, args.seed)
    config = FindConfig(n_train=args.n_train, n_score=args.n_score, seed=args.seed, steps=args.steps)
    prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
    train_tokens, score_set = split_prompts(prompts, config.n_train)
    tokens = torch.cat([train_tokens, score_set.positive, score_set.negative])
    find_circuit(task, loaded, config)  # warm-up
    rounds = []
    for _ in range(args.contended_repeats):
        row: dict[str, float] = {}
        for label in ("alone", "contended"):
            if label == "contended":
                with Contender(args.contender_seconds):
                    row["find_contended"] = find_circuit(task, loaded, config).timings["total"]
                    row["forward_contended"] = forward_seconds(loaded.model, tokens, config.batch_size)
            else:
                row["find_alone"] = find_circuit(task, loaded, config).timings["total"]
                row["forward_alone"] = forward_seconds(loaded.model, tokens, config.batch_size)
        rounds.append(row)
    med = {k: median(r[k] for r in rounds) for k in rounds[0]}
    return {
        "model": loaded.name,
        "seconds": med,
        "ratios": {"find_contended_over_alone": med["find_contended"] / med["find_alone"],
                   "forward_contended_over_alone": med["forward_contended"] / med["forward_alone"],
                   "find_contended_over_alone_per_round": [r["find_contended"] / r["find_alone"]
                                                           for r in rounds]},
        "rounds": rounds,
    }


def thread_settings() -> dict:
    from circuits.threads import passive_wait

    return {"torch_threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "passive_wait": passive_wait()}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sharded_find(model_name: str = "tiny-ioi", task_name: str = "ioi", n_score: int = 150,
                 timeout: float = 900.0) -> dict:
    """`circuits find` under torchrun --nproc_per_node 2 against one process (as tests/test_sharded_find)."""
    root = Path(__file__).resolve().parent.parent
    find = ["-m", "circuits.cli.main", "find", "--task", task_name, "--model", model_name,
            "--n-score", str(n_score), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def find_json(cmd: list[str]) -> tuple[dict, float]:
        start = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr[-2000:]}")
        out = json.loads(res.stdout)  # only rank 0 prints
        out.pop("timings")
        return out, time.perf_counter() - start

    single, single_seconds = find_json([sys.executable, *find])
    sharded, sharded_seconds = find_json([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                          "2", "--master_addr", "127.0.0.1", "--master_port",
                                          str(_free_port()), *find])

    def scores(out: dict) -> dict:
        heads = {("head", h["layer"], h["head"]): h["score"] for h in out["heads"]}
        edges = {("edge", *e["source"], *e["target"]): e["score"] for e in out["edges"]}
        return {**heads, **edges}

    a, b = scores(single), scores(sharded)
    diff = max((abs(a[k] - b[k]) for k in a), default=0.0) if a.keys() == b.keys() else None
    return {
        "command": f"circuits find --task {task_name} --model {model_name} --n-score {n_score} --json",
        "processes": 2, "backend": "gloo (CPU)",
        "equal": sharded == single,
        "heads_equal": sharded["heads"] == single["heads"],
        "edges_equal": sharded["edges"] == single["edges"],
        "max_abs_score_diff": diff,  # None: the two list different edges
        "seconds": {"single_process": single_seconds, "two_processes": sharded_seconds},
        "definition": "equal: the --json outputs (timings removed) are identical; max_abs_score_diff over "
                      "every head score and every listed (positive) edge score; seconds include start-up",
    }


def _script_report(script: str, argv: list[str], out_name: str, out_is_dir: bool, timeout: float) -> dict:
    """Run benchmarks/<script> with `argv` and --out in a temporary folder (the folder itself where the
    script takes one); the JSON report it wrote there, `out_name`."""
    import tempfile

    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / out_name
        target = tmp if out_is_dir else str(out)
        res = subprocess.run([sys.executable, str(here / script), *argv, "--out", target],
                             capture_output=True, text=True, timeout=timeout, cwd=here.parent)
        if res.returncode != 0:
            raise RuntimeError(f"{script} failed: {res.stderr[-2000:]}")
        return json.loads(out.read_text())


def memory_report(model_name: str, task_name: str, sizes: list[int]) -> dict:
    """benchmarks/memory.py over `sizes` (streamed only; its report has the flatness figure)."""
    return _script_report("memory.py", ["--model", model_name, "--task", task_name, "--n-score",
                                        *map(str, sizes), "--held"], "memory.json", out_is_dir=False,
                          timeout=7200)


def sae_throughput_report() -> dict:
    return _script_report("sae_throughput.py", [], "sae_throughput.json", out_is_dir=True, timeout=3600)


def criteria(report: dict) -> dict:
    """Issue 14's targets: each with the measured value (None: not measured in this run) and whether met."""
    tiny = next((c for c in report["contended"] if c["model"] == "tiny-ioi"), None)
    throughput = report.get("sae_throughput")
    ratios = ({a: r.get("ours_over_saelens") for a, r in throughput["results"].items()}
              if throughput else None)
    sharded = report.get("sharded_find")
    memory = report.get("memory")
    # (target, measured value, bound): "max" values must stay at or below it, "min" ones at or above;
    # a yes/no target has no bound
    rows: list[tuple[str, Any, tuple[float, str] | None]] = [
        # the paired statistic: each round's find over the forward pass run next to it (same load)
        ("find_over_forward_paired <= 1.1", report["ratios"]["find_over_forward_paired"], (1.1, "max")),
        ("tiny-ioi find contended_over_alone <= 2.0",
         tiny["ratios"]["find_contended_over_alone"] if tiny else None, (2.0, "max")),
        ("peak RSS max/min over n_score sizes <= 1.1", memory["peak_rss_max_over_min"] if memory else None,
         (1.1, "max")),
        ("min SAE throughput over SAELens >= 1.2",
         min(v for v in ratios.values() if v is not None) if ratios else None, (1.2, "min")),
        ("2-process sharded find equals 1-process", sharded["equal"] if sharded else None, None),
    ]
    out = {}
    for name, value, bound in rows:
        met = value
        if value is not None and bound is not None:
            limit, kind = bound
            met = value <= limit if kind == "max" else value >= limit
        out[name] = {"value": value, "met": met}
    return out


def run(args: argparse.Namespace) -> dict:
    task = get_task(args.task)
    loaded = load_model(args.model, task, args.seed)
    model = loaded.model
    config = FindConfig(n_train=args.n_train, n_score=args.n_score, seed=args.seed, steps=args.steps)
    prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
    train_tokens, score_set = split_prompts(prompts, config.n_train)
    tokens = torch.cat([train_tokens, score_set.positive, score_set.negative])  # what find reads
    forward_seconds(model, tokens[:2], 2)  # warm-up

    rounds = []  # each round times every contender once, so drifts in machine load hit all of them
    eap = None
    for i in range(args.repeats):
        # find and its forward pass back to back, in alternating order (ABBA), so that the round's
        # ratio compares two runs under the same machine load, and a drift within a pair cancels
        # over rounds
        if i % 2:
            forward = forward_seconds(model, tokens, config.batch_size)
            result = find_circuit(task, loaded, config)
        else:
            result = find_circuit(task, loaded, config)
            forward = forward_seconds(model, tokens, config.batch_size)
        if not args.skip_eap:
            eap = edge_attribution_patching(model, task, score_set, edges=True,
                                            batch_size=args.eap_batch_size)
        rounds.append({
            "find": result.timings,
            "forward": forward,
            "forward_no_unembed": forward_seconds(model, tokens, config.batch_size,
                                                  stop_at_layer=model.cfg.n_layers),
            "eap": None if eap is None else eap.seconds,
            "eap_nodes": None if args.skip_eap_nodes or args.skip_eap else edge_attribution_patching(
                model, task, score_set, edges=False, batch_size=args.eap_batch_size).seconds,
        })
    find_seconds = {stage: median([r["find"][stage] for r in rounds]) for stage in rounds[0]["find"]}
    find_total = find_seconds["total"]
    find_no_prompts = median([r["find"]["total"] - r["find"].get("prompts", 0.0) for r in rounds])
    plain = median([r["forward"] for r in rounds])
    no_unembed = median([r["forward_no_unembed"] for r in rounds])
    eap_seconds = None if eap is None else median([r["eap"] for r in rounds])
    eap_nodes = None if args.skip_eap_nodes or eap is None else median([r["eap_nodes"] for r in rounds])
    ratio_rounds = [r["find"]["total"] / r["forward"] for r in rounds]
    return {
        "model": loaded.name,
        "task": task.name,
        "n_train": config.n_train,
        "n_score": config.n_score,
        "n_prompts_forward": int(tokens.shape[0]),
        "seq_len": int(tokens.shape[1]),
        "n_layers": loaded.n_layers,
        "n_heads": loaded.n_heads,
        "find_config": {"hook": config.hook, "position": config.position, "sae": config.sae,
                        "steps": config.steps, "edges": config.edges, "batch_size": config.batch_size},
        "repeats": args.repeats,
        "statistic": "median over rounds; every round times find, forward and EAP once each, find and "
                     "forward back to back in alternating order (find_over_forward_paired: the median "
                     "of those per-round ratios; find_over_forward: median find over median forward)",
        "find_seconds": find_seconds,
        "forward_seconds": plain,
        "forward_no_unembed_seconds": no_unembed,
        "eap_seconds": eap_seconds,
        "eap_passes": None if eap is None else {"forward": eap.n_forward, "backward": eap.n_backward},
        "eap_nodes_only_seconds": eap_nodes,
        "ratios": {
            "find_over_forward_paired": median(ratio_rounds),
            "find_over_forward": find_total / plain,
            "find_over_eap": None if eap_seconds is None else find_total / eap_seconds,
            "find_over_forward_per_round": ratio_rounds,
            "find_without_prompt_building_over_forward": find_no_prompts / plain,
            "find_over_forward_no_unembed": find_total / no_unembed,
        },
        "definitions": {
            "forward_seconds": "model(tokens) with logits over the n_train + 2*n_score prompts find reads, "
                               f"batches of {config.batch_size}, no gradients",
            "forward_no_unembed_seconds": "the same, stopping before the unembedding",
            "eap_seconds": "EAP over the n_score positive/negative pairs: corrupt forward + clean forward "
                           f"+ backward, node and edge scores, batches of {args.eap_batch_size}",
            "find_seconds.total": "find_circuit end to end, prompt building included",
        },
        "rounds": rounds,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    **thread_settings()},
        "contended": [contended(args.model if name == "main" else name, args)
                      for name in args.contended_models],
        "sharded_find": None if args.skip_sharded else sharded_find(),
        "memory": memory_report(args.model, args.task, args.memory_sizes) if args.memory_sizes else None,
        "sae_throughput": None if args.skip_sae_throughput else sae_throughput_report(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2-small")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--n-train", type=int, default=10)
    parser.add_argument("--n-score", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eap-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=FindConfig().steps, help="SAE Adam steps (paper: 500)")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (medians are reported)")
    parser.add_argument("--skip-eap-nodes", action="store_true", help="skip the node-only EAP timing")
    parser.add_argument("--skip-eap", action="store_true", help="skip EAP altogether")
    parser.add_argument("--contended-models", nargs="*", default=["tiny-ioi", "main"],
                        help="models timed alone and beside a torch contender ('main': --model)")
    parser.add_argument("--contended-repeats", type=int, default=3)
    parser.add_argument("--contender-seconds", type=float, default=600.0,
                        help="upper bound on one contender's life (it is stopped after each timing)")
    parser.add_argument("--skip-sharded", action="store_true",
                        help="skip the 2-process (torchrun) find equality check on tiny-ioi")
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[250, 1000, 4000],
                        help="n_score sizes of the memory runs (none: leave them out)")
    parser.add_argument("--skip-sae-throughput", action="store_true",
                        help="leave out benchmarks/sae_throughput.py (ours over SAELens)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.n_train < 2 or args.n_score < 1 or args.eap_batch_size < 1 or args.repeats < 1 or args.steps < 1:
        parser.error("--n-train must be >= 2; --n-score, --eap-batch-size, --repeats, --steps >= 1")
    report = run(args)
    report = {"criteria": criteria(report), **report}
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
