"""Edge-level CPR/CMD: top-k selection, path pruning and the faithfulness curve against brute force."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from conftest import ToyTask
from test_baselines import float64_model
from test_edge_patching import brute_force_logits

from circuits.edges.graph import ComputeGraph, node_derived_edge_scores
from circuits.errors import CircuitsError
from circuits.evaluation.edge_mib import edge_mib_scores, prune_to_paths, top_edge_masks
from circuits.evaluation.mib import areas, grid_sizes


def test_pruning_keeps_exactly_the_edges_on_input_to_logits_paths():
    graph = ComputeGraph(3, 2, True)
    gen = torch.Generator().manual_seed(0)
    keep = torch.rand(20, graph.n_senders, graph.n_receivers, generator=gen) < 0.15
    got = prune_to_paths(graph, keep)
    for g in range(keep.shape[0]):
        dg = nx.DiGraph()
        names = graph.node_names
        dg.add_nodes_from(names)
        for s, r in (keep[g] & graph.valid).nonzero().tolist():
            dg.add_edge(graph.sender_names[s], graph.receiver_names[r])
        from_input = nx.descendants(dg, "input") | {"input"}
        to_logits = nx.ancestors(dg, "logits") | {"logits"}
        want = torch.zeros_like(keep[g])
        for s, r in (keep[g] & graph.valid).nonzero().tolist():
            want[s, r] = graph.sender_names[s] in from_input and graph.receiver_names[r] in to_logits
        assert torch.equal(got[g], want)
    assert got.sum() < (keep & graph.valid).sum()  # something was pruned: the test is not vacuous


def test_top_masks_follow_the_ranking_with_ties_in_edge_order():
    graph = ComputeGraph(2, 2, False)
    scores = torch.zeros(graph.n_senders, graph.n_receivers)
    first, second = graph.edge_index[3].tolist(), graph.edge_index[1].tolist()
    scores[first[0], first[1]] = 2.0
    scores[second[0], second[1]] = 1.0
    masks = top_edge_masks(graph, scores, [0, 1, 2, 3, graph.n_edges])
    assert masks.sum((1, 2)).tolist() == [0, 1, 2, 3, graph.n_edges]
    assert masks[1, first[0], first[1]] and masks[2, second[0], second[1]]
    third = graph.edge_index[0].tolist()  # ties (all zero) break by edge order
    assert masks[3, third[0], third[1]]
    assert not masks[:, ~graph.valid].any()


@pytest.mark.parametrize("attn_only", [True, False])
def test_edge_cpr_equals_brute_force_faithfulness(attn_only):
    task = ToyTask()
    tok = task.word_tokenizer()
    prompts = task.prompts(tok, 6, seed=0)
    model = float64_model(tok.vocab_size, n_layers=2, n_heads=2, attn_only=attn_only)
    graph = ComputeGraph.of(model)
    gen = torch.Generator().manual_seed(4)
    scores = torch.rand(graph.n_senders, graph.n_receivers, generator=gen)
    signed = scores - 0.5
    grid = (0.1, 0.3, 0.6, 1.0)
    report = edge_mib_scores(model, task, prompts, {"m": scores}, {"m": signed}, ("counterfactual",), grid,
                             n_random=2, seed=0)
    res = report["interventions"]["counterfactual"]

    def brute(keep: torch.Tensor) -> float:
        return float(task.metric(brute_force_logits(model, prompts, ~keep), prompts).mean())

    full, empty = brute(torch.ones_like(graph.valid)), brute(torch.zeros_like(graph.valid))
    assert res["full"] == pytest.approx(full, abs=1e-9) and res["empty"] == pytest.approx(empty, abs=1e-9)
    sizes = grid_sizes(graph.n_edges, grid)
    for key, ranking in (("faithfulness", scores), ("faithfulness_signed", signed)):
        masks = prune_to_paths(graph, top_edge_masks(graph, ranking, sizes))
        want = [(brute(k) - empty) / (full - empty) for k in masks]
        assert res["rankings"]["m"][key] == pytest.approx(want, abs=1e-9)
    entry = res["rankings"]["m"]
    assert entry["cpr"] == pytest.approx(areas(entry["faithfulness_signed"], grid)[0])
    assert entry["cmd"] == pytest.approx(areas(entry["faithfulness"], grid)[1])
    assert entry["faithfulness"][-1] == pytest.approx(1.0)
    assert len(res["rankings"]["random"]["draws"]) == 2


def test_planted_heads_rank_above_random(planted):
    task, loaded, heads = planted
    prompts = task.prompts(loaded.tokenizer, 8, seed=0)
    graph = ComputeGraph.of(loaded.model)
    node = torch.zeros(graph.n_layers, graph.n_heads)
    for h in heads:
        node[h] = 1.0
    report = edge_mib_scores(loaded.model, task, prompts, {"planted": node_derived_edge_scores(graph, node)},
                             interventions=("counterfactual",), n_random=3)
    res = report["interventions"]["counterfactual"]["rankings"]
    assert res["planted"]["cpr"] > res["random"]["cpr"] + 0.1
    assert res["planted"]["cmd"] < res["random"]["cmd"]


def test_bad_rankings_are_refused(planted):
    task, loaded, _ = planted
    prompts = task.prompts(loaded.tokenizer, 4, seed=0)
    with pytest.raises(CircuitsError, match="shape"):
        edge_mib_scores(loaded.model, task, prompts, {"x": torch.zeros(3, 3)})
    graph = ComputeGraph.of(loaded.model)
    ok = torch.zeros(graph.n_senders, graph.n_receivers)
    with pytest.raises(CircuitsError, match="random floor"):
        edge_mib_scores(loaded.model, task, prompts, {"random": ok})
