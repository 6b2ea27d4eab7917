"""Ground truth by ablation, independent of any SAE: the smallest head set that keeps the behaviour.

Procedure (recorded verbatim in `GroundTruth.method`):
1. Prompts: a fixed PromptSet drawn with a seed disjoint from training. Every ablated head's `hook_z`
   is replaced by its position-wise mean over the set's NEGATIVE prompts (`circuits.ablation`; the
   `ablation` argument selects another intervention, e.g. "resample": a random negative prompt's value).
2. Score of a head set S = mean task metric over the positive prompts with every head outside S
   ablated. With full = score(all heads) and empty = score(no heads), S is *valid* when both
   normalised faithfulness (S - empty) / (full - empty) and the plain ratio S / full are >= threshold.
3. Single-head effects: the score with each head alone ablated (batched masks; every mask starts at
   the layer of its ablated head from the intact model's cached residual stream).
4. Search (greedy; 2^H subsets are too many):
   a. backward elimination from all heads: at each step remove the head whose removal leaves the
      highest score, while the result stays valid (O(heads^2) head sets: only up to
      `backward_max_heads` heads, default 64; skipped, and recorded as skipped, above);
   b. forward selection from the single-ablation ranking: the shortest valid prefix of the heads
      ordered by single-ablation drop (largest first), then pruned as below (every prefix scored up to
      `backward_max_heads` heads; above, prefixes of 1, 2, 4, ... heads, then a search between the
      last invalid and the first valid one, which assumes validity does not come and go along the
      ranking; the prefix is then thinned in one pass from its least important member before pruning);
   c. keep the smaller valid set (ties: the higher score) and prune to necessity: while removing some
      member keeps the set valid, remove the one whose removal leaves the highest score;
   d. minimality check: a pool is the union of a and b, topped up to `pool_size` heads from the
      single-ablation ranking; every subset of the pool with one member fewer than the result is
      scored (when there are at most `max_exhaustive` of them); a valid one replaces the result
      (pruned) and the check repeats. Smaller sets outside the pool are not searched.
   Every member of the result is necessary: removing any one drops the set below the threshold.
5. Edges (optional, `edges=True`): for circuit heads a (lower layer) -> b, the direct path a -> b is
   ablated (a's contribution to b's query, key and value inputs replaced by a's mean contribution)
   in the circuit-only model; the edge is kept when the normalised score drops by >= edge_threshold.
   Paths through MLPs are not separated (they count as indirect, not as the edge).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from circuits._compat import HookedTransformer
from circuits.ablation import (
    AblationMethod,
    Faithfulness,
    PassCount,
    final_logits,
    metric_under_masks,
    reference_z,
    z_hook,
)
from circuits.errors import CircuitsError
from circuits.progress import Progress
from circuits.zoo.train import torch_threads
from tasks.base import GroundTruth, Head, PromptSet, Task

ABLATION_NOTES = {
    "mean": "mean over the negative prompts, position-wise, at hook_z (circuits.ablation)",
    "zero": "zeros at hook_z (circuits.ablation)",
    "resample": "each positive prompt's value replaced by that of a negative prompt drawn at random (with "
                "replacement, seeded), at hook_z (circuits.ablation)",
    "counterfactual": "each positive prompt's value replaced by that of its own negative prompt, at hook_z "
                      "(circuits.ablation)",
}


@dataclass
class GroundTruthResult:
    truth: GroundTruth
    faithfulness: Faithfulness  # of the found head set
    single_head_effects: list[dict[str, Any]]  # per head: layer, head, score, drop, normalized_drop
    edge_effects: list[dict[str, Any]] = field(default_factory=list)  # per circuit pair
    search: dict[str, Any] = field(default_factory=dict)  # what each stage found

    def details(self) -> dict[str, Any]:
        return {"faithfulness": self.faithfulness.to_dict(), "single_head_effects": self.single_head_effects,
                "edge_effects": self.edge_effects, "search": self.search}


class _Scorer:
    """Scores head sets (as keep masks) in batches and remembers them."""

    def __init__(self, model: HookedTransformer, task: Task, prompts: PromptSet, reference: torch.Tensor,
                 max_rows: int):
        self.model, self.task, self.prompts, self.reference = model, task, prompts, reference
        self.L, self.H = int(model.cfg.n_layers), int(model.cfg.n_heads)
        self.max_rows = max_rows
        self.cache: dict[frozenset[Head], float] = {}
        self.n_evaluated = 0
        self.passes = PassCount()
        self.base_runs: dict[int, torch.Tensor] = {}  # the intact and all-ablated runs, reused by every batch

    def mask(self, heads: frozenset[Head]) -> torch.Tensor:
        keep = torch.zeros(self.L, self.H, dtype=torch.bool)
        for layer, h in heads:
            keep[layer, h] = True
        return keep

    def __call__(self, sets: list[frozenset[Head]], near: frozenset[Head] | None = None) -> list[float]:
        """Mean metric per head set. near: a set the batch differs little from (e.g. S for its leave-one-out
        subsets): its run is cached for the call and each set continues it from where they first differ."""
        todo = [s for s in dict.fromkeys(sets) if s not in self.cache]
        if todo:
            keep = torch.stack([self.mask(s) for s in todo])  # [k, L, H]
            scores = metric_under_masks(self.model, self.task, self.prompts, keep, self.reference,
                                        max_rows=self.max_rows, count=self.passes, base_runs=self.base_runs,
                                        base_masks=None if near is None else self.mask(near)[None]
                                        ).float().mean(1)  # [k]
            self.n_evaluated += len(todo)
            self.cache.update(zip(todo, scores.tolist(), strict=True))
        return [self.cache[s] for s in sets]


def _start_search(model: HookedTransformer, task: Task, prompts: PromptSet, ablation: AblationMethod,
                  seed: int, max_rows: int
                  ) -> tuple[frozenset[Head], torch.Tensor, _Scorer, float, float]:
    """What every ground-truth search starts from: every head, the ablation reference, the scorer and the
    metric intact and with every head ablated; refuses a model that does not do the task."""
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    every = frozenset((layer, h) for layer in range(L) for h in range(H))
    reference = reference_z(model, prompts, ablation, seed)  # [layer, seq, head, d_head] or [n, ...]
    scorer = _Scorer(model, task, prompts, reference, max_rows)
    if ablation != "zero":
        scorer.passes.forward += 1.0  # the negatives' pass behind the reference
    full, empty = scorer([every, frozenset()])
    if not full > 0 or not full > empty:
        raise CircuitsError(f"the model does not do the task on these prompts (mean metric {full:.3g} "
                            f"intact, {empty:.3g} with every head ablated): no ground truth to find")
    return every, reference, scorer, full, empty


def _first_valid_prefix(scorer: _Scorer, ranking: list[Head], valid: Callable[[float], bool],
                        every_prefix: bool) -> frozenset[Head]:
    """The shortest valid prefix of `ranking` (the whole ranking is valid by construction).

    every_prefix: score all of them (small models). Otherwise prefixes of 1, 2, 4, ... heads in one batch,
    then between the last invalid and the first valid one, 7 evenly spaced prefixes per batch.
    """
    n = len(ranking)
    if every_prefix:
        prefixes = [frozenset(ranking[:k]) for k in range(n + 1)]
        scores = scorer(prefixes)
        return prefixes[next(k for k, s in enumerate(scores) if valid(s))]
    sizes = sorted({0, n} | {2 ** i for i in range(n.bit_length()) if 2 ** i < n})
    scores = scorer([frozenset(ranking[:k]) for k in sizes])
    hi_i = next(i for i, s in enumerate(scores) if valid(s))
    lo, hi = (sizes[hi_i - 1] if hi_i > 0 else -1), sizes[hi_i]  # lo invalid (or none), hi valid
    while hi - lo > 1:
        probe = sorted({lo + (hi - lo) * j // 8 for j in range(1, 8)} - {lo, hi})
        probe_scores = scorer([frozenset(ranking[:k]) for k in probe])
        verdicts = dict(zip(probe, map(valid, probe_scores), strict=True))
        hi = min([k for k, ok in verdicts.items() if ok], default=hi)
        lo = max([k for k, ok in verdicts.items() if not ok and k < hi], default=lo)
    return frozenset(ranking[:hi])


def _drop_in_order(scorer: _Scorer, heads: frozenset[Head], valid: Callable[[float], bool],
                   ranking: list[Head]) -> frozenset[Head]:
    """One pass from the least to the most important member (by `ranking`): drop each whose removal keeps
    the set valid. |S| head sets instead of pruning's |S|^2 / 2; pruning then checks necessity."""
    for h in reversed([h for h in ranking if h in heads]):
        if len(heads) > 1 and valid(scorer([heads - {h}])[0]):
            heads = heads - {h}
    return heads


