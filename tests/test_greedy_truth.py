"""circuits.zoo.greedy_truth: the batched search finds what a brute force over every head set finds."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import torch
from test_zoo import MajorityTask, planted_model

from circuits.ablation import final_logits, metric_under_masks, reference_z, z_hook
from circuits.errors import CircuitsError
from circuits.models import load_model
from circuits.zoo.greedy_truth import backward_greedy, greedy_ground_truth, removal_sizes
from circuits.zoo.ground_truth import _edge_effects, _head_z, find_ground_truth
from tasks import get_task
from tasks.base import Head


def brute_force(model: Any, task: Any, prompts: Any, ablation: str, threshold: float = 0.9
                ) -> set[frozenset[Head]]:
    """Every smallest valid head set, each of the 2^heads sets scored."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    heads = [(layer, h) for layer in range(L) for h in range(H)]
    sets = [frozenset(c) for k in range(len(heads) + 1) for c in itertools.combinations(heads, k)]
    keep = torch.zeros(len(sets), L, H, dtype=torch.bool)
    for i, s in enumerate(sets):
        for layer, h in s:
            keep[i, layer, h] = True
    scores = metric_under_masks(model, task, prompts, keep, reference_z(model, prompts, ablation, 3),
                                reuse_prefix=False).float().mean(1)  # [sets]
    full, empty = float(scores[-1]), float(scores[0])
    ok = [s for s, v in zip(sets, scores.tolist(), strict=True)
          if (v - empty) / (full - empty) >= threshold and v / full >= threshold]
    smallest = min(len(s) for s in ok)
    return {s for s in ok if len(s) == smallest}


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_greedy_finds_the_brute_force_smallest_circuit(ablation: str) -> None:
    model, task = planted_model(), MajorityTask()
    prompts = task.prompts(None, 48, seed=1)
    want = brute_force(model, task, prompts, ablation)
    got = greedy_ground_truth(model, task, prompts, edges=False, ablation=ablation, seed=3, batch=3)
    assert len(want) == 1 and frozenset(got.truth.heads) in want
    assert got.faithfulness.normalized >= 0.9 and got.truth.method["ablation_method"] == ablation
    assert got.search["head_sets_scored"] < 2 ** 8  # far fewer sets than the brute force


def test_backward_greedy_ends_with_every_member_necessary() -> None:
    """On a made-up additive score: removals happen several at a time and stop where each one is needed."""
    weights = {(0, i): w for i, w in enumerate([5.0, 3.0, 0.1, 0.1, 0.1, 0.2, 0.05, 1.0])}
    calls: list[int] = []

    def scorer(sets: list[frozenset[Head]], near: frozenset[Head] | None = None) -> list[float]:
        calls.append(len(sets))
        return [sum(weights[h] for h in s) for s in sets]

    total = sum(weights.values())
    kept, rounds = backward_greedy(scorer, frozenset(weights), lambda s: s >= 0.85 * total,  # type: ignore[arg-type]
                                   batch=4)
    assert kept == {(0, 0), (0, 1), (0, 7)}
    assert all(scorer([kept - {h}])[0] < 0.85 * total for h in kept)
    assert rounds <= 3 and max(calls) > 1  # batches, not one set per call


def test_a_long_prefix_of_unneeded_heads_goes_in_a_few_rounds() -> None:
    """Removal sizes double past `batch`: 200 heads of which 5 matter shrink in O(log) rounds, not 200 / 8."""
    assert removal_sizes(3, 8) == [1, 2, 3]
    assert removal_sizes(100, 8) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64]
    weights = {(0, i): (10.0 if i < 5 else 0.001) for i in range(200)}

    def scorer(sets: list[frozenset[Head]], near: frozenset[Head] | None = None) -> list[float]:
        return [sum(weights[h] for h in s) for s in sets]

    kept, rounds = backward_greedy(scorer, frozenset(weights), lambda s: s >= 0.9 * 50.2,  # type: ignore[arg-type]
                                   batch=8)
    assert kept == {(0, i) for i in range(5)} and rounds <= 8


def test_greedy_agrees_with_the_reference_search_on_a_trained_model() -> None:
    loaded = load_model("tiny-greaterthan")
    task = get_task("greaterthan")
    prompts = task.prompts(loaded.tokenizer, 32, seed=5)
    ref = find_ground_truth(loaded.model, task, prompts, edges=False)
    got = greedy_ground_truth(loaded.model, task, prompts, edges=False)
    assert got.truth.heads == ref.truth.heads
    assert got.search["head_sets_scored"] <= ref.search["head_sets_scored"]


