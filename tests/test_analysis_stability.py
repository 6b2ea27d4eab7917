"""Circuit stability across SAE seeds: Jaccard, inclusion frequency, evaluation spread, the planted toy
model, and `circuits find --seeds N` through typer's runner (JSON, summary, report)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from circuits.analysis.stability import circuit_stability, find_with_seeds, jaccard, jaccard_matrix
from circuits.cli.main import app
from circuits.discovery.config import FindConfig
from circuits.errors import CircuitsError
from circuits.report import build_figures, render_html

runner = CliRunner()
FAST = dict(n_train=10, n_score=40, steps=100, sae="per-head", hook="z")


def test_jaccard_known_values():
    assert jaccard({(0, 1), (1, 2)}, {(0, 1)}) == 0.5
    assert jaccard(set(), set()) == 1.0
    assert jaccard({(0, 0)}, {(1, 1)}) == 0.0
    m = jaccard_matrix([frozenset({(0, 0), (0, 1)}), frozenset({(0, 0)}), frozenset({(1, 1)})])
    assert m.tolist() == [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_circuit_stability_known_answer():
    circuits = [frozenset({(0, 0), (1, 1)}), frozenset({(0, 0)}), frozenset({(0, 0), (1, 0)})]
    scores = [torch.tensor([[3.0, 1.0], [2.0, 0.0]]), torch.tensor([[3.0, 0.0], [1.0, 2.0]]),
              torch.tensor([[3.0, 1.0], [2.0, 0.5]])]
    evals = [{"roc_auc": 1.0, "f1": 0.5}, {"roc_auc": 0.5, "f1": 1.0}, {"roc_auc": 0.75, "f1": 0.5}]
    block = circuit_stability(circuits, scores, evals, seeds=[4, 5, 6])
    expected = torch.tensor([[1.0, 0.0], [1 / 3, 1 / 3]])
    assert torch.allclose(torch.tensor(block["inclusion_frequency"]), expected)
    assert block["jaccard"]["mean"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert block["jaccard"]["min"] == pytest.approx(1 / 3)
    assert block["core_heads"] == [[0, 0]] and block["union_heads"] == [[0, 0], [1, 0], [1, 1]]
    assert block["circuit_size"] == {"mean": pytest.approx(5 / 3), "std": pytest.approx(0.4714, abs=1e-4)}
    assert block["evaluation_mean"]["roc_auc"] == pytest.approx(0.75)
    assert block["evaluation_std"]["roc_auc"] == pytest.approx(0.2041, abs=1e-4)
    assert block["evaluation_mean"]["precision"] is None  # not in the evaluations
    assert [p["seed"] for p in block["per_seed"]] == [4, 5, 6]
    no_truth = circuit_stability(circuits, scores, [None] * 3, seeds=[0, 1, 2])
    assert no_truth["evaluation_mean"] is None


def test_stability_block_is_what_the_report_draws():
    circuits = [frozenset({(0, 1)}), frozenset({(0, 1), (1, 0)})]
    scores = [torch.rand(2, 2), torch.rand(2, 2)]
    block = circuit_stability(circuits, scores, [None, None], seeds=[0, 1])
    payload = {"task": "toy", "model": "m", "n_layers": 2, "n_heads": 2, "config": {}, "timings": {},
               "heads": [{"layer": l, "head": h, "score": 0.0, "in_circuit": (l, h) == (0, 1)}
                         for l in range(2) for h in range(2)], "stability": block}
    keys = [f.key for f in build_figures(payload)]
    assert "stability_inclusion" in keys and "stability_jaccard" in keys
    assert "Stability across SAE seeds" in render_html(payload, [])


def test_planted_circuit_stability(planted):
    """The ranking is perfect for every seed and no silent head ever enters a circuit; the block's
    figures agree with the per-seed circuits it lists."""
    task, loaded, heads = planted
    first, block = find_with_seeds(task, loaded, FindConfig(seed=2, **FAST), n_seeds=3)
    assert block["seeds"] == [2, 3, 4]
    assert first.config.seed == 2
    freq = torch.tensor(block["inclusion_frequency"])
    planted_mask = torch.zeros_like(freq, dtype=torch.bool)
    for layer, head in heads:
        planted_mask[layer, head] = True
        assert freq[layer, head] > 0
    assert freq[~planted_mask].sum() == 0  # no unplanted head in any seed's circuit
    assert block["evaluation_mean"]["roc_auc"] == 1.0 and block["evaluation_std"]["roc_auc"] == 0.0
    circuits = [frozenset(map(tuple, p["circuit"])) for p in block["per_seed"]]
    assert circuits[0] == first.circuit
    assert block["jaccard"]["matrix"] == jaccard_matrix(circuits).tolist()
    expected = torch.zeros_like(freq)
    for c in circuits:
        for layer, head in c:
            expected[layer, head] += 1 / len(circuits)
    assert torch.allclose(freq, expected)
    assert set(map(tuple, block["core_heads"])) == frozenset.intersection(*circuits)


def test_find_with_seeds_refuses_zero(planted):
    task, loaded, _ = planted
    with pytest.raises(CircuitsError):
        find_with_seeds(task, loaded, FindConfig(**FAST), n_seeds=0)


CLI_FAST = ["--n-score", "20", "--steps", "50", "--sae", "per-head", "--hook", "z"]


def test_cli_find_seeds_json_and_summary(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["find", "--task", "ioi", "--model", "random:attn-only-4l", "--seeds", "2",
                                 "--json", "--out", str(out), *CLI_FAST])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    block = payload["stability"]
    assert block["n_seeds"] == 2 and block["seeds"] == [0, 1]
    assert len(block["inclusion_frequency"]) == 4 and len(block["inclusion_frequency"][0]) == 8
    assert block["jaccard"]["matrix"][0][0] == 1.0
    first = {tuple(h) for h in block["per_seed"][0]["circuit"]}
    assert first == {tuple(h) for h in payload["circuit"]}  # the printed circuit is seed 0's
    union = {tuple(h) for p in block["per_seed"] for h in p["circuit"]}
    assert {tuple(h) for h in block["union_heads"]} == union
    assert (out / "stability_inclusion.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "result.json").read_text())["stability"]["n_seeds"] == 2

    # Human summary (from the saved run, rendered without recomputing) shows the stability lines.
    from circuits.cli.common import out as console
    from circuits.cli.find import _render

    with console.capture() as cap:
        _render(payload)
    assert "stability over 2 seeds" in cap.get()


def test_cli_find_seeds_rejects_zero():
    result = runner.invoke(app, ["find", "--task", "ioi", "--model", "random:attn-only-4l", "--seeds", "0",
                                 *CLI_FAST])
    assert result.exit_code == 2
    assert "--seeds" in result.output
