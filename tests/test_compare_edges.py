"""compare at edge level: every method gets edge CPR / CMD on the residual-stream graph, and ACDC says how far
it searched."""

from __future__ import annotations

import pytest
from test_compare import FAST_FIND

from circuits.compare import CompareConfig, compare_methods
from circuits.edges.graph import ComputeGraph
from circuits.errors import CircuitsError


def test_every_method_gets_edge_cpr_cmd_and_bounded_acdc_is_labelled(planted):
    task, loaded, _ = planted
    n_edges = ComputeGraph.of(loaded.model).n_edges
    config = CompareConfig(methods=("eap", "patching-mean", "acdc"), seeds=1, find=FAST_FIND, acdc_prompts=8,
                           acdc_edges=6, mib_prompts=8, mib_random=2)
    report = compare_methods(task, loaded, config)
    edge = report["edge_mib"]
    assert edge["n_edges"] == n_edges and set(edge["random"]) == {"counterfactual", "mean"}
    methods = report["methods"]
    assert methods["eap"]["edge_scores_from"] == "edges" and methods["acdc"]["edge_scores_from"] == "edges"
    assert methods["patching-mean"]["edge_scores_from"] == "node-derived"
    for m in methods.values():
        for key in ("edge_cpr_counterfactual", "edge_cmd_counterfactual", "edge_cpr_mean", "edge_cmd_mean"):
            assert m[key] is not None and m[key]["mean"] == pytest.approx(m["runs"][0][
                f"edge_mib_{key.split('_')[-1]}"][key.split("_")[1]])
    acdc = methods["acdc"]
    details = acdc["runs"][0]["details"]
    assert details["bounded"] and details["candidate_edges"] >= 6 and details["tested_edges"] <= \
        details["candidate_edges"] < n_edges
    assert acdc["label"].startswith("ACDC (bounded: top") and f"of {n_edges} edges" in acdc["label"]
    # every edge kept (p = 1) is the full model whatever the ranking
    for scored in edge["interventions"]["counterfactual"]["rankings"].values():
        assert scored["faithfulness"][-1] == pytest.approx(1.0)


def test_unbounded_acdc_and_edge_level_off(planted):
    task, loaded, _ = planted
    config = CompareConfig(methods=("acdc",), seeds=1, find=FAST_FIND, acdc_prompts=4, acdc_edges=0,
                           mib_prompts=4, mib_random=0, edge_mib=False)
    report = compare_methods(task, loaded, config)
    assert report["edge_mib"] is None and "edge_cpr_counterfactual" not in report["methods"]["acdc"]
    assert report["methods"]["acdc"]["label"] == "ACDC"
    assert not report["methods"]["acdc"]["runs"][0]["details"]["bounded"]


@pytest.mark.parametrize("field, value, message", [("acdc_edges", -1, "--acdc-edges"),
                                                   ("acdc_budget", 0.0, "--acdc-budget")])
def test_bad_acdc_bounds_are_one_line_errors(field, value, message):
    with pytest.raises(CircuitsError, match=message):
        CompareConfig(methods=("acdc",), **{field: value}).validate()


@pytest.mark.parametrize("field, value, message", [("prune_steps", -1, "--prune-steps"),
                                                   ("prune_target", 0.0, "--prune-target"),
                                                   ("prune_objective", "best", "--prune-objective"),
                                                   ("prune_init", "eap", "--prune-init"),
                                                   ("prune_lr", float("nan"), "--prune-lr")])
def test_bad_edge_prune_options_are_one_line_errors(field, value, message):
    with pytest.raises(CircuitsError, match=message):
        CompareConfig(methods=("edge-prune",), **{field: value}).validate()


def test_edge_prune_options_reach_the_method(planted):
    task, loaded, _ = planted
    config = CompareConfig(methods=("edge-prune",), seeds=1, find=FAST_FIND, mib_prompts=4, mib_random=0,
                           edge_mib=False, prune_steps=3, prune_target=5, prune_objective="raise",
                           prune_init="zeros", prune_lr=0.05)
    details = compare_methods(task, loaded, config)["methods"]["edge-prune"]["runs"][0]["details"]
    assert (details["steps"], details["objective"], details["init"], details["target_edges"], details["lr"]) \
        == (3, "raise", "zeros", 5, 0.05)


def test_eval_seed_scores_cpr_on_prompts_no_method_fitted_on(planted):
    from circuits.compare import _mib_prompts

    task, loaded, _ = planted
    tok = loaded.tokenizer
    config = CompareConfig(methods=("eap", "edge-prune"), seeds=1, find=FAST_FIND, mib_prompts=8,
                           mib_random=0, eval_seed=123, prune_steps=2)
    held = _mib_prompts(task, loaded, config)
    fitted = task.prompts(tok, FAST_FIND.n_train + FAST_FIND.n_score, FAST_FIND.seed)
    pruned_on = task.prompts(tok, 64, FAST_FIND.seed + 10_000)
    assert 0 < len(held) <= 8
    for other in (fitted, pruned_on):
        assert held.without(other)[1] == 0  # nothing a method saw
    default = _mib_prompts(task, loaded, CompareConfig(methods=("eap",), find=FAST_FIND, mib_prompts=8))
    assert default.without(fitted)[1] == len(default)  # without it: the scoring prompts themselves
    report = compare_methods(task, loaded, config)
    assert "held-out prompts drawn with seed 123" in report["notes"]["mib"]
    with pytest.raises(CircuitsError, match="--eval-seed"):  # the fitting seed itself leaves nothing
        _mib_prompts(task, loaded, CompareConfig(methods=("eap",), find=FAST_FIND, mib_prompts=8,
                                                 eval_seed=FAST_FIND.seed))


def test_prompt_sets_without_the_pairs_of_another(toy_task):
    tok = toy_task.word_tokenizer()
    a, b = toy_task.prompts(tok, 12, seed=0), toy_task.prompts(tok, 12, seed=1)
    kept, dropped = a.without(a.subset([0, 3]))
    assert dropped >= 2 and len(kept) == len(a) - dropped
    seen = {tuple(r) for r in a.positive[[0, 3]].tolist()} | {tuple(r) for r in a.negative[[0, 3]].tolist()}
    assert not any(tuple(r) in seen for r in kept.positive.tolist() + kept.negative.tolist())
    assert a.without(a)[0].positive.shape[0] == 0
    assert len(a.without(b)[0]) + a.without(b)[1] == len(a)