def test_edge_effects_started_at_the_receiver_match_a_full_run() -> None:
    """Edges start at the receiver's layer from the circuit-only run; a from-scratch run with the same
    patch gives the same drops."""
    loaded = load_model("tiny-ioi")
    model, task = loaded.model, get_task("ioi")
    prompts = task.prompts(loaded.tokenizer, 12, seed=4)
    circuit = frozenset(loaded.ground_truth["ioi"].heads)
    reference = reference_z(model, prompts, "mean")  # [layer, seq, head, d_head]
    L, H = model.cfg.n_layers, model.cfg.n_heads
    keep = torch.zeros(L, H, dtype=torch.bool)
    for layer, h in circuit:
        keep[layer, h] = True
    ablate = [(z_hook(layer), lambda z, hook: torch.where(keep[hook.layer()][None, None, :, None], z,
                                                          reference[hook.layer()][None]))
              for layer in range(L)]
    with torch.no_grad():
        score = float(task.metric(final_logits(model, prompts.positive, ablate), prompts).float().mean())
        effects = _edge_effects(model, task, prompts, reference, circuit, score, 1.0, 0.0, max_rows=40)
        assert len(effects) > 3
        for e in effects[:: max(1, len(effects) // 4)]:
            drop = _drop_from_scratch(model, task, prompts, reference, keep, ablate, score,
                                      tuple(e["sender"]), tuple(e["receiver"]))
            assert e["drop"] == pytest.approx(drop, abs=1e-4)


def _drop_from_scratch(model: Any, task: Any, prompts: Any, reference: torch.Tensor, keep: torch.Tensor,
                       ablate: list[Any], score: float, a: Head, b: Head) -> float:
    """The old way: the whole model rerun with b's output recomputed from a swapped contribution of a."""
    z_a: dict[int, torch.Tensor] = {}
    resid: dict[int, torch.Tensor] = {}

    def grab_a(z: torch.Tensor, hook: Any) -> None:  # returns None: the run itself is not changed
        z_a[0] = z[:, :, a[1]].clone()

    def grab_resid(x: torch.Tensor, hook: Any) -> None:
        resid[0] = x.clone()

    model.run_with_hooks(prompts.positive, fwd_hooks=ablate + [
        (z_hook(a[0]), grab_a), (f"blocks.{b[0]}.hook_resid_pre", grab_resid)])
    delta = (reference[a[0], :, a[1]][None] - z_a[0]) @ model.blocks[a[0]].attn.W_O[a[1]]
    new_b = _head_z(model, b, resid[0] + delta)

    def patch(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = torch.where(keep[hook.layer()][None, None, :, None], z, reference[hook.layer()][None])
        if hook.layer() == b[0]:
            z = z.clone()
            z[:, :, b[1]] = new_b
        return z

    full_run = final_logits(model, prompts.positive, [(z_hook(layer), patch) for layer in range(len(keep))])
    return score - float(task.metric(full_run, prompts).float().mean())


def test_bad_arguments_are_one_line() -> None:
    model, task = planted_model(), MajorityTask()
    prompts = task.prompts(None, 8, seed=0)
    with pytest.raises(CircuitsError, match="edges"):
        greedy_ground_truth(model, task, prompts, ablation="resample")
    with pytest.raises(CircuitsError, match="batch"):
        greedy_ground_truth(model, task, prompts, batch=0)
    with pytest.raises(CircuitsError, match="every head"):
        greedy_ground_truth(model, task, prompts, edges=False, ranking=[(0, 0)])


def test_edges_are_refused_where_attention_output_is_normalised() -> None:
    from conftest import ToyTask
    from gemma_tiny import tiny_gemma_tl

    task = ToyTask()
    tok = task.word_tokenizer()
    model = tiny_gemma_tl(tok.vocab_size)
    with pytest.raises(CircuitsError, match="edges=False"):
        greedy_ground_truth(model, task, task.prompts(tok, 8, seed=0), edges=True)


def test_lazy_order_scores_fewer_sets_for_the_same_circuit() -> None:
    """Above lazy_above the greedy reuses its last leave-one-out order: on an additive score (where that order
    never goes stale) it keeps the same set as fresh orders every round, scoring fewer sets."""
    rng = random.Random(0)
    weights = {(0, i): (5.0 + rng.random() if i < 40 else 0.1 + 0.01 * rng.random()) for i in range(300)}
    total = sum(weights.values())
    scored: dict[int, int] = {}

    def run(lazy_above: int) -> frozenset[Head]:
        def scorer(sets: list[frozenset[Head]], near: frozenset[Head] | None = None) -> list[float]:
            scored[lazy_above] = scored.get(lazy_above, 0) + len(sets)
            return [sum(weights[h] for h in s) for s in sets]

        kept, _ = backward_greedy(scorer, frozenset(weights), lambda s: s >= 0.9 * total,  # type: ignore[arg-type]
                                  batch=4, lazy_above=lazy_above)
        return kept

    assert run(64) == run(10 ** 9)
    assert scored[64] < scored[10 ** 9]


def test_lazy_order_that_goes_stale_still_ends_with_every_member_necessary() -> None:
    """With interactions the reused order is wrong; the greedy falls back to fresh leave-one-outs."""
    rng = random.Random(1)
    heads = [(0, i) for i in range(120)]
    weights = {h: rng.random() for h in heads}
    pairs = {(rng.choice(heads), rng.choice(heads)): 3 * rng.random() for _ in range(200)}

    def score(s: frozenset[Head]) -> float:
        return sum(weights[h] for h in s) + sum(v for (a, b), v in pairs.items() if a in s and b in s)

    def scorer(sets: list[frozenset[Head]], near: frozenset[Head] | None = None) -> list[float]:
        return [score(s) for s in sets]

    def valid(x: float) -> bool:
        return x >= 0.8 * score(frozenset(heads))

    kept, _ = backward_greedy(scorer, frozenset(heads), valid, batch=4, lazy_above=8)  # type: ignore[arg-type]
    assert valid(score(kept)) and all(not valid(score(kept - {h})) for h in kept)
