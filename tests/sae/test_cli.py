"""`circuits sae train|eval` through typer's runner: every architecture, resume, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from circuits.cli.sae import sae_app
from circuits.sae import ARCHS
from circuits.sae.io import load_sae
from circuits.sae.sources import save_activations

HOOK = "blocks.0.hook_resid_post"
runner = CliRunner()


def _train(tmp: Path, model: Path, corpus: Path, *extra: str, out: str = "sae") -> tuple[int, str, str]:
    args = [
        "train",
        "--model",
        str(model),
        "--hook",
        HOOK,
        "--data",
        str(corpus),
        "--out",
        str(tmp / out),
        "--tokens",
        "2048",
        "--batch-size",
        "128",
        "--context-size",
        "16",
        "--d-sae",
        "48",
        *extra,
    ]
    res = runner.invoke(sae_app, args)
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize("arch", ARCHS)
def test_train_every_arch_then_eval(
    arch: str, tmp_path: Path, tiny_model_dir: Path, corpus_txt: Path
) -> None:
    extra = ["--k", "4"] if arch in ("topk", "batchtopk") else []
    code, out, err = _train(tmp_path, tiny_model_dir, corpus_txt, "--arch", arch, "--json", *extra)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 16 and summary["rows_seen"] == 2048 and summary["sae"]["arch"] == arch
    sae = load_sae(tmp_path / "sae")
    assert sae.cfg.arch == arch and sae.cfg.d_in == 32 and sae.cfg.hook_name == HOOK
    assert not (tmp_path / "sae" / "checkpoint.pt").exists()
    res = runner.invoke(
        sae_app,
        [
            "eval",
            str(tmp_path / "sae"),
            "--model",
            str(tiny_model_dir),
            "--data",
            str(corpus_txt),
            "--contexts",
            "8",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.stderr
    metrics = json.loads(res.stdout)
    for key in ("l0", "mse", "fvu", "dead_fraction", "dense_fraction", "shrinkage", "ce_loss_recovered"):
        assert isinstance(metrics[key], float), key
    assert 0 < metrics["l0"] <= 48 and metrics["fvu"] >= 0 and "definitions" in metrics


def test_eval_prints_a_table(tmp_path: Path, tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    code, out, err = _train(tmp_path, tiny_model_dir, corpus_jsonl, "--arch", "topk", "--k", "4")
    assert code == 0, err
    assert "saved topk SAE" in out  # results on stdout, progress on stderr
    res = runner.invoke(
        sae_app,
        [
            "eval",
            str(tmp_path / "sae"),
            "--model",
            str(tiny_model_dir),
            "--data",
            str(corpus_jsonl),
            "--contexts",
            "4",
        ],
    )
    assert res.exit_code == 0, res.stderr
    assert "ce_loss_recovered" in res.stdout and "fvu" in res.stdout  # results on stdout


def test_train_on_activation_file(tmp_path: Path) -> None:
    acts = tmp_path / "acts.safetensors"
    save_activations(acts, torch.randn(500, 8))
    res = runner.invoke(
        sae_app,
        [
            "train",
            "--data",
            str(acts),
            "--out",
            str(tmp_path / "s"),
            "--arch",
            "gated",
            "--tokens",
            "1000",
            "--batch-size",
            "100",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["data"]["kind"] == "activations"
    res = runner.invoke(sae_app, ["eval", str(tmp_path / "s"), "--data", str(acts), "--json"])
    assert res.exit_code == 0, res.stderr
    assert "ce_loss_recovered" not in json.loads(res.stdout)  # no model: reconstruction metrics only


def test_resume_continues_exactly(
    tmp_path: Path, tiny_model_dir: Path, corpus_txt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from circuits.sae.trainer import Trainer

    args = ("--arch", "relu", "--checkpoint-every", "5")
    code, _, err = _train(tmp_path, tiny_model_dir, corpus_txt, *args, out="full")
    assert code == 0, err
    original = Trainer.train_step

    def crash_after_7(self: Trainer):
        if self.step == 7:
            raise KeyboardInterrupt  # the process dies after the step-5 checkpoint
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", crash_after_7)
    code, _, _ = _train(tmp_path, tiny_model_dir, corpus_txt, *args, out="cut")
    assert code != 0 and (tmp_path / "cut" / "checkpoint.pt").exists()
    monkeypatch.setattr(Trainer, "train_step", original)
    code, _, _ = _train(tmp_path, tiny_model_dir, corpus_txt, *args, out="cut")
    assert code == 2  # refuses to start over an existing checkpoint without --resume
    code, _, err = _train(tmp_path, tiny_model_dir, corpus_txt, *args, "--resume", out="cut")
    assert code == 0, err
    a = load_file(str(tmp_path / "full" / "sae_weights.safetensors"))
    b = load_file(str(tmp_path / "cut" / "sae_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _error(res) -> str:
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    return res.stderr


def test_bad_input(tmp_path: Path, tiny_model_dir: Path, corpus_txt: Path) -> None:
    base = [
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(corpus_txt),
        "--context-size",
        "16",
        "--tokens",
        "256",
        "--batch-size",
        "128",
    ]
    assert "no hook 'blocks.7.hook_nope'" in _error(
        runner.invoke(sae_app, base + ["--hook", "blocks.7.hook_nope", "--out", str(tmp_path / "a")])
    )
    assert "k must be between 1 and d_sae=16" in _error(
        runner.invoke(
            sae_app,
            base
            + ["--hook", HOOK, "--arch", "topk", "--k", "17", "--d-sae", "16", "--out", str(tmp_path / "b")],
        )
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "no usable text" in _error(
        runner.invoke(
            sae_app,
            [
                "train",
                "--model",
                str(tiny_model_dir),
                "--hook",
                HOOK,
                "--data",
                str(empty),
                "--context-size",
                "16",
                "--out",
                str(tmp_path / "c"),
            ],
        )
    )
    assert "unknown --arch 'dense'" in _error(
        runner.invoke(sae_app, base + ["--hook", HOOK, "--arch", "dense", "--out", str(tmp_path / "d")])
    )
    assert "--l1 applies to relu and gated" in _error(
        runner.invoke(
            sae_app, base + ["--hook", HOOK, "--arch", "topk", "--l1", "1", "--out", str(tmp_path / "e")]
        )
    )
    assert "does not exist" in _error(
        runner.invoke(
            sae_app,
            [
                "train",
                "--model",
                str(tiny_model_dir),
                "--hook",
                HOOK,
                "--data",
                str(tmp_path / "no.txt"),
                "--out",
                str(tmp_path / "f"),
            ],
        )
    )
    assert "needs --model and --hook" in _error(
        runner.invoke(sae_app, ["train", "--data", str(corpus_txt), "--out", str(tmp_path / "g")])
    )
    assert "--tokens must be positive" in _error(
        runner.invoke(sae_app, base[:-4] + ["--tokens", "0", "--hook", HOOK, "--out", str(tmp_path / "h")])
    )
    # A corrupt checkpoint on --resume.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes(b"not a zip file at all")
    assert "corrupt or unreadable checkpoint" in _error(
        runner.invoke(sae_app, base + ["--hook", HOOK, "--out", str(broken), "--resume"])
    )
    assert "no checkpoint" in _error(
        runner.invoke(sae_app, base + ["--hook", HOOK, "--out", str(tmp_path / "i"), "--resume"])
    )


def test_eval_bad_input(tmp_path: Path, tiny_model_dir: Path, corpus_txt: Path) -> None:
    code, _, err = _train(tmp_path, tiny_model_dir, corpus_txt, "--arch", "relu")
    assert code == 0, err
    assert "missing cfg.json" in _error(
        runner.invoke(
            sae_app, ["eval", str(tmp_path), "--model", str(tiny_model_dir), "--data", str(corpus_txt)]
        )
    )
    assert "does not exist" in _error(
        runner.invoke(
            sae_app,
            ["eval", str(tmp_path / "nope"), "--model", str(tiny_model_dir), "--data", str(corpus_txt)],
        )
    )
    assert "no hook" in _error(
        runner.invoke(
            sae_app,
            [
                "eval",
                str(tmp_path / "sae"),
                "--model",
                str(tiny_model_dir),
                "--data",
                str(corpus_txt),
                "--hook",
                "blocks.5.hook_resid_post",
            ],
        )
    )
    # The SAE was trained on d_model=32 activations; the MLP hidden layer has 64 dimensions.
    assert "d_in=32" in _error(
        runner.invoke(
            sae_app,
            [
                "eval",
                str(tmp_path / "sae"),
                "--model",
                str(tiny_model_dir),
                "--data",
                str(corpus_txt),
                "--hook",
                "blocks.0.mlp.hook_post",
                "--contexts",
                "2",
            ],
        )
    )
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tmp_path / "sae", corrupt)
    (corrupt / "sae_weights.safetensors").write_bytes(b"\x01\x02")
    assert "corrupt weights file" in _error(
        runner.invoke(
            sae_app, ["eval", str(corrupt), "--model", str(tiny_model_dir), "--data", str(corpus_txt)]
        )
    )
