"""The fast ablation ground-truth search: the same validity criterion as `circuits.zoo.ground_truth`,
with every step scored as a batch of head sets (many masks per forward pass).

Why: on a 270-head model the reference search's pruning scores one head set per step (|S|^2 / 2 sets to
prune a set of |S|) and its edges rerun the whole model per pair; at 40 prompts a task took hours here.

Procedure (recorded in `GroundTruth.method`):
1. full = score(all heads), empty = score(no heads); S is valid when (S - empty) / (full - empty) and
   S / full are both >= threshold (as in `circuits.zoo.ground_truth`).
2. Single-head table: every "all heads but h" set in batches, each started at h's layer from the intact
   run's cached residual stream (skipped when a ranking is given).
3. The shortest valid prefix of the ranking (largest single-head drop first): prefixes of 1, 2, 4, ...
   heads in one batch, then 7 evenly spaced prefixes per batch between the last invalid and the first
   valid one.
4. Batched backward greedy: score every leave-one-out set of S in one batch; order the members by the
   score without them (least needed first); score S minus the first k of them for k = 1..`batch`, then
   2 batch, 4 batch, ... below |S|, in one batch and keep the largest valid k. Repeat until no single
   removal keeps S valid: then every member is necessary (the last batch of leave-one-outs proves it).
   While |S| > `lazy_above` (64), a round first tries the next members of the last order and scores new
   leave-one-outs only when none of those removals is valid (`backward_greedy`).
5. Minimality check (as the reference search): every subset one head smaller of a pool (S plus the
   ranking's top heads up to `pool_size`) is scored when there are at most `max_exhaustive`; a valid one
   replaces S (step 4 again) and the check repeats.
6. Edges (optional, mean or zero ablation; refused where attention output is normalised before the
   residual stream, as in Gemma: a head's write is not linear there): `ground_truth._edge_effects`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

from circuits._compat import HookedTransformer
from circuits.ablation import AblationMethod, Faithfulness
from circuits.errors import CircuitsError
from circuits.progress import Progress
from circuits.zoo.ground_truth import (
    ABLATION_NOTES,
    GroundTruthResult,
    _edge_effects,
    _first_valid_prefix,
    _Scorer,
    _start_search,
)
from circuits.zoo.train import torch_threads
from tasks.base import GroundTruth, Head, PromptSet, Task

SEARCH_NOTE = ("single-head ablation table (batched); shortest valid prefix of its ranking (batched probes); "
               "batched backward greedy (all leave-one-out sets of S in one batch, then S minus its k least "
               "needed members for k = 1..batch, 2 batch, 4 batch, ... < |S| in one batch, largest valid k "
               "kept; repeated until every member is necessary; while |S| > lazy_above a round first "
               "removes along the last leave-one-out order and scores new leave-one-outs only when that "
               "fails); then every subset one head smaller drawn "
               "from a candidate pool scored (repeated while one is valid)")


def removal_sizes(n_members: int, batch: int) -> list[int]:
    """How many of the least needed members one round tries to remove at once: 1..batch, then doubling
    (2 batch, 4 batch, ...) below n_members, so a long valid prefix shrinks in a few rounds, not n / batch."""
    ks = list(range(1, min(batch, n_members) + 1))
    while ks[-1] * 2 < n_members:
        ks.append(ks[-1] * 2)
    return ks


# above this many members a round may reuse the last leave-one-out order instead of scoring |S| new sets
LAZY_ABOVE = 64


def backward_greedy(scorer: _Scorer, heads: frozenset[Head], valid: Callable[[float], bool], batch: int,
                    lazy_above: int = LAZY_ABOVE) -> tuple[frozenset[Head], int]:
    """Step 4: remove members in batched rounds until each is necessary -> (set, rounds). Both batches of a
    round continue S's own run from the first removed head's layer (about half a pass per set).

    Lazy order: while |S| > lazy_above, a round first tries removing the next least-needed members of the
    last leave-one-out order (one batch of removal sizes, no new leave-one-outs); only when none of those
    removals is valid does it score every leave-one-out set afresh. Why: on a long valid prefix (246 heads
    of SmolLM2 under resample ablation) the leave-one-out batches are most of the search. From lazy_above
    down every round scores its leave-one-outs, so the result still ends with every member necessary.
    """
    rounds = 0
    stale: list[Head] = []  # least needed first, from the last leave-one-out batch; members of S only
    while heads:
        rounds += 1
        if len(heads) > lazy_above and stale:
            k = _largest_valid_removal(scorer, heads, stale, valid, batch, first_known_valid=False)
            if k:
                heads, stale = heads - set(stale[:k]), stale[k:]
                continue
        members = sorted(heads)
        loo = scorer([heads - {h} for h in members], near=heads)
        order = [members[i] for i in sorted(range(len(members)), key=lambda i: (-loo[i], i))]  # least needed
        if not valid(max(loo)):  # even the least needed member is necessary
            break
        # k = 1 is valid: its set was just scored as a leave-one-out
        k = _largest_valid_removal(scorer, heads, order, valid, batch, first_known_valid=True)
        heads, stale = heads - set(order[:k]), order[k:]
    return heads, rounds


def _largest_valid_removal(scorer: _Scorer, heads: frozenset[Head], order: list[Head],
                           valid: Callable[[float], bool], batch: int, first_known_valid: bool) -> int:
    """How many of `order`'s first members (least needed first) S can lose at once and stay valid, trying
    every `removal_sizes` in one batch -> the largest valid k, 0 when none is."""
    ks = removal_sizes(len(order), batch)
    scores = scorer([heads - set(order[:k]) for k in ks], near=heads)
    return max((k for k, sc in zip(ks, scores, strict=True) if valid(sc) or (k == 1 and first_known_valid)),
               default=0)


def post_attention_norm(model: HookedTransformer) -> bool:
    """Whether attention output is normalised before the residual stream (Gemma): a head's write is then
    not the linear z @ W_O that the edge measurement swaps."""
    return bool(getattr(model.cfg, "use_normalization_before_and_after", False))


def greedy_ground_truth(model: HookedTransformer, task: Task, prompts: PromptSet, threshold: float = 0.9,
                        pool_size: int = 12, max_exhaustive: int = 100, edges: bool = True,
                        edge_threshold: float = 0.02, max_rows: int = 1024, batch: int = 8,
                        method_notes: dict[str, Any] | None = None, progress: Progress | None = None,
                        threads: int | None = 1, ablation: AblationMethod = "mean", seed: int = 0,
                        ranking: list[Head] | None = None, lazy_above: int = LAZY_ABOVE
                        ) -> GroundTruthResult:
    """Search a valid head set of `model` on `task` whose every member is necessary (module docstring).

    batch: how many removal sizes one round of the backward greedy tries at once.
    ranking: every head, most important first, instead of this run's single-head table (e.g. the table of
    a search on the same prompts under another ablation).
    lazy_above: above this many members the backward greedy may reuse its last leave-one-out order.
    """
    if edges and ablation not in ("mean", "zero"):
        raise CircuitsError(f"ground-truth edges are measured under mean or zero ablation, not '{ablation}' "
                            f"(pass edges=False)")
    if edges and post_attention_norm(model):
        raise CircuitsError("ground-truth edges add a head's write linearly to the residual stream; this "
                            "model normalises attention output before it joins (Gemma): pass edges=False")
    if batch < 1:
        raise CircuitsError(f"batch must be positive, got {batch}")
    with torch_threads(threads):
        return _search(model, task, prompts, threshold, pool_size, max_exhaustive, edges, edge_threshold,
                       max_rows, batch, method_notes, progress, ablation, seed, ranking, lazy_above)


def _search(model: HookedTransformer, task: Task, prompts: PromptSet, threshold: float, pool_size: int,
            max_exhaustive: int, edges: bool, edge_threshold: float, max_rows: int, batch: int,
            method_notes: dict[str, Any] | None, progress: Progress | None, ablation: AblationMethod,
            seed: int, given_ranking: list[Head] | None, lazy_above: int) -> GroundTruthResult:
    started, cpu_started = time.perf_counter(), time.process_time()
    stage_seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        stage_seconds[stage] = time.perf_counter() - started - sum(stage_seconds.values())
        if progress is not None:
            progress(stage, 1, 1)

    every, reference, scorer, full, empty = _start_search(model, task, prompts, ablation, seed, max_rows)

    def valid(score: float) -> bool:
        return (score - empty) / (full - empty) >= threshold and score / full >= threshold

    heads = sorted(every)
    single_effects: list[dict[str, Any]] = []
    if given_ranking is not None:
        ranking = [(int(layer), int(h)) for layer, h in given_ranking]
        if sorted(ranking) != heads:
            raise CircuitsError("a given ranking must list every head of the model exactly once")
    else:
        singles = scorer([every - {h} for h in heads])
        single_effects = [{"layer": layer, "head": h, "score_when_ablated": s, "drop": full - s,
                           "normalized_drop": (full - s) / (full - empty)}
                          for (layer, h), s in zip(heads, singles, strict=True)]
        ranking = [heads[i] for i in sorted(range(len(heads)), key=lambda i: (-(full - singles[i]), i))]
        lap("single-head ablations")

    prefix = _first_valid_prefix(scorer, ranking, valid, every_prefix=False)
    lap("shortest valid prefix")
    best, rounds = backward_greedy(scorer, prefix, valid, batch, lazy_above)
    greedy = best
    lap("backward greedy")

    pool_set = set(best)
    for h in ranking:
        if len(pool_set) >= pool_size:
            break
        pool_set.add(h)
    pool = sorted(pool_set)
    checked: list[int] = []
    while len(best) > 0 and math.comb(len(pool), len(best) - 1) <= max_exhaustive:
        smaller = [frozenset(c) for c in itertools.combinations(pool, len(best) - 1)]
        scores = scorer(smaller)
        checked.append(len(best) - 1)
        ok = [i for i, s in enumerate(smaller) if valid(scores[i])]
        if not ok:
            break
        best, more = backward_greedy(scorer, smaller[max(ok, key=lambda i: (scores[i], -i))], valid, batch,
                                     lazy_above)
        rounds += more
    lap("minimality check")

    circuit_score = scorer([best])[0]
    faith = Faithfulness(full=full, empty=empty, circuit=circuit_score, method=ablation)
    edge_effects: list[dict[str, Any]] = []
    edge_list: list[tuple[Head, Head]] = []
    if edges and len(best) > 1:
        edge_effects = _edge_effects(model, task, prompts, reference, best, circuit_score, full, empty,
                                     max_rows)
        edge_list = [((e["sender"][0], e["sender"][1]), (e["receiver"][0], e["receiver"][1]))
                     for e in edge_effects if e["normalized_drop"] >= edge_threshold]
        lap("edges")

    search = {
        "full": full, "empty": empty, "algorithm": "batched greedy (circuits.zoo.greedy_truth)",
        "shortest_valid_prefix": len(prefix), "greedy_rounds": rounds,
        "backward_greedy": [list(h) for h in sorted(greedy)],
        "minimality_pool": [list(h) for h in pool], "minimality_sizes_checked": checked,
        "head_sets_scored": scorer.n_evaluated, "forward_passes": scorer.passes.forward,
        "seconds": time.perf_counter() - started, "stage_seconds": stage_seconds,
        # this process's CPU time: on a shared machine the wall clock also counts other jobs' share
        "cpu_seconds": time.process_time() - cpu_started,
        "passes_note": "forward passes over the prompts (reference pass included; a head set run from "
                       "layer s of L counts (L - s) / L; edges not counted)",
    }
    method = {
        "ablation": ABLATION_NOTES.get(ablation, ablation),
        "ablation_method": ablation, "ablation_seed": seed if ablation == "resample" else None,
        "score": "mean task metric over the positive prompts with every head outside the set ablated",
        "criterion": f"normalized = (S - empty) / (full - empty) >= {threshold} AND ratio = S / full "
                     f">= {threshold}; every member necessary",
        "threshold": threshold, "search": SEARCH_NOTE, "batch": batch, "lazy_above": lazy_above,
        "pool_size": pool_size, "max_exhaustive": max_exhaustive,
        "n_prompts": len(prompts), "seq_len": prompts.seq_len,
        "edges": (f"direct path a->b (q, k, v inputs) mean-ablated in the circuit-only model; kept when "
                  f"the normalized score drops by >= {edge_threshold}; MLP-mediated paths not separated")
        if edges else "not measured",
        "edge_threshold": edge_threshold if edges else None,
        "normalized_faithfulness": faith.normalized, "ratio": faith.ratio,
        "ranking": "this run's single-head ablations" if given_ranking is None else "given by the caller",
        "seconds": search["seconds"], "cpu_seconds": search["cpu_seconds"],
        **(method_notes or {}),
    }
    truth = GroundTruth(heads=tuple(sorted(best)), edges=tuple(sorted(edge_list)), source="ablation",
                        method=method)
    return GroundTruthResult(truth=truth, faithfulness=faith, single_head_effects=single_effects,
                             edge_effects=edge_effects, search=search)
