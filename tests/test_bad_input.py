"""Bad input across every command: exit 2, one clean line naming the bad thing, nothing changed on disk.

One table (issue 16): each row is a command line run in a workspace of pre-existing files (a user's
result.json and circuit.dot, a report .txt, broken model and task files); afterwards every file there must be
byte-identical and nothing new may exist (a failed run removes the folders it created). Most rows fail
before a model loads; the rest load only the bundled 2 MB tiny-ioi. The readers of task files, manifests and
result files are fuzzed with hypothesis: any input is one CircuitsError line, never another exception.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from circuits.cli.main import app
from circuits.models import ZOO_DIR

runner = CliRunner()
SMALL = ["--n-score", "8", "--n-train", "4", "--steps", "5"]
FIND = ["find", "--task", "ioi", "--model", "tiny-ioi", *SMALL]
COMPARE = ["compare", "--task", "ioi", "--model", "tiny-ioi", "--n-score", "8", "--n-train", "4"]
EVAL = ["evaluate"]
SAE = ["sae", "train", "--model", "tiny-ioi", "--hook", "blocks.0.hook_resid_post", "--tokens", "64",
       "--batch-size", "32"]


def _model_with_manifest(root: Path, name: str, truth: object) -> None:
    """A copy of tiny-ioi whose manifest's ground_truth is `truth`."""
    target = root / name
    shutil.copytree(ZOO_DIR / "tiny-ioi", target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["ground_truth"] = truth
    (target / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workspace every row runs in (the rows never change it, which each row checks)."""
    root = tmp_path_factory.mktemp("ws")
    (root / "run").mkdir()
    (root / "run" / "result.json").write_text('{"mine": true}')  # the user's own files
    (root / "dotonly").mkdir()
    (root / "dotonly" / "circuit.dot").write_text("digraph mine {}")
    (root / "cmp").mkdir()
    (root / "cmp" / "compare.json").write_text("{}")
    (root / "notes.txt").write_text("my notes")
    (root / "page.html").write_text("<p>mine</p>")
    (root / "afile").write_text("not a folder")
    (root / "empty.txt").write_text("")
    (root / "bad.jsonl").write_text("{not json\n")
    pair = {"clean": "a b", "answer": " c", "corrupt": "a d", "wrong_answers": [" d"]}
    (root / "task.jsonl").write_text(json.dumps(pair) + "\n")
    (root / "notjson.json").write_text("[1, 2")
    (root / "list.json").write_text("[1, 2]")
    (root / "nofields.json").write_text('{"task": "ioi"}')
    (root / "badheads.json").write_text('{"task": "ioi", "model": "tiny-ioi", "heads": [1, 2]}')
    (root / "noresult.json").write_text('{"a": 1}')
    vocab = json.loads((ZOO_DIR / "tiny-ioi" / "tokenizer.json").read_text())["vocab"]
    words = [w.strip() for w in vocab if w.strip().isalpha()][:40]  # text tiny-ioi's tokenizer can read
    (root / "corpus.txt").write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(20)) + "\n")
    (root / "saedir").mkdir()
    (root / "saedir" / "cfg.json").write_text('{"mine": true}')
    _model_with_manifest(root, "m_str", {"ioi": "x"})
    _model_with_manifest(root, "m_list", [1, 2])
    _model_with_manifest(root, "m_range", {"ioi": {"heads": [[9, 0]]}})
    _model_with_manifest(root, "m_headtype", {"ioi": {"heads": [["a", 0]]}})
    return root


# (argv with {ws} placeholders, fragment the message must contain); rows marked "json" also check stdout.
CASES: list[tuple[list[str], str]] = [
    # --- find: never overwrite
    ([*FIND, "--out", "{ws}/run"], "result.json already exists"),
    ([*FIND, "--out", "{ws}/dotonly"], "circuit.dot already exists"),
    ([*FIND, "--report", "{ws}/notes.txt"], "notes.txt already exists"),
    ([*FIND, "--report", "{ws}/page.html"], "page.html already exists"),
    ([*FIND, "--out", "{ws}/afile"], "not a directory"),
    ([*FIND, "--report", "{ws}/run"], "is a directory"),
    # --- find: options, before any work
    ([*FIND, "--selection", "top:0", "--out", "{ws}/new_out"], "top:K"),
    ([*FIND, "--selection", "top:999", "--out", "{ws}/new_out"], "999"),
    ([*FIND, "--selection", "foo", "--out", "{ws}/new_out"], "'foo'"),
    ([*FIND, "--selection", "top:x"], "top:x"),
    ([*FIND, "--seed", "-1"], "--seed"),
    ([*FIND, "--n-score", "0"], "--n-score"),
    ([*FIND, "--n-train", "1"], "--n-train"),
    ([*FIND, "--steps", "0"], "--steps"),
    ([*FIND, "--hook", "q"], "unknown hook 'q'"),
    ([*FIND, "--hook", "reslt"], "'result'"),
    ([*FIND, "--position", "first"], "unknown position"),
    ([*FIND, "--sae", "perhead"], "'per-head'"),
    ([*FIND, "--arch", "relux"], "'relu'"),
    ([*FIND, "--score", "counts"], "'count'"),
    ([*FIND, "--d-sae", "0"], "--d-sae"),
    ([*FIND, "--k", "0"], "--k"),
    ([*FIND, "--l1", "-1"], "--l1"),
    ([*FIND, "--seeds", "0"], "--seeds"),
    ([*FIND, "--seeds", "-2"], "--seeds"),
    # --- find: names, files, models
    (["find", "--task", "ioi", "--model", "tiny-io", *SMALL], "'tiny-ioi'"),
    (["find", "--task", "iio", *SMALL], "'ioi'"),
    (["find", "--task", "greaterthen", *SMALL], "'greaterthan'"),
    (["find", "--task", "{ws}/missing.jsonl", "--model", "tiny-ioi", *SMALL], "missing.jsonl"),
    (["find", "--task", "{ws}/bad.jsonl", "--model", "tiny-ioi", *SMALL], "bad.jsonl"),
    (["find", "--task", "{ws}/task.jsonl", *SMALL], "needs --model"),
    (["find", "--task", "ioi", "--model", "{ws}/nowhere/model", *SMALL], "does not exist"),
    (["find", "--task", "ioi", "--model", "random:gpt3", *SMALL], "architecture"),
    (["find", "--task", "ioi", "--model", "{ws}/m_str", *SMALL], "manifest.json: ground_truth.ioi"),
    (["find", "--task", "ioi", "--model", "{ws}/m_list", *SMALL], "manifest.json: ground_truth"),
    (["find", "--task", "ioi", "--model", "{ws}/m_range", *SMALL], "manifest.json: ground_truth.ioi"),
    (["find", "--task", "ioi", "--model", "{ws}/m_headtype", *SMALL], "ground_truth.ioi.heads[0]"),
    (["find", "--task", "ioi", "--model", "tiny-ioi", "--n-score", "100000", "--out", "{ws}/new_out"],
     "largest --n-score"),
    # --- --json failures: a JSON object on stdout too
    ([*FIND, "--json", "--selection", "foo"], "'foo'"),
    ([*FIND, "--json", "--out", "{ws}/run"], "already exists"),
    ([*COMPARE, "--json", "--methods", "acdx"], "'acdc'"),
    ([*EVAL, "{ws}/list.json", "--json"], "expected a JSON object"),
    # --- compare
    ([*COMPARE, "--methods", "acdx"], "'acdc'"),
    ([*COMPARE, "--methods", "patchng"], "'patching'"),
    ([*COMPARE, "--methods", ","], "no methods"),
    ([*COMPARE, "--seeds", "0"], "--seeds"),
    ([*COMPARE, "--selection", "top:0"], "top:K"),
    ([*COMPARE, "--selection", "top:999", "--out", "{ws}/new_cmp"], "999"),
    ([*COMPARE, "--out", "{ws}/cmp"], "compare.json already exists"),
    ([*COMPARE, "--acdc-distance", "foo"], "ACDC distance"),
    ([*COMPARE, "--seed", "-1"], "--seed"),
    (["compare", "--task", "nope"], "unknown task 'nope'"),
    # (a model without ground truth is no longer bad input: compare reports CPR/CMD for it)
    (["compare", "--task", "ioi", "--model", "tiny-io", "--n-score", "8", "--out", "{ws}/new_cmp"],
     "did you mean 'tiny-ioi'"),
    # --- evaluate
    ([*EVAL, "{ws}/nowhere"], "no such result file"),
    ([*EVAL, "{ws}/notjson.json"], "not valid JSON"),
    ([*EVAL, "{ws}/list.json"], "expected a JSON object"),
    ([*EVAL, "{ws}/nofields.json"], "missing field"),
    ([*EVAL, "{ws}/badheads.json"], "'heads' must be"),
    ([*EVAL, "{ws}/badheads.json", "--ablation", "foo"], "unknown ablation 'foo'"),
    ([*EVAL, "{ws}/badheads.json", "--n-prompts", "0"], "--n-prompts"),
    ([*EVAL, "{ws}/badheads.json", "--n-random", "-1"], "--n-random"),
    ([*EVAL, "{ws}/badheads.json", "--seed", "-1"], "--seed"),
    # --- report
    (["report", "{ws}/nowhere"], "does not exist"),
    (["report", "{ws}/noresult.json"], "not a circuits result"),
    (["report", "{ws}/list.json"], "not a circuits result"),
    (["report", "{ws}/notjson.json"], "not valid JSON"),
    # --- sae train / eval
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/new_sae", "--arch", "relux"], "'relu'"),
    ([*SAE, "--data", "{ws}/empty.txt", "--out", "{ws}/new_sae"], "empty.txt"),
    (["sae", "train", "--model", "tiny-ioi", "--hook", "blocks.0.hook_resid_pots", "--data",
      "{ws}/corpus.txt", "--out", "{ws}/new_sae"], "'blocks.0.hook_resid_post'"),
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/new_sae", "--arch", "topk", "--k", "9",
      "--d-sae", "8"], "k must be between 1 and d_sae=8"),
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/new_sae", "--arch", "topk", "--k", "2000"],
     "k must be between 1 and d_sae=1024"),
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/new_sae", "--tokens", "0"], "--tokens"),
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/new_sae", "--seed", "-1"], "--seed"),
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/saedir"], "already holds"),
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/new_sae", "--resume"], "--resume"),
    ([*SAE, "--data", "{ws}/nowhere.txt", "--out", "{ws}/new_sae"], "does not exist"),
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/new_sae", "--arch", "topk", "--l1", "1"],
     "--l1 applies"),
    ([*SAE, "--data", "{ws}/corpus.txt", "--out", "{ws}/afile"], "not a directory"),
    (["sae", "eval", "{ws}/nowhere", "--data", "{ws}/corpus.txt"], "nowhere does not exist"),
    (["sae", "eval", "{ws}/saedir", "--data", "{ws}/corpus.txt", "--contexts", "0"], "--contexts"),
    # --- zoo
    (["zoo", "train", "--task", "iio", "--out", "{ws}/new_zoo"], "'ioi'"),
    (["zoo", "train", "--task", "ioi", "--steps", "0", "--out", "{ws}/new_zoo"], "--steps"),
    (["zoo", "train", "--task", "ioi", "--out", "{ws}/afile"], "not a directory"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> sha256 of its bytes ('dir' for folders)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert {argv[0] for argv, _ in CASES} >= {"find", "compare", "evaluate", "report", "sae", "zoo"}


@pytest.mark.parametrize(("argv", "fragment"), CASES, ids=[" ".join(a[:2]) + f" [{f}]" for a, f in CASES])
def test_bad_input(ws: Path, argv: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if "100000" in argv:  # the memory guard: pretend this machine has 64 MiB free
        monkeypatch.setenv("CIRCUITS_MEMORY_BYTES", str(64 << 20))
    before = _snapshot(ws)
    result = runner.invoke(app, [a.replace("{ws}", str(ws)) for a in argv])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert fragment in result.output, result.output
    if "Usage:" not in result.stderr:  # our errors (not typer's own option parsing): exactly one line
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if "--json" in argv:
        payload = json.loads(result.stdout)
        assert set(payload) == {"error", "kind"} and fragment in payload["error"]
    assert _snapshot(ws) == before  # byte-identical, nothing created (not even an empty --out folder)


def test_overwrite_replaces_atomically(ws: Path, tmp_path: Path) -> None:
    """With --overwrite the refused row runs, and the user's file is replaced whole (by an atomic rename)."""
    target = tmp_path / "run"
    shutil.copytree(ws / "run", target)
    result = runner.invoke(app, [*FIND, "--out", str(target), "--overwrite", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads((target / "result.json").read_text())["task"] == "ioi"
    assert not list(target.glob(".*.tmp"))


# ---- fuzzing the readers: any bytes give one CircuitsError line
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from circuits.errors import CircuitsError  # noqa: E402

JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=False)
                    | st.text(max_size=6),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                        st.sampled_from(["heads", "edges", "classes", "ioi", "task", "model", "prompt",
                                         "answer", "corrupt", "layer", "head", "in_circuit", "score",
                                         "ground_truth", "wrong_answers", "prompts", "x"]), kids, max_size=5),
                    max_leaves=12)
CONTENT = st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=60),
                    st.lists(JSON, max_size=4).map(lambda rows: "\n".join(map(json.dumps, rows)).encode()))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line_or_ok(read, path: Path) -> None:
    try:
        read(path)
    except CircuitsError as err:
        assert str(err) and "\n" not in str(err).strip()