def _prune(scorer: _Scorer, heads: frozenset[Head], valid: Callable[[float], bool]) -> frozenset[Head]:
    """Remove members while some removal keeps the set valid (the best-scoring removal first)."""
    while len(heads) > 0:
        cands = [heads - {h} for h in sorted(heads)]
        scores = scorer(cands)
        best = max(range(len(cands)), key=lambda i: (scores[i], -i))
        if not valid(scores[best]):
            break
        heads = cands[best]
    return heads


def find_ground_truth(model: HookedTransformer, task: Task, prompts: PromptSet, threshold: float = 0.9,
                      pool_size: int = 12, max_exhaustive: int = 1024, edges: bool = True,
                      edge_threshold: float = 0.02, max_rows: int = 1024,
                      method_notes: dict[str, Any] | None = None, progress: Progress | None = None,
                      threads: int | None = 1, ablation: AblationMethod = "mean", seed: int = 0,
                      backward_max_heads: int = 64, ranking: list[Head] | None = None) -> GroundTruthResult:
    """Search the smallest valid head set of `model` on `task` (see the module docstring).

    ablation / seed: the intervention on heads outside the set (`circuits.ablation.reference_z`);
    edges need a mean or zero reference (one value per position).
    ranking: every head, most important first, to search along instead of this run's own single-head
    ablations (skipped then: on a large model they cost about heads / 2 passes), e.g. the ranking of a
    search on the same prompts under another ablation.
    """
    if edges and ablation not in ("mean", "zero"):
        raise CircuitsError(f"ground-truth edges are measured under mean or zero ablation, not '{ablation}' "
                            f"(pass edges=False)")
    with torch_threads(threads):
        return _find(model, task, prompts, threshold, pool_size, max_exhaustive, edges, edge_threshold,
                     max_rows, method_notes, progress, ablation, seed, backward_max_heads, ranking)


