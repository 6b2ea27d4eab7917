"""The discrete-SAE circuit pipeline in one function: find_circuit(task, model, config); `find_circuit_with`
gives any registered method's circuit (circuits.methods) as the same CircuitResult."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch

from circuits.ablation import faithfulness as measure_faithfulness
from circuits.discovery.activations import head_activations
from circuits.discovery.codes import fit_code_sae, n_codes, streamed_codes
from circuits.discovery.config import FindConfig
from circuits.discovery.effect import effect_activations, streamed_effect_codes
from circuits.discovery.graph import build_graph
from circuits.discovery.scoring import edge_scores, layered_pairs, node_scores
from circuits.discovery.selection import select_heads
from circuits.discovery.shard import my_batches, sum_over_ranks
from circuits.discovery.verify import verify_heads
from circuits.evaluation.metrics import DEFINITIONS, edge_auc, evaluate_heads, roc_curve_points
from circuits.models.loaded import LoadedModel
from circuits.progress import Progress
from circuits.sae.distributed import distributed_context
from circuits.threads import model_work, thread_policy
from circuits.truths import alternative_truths, ground_truth_for
from tasks.base import Head, PromptSet, Task

__all__ = ["ground_truth_for"]  # re-exported: compare and the CLI import it from here

if TYPE_CHECKING:
    from circuits.methods.registry import Method


@dataclass
class CircuitResult:
    task: str
    model: str
    config: FindConfig
    node_scores: torch.Tensor  # [layer, head]
    in_circuit: torch.Tensor  # [layer, head] bool
    edge_scores: dict[tuple[Head, Head], float]
    graph: nx.DiGraph
    evaluation: dict[str, Any] | None
    evaluation_note: str | None
    timings: dict[str, float]
    faithfulness: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def circuit(self) -> frozenset[Head]:
        return frozenset((int(l), int(h)) for l, h in self.in_circuit.nonzero().tolist())

    def to_json(self, max_edges: int | None = None) -> dict[str, Any]:
        """The `--json` object; edges sorted by score, positive scores only."""
        n_layers, n_heads = self.node_scores.shape
        heads = [{"layer": l, "head": h, "score": float(self.node_scores[l, h]),
                  "in_circuit": bool(self.in_circuit[l, h])}
                 for l in range(n_layers) for h in range(n_heads)]
        edges = sorted(((a, b, s) for (a, b), s in self.edge_scores.items() if s > 0), key=lambda e: -e[2])
        if max_edges is not None:
            edges = edges[:max_edges]
        return {
            "task": self.task,
            "model": self.model,
            "config": {**asdict(self.config), "d_sae": self.config.resolved_d_sae()},
            "n_layers": n_layers,
            "n_heads": n_heads,
            "heads": heads,
            "circuit": [list(h) for h in sorted(self.circuit)],
            "edges": [{"source": list(a), "target": list(b), "score": s,
                       "in_circuit": bool(self.in_circuit[a] and self.in_circuit[b])} for a, b, s in edges],
            "evaluation": self.evaluation,
            "evaluation_note": self.evaluation_note,
            "faithfulness": self.faithfulness,
            "timings": self.timings,
            **self.extra,
        }


def split_prompts(prompts: PromptSet, n_train: int) -> tuple[torch.Tensor, PromptSet]:
    """First n_train pairs give the SAE training rows (half positives, half negatives); the rest score."""
    n_pos = (n_train + 1) // 2
    train_tokens = torch.cat([prompts.positive[:n_pos], prompts.negative[n_pos:n_train]])
    return train_tokens, prompts.subset(slice(n_train, len(prompts)))


# glibc's malloc serves a request below its mmap threshold from the heap, and raises that threshold to the
# size of every mmapped block freed (up to 32 MiB). After the first forward pass every per-batch tensor of
# the model (gpt2-small at 128 prompts: 1.5-25 MiB each) then lives on the heap, whose fragmentation lets
# the peak resident set creep up batch after batch: +100 MiB from 4 to 16 batches of the scoring pass,
# then slower (benchmarks/memory.py). A fixed threshold keeps blocks of >= 4 MiB out of the heap (each is
# mapped and unmapped whole), so the peak is reached in the first batch and stays there. It is OPT-IN
# (CIRCUITS_BOUND_HEAP=1): every batch then maps, faults and zeroes its tensors afresh, and a forward pass of
# random:gpt2-small over 2 x 128 prompts took 36 s with it against 17-27 s without (3 interleaved rounds on
# the shared 2-core machine, benchmarks/results/heap_threshold.json): +10 % memory is the cheaper side.
MMAP_THRESHOLD = 4 << 20  # bytes
BOUND_HEAP_ENV = "CIRCUITS_BOUND_HEAP"
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (glibc malloc.h)
_heap: dict[str, bool] = {}


def bound_cpu_heap() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD, once per process; whether it is set.

    Left alone where the user set MALLOC_MMAP_THRESHOLD_ or the C library is not glibc. Changes where
    memory comes from, never a value: results are bit-identical with or without it.
    """
    if "set" not in _heap:
        _heap["set"] = False
        if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            try:
                libc = ctypes.CDLL(None)
                if hasattr(libc, "gnu_get_libc_version"):  # glibc (musl's mallopt does nothing)
                    _heap["set"] = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            except OSError:
                pass
    return _heap["set"]


