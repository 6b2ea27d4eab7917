"""compare's rankings.npz (every run's node and edge scores) and `circuits evaluate --rankings`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import plant_heads
from test_compare import FAST_FIND, PLANTED
from typer.testing import CliRunner

import circuits.methods as methods_pkg
from circuits._compat import HookedTransformer, HookedTransformerConfig
from circuits.cli.main import app
from circuits.compare import CompareConfig, compare_with_rankings, write_outputs
from circuits.edges.graph import ComputeGraph, node_derived_edge_scores
from circuits.errors import CircuitsError
from circuits.methods.base import selected_heads
from circuits.methods.registry import REGISTRY, Method, MethodInput, MethodRun
from circuits.models import save_checkpoint
from circuits.rankings import RANKINGS_FILE, Rankings, edge_level, load_rankings
from circuits.tokenizer import WordTokenizer
from tasks import get_task
from tasks.base import GroundTruth


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def ioi_dir(tmp_path_factory) -> Path:
    """A planted 2x4 model over the IOI vocabulary, saved with its ablation ground truth."""
    tok = get_task("ioi").word_tokenizer()
    assert isinstance(tok, WordTokenizer)
    cfg = HookedTransformerConfig(n_layers=2, n_heads=4, d_model=32, d_head=8, n_ctx=32,
                                  d_vocab=tok.vocab_size, attn_only=True, normalization_type="LN", seed=0,
                                  device="cpu", default_prepend_bos=False)
    torch.manual_seed(0)
    model = HookedTransformer(cfg)
    plant_heads(model, PLANTED)
    truth = GroundTruth(heads=tuple(sorted(PLANTED)), edges=(((0, 1), (1, 3)),), source="planted")
    directory = tmp_path_factory.mktemp("planted-ioi")
    save_checkpoint(directory, model, tok, {"ground_truth": {"ioi": truth.to_dict()}})
    return directory


@pytest.fixture
def with_edges(monkeypatch):
    """A registered method that scores graph edges (node scores: mean patching's), whatever EAP does."""

    def fake(inp: MethodInput) -> MethodRun:
        base = REGISTRY["patching-mean"].run(inp)
        graph = ComputeGraph.of(inp.loaded.model)
        edges = node_derived_edge_scores(graph, base.node_scores)
        return MethodRun(node_scores=base.node_scores, selected=base.selected, edge_scores=None, seconds=0.1,
                         forward=1.0, backward=0.0, graph_edge_scores=edges, signed_graph_edge_scores=-edges)

    monkeypatch.setitem(REGISTRY, "edgy", Method("edgy", "edge-scoring test method", fake, stochastic=False))
    return "edgy"


def test_rankings_round_trip_through_an_atomic_npz(tmp_path):
    kept = Rankings(meta={"task": "toy", "model": "m", "labels": {"eap": "EAP"}})
    node, edge = torch.arange(8.0).reshape(2, 4), torch.rand(9, 9)
    kept.add("eap#0", node, edge, -edge)
    kept.add("sae#1", node.flip(0))
    path = kept.save(tmp_path / RANKINGS_FILE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RANKINGS_FILE]  # no temporary file left
    with np.load(path, allow_pickle=False) as raw:
        assert sorted(raw.files) == ["edge/eap#0", "meta", "node/eap#0", "node/sae#1", "signed_edge/eap#0"]
        assert raw["node/eap#0"].dtype == np.float32
    back = load_rankings(path)
    assert back.meta["task"] == "toy" and back.meta["format"] == 1 and back.meta["file"] == str(path)
    np.testing.assert_array_equal(back.node["sae#1"], node.flip(0).numpy())
    np.testing.assert_allclose(back.edge["eap#0"], edge.numpy())
    np.testing.assert_allclose(back.signed_edge["eap#0"], -edge.numpy())
    assert back.resolve(None) == ["eap#0", "sae#1"] and back.resolve("sae#1, eap#0") == ["sae#1", "eap#0"]
    with pytest.raises(CircuitsError, match="no ranking 'eap#1'.*known: eap#0, sae#1"):
        back.resolve("eap#1")


def test_compare_keeps_every_runs_scores_and_edges_where_the_method_has_them(planted, with_edges, tmp_path):
    task, loaded, _ = planted
    config = CompareConfig(methods=(with_edges, "patching-resample"), seeds=2, find=FAST_FIND, mib_prompts=0)
    report, kept = compare_with_rankings(task, loaded, config)
    assert sorted(kept.node) == ["edgy#0", "patching-resample#0", "patching-resample#1"]
    graph = ComputeGraph.of(loaded.model)
    assert list(kept.edge) == ["edgy#0"] and kept.edge["edgy#0"].shape == (graph.n_senders, graph.n_receivers)
    np.testing.assert_allclose(kept.signed_edge["edgy#0"], -kept.edge["edgy#0"])
    assert kept.meta["graph"] == graph.describe()
    assert kept.meta["labels"]["edgy"] == "edge-scoring test method"
    assert kept.meta["prompts"] == {"seed": 0, "n_train": 10, "n_score": 24, "vary_prompts": False}
    files = write_outputs(report, tmp_path, kept)
    assert files["rankings"] == str(tmp_path / RANKINGS_FILE)
    assert json.loads((tmp_path / "compare.json").read_text())["files"]["rankings"] == files["rankings"]
    back = load_rankings(tmp_path / RANKINGS_FILE)
    np.testing.assert_array_equal(back.node["patching-resample#1"], kept.node["patching-resample#1"])


def test_registered_baselines_forward_graph_edge_scores(planted, monkeypatch):
    task, loaded, _ = planted
    scores = torch.rand(2, 4)
    dense = torch.rand(9, 9)
    result = SimpleNamespace(node_scores=scores, selected=selected_heads(scores), edge_scores=None,
                             seconds=0.0, n_forward=1.0, n_backward=0.0, details={}, graph_edge_scores=dense,
                             signed_graph_edge_scores=-dense)
    monkeypatch.setattr(methods_pkg, "run_baseline", lambda *args, **kwargs: result)
    out = methods_pkg.run_registered_baseline("eap", MethodInput(task=task, loaded=loaded, find=FAST_FIND,
                                                                 seed=0))
    assert out.graph_edge_scores is dense and out.signed_graph_edge_scores is not None
    del result.graph_edge_scores, result.signed_graph_edge_scores  # a baseline without them: None
    out = methods_pkg.run_registered_baseline("eap", MethodInput(task=task, loaded=loaded, find=FAST_FIND,
                                                                 seed=0))
    assert out.graph_edge_scores is None and out.signed_graph_edge_scores is None


def test_compare_command_writes_rankings_and_evaluate_scores_them_again(ioi_dir, tmp_path):
    out = tmp_path / "cmp"
    res = run("compare", "--task", "ioi", "--model", str(ioi_dir), "--methods", "eap,patching-mean",
              "--seeds", "1", "--n-score", "12", "--mib-prompts", "8", "--mib-random", "2", "--json",
              "--out", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["files"]["rankings"] == str(out / RANKINGS_FILE)
    kept = load_rankings(out / RANKINGS_FILE)
    assert sorted(kept.node) == ["eap#0", "patching-mean#0"] and kept.meta["mib_prompts"] == 8
    assert kept.meta["model_spec"] == str(ioi_dir.resolve())  # how evaluate loads it again
    ev = run("evaluate", "--rankings", str(out / RANKINGS_FILE), "--key", "eap#0", "--n-random", "2",
             "--json")
    assert ev.exit_code == 0, ev.output
    payload = json.loads(ev.stdout)
    assert list(payload["results"]) == ["eap#0"] and payload["n_prompts"] == 8  # compare's CPR prompts
    eap = payload["results"]["eap#0"]
    assert eap["node_roc_auc"] == report["methods"]["eap"]["node_roc_auc"]["mean"] == 1.0
    for key in ("cpr_counterfactual", "cmd_counterfactual", "cpr_mean", "cmd_mean"):
        assert eap[key] == pytest.approx(report["methods"]["eap"][key]["mean"], abs=1e-6), key
    # edge level: EAP's own edge scores, patching's derived from its head scores; compare's numbers
    assert eap["edge"]["source"] == "edges" and payload["results"]["eap#0"]["has_edge_scores"]
    for key in ("cpr_counterfactual", "cmd_counterfactual", "cpr_mean", "cmd_mean"):
        expected = report["methods"]["eap"][f"edge_{key}"]["mean"]
        assert eap["edge"][key] == pytest.approx(expected, abs=1e-6), key
    assert report["methods"]["eap"]["edge_scores_from"] == "edges"
    assert report["methods"]["patching-mean"]["edge_scores_from"] == "node-derived"
    assert payload["edge_random"]["counterfactual"]["cpr"] == pytest.approx(
        report["edge_mib"]["random"]["counterfactual"]["cpr"], abs=1e-6)
    assert payload["random"]["counterfactual"]["cpr"] == pytest.approx(
        report["mib"]["random"]["counterfactual"]["cpr"], abs=1e-6)
    table = run("evaluate", "--rankings", str(out / RANKINGS_FILE), "--n-prompts", "4")
    assert table.exit_code == 0, table.output
    assert "patching-mean#0" in table.output and "random ranking" in table.output
    # the overwrite rule covers rankings.npz
    again = run("compare", "--task", "ioi", "--model", str(ioi_dir), "--methods", "eap", "--seeds", "1",
                "--n-score", "8", "--out", str(out))
    assert again.exit_code == 2 and "already exist" in again.output
    (out / "compare.json").unlink()
    (out / "roc.png").unlink()
    (out / "faithfulness.png").unlink()
    alone = run("compare", "--task", "ioi", "--model", str(ioi_dir), "--methods", "eap", "--seeds", "1",
                "--n-score", "8", "--out", str(out))
    assert alone.exit_code == 2 and "rankings.npz already exists" in alone.output


def test_edge_level_scores_own_edges_and_derives_them_for_head_only_runs(planted):
    task, loaded, _ = planted
    graph = ComputeGraph.of(loaded.model)
    prompts = task.prompts(loaded.tokenizer, 6, 0)
    node = torch.rand(loaded.n_layers, loaded.n_heads, generator=torch.Generator().manual_seed(0))
    derived = node_derived_edge_scores(graph, node)
    kept = Rankings(meta={})
    kept.add("heads#0", node, None, None)
    kept.add("edges#0", node, derived, None)  # the same edge ranking, given explicitly
    kept.add("flipped#0", node, -derived, derived)  # CPR reads the signed scores, CMD the magnitude
    out, meta = edge_level(loaded.model, task, prompts, graph, kept, ["heads#0", "edges#0", "flipped#0"],
                           n_random=2)
    assert out["heads#0"]["source"] == "node-derived" and out["edges#0"]["source"] == "edges"
    for key in ("cpr_counterfactual", "cmd_counterfactual", "cpr_mean", "cmd_mean"):
        assert out["heads#0"][key] == pytest.approx(out["edges#0"][key]), key
    assert out["flipped#0"]["cpr_counterfactual"] == pytest.approx(out["edges#0"]["cpr_counterfactual"])
    assert out["flipped#0"]["cmd_counterfactual"] != pytest.approx(out["edges#0"]["cmd_counterfactual"])
    assert meta["n_edges"] == graph.n_edges and set(meta["random"]) == {"counterfactual", "mean"}


@pytest.mark.parametrize("case, message", [
    ("missing", "no such rankings file"),
    ("not-npz", "not a rankings file"),
    ("no-meta", "no 'meta' entry"),
    ("unknown-key", "no ranking 'acdc#0'"),
    ("wrong-model", "has shape (2, 4), the model has 4x8 heads"),
    ("both", "give a RUN or --rankings, not both"),
    ("ablation", "--ablation applies to a circuit"),
])
def test_evaluate_rankings_bad_input_is_one_line_and_exit_2(ioi_dir, tmp_path, case, message):
    path = tmp_path / RANKINGS_FILE
    kept = Rankings(meta={"task": "ioi", "model": str(ioi_dir), "prompts": {"seed": 0, "n_train": 10,
                                                                           "n_score": 8}})
    kept.add("eap#0", torch.rand(2, 4))
    kept.save(path)
    extra: list[str] = []
    if case == "missing":
        path = tmp_path / "nope.npz"
    elif case == "not-npz":
        path.write_text("not a zip")
    elif case == "no-meta":
        with open(path, "wb") as handle:
            np.savez(handle, x=np.zeros(2))
    elif case == "unknown-key":
        extra = ["--key", "acdc#0"]
    elif case == "wrong-model":
        extra = ["--model", "random:attn-only-4l"]
    elif case == "both":
        extra = [str(tmp_path)]
    elif case == "ablation":
        extra = ["--ablation", "zero"]
    res = run("evaluate", "--rankings", str(path), *extra)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
