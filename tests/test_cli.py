"""`circuits find` through typer's runner: the happy path, JSON, --out, and every bad input."""

from __future__ import annotations

import json
import os
import time

import pytest
from typer.testing import CliRunner

from circuits.cli.main import app

runner = CliRunner()
FAST = ["--n-score", "20", "--steps", "50"]


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("task", ["ioi", "greaterthan", "docstring"])
def test_find_json_on_random_attn_only(task):
    result = run("find", "--task", task, "--model", "random:attn-only-4l", "--json", *FAST)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["task"] == task
    assert len(payload["heads"]) == 32
    assert payload["evaluation"] is None and "random weights" in payload["evaluation_note"]
    assert payload["timings"]["total"] > 0


def test_find_writes_out_dir_and_same_seed_same_circuit(tmp_path):
    out = tmp_path / "run"
    first = run("find", "--task", "ioi", "--model", "random:attn-only-4l", "--json", "--out", str(out), *FAST)
    assert first.exit_code == 0, first.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["circuit.dot", "circuit.gexf", "circuit.graphml", "circuit.json", "result.json"]
    second = run("find", "--task", "ioi", "--model", "random:attn-only-4l", "--json", *FAST)
    assert json.loads(first.stdout)["circuit"] == json.loads(second.stdout)["circuit"]
    assert json.loads((out / "result.json").read_text())["heads"] == json.loads(second.stdout)["heads"]


def _assert_clean_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output


@pytest.mark.parametrize("args, fragment", [
    (["--task", "nope"], "unknown task"),
    (["--task", "ioi", "--model", "no-such-model-xyz"], "unknown model"),
    (["--task", "ioi", "--model", "./missing/dir"], "does not exist"),
    (["--task", "ioi", "--model", "random:gpt5"], "unknown architecture"),
    (["--task", "ioi", "--model", "random:attn-only-4l", "--n-train", "0"], "n-train"),
    (["--task", "ioi", "--model", "random:attn-only-4l", "--n-score", "-3"], "n-score"),
    (["--task", "ioi", "--model", "random:attn-only-4l", "--hook", "q"], "unknown hook"),
    (["--task", "ioi", "--model", "random:attn-only-4l", "--position", "first"], "unknown position"),
    (["--task", "ioi", "--model", "random:attn-only-4l", "--n-score", "100000000"], "--n-score"),
])
def test_bad_input_is_one_clean_line(args, fragment):
    _assert_clean_error(run("find", *args), fragment)


def test_unwritable_out_is_refused_and_existing_file_kept(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    _assert_clean_error(run("find", "--task", "ioi", "--model", "random:attn-only-4l", "--out", str(target)),
                        "not a directory")
    assert target.read_text() == "keep me"
    # A directory below a regular file can be created by nobody, root included.
    _assert_clean_error(run("find", "--task", "ioi", "--model", "random:attn-only-4l", "--out",
                            str(target / "sub")), "cannot create output directory")
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_hub_model_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    result = run("find", "--task", "ioi", "--model", "gpt2-small")
    assert time.perf_counter() - start < 5
    _assert_clean_error(result, "cannot load model 'gpt2-small'")


def test_offline_hub_failure_happens_before_the_heavy_imports():
    """Failing fast means failing before TransformerLens and sklearn are imported (seconds each)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from circuits.cli.main import app\n"
            "res = CliRunner().invoke(app, ['find', '--task', 'ioi', '--model', 'gpt2-small'])\n"
            "assert res.exit_code == 2, res.output\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'transformer_lens', 'sklearn'})\n"
            "print(','.join(heavy) or 'none')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "none"


def test_command_line_errors_under_json_print_json_too():
    """A value that does not parse or an unknown option, with --json: {"error", "kind": "usage"} on stdout,
    the usual message on stderr, exit 2 (no traceback)."""
    import subprocess
    import sys

    for bad in (["--n-score", "abc"], ["--bogus"]):
        argv = [sys.executable, "-m", "circuits.cli.main", "find", "--task", "ioi", *bad, "--json"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        payload = json.loads(proc.stdout)
        assert payload["kind"] == "usage" and payload["error"]
        assert "Traceback" not in proc.stderr and "Usage:" in proc.stderr
