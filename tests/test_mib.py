"""MIB's CPR and CMD on planted models where the right ranking is known."""

from __future__ import annotations

import pytest
import torch
from conftest import ToyTask, plant_heads, tiny_model

import circuits.evaluation.mib as mib
from circuits.errors import CircuitsError
from circuits.evaluation.mib import SIZE_GRID, areas, grid_sizes, mib_scores, top_masks


def planted_one(head: tuple[int, int] = (1, 2)):
    """2 layers x 4 heads; only `head` writes anything (the others' values are zero)."""
    task = ToyTask()
    tok = task.word_tokenizer()
    model = tiny_model(tok.vocab_size, n_layers=2, n_heads=4)
    plant_heads(model, {head})
    return task, model, task.prompts(tok, 16, seed=0)


def test_grid_sizes_and_top_masks_keep_the_top_k_with_ties_in_head_order():
    assert grid_sizes(8) == [0, 0, 0, 0, 0, 0, 1, 2, 4, 8]
    assert grid_sizes(270)[-4:] == [27, 54, 135, 270] and grid_sizes(270)[:3] == [0, 1, 1]
    scores = torch.tensor([[0.5, 2.0], [2.0, 0.1]])
    masks = top_masks(scores, [1, 2, 3])
    assert masks[0].tolist() == [[False, True], [False, False]]  # tie at 2.0: (0, 1) before (1, 0)
    assert masks[1].tolist() == [[False, True], [True, False]]
    assert int(masks[2].sum()) == 3


def test_areas_use_the_trapezoid_rule_over_linear_p():
    ones = [1.0] * len(SIZE_GRID)
    cpr, cmd, mean = areas(ones)
    assert cpr == pytest.approx(0.999) and cmd == pytest.approx(0.0) and mean == 1.0
    step = [0.0] * 6 + [1.0] * 4  # 0 up to p = 0.05, 1 from p = 0.1
    cpr, cmd, _ = areas(step)
    assert cpr == pytest.approx(0.9 + 0.05 / 2) and cmd == pytest.approx(0.999 - cpr)


@pytest.mark.parametrize("intervention", ["counterfactual", "mean"])
def test_the_ranking_with_the_only_important_head_first_wins(intervention, monkeypatch):
    task, model, prompts = planted_one((1, 2))
    good = torch.zeros(2, 4)
    good[1, 2] = 1.0
    reverse = -good
    calls = []
    real = mib.metric_under_masks
    monkeypatch.setattr(mib, "metric_under_masks", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = mib_scores(model, task, prompts, {"good": good, "reverse": reverse}, interventions=(intervention,),
                     n_random=20, seed=0)
    assert len(calls) == 1  # every ranking, the random draws, full and empty: one batched call
    res = out["interventions"][intervention]
    assert res["full"] != pytest.approx(res["empty"])
    g, r, rand = (res["rankings"][k] for k in ("good", "reverse", "random"))
    # the important head alone is the whole model: faithfulness 1 from the first kept head on
    assert g["faithfulness"][6:] == pytest.approx([1.0] * 4, abs=1e-5)
    assert g["faithfulness"][:6] == pytest.approx([0.0] * 6, abs=1e-5)
    assert g["cpr"] == pytest.approx(0.925, abs=1e-5) and g["cmd"] == pytest.approx(0.074, abs=1e-5)
    # reversed: it comes last, so only the full model (p = 1) behaves like the model
    assert r["faithfulness"][:9] == pytest.approx([0.0] * 9, abs=1e-5)
    assert r["faithfulness"][9] == pytest.approx(1)
    assert g["cpr"] > rand["cpr"] > r["cpr"] and g["cmd"] < rand["cmd"] < r["cmd"]
    assert len(rand["draws"]) == 20 and out["sizes"] == grid_sizes(8)


def test_two_planted_heads_partial_credit_and_bad_input():
    task = ToyTask()
    tok = task.word_tokenizer()
    model = tiny_model(tok.vocab_size, n_layers=2, n_heads=4)
    plant_heads(model, {(0, 1), (1, 3)})
    prompts = task.prompts(tok, 16, seed=0)
    both = torch.zeros(2, 4)
    both[0, 1], both[1, 3] = 2.0, 1.0
    out = mib_scores(model, task, prompts, {"both": both}, interventions=("mean",), n_random=0)
    curve = out["interventions"]["mean"]["rankings"]["both"]["faithfulness"]
    assert curve[7:] == pytest.approx([1.0] * 3, abs=1e-5)  # k = 2, 4, 8 keep both planted heads
    assert "random" not in out["interventions"]["mean"]["rankings"]
    with pytest.raises(CircuitsError, match="shape"):
        mib_scores(model, task, prompts, {"bad": torch.zeros(3, 4)})
    with pytest.raises(CircuitsError, match="random"):
        mib_scores(model, task, prompts, {"random": both})