@FUZZ
@given(content=CONTENT)
def test_fuzz_task_file_reader(tmp_path: Path, content: bytes) -> None:
    from tasks.custom import load_task_file

    path = tmp_path / "task.jsonl"
    path.write_bytes(content)
    _one_line_or_ok(load_task_file, path)


@FUZZ
@given(content=CONTENT)
def test_fuzz_manifest_reader(tmp_path: Path, content: bytes) -> None:
    from circuits.jsonio import read_json
    from circuits.zoo.ship import read_manifest
    from tasks.base import ground_truths_from

    (tmp_path / "manifest.json").write_bytes(content)

    def read(directory: Path) -> None:
        manifest = read_manifest(directory)
        for task, truth in ground_truths_from(manifest.get("ground_truth", {}), "manifest.json").items():
            truth.validate(4, 8, task)
        ground_truths_from(read_json(directory / "manifest.json"), "ground truth file")

    _one_line_or_ok(read, tmp_path)


@FUZZ
@given(content=CONTENT)
def test_fuzz_result_reader(tmp_path: Path, content: bytes) -> None:
    from circuits.cli.evaluate import load_run
    from circuits.report import load_result

    path = tmp_path / "result.json"
    path.write_bytes(content)
    _one_line_or_ok(load_run, path)
    _one_line_or_ok(load_result, path)
