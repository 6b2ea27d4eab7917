"""circuits.evaluation.bootstrap: the vectorised resamples equal explicit ones, and the intervals reach
CPR / CMD (node and edge level)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ToyTask
from test_baselines import float64_model

from circuits.edges.graph import ComputeGraph
from circuits.evaluation.bootstrap import (
    area_intervals,
    auc_interval,
    interval,
    prompt_weights,
    resampled_faithfulness,
)
from circuits.evaluation.edge_mib import edge_mib_scores
from circuits.evaluation.metrics import _auc
from circuits.evaluation.mib import SIZE_GRID, areas, mib_scores


def test_resampled_areas_equal_an_explicit_loop_over_drawn_prompts() -> None:
    gen = torch.Generator().manual_seed(1)
    g, n = len(SIZE_GRID), 9
    per_prompt = torch.randn(2 + g, n, generator=gen, dtype=torch.float64)
    per_prompt[0] += 5.0  # full well above empty
    faith = resampled_faithfulness(per_prompt, 0, 1, n_resamples=50, seed=3)
    weights = prompt_weights(n, 50, seed=3)
    rows = list(range(2, 2 + g))
    cprs, cmds = [], []
    for b in range(50):
        drawn = np.repeat(np.arange(n), (weights[b] * n).round().long().numpy())  # the prompts drawn
        m = per_prompt[:, drawn].mean(1)
        curve = ((m[2:] - m[1]) / (m[0] - m[1])).tolist()
        cpr, cmd, _ = areas(curve)
        cprs.append(cpr)
        cmds.append(cmd)
        assert faith[b, 2:].tolist() == pytest.approx(curve, abs=1e-12)
    got = area_intervals(faith, SIZE_GRID, [(rows, rows)])
    assert got["cpr_ci"] == pytest.approx(interval(np.array(cprs)), abs=1e-12)
    assert got["cmd_ci"] == pytest.approx(interval(np.array(cmds)), abs=1e-12)
    assert got["cpr_ci"][0] < got["cpr_ci"][1]


def test_identical_prompts_give_a_zero_width_interval() -> None:
    per_prompt = torch.tensor([[4.0] * 6, [1.0] * 6, [2.0] * 6, [3.5] * 6], dtype=torch.float64)
    faith = resampled_faithfulness(per_prompt, 0, 1, n_resamples=20)
    got = area_intervals(faith, (0.5, 1.0), [([2, 3], [2, 3])])
    cpr, cmd, _ = areas([1 / 3, 2.5 / 3], (0.5, 1.0))
    assert got["cpr_ci"] == pytest.approx([cpr, cpr]) and got["cmd_ci"] == pytest.approx([cmd, cmd])


def test_auc_interval_equals_explicit_stratified_resamples() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros(24, dtype=int)
    labels[[1, 5, 9, 17]] = 1
    runs = [torch.from_numpy(rng.normal(size=(4, 6)) + labels.reshape(4, 6)) for _ in range(2)]
    runs[1][0, 0] = runs[1][0, 1]  # a tie
    got = auc_interval(runs, labels, n_resamples=40, seed=7)
    draw = np.random.default_rng(7)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    ip, ineg = draw.integers(0, pos.size, (40, pos.size)), draw.integers(0, neg.size, (40, neg.size))
    means = []
    for b in range(40):
        idx = np.r_[pos[ip[b]], neg[ineg[b]]]
        lab = np.r_[np.ones(pos.size, dtype=int), np.zeros(neg.size, dtype=int)]
        means.append(np.mean([_auc(lab, r.reshape(-1).numpy()[idx]) for r in runs]))
    assert got == pytest.approx(interval(np.array(means)), abs=1e-12)
    assert auc_interval(runs, np.zeros(24, dtype=int)) is None


def test_node_and_edge_cpr_cmd_carry_intervals() -> None:
    task = ToyTask()
    tok = task.word_tokenizer()
    model = float64_model(tok.vocab_size, 2, attn_only=False)
    prompts = task.prompts(tok, 12, seed=0)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    ranks = {"a": torch.arange(L * H, dtype=torch.float).reshape(L, H), "b": torch.rand(L, H)}
    node = mib_scores(model, task, prompts, ranks, n_random=1, n_resamples=200,
                      groups={"one": ["a"], "both": ["a", "b"]})
    assert node["bootstrap"]["n_resamples"] == 200
    for res in node["interventions"].values():
        a = res["rankings"]["a"]
        assert a["cpr_ci"][0] <= a["cpr_ci"][1] and a["cmd_ci"][0] <= a["cmd_ci"][1]
        assert res["groups"]["one"] == {"cpr_ci": a["cpr_ci"], "cmd_ci": a["cmd_ci"]}
        low = min(a["cpr_ci"][0], res["rankings"]["b"]["cpr_ci"][0])
        high = max(a["cpr_ci"][1], res["rankings"]["b"]["cpr_ci"][1])
        assert low <= res["groups"]["both"]["cpr_ci"][0] <= res["groups"]["both"]["cpr_ci"][1] <= high
    off = mib_scores(model, task, prompts, {"a": torch.ones(L, H)}, n_random=0, n_resamples=0)
    assert "cpr_ci" not in off["interventions"]["mean"]["rankings"]["a"]
    graph = ComputeGraph.of(model)
    scores = torch.rand(graph.n_senders, graph.n_receivers, generator=torch.Generator().manual_seed(0))
    edge = edge_mib_scores(model, task, prompts, {"e": scores}, {"e": -scores}, n_random=0, n_resamples=100,
                           groups={"g": ["e"]})
    for res in edge["interventions"].values():
        e = res["rankings"]["e"]
        assert e["cpr_ci"][0] <= e["cpr_ci"][1] and e["cmd_ci"][0] <= e["cmd_ci"][1]
    plain = edge_mib_scores(model, task, prompts, {"e": scores}, n_random=0, n_resamples=100)
    for name, res in edge["interventions"].items():  # CPR's interval follows the signed curve, CMD's not
        e, p = res["rankings"]["e"], plain["interventions"][name]["rankings"]["e"]
        assert e["cmd_ci"] == p["cmd_ci"] and e["cpr_ci"] != p["cpr_ci"]
        assert res["groups"]["g"] == {"cpr_ci": e["cpr_ci"], "cmd_ci": e["cmd_ci"]}


def test_compare_reports_intervals_beside_the_point_estimates(planted, monkeypatch) -> None:
    from test_compare import FAST_FIND

    from circuits.compare import CompareConfig, compare_methods
    from tasks.base import GroundTruth

    task, loaded, heads = planted
    other = GroundTruth(heads=(*sorted(heads), (1, 0)), source="ablation")  # (1, 0) does nothing
    monkeypatch.setattr(loaded, "other_truths", {task.name: {"resample": other}})
    report = compare_methods(task, loaded, CompareConfig(methods=("eap",), seeds=2, find=FAST_FIND,
                                                         mib_prompts=12))
    eap = report["methods"]["eap"]
    assert eap["node_roc_auc"]["ci95"] == pytest.approx([1.0, 1.0])  # planted heads first in any resample
    low, high = eap["node_roc_auc_resample"]["ci95"]
    assert low < eap["node_roc_auc_resample"]["mean"] < 1.0 and high == pytest.approx(1.0)
    for prefix in ("", "edge_"):
        for key in ("cpr", "cmd"):
            for intervention in ("counterfactual", "mean"):
                summary = eap[f"{prefix}{key}_{intervention}"]
                assert len(summary["ci95"]) == 2 and summary["ci95"][0] <= summary["ci95"][1]
    assert "bootstrap" in report["notes"]["ci95"]


def test_the_compare_table_prints_the_interval_under_the_mean() -> None:
    from circuits.cli.compare import _pm

    summary = {"mean": 0.5, "std": 0.1, "values": [0.4, 0.6], "ci95": [0.41, 0.62]}
    assert _pm(summary) == "0.500\n±0.100\n[0.41,0.62]"
    assert _pm({"mean": 0.5, "std": 0.0, "values": [0.5]}) == "0.500"
