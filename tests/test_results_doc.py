"""docs/results.md is generated from benchmarks/results (benchmarks/render_results.py): the committed page
must equal a fresh rendering, and every results file must say who wrote it and be shown in one section."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _renderer():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("render_results", ROOT / "benchmarks" / "render_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_results"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_committed_results_page_is_what_the_json_renders_to():
    rr = _renderer()
    assert rr.DOC.read_text() == rr.render(), (
        "docs/results.md is out of date: run python benchmarks/render_results.py and commit it")


def test_readme_standing_table_is_generated_and_links_into_the_page():
    rr = _renderer()
    readme = rr.README.read_text()
    assert rr.BEGIN in readme and rr.END in readme
    assert rr.readme_with_standing(readme) == readme, (
        "README's standing table is out of date: run python benchmarks/render_results.py and commit it")
    block = readme.split(rr.BEGIN, 1)[1].split(rr.END, 1)[0]
    anchors = {line.split("](#", 1)[1].split(")", 1)[0] for line in rr.DOC.read_text().splitlines()
               if line.startswith("- [")}
    links = [part.split(")", 1)[0] for part in block.split("](docs/results.md#")[1:]]
    assert links and set(links) <= anchors  # every case links to a section that exists
    assert "discrete SAE" in block and "actdiff" in block and "EAP" in block


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_every_results_file_names_its_writer_and_has_exactly_one_section():
    import json

    rr = _renderer()
    rels = rr.result_files()
    assert rels
    for rel in rels:
        wb = json.loads((rr.RESULTS / rel).read_text()).get("written_by")
        assert isinstance(wb, dict) and wb.get("command"), f"{rel}: no written_by.command"
        assert (ROOT / wb["script"]).is_file(), f"{rel}: written_by.script {wb.get('script')} does not exist"
        owners = [s.pattern for s in rr.SECTIONS if rel in rr.claimed(s.pattern, rels)]
        assert len(owners) == 1, f"{rel}: claimed by {owners or 'no section'} (add one @section renderer)"


def test_a_new_section_is_one_function_and_the_page_is_deterministic(tmp_path):
    rr = _renderer()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.json").write_text(
        '{"written_by": {"script": "s.py", "command": "c"}, '
        '"x": {"mean": 0.5, "std": 0.25, "values": [0.25, 0.75]}}')
    before = len(rr.SECTIONS)
    try:
        @rr.section("sub/*.json", "A new table")
        def _new(files):
            return rr.table(["x"], [[rr.pm(rr.only(files)["x"])]])

        page = rr.render(tmp_path)
    finally:
        del rr.SECTIONS[before:]
    assert "## A new table" in page and "| 0.500 ± 0.250 |" in page and "`c` (s.py)" in page
    assert "[A new table](#a-new-table)" in page
    assert rr.render(tmp_path) != page  # the section is gone again once unregistered


def test_intervals_are_shown_beside_the_mean_where_stored():
    rr = _renderer()
    assert rr.pmci({"mean": 0.5, "std": 0.1, "values": [0.4, 0.6], "ci95": [0.41, 0.58]}) == (
        "0.50 ± 0.10 [0.41, 0.58]")
    assert rr.pmci({"mean": 0.5, "std": 0.0, "values": [0.5]}) == "0.50"
    assert rr.pmci(None) == rr.DASH


def test_a_partial_edge_level_run_lays_its_fields_over_the_stored_row():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("edge_level", ROOT / "benchmarks" / "edge_level.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old = {"model": "m", "methods": {"eap": {"edge_cpr_counterfactual": 1, "seconds": 3},
                                     "random": {"edge_cpr_counterfactual": 0}},
           "metric": {"counterfactual": {"full": 1}}, "wall_seconds": 10, "command": "first"}
    new = {"model": "m", "methods": {"eap": {"node_auc_mean": 0.9}, "sae": {"node_auc_mean": 0.6}},
           "metric": {}, "wall_seconds": 2, "command": "second"}
    merged = module.merge_result(old, new)
    assert merged["methods"]["eap"] == {"edge_cpr_counterfactual": 1, "seconds": 3, "node_auc_mean": 0.9}
    assert merged["methods"]["sae"] == {"node_auc_mean": 0.6} and "random" in merged["methods"]
    assert merged["command"] == "first" and merged["wall_seconds"] == 10  # the row's own run is kept
    assert merged["partial_runs"][-1]["command"] == "second"
    assert merged["metric"] == old["metric"]
    assert module.merge_result(None, new) is new


def test_ground_truth_section_lists_every_searched_truth_with_its_cost(tmp_path):
    """The truths section reads circuits/truths itself: a new searched file is a new row, with its prompts,
    faithfulness and seconds; a truth without a search record (the tiny models') is left out."""
    import json

    rr = _renderer()
    shipped = sorted((ROOT / "circuits" / "truths").glob("smollm2-135m/ioi.*.json"))
    for path in shipped:  # a scratch copy of the real records, one of them edited
        record = json.loads(path.read_text())
        if record["ablation"] == "resample":
            record["search"]["seconds"] = 4321.0
        (tmp_path / "smollm2-135m").mkdir(exist_ok=True)
        (tmp_path / "smollm2-135m" / path.name).write_text(json.dumps(record))
    tiny = ROOT / "circuits" / "truths" / "tiny-ioi" / "ioi.mean.json"
    (tmp_path / "tiny-ioi").mkdir()
    (tmp_path / "tiny-ioi" / tiny.name).write_text(tiny.read_text())
    rows = [line for line in rr.ground_truths_markdown(tmp_path).splitlines() if line.startswith("| smollm2")]
    assert len(rows) == len(shipped) == 2
    resample = next(r for r in rows if "| resample |" in r)
    assert "| 4321 |" in resample and "| 40 |" in resample
    assert "tiny-ioi" not in rr.ground_truths_markdown(tmp_path)