def _find(model: HookedTransformer, task: Task, prompts: PromptSet, threshold: float, pool_size: int,
          max_exhaustive: int, edges: bool, edge_threshold: float, max_rows: int,
          method_notes: dict[str, Any] | None, progress: Progress | None, ablation: AblationMethod,
          seed: int, backward_max_heads: int, given_ranking: list[Head] | None) -> GroundTruthResult:
    def tell(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    started = time.perf_counter()
    stage_seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        stage_seconds[stage] = time.perf_counter() - started - sum(stage_seconds.values())

    every, reference, scorer, full, empty = _start_search(model, task, prompts, ablation, seed, max_rows)

    def normalized(score: float) -> float:
        return (score - empty) / (full - empty)

    def valid(score: float) -> bool:
        return normalized(score) >= threshold and score / full >= threshold

    heads = sorted(every)
    single_effects: list[dict[str, Any]] = []
    if given_ranking is not None:
        ranking = [(int(layer), int(h)) for layer, h in given_ranking]
        if sorted(ranking) != heads:
            raise CircuitsError("a given ranking must list every head of the model exactly once")
    else:
        tell("single-head ablations", 0, 1)
        singles = scorer([every - {h} for h in heads])
        single_effects = [{"layer": layer, "head": h, "score_when_ablated": s, "drop": full - s,
                           "normalized_drop": (full - s) / (full - empty)}
                          for (layer, h), s in zip(heads, singles, strict=True)]
        ranking = [heads[i] for i in sorted(range(len(heads)), key=lambda i: (-(full - singles[i]), i))]
        lap("single-head ablations")

    exhaustive = len(heads) <= backward_max_heads
    backward: frozenset[Head] | None = None
    if exhaustive:
        tell("backward elimination", 0, len(heads))
        backward = every
        while backward:
            cands = [backward - {h} for h in sorted(backward)]
            scores = scorer(cands)
            best_i = max(range(len(cands)), key=lambda i: (scores[i], -i))
            if not valid(scores[best_i]):
                break
            backward = cands[best_i]
            tell("backward elimination", len(heads) - len(backward), len(heads))
        lap("backward elimination")

    tell("forward selection", 0, 1)
    forward_raw = _first_valid_prefix(scorer, ranking, valid, exhaustive)
    thinned = forward_raw if exhaustive else _drop_in_order(scorer, forward_raw, valid, ranking)
    forward = _prune(scorer, thinned, valid)
    lap("forward selection")

    def better(a: frozenset[Head], b: frozenset[Head]) -> frozenset[Head]:
        if len(a) != len(b):
            return a if len(a) < len(b) else b
        sa, sb = scorer([a, b])
        return a if sa >= sb else b

    best = _prune(scorer, forward if backward is None else better(backward, forward), valid)

    tell("minimality check", 0, 1)
    pool_set = set(forward if backward is None else backward | forward)
    for h in ranking:
        if len(pool_set) >= pool_size:
            break
        pool_set.add(h)
    pool = sorted(pool_set)
    checked: list[int] = []  # sizes checked exhaustively within the pool
    while len(best) > 0 and math.comb(len(pool), len(best) - 1) <= max_exhaustive:
        smaller = [frozenset(c) for c in itertools.combinations(pool, len(best) - 1)]
        scores = scorer(smaller)
        checked.append(len(best) - 1)
        ok = [i for i, s in enumerate(smaller) if valid(scores[i])]
        if not ok:
            break
        best = _prune(scorer, smaller[max(ok, key=lambda i: (scores[i], -i))], valid)

    lap("minimality check")
    circuit_score = scorer([best])[0]
    faith = Faithfulness(full=full, empty=empty, circuit=circuit_score, method=ablation)
    edge_effects: list[dict[str, Any]] = []
    edge_list: list[tuple[Head, Head]] = []
    if edges and len(best) > 1:
        tell("edges", 0, 1)
        edge_effects = _edge_effects(model, task, prompts, reference, best, circuit_score, full, empty,
                                     max_rows)
        edge_list = [((e["sender"][0], e["sender"][1]), (e["receiver"][0], e["receiver"][1]))
                     for e in edge_effects if e["normalized_drop"] >= edge_threshold]
        lap("edges")

    search = {
        "full": full, "empty": empty,
        "backward_elimination": None if backward is None else [list(h) for h in sorted(backward)],
        "forward_selection_prefix": len(forward_raw),
        "forward_selection_pruned": [list(h) for h in sorted(forward)],
        "minimality_pool": [list(h) for h in pool],
        "minimality_sizes_checked": checked,
        "head_sets_scored": scorer.n_evaluated,
        "forward_passes": scorer.passes.forward,
        "seconds": time.perf_counter() - started,
        "stage_seconds": stage_seconds,
        "passes_note": "forward passes over the prompts (reference pass included; a head set run from "
                       "layer s of L counts (L - s) / L: the intact or all-ablated model's residual stream "
                       "below s is reused; edges not counted)",
    }
    method = {
        "ablation": ABLATION_NOTES.get(ablation, ablation),
        "ablation_method": ablation, "ablation_seed": seed if ablation == "resample" else None,
        "score": "mean task metric over the positive prompts with every head outside the set ablated",
        "criterion": f"normalized = (S - empty) / (full - empty) >= {threshold} AND ratio = S / full "
                     f">= {threshold}; every member necessary",
        "threshold": threshold,
        "search": ("backward elimination + forward selection from the single-ablation ranking, smaller "
                   "kept, pruned to necessity, then every subset one head smaller drawn from a candidate "
                   "pool scored (repeated while one is valid)") if exhaustive else
                  ("forward selection from the single-ablation ranking (prefixes of 1, 2, 4, ... heads, "
                   "then a search for the first valid prefix), members dropped in one pass from the least "
                   "important while the set stays valid, pruned to necessity, then every subset one "
                   "head smaller drawn from a candidate pool scored (repeated while one is valid); no "
                   f"backward elimination above {backward_max_heads} heads"),
        "pool_size": pool_size, "max_exhaustive": max_exhaustive,
        "n_prompts": len(prompts), "seq_len": prompts.seq_len,
        "edges": (f"direct path a->b (q, k, v inputs) mean-ablated in the circuit-only model; kept when "
                  f"the normalized score drops by >= {edge_threshold}; MLP-mediated paths not separated")
        if edges else "not measured",
        "edge_threshold": edge_threshold if edges else None,
        "normalized_faithfulness": faith.normalized, "ratio": faith.ratio,
        "ranking": "this run's single-head ablations" if given_ranking is None else "given by the caller",
        **(method_notes or {}),
    }
    truth = GroundTruth(heads=tuple(sorted(best)), edges=tuple(sorted(edge_list)), source="ablation",
                        method=method)
    return GroundTruthResult(truth=truth, faithfulness=faith, single_head_effects=single_effects,
                             edge_effects=edge_effects, search=search)


@torch.no_grad()
def _edge_effects(model: HookedTransformer, task: Task, prompts: PromptSet, reference: torch.Tensor,
                  circuit: frozenset[Head], circuit_score: float, full: float, empty: float,
                  max_rows: int) -> list[dict[str, Any]]:
    """Score drop when each direct path a -> b between circuit heads is mean-ablated.

    1. One circuit-only run caches every layer's residual input and head outputs.
    2. For each pair, head b's output is recomputed from its layer's input with a's direct
       contribution swapped for a's mean: x' = resid_pre + (ref_z_a - z_a) @ W_O[a]. Only b sees x';
       every other reader of a sees the real a.
    3. Rows [pair, prompt] run in batched forward passes with b's output replaced (and every head
       outside the circuit mean-ablated, as in the circuit-only model), from b's layer up.
    """
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    keep = torch.zeros(L, H, dtype=torch.bool)
    for layer, h in circuit:
        keep[layer, h] = True
    pairs = [(a, b) for a in sorted(circuit) for b in sorted(circuit) if a[0] < b[0]]
    if not pairs:
        return []
    n = len(prompts)
    resid: dict[int, torch.Tensor] = {}
    z_real: dict[int, torch.Tensor] = {}

    def ablate_and_keep(z: torch.Tensor, hook: Any) -> torch.Tensor:  # z: [n, seq, head, d_head]
        z = torch.where(keep[hook.layer()][None, None, :, None], z, reference[hook.layer()][None].to(z.dtype))
        z_real[hook.layer()] = z
        return z

    def save_resid(x: torch.Tensor, hook: Any) -> None:
        resid[hook.layer()] = x

    model.run_with_hooks(prompts.positive, stop_at_layer=L,
                         fwd_hooks=[(z_hook(layer), ablate_and_keep) for layer in range(L)]
                         + [(f"blocks.{layer}.hook_resid_pre", save_resid) for layer in range(L)])
    first_b = pairs[0][1]
    recomputed = _head_z(model, first_b, resid[first_b[0]])
    if not torch.allclose(recomputed, z_real[first_b[0]][:, :, first_b[1]], atol=1e-4, rtol=1e-3):
        raise RuntimeError("recomputing a head's output from its layer input does not reproduce the "
                           "model's (unsupported attention variant): edges cannot be measured")
    new_z = []  # per pair: [n, seq, d_head]
    for a, b in pairs:
        w_o = model.blocks[a[0]].attn.W_O[a[1]]  # [d_head, d_model]
        delta = (reference[a[0], :, a[1]][None] - z_real[a[0]][:, :, a[1]]) @ w_o  # [n, seq, d_model]
        new_z.append(_head_z(model, b, resid[b[0]] + delta))
    per_pass = max(1, max_rows // n)
    drops = [0.0] * len(pairs)
    # rows start at their receiver's layer from the circuit-only run's residual stream: nothing below it
    # differs from that run
    chunks: list[list[int]] = []
    for layer in sorted({b[0] for _, b in pairs}):
        same = [i for i, (_, b) in enumerate(pairs) if b[0] == layer]
        chunks += [same[i:i + per_pass] for i in range(0, len(same), per_pass)]
    for group in chunks:
        m, first = len(group), pairs[group[0]][1][0]

        def patch(z: torch.Tensor, hook: Any, group: list[int] = group) -> torch.Tensor:
            layer = hook.layer()
            z = torch.where(keep[layer][None, None, :, None], z, reference[layer][None].to(z.dtype))
            for j, idx in enumerate(group):
                b = pairs[idx][1]
                if b[0] == layer:
                    z[j * n:(j + 1) * n, :, b[1]] = new_z[idx]
            return z

        logits = final_logits(model, resid[first].repeat(m, 1, 1),  # [m*n, seq, d_model]
                              [(z_hook(layer), patch) for layer in range(first, L)],
                              start_at_layer=first)  # [m*n, vocab]
        repeated = prompts.subset(list(range(n)) * m) if m > 1 else prompts
        group_drops = circuit_score - task.metric(logits, repeated).float().reshape(m, n).mean(1)  # [m]
        for i, d in zip(group, group_drops.tolist(), strict=True):
            drops[i] = d
    return [{"sender": list(a), "receiver": list(b), "drop": d, "normalized_drop": d / (full - empty)}
            for (a, b), d in zip(pairs, drops, strict=True)]


def _head_z(model: HookedTransformer, head: Head, resid_pre: torch.Tensor) -> torch.Tensor:
    """Head `head`'s hook_z output [n, seq, d_head] when its layer's residual input is `resid_pre`."""
    layer, h = head
    block = model.blocks[layer]
    out: list[torch.Tensor] = []

    def grab(z: torch.Tensor, hook: Any) -> None:
        out.append(z[:, :, h].clone())

    x = block.ln1(resid_pre)
    with model.hooks(fwd_hooks=[(z_hook(layer), grab)]):
        block.attn(query_input=x, key_input=x, value_input=x)
    return out[0]