def find_circuit(task: Task, loaded: LoadedModel, config: FindConfig,
                 progress: Progress | None = None) -> CircuitResult:
    """Prompts -> head activations -> SAEs -> codes -> scores -> circuit graph -> evaluation."""
    if str(loaded.model.cfg.device).startswith("cpu") and os.environ.get(BOUND_HEAP_ENV) == "1":
        bound_cpu_heap()  # peak memory flat in the number of prompts, at a time cost (see MMAP_THRESHOLD)
    with thread_policy(model_work(loaded.model)), distributed_context(str(loaded.model.cfg.device)):
        return _find_circuit(task, loaded, config, progress)


def _find_circuit(task: Task, loaded: LoadedModel, config: FindConfig,
                  progress: Progress | None) -> CircuitResult:
    config.validate()
    timings: dict[str, float] = {}
    start = t0 = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[stage] = now - t0
        t0 = now

    torch.manual_seed(config.seed)
    prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
    train_tokens, score_set = split_prompts(prompts, config.n_train)
    lap("prompts")

    n_score = len(score_set)
    rows_per_prompt = train_tokens.shape[1] if config.position == "each" else 1
    # The SAE is fit on the training prompts' activations (a small pass that holds them) ...
    if config.signal == "effect":  # row i of train_tokens is prompt i's positive or negative
        acts_train = effect_activations(loaded.model, task, train_tokens,
                                        prompts.subset(slice(0, train_tokens.shape[0])), config.hook,
                                        config.position, config.batch_size)
    else:
        acts_train = head_activations(loaded.model, train_tokens, config.hook, config.position,
                                      config.batch_size)  # [n_train*rows_per_prompt, head, d]
    lap("activations_train")
    sae = fit_code_sae(acts_train, config, progress)  # rank 0 trains, other ranks receive it
    del acts_train
    lap("sae")

    # ... then the scoring prompts are encoded inside the forward hook: only codes are kept.
    tokens = torch.cat([score_set.positive, score_set.negative])  # [2*n_score, seq]
    n_batches = (tokens.shape[0] + config.batch_size - 1) // config.batch_size
    if config.signal == "effect":  # a negative's metric reads its positive's answer (the same row)
        metric_rows = score_set.subset(list(range(n_score)) * 2)
        codes = streamed_effect_codes(loaded.model, task, tokens, metric_rows, sae, config,
                                      my_batches(n_batches))
    else:
        codes = streamed_codes(loaded.model, tokens, sae, config, my_batches(n_batches))  # [rows, head]
    codes = sum_over_ranks(codes)  # every rank filled its own batches' rows, the rest are 0
    if progress:
        progress("activations", 1, 1)
    c = n_codes(config.resolved_d_sae())
    if rows_per_prompt > 1:
        # A code at position p is a different event from the same code at position q.
        position = torch.arange(codes.shape[0]) % rows_per_prompt  # [rows]
        codes = codes + (position * c)[:, None]
        c *= rows_per_prompt
    split = n_score * rows_per_prompt
    # row r of codes_pos and of codes_neg: prompt r // rows_per_prompt and its corruption, same position
    codes_pos, codes_neg = codes[:split], codes[split:]
    lap("activations")

    L, H = loaded.n_layers, loaded.n_heads
    scores = node_scores(codes_pos, codes_neg, c, config.score).reshape(L, H)
    edges: dict[tuple[Head, Head], float] = {}
    if config.edges:
        pairs = layered_pairs(L, H)  # [pairs, 2]
        pair_scores = edge_scores(codes_pos, codes_neg, c, pairs, config.score)
        for (a, b), s in zip(pairs.tolist(), pair_scores.tolist(), strict=True):
            edges[(divmod(a, H), divmod(b, H))] = s
    lap("scoring")
    verified = None
    if config.verify:
        scores, verified = verify_heads(loaded.model, task, score_set, scores, config.verify,
                                        config.verify_prompts)
        lap("verify")

    in_circuit = select_heads(scores, config.selection)
    result = _graph_and_evaluation(task, loaded, config, scores, in_circuit, edges if config.edges else None,
                                   timings)
    if verified is not None:
        result.extra["verify"] = verified
    lap("graph_and_evaluation")

    if config.faithfulness:
        _faithfulness(task, loaded, score_set, result)
        lap("faithfulness")
    timings["total"] = time.perf_counter() - start
    return result


