"""`circuits sae seeds` and `circuits sae absorption` through typer's runner: JSON, files, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from circuits.analysis.letters_toy import build_letter_model
from circuits.cli.main import app
from circuits.models import save_checkpoint
from circuits.sae.sources import save_activations

runner = CliRunner()
SEEDS_TINY = ["--steps", "30", "--rows", "512", "--d-sae", "16", "--n-features", "12", "--d-in", "8",
              "--data-l0", "2", "--seeds", "2"]


def run(*args: str):
    return runner.invoke(app, ["sae", *args])


def test_seeds_synthetic_json_and_files(tmp_path):
    result = run("seeds", *SEEDS_TINY, "--json", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    relu, topk = payload["architectures"]
    assert relu["label"].startswith("relu") and topk["setting"]["k"] == max(1, round(relu["l0"]["mean"]))
    assert payload["data"]["kind"] == "synthetic"
    for which in ("decoder", "encoder"):
        assert 0 <= relu[which]["shared_fraction"] <= 1
        assert relu[which]["pairs"][0]["seeds"] == [0, 1]
    assert (tmp_path / "seeds.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "seeds.json").read_text())["architectures"][0]["label"] == relu["label"]


def test_seeds_on_saved_activations(tmp_path):
    acts = tmp_path / "acts.safetensors"
    save_activations(acts, torch.randn(300, 6, generator=torch.Generator().manual_seed(0)))
    result = run("seeds", "--data", str(acts), "--archs", "relu", "--d-sae", "8", "--steps", "20",
                 "--seeds", "3", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["data"]["kind"] == "activations" and payload["d_in"] == 6
    assert payload["n_train"] == 240 and payload["n_eval"] == 60
    assert len(payload["architectures"][0]["decoder"]["pairs"]) == 3  # 3 seeds -> 3 pairs


def test_seeds_human_table():
    result = run("seeds", *SEEDS_TINY)
    assert result.exit_code == 0, result.output
    assert "shared across 2 seeds" in result.output


@pytest.mark.parametrize("args, message", [
    (["--archs", "nope"], "unknown --archs"),
    (["--seeds", "1"], "at least 2 seeds"),
    (["--archs", "topk"], "penalty-based"),
    (["--k", "x"], "--k"),
    (["--threshold", "2"], "threshold"),
    (["--data", "/nonexistent/file.safetensors"], "does not exist"),
])
def test_seeds_bad_input(args, message):
    result = run("seeds", "--steps", "5", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_absorption_synthetic_json_and_files(tmp_path):
    result = run("absorption", "--archs", "topk,relu", "--k", "2,6", "--l1", "0.3", "--seeds", "1",
                 "--steps", "40", "--rows", "1024", "--json", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["label"] for r in payload["settings"]] == ["topk k=2", "topk k=6", "relu l1=0.3"]
    for r in payload["settings"]:
        assert 0 <= r["absorption_rate"]["mean"] <= 1
    assert "topk" in payload["trends"] and "relu" not in payload["trends"]  # one relu setting: no trend
    assert (tmp_path / "absorption.png").read_bytes()[:4] == b"\x89PNG"


def test_absorption_first_letter_on_toy_and_saved_model(tmp_path):
    result = run("absorption", "--model", "letters-toy", "--archs", "relu", "--l1", "1", "--seeds", "1",
                 "--steps", "60", "--rows", "2000", "--json", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"] == "letters-toy" and payload["hook"] == "hook_embed"
    assert payload["probe"]["test_accuracy"] == 1.0 and len(payload["letters"]) == 8
    assert len(payload["runs"][0]["per_letter"]) == 8
    assert (tmp_path / "first_letter.png").read_bytes()[:4] == b"\x89PNG"

    # The same toy saved as an ordinary checkpoint directory loads through --model DIR.
    toy = build_letter_model(letters="abc", words_per_letter=10)
    save_checkpoint(tmp_path / "toy", toy.model, toy.tokenizer, {"note": "letters toy"})
    result = run("absorption", "--model", str(tmp_path / "toy"), "--hook", "hook_embed", "--archs", "topk",
                 "--k", "2", "--seeds", "1", "--steps", "30", "--rows", "500", "--d-sae", "16")
    assert result.exit_code == 0, result.output
    assert "first-letter absorption" in result.output


def test_absorption_bad_input():
    assert run("absorption", "--k", "0").exit_code == 2
    assert run("absorption", "--p-child", "1.5", "--steps", "5").exit_code == 2
    bad_hook = run("absorption", "--model", "letters-toy", "--hook", "blocks.9.hook_nothing")
    assert bad_hook.exit_code == 2 and "no hook" in bad_hook.output
    missing = run("absorption", "--model", "letters-toy", "--sae", "/nonexistent/sae")
    assert missing.exit_code == 2
