"""`circuits compare --report`: one self-contained page from compare.json, robust to the keys a comparison
has (edge-level CPR/CMD, intervals, no ground truth), with find's overwrite and atomic-write rules."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from circuits.cli.main import app
from circuits.report import ReportError
from circuits.report.compare import cell, compare_report_files, interval, write_compare_report

ROOT = Path(__file__).resolve().parent.parent
DATA_URI = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")
runner = CliRunner()


@pytest.fixture(scope="module")
def stored() -> dict:
    """A real comparison (tiny-ioi, 5 SAE seeds), as committed under benchmarks/results."""
    return json.loads((ROOT / "benchmarks" / "results" / "compare" / "ioi" / "compare.json").read_text())


def test_page_is_self_contained_with_every_section(stored, tmp_path):
    files = write_compare_report(stored, tmp_path / "cmp.html", {(0, 1)})
    assert set(files) == {"report", "faithfulness", "roc", "circuits", "agreement"}
    page = Path(files["report"]).read_text()
    inlined = [base64.b64decode(b) for b in DATA_URI.findall(page)]
    assert len(inlined) == 4 and all(Path(files[k]).read_bytes() in inlined for k in files if k != "report")
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page) and "<script" not in page
    for text in ("Methods", "Faithfulness", "ROC against the ground truth", "Circuits side by side",
                 "Agreement between methods", "random ranking (floor)", "discrete SAE", "EAP", "ACDC"):
        assert text in page
    sae = stored["methods"]["sae"]["cpr_counterfactual"]
    assert f"{sae['mean']:.3f} ± {sae['std']:.3f}" in page  # spread over seeds in the table
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(f).name for f in files.values())


def test_edge_level_scores_and_intervals_are_shown_when_present(stored, tmp_path):
    richer = copy.deepcopy(stored)
    sae = richer["methods"]["sae"]
    sae["cpr_counterfactual"]["ci"] = [0.21, 0.39]  # bootstrap interval inside the summary
    sae["edge_cpr_counterfactual"] = {"mean": 0.5, "std": 0.01, "values": [0.49, 0.51]}
    sae["edge_cpr_counterfactual_ci"] = {"low": 0.45, "high": 0.55}  # or beside it
    sae["edge_scores_from"] = "node-derived"
    page = Path(write_compare_report(richer, tmp_path / "r.html")["report"]).read_text()
    assert "[0.210, 0.390]" in page and "edge CPR cf" in page and "0.500 ± 0.010 [0.450, 0.550]" in page
    assert "<sup>†</sup>" in page and "derived from its head scores" in page
    assert "edge CPR cf" not in Path(write_compare_report(stored, tmp_path / "s.html")["report"]).read_text()


def test_interval_and_cell_read_every_shape():
    assert interval({"mean": 1, "ci_low": 0.5, "ci_high": 1.5}) == (0.5, 1.5)
    assert interval({"mean": 1, "interval": {"lower": 0, "upper": 2}}) == (0.0, 2.0)
    assert interval({"mean": 1}, {"x_bootstrap": [0.1, 0.2]}, "x") == (0.1, 0.2)
    assert interval({"mean": 1, "ci": "n/a"}) is None
    assert cell({"x": {"mean": 0.5, "std": 0.1, "values": [0.4]}}, "x") == "0.500"  # one run: no spread
    assert cell({"x": None}, "x") == "—" and cell({"x": 0.25}, "x", 2) == "0.25"


def test_without_ground_truth_there_is_no_roc_and_the_reason_is_shown(stored, tmp_path):
    bare = {**copy.deepcopy(stored), "ground_truth": None, "roc_curves": {},
            "ground_truth_note": "no ground truth for <random> weights"}
    files = write_compare_report(bare, tmp_path / "b.html")
    assert "roc" not in files
    page = Path(files["report"]).read_text()
    assert "no ground truth for &lt;random&gt; weights" in page and "<random>" not in page


def test_not_a_comparison_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="missing methods"):
        write_compare_report({"task": "t", "model": "m", "n_layers": 1, "n_heads": 1}, tmp_path / "x.html")
    with pytest.raises(ReportError, match="is a directory"):
        write_compare_report({}, tmp_path)


def test_cli_compare_report_refuses_to_overwrite_and_replaces_with_overwrite(tmp_path):
    page = tmp_path / "pages" / "cmp.html"  # the folder is created, as for find --report
    args = ["compare", "--task", "ioi", "--methods", "sae,eap", "--seeds", "1", "--n-score", "20",
            "--mib-prompts", "6", "--report", str(page)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert files["report"] == str(page) and page.is_file() and Path(files["circuits"]).is_file()
    before = page.read_bytes()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "already exist" in refused.output and "Traceback" not in refused.output
    assert page.read_bytes() == before  # untouched
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert set(compare_report_files(page)) >= {Path(f) for f in files.values()}
    assert not [p for p in page.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    result = runner.invoke(app, ["compare", "--task", "ioi", "--report", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output
