"""`circuits find --method KEY`: every registered method gets the same table, exports, report, evaluation."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from test_compare import FAST_FIND
from typer.testing import CliRunner

from circuits.cli.main import app
from circuits.discovery.pipeline import find_circuit, find_circuit_with
from circuits.methods.registry import REGISTRY, MethodInput

FAST = ["--n-score", "20", "--no-check-task"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_find_method_eap_json_on_tiny_ioi():
    res = run("find", "--task", "ioi", "--model", "tiny-ioi", "--method", "eap", "--json", *FAST)
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["method"]["key"] == "eap" and payload["method"]["label"] == "EAP"
    assert payload["method"]["forward_passes"] == pytest.approx(2.0)
    assert payload["method"]["backward_passes"] == pytest.approx(1.0)
    assert len(payload["heads"]) == 32 and payload["circuit"]
    ev = payload["evaluation"]
    assert ev["truth_source"] == "ablation" and 0.0 <= ev["roc_auc"] <= 1.0
    assert ev["edge_roc_auc"] is not None and payload["edges"]  # EAP scores edges
    assert "eap" in payload["timings"] and payload["timings"]["total"] > 0
    table = run("find", "--task", "ioi", "--model", "tiny-ioi", "--method", "eap", *FAST)
    assert table.exit_code == 0 and "by EAP" in table.output and "node ROC AUC" in table.output


def test_find_method_writes_exports_and_report(tmp_path):
    out, report = tmp_path / "run", tmp_path / "report.html"
    res = run("find", "--task", "ioi", "--model", "tiny-ioi", "--method", "actdiff", "--out", str(out),
              "--report", str(report), "--json", *FAST)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["circuit.dot", "circuit.gexf", "circuit.graphml",
                                                     "circuit.json", "result.json"]
    saved = json.loads((out / "result.json").read_text())
    assert saved["method"]["key"] == "actdiff" and saved["edges"] == []  # actdiff scores heads only
    assert saved["heads"] == json.loads(res.stdout)["heads"]
    assert report.read_text().startswith("<!DOCTYPE html>")
    # the saved result is a find result like any other: `circuits evaluate` measures its faithfulness
    ev = run("evaluate", str(out), "--n-prompts", "8", "--n-random", "2", "--json")
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["circuit"]["size"] == len(saved["circuit"])


@pytest.mark.parametrize("args, fragment", [
    (["--method", "hisp"], "unknown method 'hisp'"),
    (["--method", "eap", "--arch", "topk"], "--arch is an option of the discrete-SAE method"),
    (["--method", "eap", "--seeds", "2"], "--seeds is an option of the discrete-SAE method"),
    (["--method", "eap", "--hook", "z"], "--hook is an option of the discrete-SAE method and actdiff"),
    (["--method", "sae-pair", "--score", "mass"], "contradicts --method sae-pair"),
    (["--method", "eap", "--prune-steps", "5"], "--prune-steps is an option of edge-prune and ensemble"),
    (["--method", "edge-prune", "--prune-objective", "best"], "unknown --prune-objective 'best'"),
    (["--method", "ensemble", "--prune-lr", "0"], "--prune-lr must be positive"),
])
def test_bad_method_options_are_one_line_and_exit_2(args, fragment):
    res = run("find", "--task", "ioi", "--model", "tiny-ioi", *args)
    assert res.exit_code == 2, res.output
    assert fragment in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_find_passes_the_prune_options_to_edge_prune():
    res = run("find", "--task", "ioi", "--model", "tiny-ioi", "--method", "edge-prune", "--prune-steps", "2",
              "--prune-lr", "0.05", "--prune-objective", "metric", "--json", *FAST)
    assert res.exit_code == 0, res.output
    details = json.loads(res.stdout)["method"]["details"]
    assert (details["steps"], details["lr"], details["objective"]) == (2, 0.05, "metric")


def test_find_circuit_with_a_baseline_keeps_its_scores_and_selection(planted):
    task, loaded, heads = planted
    result = find_circuit_with(task, loaded, FAST_FIND, "patching-mean")
    run_ = REGISTRY["patching-mean"].run(MethodInput(task=task, loaded=loaded, find=FAST_FIND, seed=0))
    torch.testing.assert_close(result.node_scores, run_.node_scores)
    assert result.circuit == run_.selected == frozenset(heads)
    assert result.evaluation is not None and result.evaluation["roc_auc"] == 1.0
    assert result.evaluation["edge_roc_auc"] is None and result.edge_scores == {}
    assert result.extra["method"]["key"] == "patching-mean"


def test_find_circuit_with_an_sae_variant_is_the_pipeline_with_its_fields(planted):
    task, loaded, _ = planted
    variant = find_circuit_with(task, loaded, FAST_FIND, "sae-pair")
    direct = find_circuit(task, loaded, replace(FAST_FIND, score="pair"))
    assert variant.config.score == "pair"
    torch.testing.assert_close(variant.node_scores, direct.node_scores)
    assert variant.extra["method"] == {"key": "sae-pair", "label": "discrete SAE (pair score)"}
