"""`compare` and `evaluate`: the library on a planted toy model, the commands through typer's runner."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import typer
from conftest import plant_heads, tiny_model
from typer.testing import CliRunner

from circuits._compat import HookedTransformer, HookedTransformerConfig
from circuits.cli.compare import compare
from circuits.cli.evaluate import evaluate
from circuits.cli.find import find
from circuits.compare import CompareConfig, _method_seeds, compare_methods, parse_methods, write_roc_plot
from circuits.discovery.config import FindConfig
from circuits.errors import CircuitsError
from circuits.evaluation.faithfulness import circuit_vs_random, random_masks
from circuits.methods.registry import REGISTRY
from circuits.models import LoadedModel, save_checkpoint
from tasks import get_task
from tasks.base import GroundTruth

PLANTED = {(0, 1), (1, 3)}
FAST_FIND = FindConfig(n_train=10, n_score=24, steps=50, sae="per-head", hook="z")


def make_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(compare)
    app.command()(evaluate)
    app.command()(find)
    return app


def run_cli(*args: str):
    return CliRunner().invoke(make_app(), list(args))


@pytest.fixture(scope="module")
def ioi_model_dir(tmp_path_factory) -> Path:
    """A planted 2x4 model over the IOI word vocabulary, saved as a checkpoint with ablation truth."""
    task = get_task("ioi")
    tok = task.word_tokenizer()
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


def test_parse_methods_expands_groups_and_rejects_unknown():
    assert parse_methods("sae, patching,eap,acdc") == ["sae", "actdiff", "patching-mean", "patching-resample",
                                                       "eap", "acdc"]  # actdiff: the SAE's null model
    assert parse_methods("eap,eap,patching-mean") == ["eap", "patching-mean"]
    with pytest.raises(CircuitsError, match="unknown method 'hisp'"):
        parse_methods("sae,hisp")
    with pytest.raises(CircuitsError, match="no methods"):
        parse_methods(" , ")


def test_compare_scores_every_method_on_the_same_ground_truth(planted):
    task, loaded, heads = planted
    config = CompareConfig(methods=tuple(parse_methods("sae,patching,eap,acdc")), seeds=2, find=FAST_FIND,
                           acdc_prompts=12, selection="positive", vary_prompts=True)
    seen: list[tuple[str, int]] = []
    report = compare_methods(task, loaded, config, progress=lambda m, i, n: seen.append((m, i)))
    assert list(report["methods"]) == ["sae", "actdiff", "patching-mean", "patching-resample", "eap", "acdc"]
    assert report["seeds"] == [0, 1] and ("acdc", 2) in seen
    for name, m in report["methods"].items():
        assert m["node_roc_auc"]["mean"] == 1.0, name  # planted heads are the only ones that act
        assert len(m["node_roc_auc"]["values"]) == 2 and m["node_roc_auc"]["std"] == 0.0
        assert m["recall"]["mean"] == 1.0 and m["precision"]["mean"] == 1.0, name
        assert m["seconds"]["mean"] > 0 and m["forward_passes"]["mean"] > 0
        assert all(run["selected"] == sorted(heads) for run in m["runs"])
        has_edges = name in ("sae", "eap", "acdc")
        assert (m["edge_roc_auc"] is not None) == has_edges, name
        assert report["roc_curves"][name] is not None
    methods = report["methods"]
    assert methods["eap"]["forward_passes"]["mean"] == pytest.approx(2.0)
    assert methods["eap"]["backward_passes"]["mean"] == pytest.approx(1.0)
    assert methods["patching-mean"]["forward_passes"]["mean"] == pytest.approx(1 + 2 + 8)
    assert methods["sae"]["forward_passes"]["mean"] == pytest.approx((10 + 48) / 24)
    # CPR / CMD need no ground truth: every method puts the two planted heads first, the random floor does not
    floor = report["mib"]["random"]
    for intervention in ("counterfactual", "mean"):
        for name, m in methods.items():
            assert len(m[f"cpr_{intervention}"]["values"]) == len(m["seeds"]), name
            assert m[f"cpr_{intervention}"]["mean"] > floor[intervention]["cpr"], name
            assert m[f"cmd_{intervention}"]["mean"] < floor[intervention]["cmd"], name
            assert "mib_" + intervention in m["runs"][0]
    assert set(report["agreement"]["spearman"]) >= {"eap|sae", "acdc|eap", "patching-mean|patching-resample"}
    json.dumps(report, default=list)  # JSON-ready


def test_deterministic_methods_run_once_unless_asked(planted):
    task, loaded, _ = planted
    config = CompareConfig(methods=("eap", "patching-resample"), seeds=3, find=FAST_FIND)
    report = compare_methods(task, loaded, config)
    assert report["methods"]["eap"]["seeds"] == [0] and not report["methods"]["eap"]["stochastic"]
    assert report["methods"]["patching-resample"]["seeds"] == [0, 1, 2]
    assert len(report["methods"]["patching-resample"]["node_roc_auc"]["values"]) == 3


def test_compare_without_ground_truth_reports_cpr_cmd_and_agreement(toy_task):
    tok = toy_task.word_tokenizer()
    model = tiny_model(tok.vocab_size)
    plant_heads(model, PLANTED)
    loaded = LoadedModel(model=model, tokenizer=tok, name="random:toy")
    report = compare_methods(toy_task, loaded, CompareConfig(methods=("eap", "patching-mean"), seeds=1,
                                                             find=FAST_FIND, mib_random=5))
    assert report["ground_truth"] is None and "random weights" in report["ground_truth_note"]
    for m in report["methods"].values():
        assert m["node_roc_auc"] is None and m["precision"] is None
        assert m["cpr_counterfactual"]["mean"] > report["mib"]["random"]["counterfactual"]["cpr"]
        assert m["seconds"]["mean"] > 0
    assert report["mib"]["n_prompts"] == 24 and report["roc_curves"] == {}
    rho = report["agreement"]["spearman"]["eap|patching-mean"]
    assert rho is not None and -1 <= rho <= 1


def test_compare_reports_auc_against_the_shipped_resample_ground_truth_too(planted, tmp_path, monkeypatch):
    from circuits.truths import attach_shipped, write_truth

    task, loaded, heads = planted
    how = {"ablation_method": "resample", "n_prompts": 8, "prompt_seed": 0, "search": "test",
           "threshold": 0.9, "normalized_faithfulness": 1.0}
    resample = GroundTruth(heads=((0, 1), (1, 3), (1, 0)), source="ablation", method=how)
    write_truth(loaded.name, task.name, "resample", resample, {}, directory=tmp_path)
    monkeypatch.setattr(loaded, "other_truths", {})
    attach_shipped(loaded, directory=tmp_path)
    report = compare_methods(task, loaded, CompareConfig(methods=("eap",), seeds=1, find=FAST_FIND,
                                                         mib_prompts=0))
    eap = report["methods"]["eap"]
    assert eap["node_roc_auc"]["mean"] == 1.0
    assert 0.5 < eap["node_roc_auc_resample"]["mean"] < 1.0  # (1, 0) does nothing in the planted model
    assert report["ground_truth"]["others"]["resample"]["n_heads"] == 3 and report["mib"] is None


def test_roc_plot_is_a_png_written_atomically(planted, tmp_path):
    task, loaded, _ = planted
    report = compare_methods(task, loaded, CompareConfig(methods=("eap", "patching-mean"), seeds=1,
                                                         find=FAST_FIND))
    path = write_roc_plot(report, tmp_path / "roc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]


def test_random_circuits_have_the_size_and_the_planted_circuit_is_fully_faithful(planted):
    task, loaded, heads = planted
    masks = random_masks(2, 4, 3, 50, seed=0)
    assert masks.shape == (50, 2, 4) and bool((masks.sum((1, 2)) == 3).all())
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 10  # draws differ
    prompts = task.prompts(loaded.tokenizer, 20, seed=0)
    result = circuit_vs_random(loaded.model, task, prompts, heads, "mean", n_random=10, seed=0)
    assert result["circuit"]["normalized"] == pytest.approx(1.0, abs=1e-5)  # silenced heads do nothing
    assert result["random"]["normalized_mean"] < 0.9
    assert len(result["random"]["normalized"]) == 10


def test_compare_command_prints_json_and_writes_plot(ioi_model_dir, tmp_path):
    out = tmp_path / "cmp"
    res = run_cli("compare", "--task", "ioi", "--model", str(ioi_model_dir), "--methods",
                  "sae,eap,patching-mean", "--seeds", "1", "--n-score", "16", "--json", "--out", str(out))
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert set(payload["methods"]) == {"sae", "actdiff", "eap", "patching-mean"}
    assert payload["ground_truth"]["source"] == "planted"
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "compare.json").read_text())["task"] == "ioi"
    table = run_cli("compare", "--task", "ioi", "--model", str(ioi_model_dir), "--methods",
                    "eap,patching-resample", "--seeds", "2", "--n-score", "8")
    assert table.exit_code == 0 and "EAP" in table.output and "±" in table.output  # resample: 2 seeds


def test_compare_sae_runs_are_circuits_find_runs(ioi_model_dir):
    """With --vary-prompts, compare's SAE run for seed s is `circuits find --seed s` (default config):
    same node AUC, same selected heads, seed by seed."""
    res = run_cli("compare", "--task", "ioi", "--model", str(ioi_model_dir), "--methods", "sae",
                  "--seeds", "2", "--vary-prompts", "--n-score", "16", "--json")
    assert res.exit_code == 0, res.output
    sae = json.loads(res.stdout)["methods"]["sae"]
    assert sae["seeds"] == [0, 1]
    finds = []
    for seed in (0, 1):
        out = run_cli("find", "--task", "ioi", "--model", str(ioi_model_dir), "--n-score", "16",
                      "--seed", str(seed), "--json", "--no-check-task")  # a planted model, not a trained one
        assert out.exit_code == 0, out.output
        finds.append(json.loads(out.stdout))
    assert sae["node_roc_auc"]["values"] == [f["evaluation"]["roc_auc"] for f in finds]
    assert [run["selected"] for run in sae["runs"]] == [f["circuit"] for f in finds]
    assert [run["precision"] for run in sae["runs"]] == [f["evaluation"]["precision"] for f in finds]


@pytest.mark.parametrize("args, message", [
    (["--methods", "sae,hisp"], "unknown method"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--n-score", "0"], "--n-score must be positive"),
    (["--acdc-distance", "l2"], "unknown ACDC distance"),
    (["--selection", "best"], "unknown selection rule"),
])
def test_compare_bad_input_is_one_line_and_exit_2(ioi_model_dir, args, message):
    base = ["compare", "--task", "ioi", "--model", str(ioi_model_dir), "--n-score", "8", "--seeds", "1",
            "--methods", "eap"]
    res = run_cli(*base, *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_compare_refuses_an_unwritable_out_before_running(ioi_model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    res = run_cli("compare", "--task", "ioi", "--model", str(ioi_model_dir), "--methods", "eap",
                  "--seeds", "1", "--n-score", "8", "--out", str(blocker))
    assert res.exit_code == 2 and "not a directory" in res.output
    assert blocker.read_text() == "keep me"


def _write_run(directory: Path, model_dir: Path, circuit: set[tuple[int, int]]) -> Path:
    heads = [{"layer": l, "head": h, "score": float(l + h), "in_circuit": (l, h) in circuit}
             for l in range(2) for h in range(4)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "result.json").write_text(json.dumps({"task": "ioi", "model": str(model_dir),
                                                       "config": {"seed": 0}, "heads": heads}))
    return directory


def test_evaluate_command_reports_circuit_and_random_faithfulness(ioi_model_dir, tmp_path):
    run_dir = _write_run(tmp_path / "run", ioi_model_dir, PLANTED)
    res = run_cli("evaluate", str(run_dir), "--n-prompts", "16", "--n-random", "8", "--json")
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["circuit"]["normalized"] == pytest.approx(1.0, abs=1e-5)
    assert payload["random"]["n_draws"] == 8 and payload["random"]["size"] == 2
    assert payload["circuit_heads"] == [[0, 1], [1, 3]]
    table = run_cli("evaluate", str(run_dir / "result.json"), "--n-prompts", "8", "--ablation", "resample")
    assert table.exit_code == 0 and "random, same size" in table.output


@pytest.mark.parametrize("content, message", [
    (None, "no such result file"),
    ("{not json", "not valid JSON"),
    (json.dumps({"task": "ioi", "heads": []}), "missing field(s) model"),
    (json.dumps({"task": "ioi", "model": "x", "heads": [{"layer": 0}]}), "'heads' must be a list"),
])
def test_evaluate_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "result.json"
    if content is not None:
        path.write_text(content)
    res = run_cli("evaluate", str(path))
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_evaluate_rejects_heads_outside_the_model_and_bad_options(ioi_model_dir, tmp_path):
    run_dir = _write_run(tmp_path / "run", ioi_model_dir, {(0, 1)})
    data = json.loads((run_dir / "result.json").read_text())
    data["heads"].append({"layer": 5, "head": 0, "score": 1.0, "in_circuit": True})
    (run_dir / "result.json").write_text(json.dumps(data))
    res = run_cli("evaluate", str(run_dir), "--n-prompts", "4")
    assert res.exit_code == 2 and "does not exist" in res.output
    res = run_cli("evaluate", str(run_dir), "--ablation", "median")
    assert res.exit_code == 2 and "unknown ablation" in res.output


@pytest.mark.slow
def test_compare_on_the_bundled_ioi_model():
    """All four methods on tiny-ioi, whose ground truth comes from mean ablation: single-head mean
    ablation (patching) must rank that truth well; every method gets a node AUC; the SAE method's
    per-seed results are those of find_circuit with the same prompts and SAE seed."""
    from circuits.discovery.pipeline import find_circuit
    from circuits.models import load_model

    task = get_task("ioi")
    loaded = load_model("tiny-ioi", task)
    find_config = FindConfig(n_train=10, n_score=60)
    config = CompareConfig(seeds=2, find=find_config, acdc_prompts=20)
    report = compare_methods(task, loaded, config)
    for name, m in report["methods"].items():
        assert m["node_roc_auc"] is not None and 0.0 <= m["node_roc_auc"]["mean"] <= 1.0, name
    methods = report["methods"]
    singles = [find_circuit(task, loaded, replace(find_config, sae_seed=s)) for s in (0, 1)]
    assert methods["sae"]["node_roc_auc"]["values"] == [r.evaluation["roc_auc"] for r in singles]
    assert [run["selected"] for run in methods["sae"]["runs"]] == [sorted(r.circuit) for r in singles]
    assert 0.55 < methods["sae"]["node_roc_auc"]["mean"] < 0.85  # README: 0.693 +- 0.032 at n_score 250
    assert methods["patching-mean"]["node_roc_auc"]["mean"] >= 0.8
    assert methods["acdc"]["forward_passes"]["mean"] > methods["eap"]["forward_passes"]["mean"]


def test_compare_without_ground_truth_reports_cpr_cmd_instead_of_refusing():
    """A model with no ground truth (random weights here) still gets every method's MIB CPR/CMD."""
    res = run_cli("compare", "--task", "ioi", "--model", "random:attn-only-4l", "--n-score", "8",
                  "--seeds", "1", "--methods", "eap", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ground_truth"] is None
    eap = data["methods"]["eap"]
    assert eap["node_roc_auc"] is None
    assert any(key.startswith("cpr") for key in eap), sorted(eap)


def test_patching_prompts_and_baseline_seeds_limit_the_baselines_only(planted):
    """--patching-prompts: patching sees the first N scoring prompts (its passes shrink by N/n_score) and
    still finds the planted heads; --baseline-seeds: resample patching runs fewer seeds than the SAE."""
    task, loaded, _ = planted
    base = CompareConfig(methods=("sae", "patching-mean", "patching-resample"), seeds=3, find=FAST_FIND,
                         mib_prompts=0, selection="positive")
    full = compare_methods(task, loaded, base)
    cut = compare_methods(task, loaded, replace(base, patching_prompts=6, baseline_seeds=1))
    n_score = FAST_FIND.n_score
    ratio = cut["methods"]["patching-mean"]["forward_passes"]["mean"] / \
        full["methods"]["patching-mean"]["forward_passes"]["mean"]
    assert ratio == pytest.approx(6 / n_score)
    assert cut["methods"]["patching-mean"]["node_roc_auc"]["mean"] == 1.0
    assert cut["methods"]["sae"]["seeds"] == [0, 1, 2]
    assert cut["methods"]["patching-resample"]["seeds"] == [0]
    assert full["methods"]["patching-resample"]["seeds"] == [0, 1, 2]
    assert "first 6 scoring prompts" in cut["notes"]["patching"]
    with pytest.raises(CircuitsError, match="--patching-prompts"):
        replace(base, patching_prompts=-1).validate()
    with pytest.raises(CircuitsError, match="--baseline-seeds"):
        replace(base, baseline_seeds=0).validate()


def test_faithfulness_plot_written_with_mib_and_skipped_without(planted, tmp_path):
    from circuits.compare import write_faithfulness_plot

    task, loaded, _ = planted
    config = CompareConfig(methods=("eap",), seeds=1, find=FAST_FIND, mib_prompts=8, mib_random=2)
    report = compare_methods(task, loaded, config)
    assert report["mib"]["n_random"] == 2 and report["mib"]["n_prompts"] == 8
    path = write_faithfulness_plot(report, tmp_path / "faithfulness.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_faithfulness_plot({**report, "mib": None}, tmp_path / "none.png") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faithfulness.png"]


def test_compare_command_takes_mib_options_and_writes_both_plots(ioi_model_dir, tmp_path):
    out = tmp_path / "cmp"
    res = run_cli("compare", "--task", "ioi", "--model", str(ioi_model_dir), "--methods", "eap",
                  "--seeds", "1", "--n-score", "12", "--mib-prompts", "6", "--mib-random", "1", "--json",
                  "--out", str(out))
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["mib"]["n_prompts"] == 6 and payload["mib"]["n_random"] == 1
    assert (out / "faithfulness.png").read_bytes()[:4] == b"\x89PNG"
    bad = run_cli("compare", "--task", "ioi", "--model", str(ioi_model_dir), "--mib-prompts", "-1")
    assert bad.exit_code == 2 and "--mib-prompts" in bad.output


def test_baseline_seeds_spare_every_sae_method() -> None:
    """--baseline-seeds cuts the baselines' seeds only: every discrete-SAE method (variants included,
    whatever its name) is flagged as not a baseline in the registry."""
    config = CompareConfig(seeds=3, baseline_seeds=1)
    seeds = [0, 1, 2]
    for key, method in REGISTRY.items():
        expected = [0] if method.baseline or not method.stochastic else seeds
        assert _method_seeds(key, seeds, config) == expected, key
    assert {k for k, m in REGISTRY.items() if not m.baseline} == {
        "sae", "sae-effect", "sae-pair", "sae-effect-pair", "sae-verify"}
