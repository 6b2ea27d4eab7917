"""circuits.truths: one file per model x task x ablation, read by every evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuits.errors import ModelLoadError
from circuits.models import load_model, zoo_names
from circuits.truths import (
    MAIN_ABLATION,
    REQUIRED_METHOD,
    TRUTHS_DIR,
    alternative_truths,
    attach_shipped,
    ground_truth_for,
    read_truth_file,
    shipped_files,
    shipped_models,
    shipped_truths,
    write_truth,
)
from tasks import get_task
from tasks.base import GroundTruth

HOW = {"ablation_method": "mean", "n_prompts": 40, "prompt_seed": 7, "search": "greedy", "threshold": 0.9,
       "normalized_faithfulness": 0.93}


def _truth(heads: tuple[tuple[int, int], ...], ablation: str = "mean") -> GroundTruth:
    return GroundTruth(heads=heads, source="ablation", method={**HOW, "ablation_method": ablation})


def test_every_shipped_file_says_how_it_was_computed() -> None:
    models = shipped_models()
    assert {"smollm2-135m", *zoo_names()} <= set(models)
    for model in models:
        files = shipped_files(model)
        assert files and all(f.model == model for f in files)
        for f in files:
            assert all(k in f.truth.method for k in REQUIRED_METHOD)
            assert f.truth.method["ablation_method"] == f.ablation
            assert f.truth.method["normalized_faithfulness"] >= f.truth.method["threshold"]
        assert any(f.ablation == MAIN_ABLATION for f in files)  # every model has its main circuit


def test_adding_a_models_truths_is_adding_a_file(tmp_path: Path) -> None:
    mean, resample = _truth(((0, 1), (1, 2))), _truth(((0, 1),), "resample")
    path = write_truth("m", "ioi", "mean", mean, {"faithfulness": {"normalized": 0.93}}, directory=tmp_path)
    write_truth("m", "ioi", "resample", resample, {}, directory=tmp_path)
    assert path == tmp_path / "m" / "ioi.mean.json"
    assert shipped_models(tmp_path) == ["m"]
    assert shipped_truths("m", tmp_path) == {"ioi": {"mean": mean, "resample": resample}}
    assert read_truth_file(path).details == {"faithfulness": {"normalized": 0.93}}


def test_a_loaded_model_gets_its_files_and_evaluation_reads_them(tmp_path: Path) -> None:
    loaded = load_model("tiny-ioi")
    task = get_task("ioi")
    shipped = ground_truth_for(task, loaded)[0]
    assert shipped is not None and shipped == shipped_truths("tiny-ioi")["ioi"]["mean"]
    assert alternative_truths(task, loaded) == {}
    loaded.name = "elsewhere"
    write_truth("elsewhere", "ioi", "resample", _truth(((3, 7),), "resample"), {}, directory=tmp_path)
    attach_shipped(loaded, directory=tmp_path)
    assert alternative_truths(task, loaded) == {"resample": _truth(((3, 7),), "resample")}
    assert ground_truth_for(task, loaded)[0] == shipped  # the main one is untouched


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("task"), "'task' must be a string"),
    (lambda d: d.update(ablation="resample"), "belongs at m/ioi.resample.json"),
    (lambda d: d["method"].pop("n_prompts"), "missing n_prompts"),
    (lambda d: d.update(heads=[[0, "x"]]), "[layer, head]"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, edit, message: str) -> None:
    path = write_truth("m", "ioi", "mean", _truth(((0, 1),)), {}, directory=tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError) as err:
        read_truth_file(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_heads_the_model_lacks_are_refused_at_load(tmp_path: Path) -> None:
    loaded = load_model("tiny-ioi")
    loaded.name = "small"
    write_truth("small", "ioi", "mean", _truth(((9, 0),)), {}, directory=tmp_path)
    with pytest.raises(ModelLoadError, match="small/ioi.mean.json"):
        attach_shipped(loaded, directory=tmp_path)


def test_the_home_is_the_package_folder() -> None:
    assert TRUTHS_DIR == Path(__file__).resolve().parent.parent / "circuits" / "truths"