def _graph_and_evaluation(task: Task, loaded: LoadedModel, config: FindConfig, scores: torch.Tensor,
                          in_circuit: torch.Tensor, edges: dict[tuple[Head, Head], float] | None,
                          timings: dict[str, float]) -> CircuitResult:
    """The CircuitResult of node scores, a selection and edge scores (None: the method scores none), with
    its graph and its evaluation against the ground truth: one function, so every method is judged alike."""
    L, H = scores.shape
    truth, note = ground_truth_for(task, loaded)
    graph = build_graph(scores, in_circuit, edges or {}, truth.head_set() if truth else None)
    result = CircuitResult(task=task.name, model=loaded.name, config=config, node_scores=scores,
                           in_circuit=in_circuit, edge_scores=edges or {}, graph=graph, evaluation=None,
                           evaluation_note=note, timings=timings)
    if truth is not None:
        evaluation = evaluate_heads(scores, result.circuit, truth)
        evaluation["edge_roc_auc"] = edge_auc(edges, truth, L, H) if edges is not None else None
        evaluation["definitions"] = DEFINITIONS
        evaluation["roc_curve"] = roc_curve_points(scores, truth)  # for the report's ROC figure
        evaluation["truth_heads"] = [list(h) for h in sorted(truth.head_set())]
        for name, other in alternative_truths(task, loaded).items():  # e.g. the resample-ablation circuit
            evaluation[f"roc_auc_{name}"] = evaluate_heads(scores, result.circuit, other)["roc_auc"]
        result.evaluation = evaluation
    return result


def _faithfulness(task: Task, loaded: LoadedModel, score_set: PromptSet, result: CircuitResult) -> None:
    """The circuit's faithfulness by mean ablation, on the first 100 scoring prompts."""
    faith_set = score_set.subset(slice(0, min(len(score_set), 100)))
    result.faithfulness = measure_faithfulness(loaded.model, task, faith_set, result.circuit).to_dict()


def find_circuit_with(task: Task, loaded: LoadedModel, config: FindConfig, method: str = "sae",
                      options: dict[str, Any] | None = None, progress: Progress | None = None
                      ) -> CircuitResult:
    """The circuit of any registered method (circuits.methods.registry) as a CircuitResult, so one table,
    export, report and evaluation serve every method.

    A discrete-SAE method (sae or a variant) is `find_circuit` with the variant's FindConfig fields set;
    any other runs through the registry on the same prompts (seed `config.seed`, `options` to the method),
    keeps the method's own selection (`config.selection`) and, with `config.edges`, its edge scores."""
    from circuits.methods.registry import get_method
    from circuits.methods.sae import sae_overrides

    chosen = get_method(method)
    overrides = sae_overrides(chosen)
    if overrides is not None:
        result = find_circuit(task, loaded, replace(config, **overrides), progress)
    else:
        config.validate()
        with thread_policy(model_work(loaded.model)):
            result = _circuit_of_method(task, loaded, config, chosen, options or {}, progress)
    result.extra["method"] = {"key": chosen.key, "label": chosen.label, **result.extra.get("method", {})}
    return result


def _circuit_of_method(task: Task, loaded: LoadedModel, config: FindConfig, method: Method,
                       options: dict[str, Any], progress: Progress | None) -> CircuitResult:
    from circuits.methods.registry import MethodInput

    start = time.perf_counter()
    torch.manual_seed(config.seed)
    if progress:
        progress("method", 0, 1)
    run = method.run(MethodInput(task=task, loaded=loaded, find=config, seed=config.seed, options=options,
                                 progress=progress))
    if progress:
        progress("method", 1, 1)
    timings = {"prompts": time.perf_counter() - start - run.seconds, method.key: run.seconds}
    t0 = time.perf_counter()
    in_circuit = torch.zeros(tuple(run.node_scores.shape), dtype=torch.bool)
    for layer, head in run.selected:
        in_circuit[layer, head] = True
    edges = dict(run.edge_scores) if config.edges and run.edge_scores is not None else None
    result = _graph_and_evaluation(task, loaded, config, run.node_scores.detach().float().cpu(), in_circuit,
                                   edges, timings)
    result.extra["method"] = {"forward_passes": run.forward, "backward_passes": run.backward,
                              "edges_scored": run.edge_scores is not None, "details": run.details}
    timings["graph_and_evaluation"] = time.perf_counter() - t0
    if config.faithfulness:
        t0 = time.perf_counter()
        prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
        _faithfulness(task, loaded, split_prompts(prompts, config.n_train)[1], result)
        timings["faithfulness"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    return result
