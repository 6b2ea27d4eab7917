"""Fast CLI checks on tiny inputs: `circuits corpus build`, `circuits sae train` on a corpus directory
(Matryoshka with --k), and `circuits sae absorption --model ... --sae DIR` on that SAE. The heavy SmolLM2
runs are the benchmarks/smollm2_*.py scripts, not tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from circuits.cli.main import app
from circuits.corpus import CorpusSource, build_corpus
from circuits.sae.io import load_sae

runner = CliRunner()


def _source(root: Path, lines: list[str], n_files: int = 60) -> CorpusSource:
    """n_files documentation files of one sentence each (the tiny model's word tokenizer knows a
    capitalised word only at the start of a document)."""
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n_files):
        path = root / f"doc{i:03d}.md"
        path.write_text(lines[i])
        files.append(path)
    return CorpusSource(name="tiny", version="1", licence="MIT", root=root, files=tuple(files))


def test_corpus_build_command(tmp_path: Path, corpus_txt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import circuits.corpus.build as build

    lines = corpus_txt.read_text().splitlines()
    monkeypatch.setattr(build, "stdlib_source", lambda: _source(tmp_path / "src", lines))
    monkeypatch.setattr(build, "distribution_sources", lambda: ([], []))
    res = runner.invoke(app, ["corpus", "build", str(tmp_path / "c"), "--min-doc-chars", "1", "--json"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["documents"] == 60 and summary["sources"] == 1 and len(summary["sha256"]) == 64
    manifest = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert manifest["sha256"] == summary["sha256"]
    again = runner.invoke(app, ["corpus", "build", str(tmp_path / "c")])
    assert again.exit_code == 2 and "overwrite" in again.stderr


def test_sae_train_on_corpus_dir_then_absorption(tmp_path: Path, tiny_model_dir: Path, corpus_txt: Path
                                                 ) -> None:
    corpus = tmp_path / "corpus"
    build_corpus(corpus, [_source(tmp_path / "src", corpus_txt.read_text().splitlines())], min_doc_chars=1)
    hook = "blocks.0.hook_resid_post"
    res = runner.invoke(app, ["sae", "train", "--model", str(tiny_model_dir), "--hook", hook, "--data",
                              str(corpus), "--out", str(tmp_path / "sae"), "--arch", "matryoshka", "--k", "4",
                              "--d-sae", "32", "--tokens", "1024", "--batch-size", "128",
                              "--context-size", "16", "--json"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["sae"]["arch"] == "matryoshka" and summary["sae"]["k"] == 4
    assert summary["data"]["kind"] == "corpus" and summary["data"]["path"] == str(corpus)
    assert load_sae(tmp_path / "sae").cfg.d_in == 32
    bad = runner.invoke(app, ["sae", "train", "--model", str(tiny_model_dir), "--hook", hook, "--data",
                              str(corpus), "--out", str(tmp_path / "x"), "--arch", "gated", "--k", "4"])
    assert bad.exit_code == 2 and "--k applies to" in bad.stderr
    res = runner.invoke(app, ["sae", "absorption", "--model", str(tiny_model_dir), "--hook", hook,
                              "--sae", str(tmp_path / "sae"), "--min-per-letter", "3", "--json"])
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["n_tokens"] > 0 and len(result["runs"]) == 1
