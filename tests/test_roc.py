"""Our ROC AUC and ROC curve (sklearn's import cost 1.7 s of a tiny find) agree with sklearn's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from circuits.evaluation.metrics import _auc, roc_curve_points
from tasks.base import GroundTruth


@pytest.mark.parametrize("seed", range(6))
def test_auc_and_curve_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 150))
    labels = (rng.random(n) < rng.uniform(0.1, 0.6)).astype(int)
    labels[:2] = [0, 1]  # both classes present
    scores = np.round(rng.normal(size=n) + labels, int(rng.integers(0, 3)))  # rounding makes ties
    assert _auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)

    n_heads = 5
    heads = [(int(i) // n_heads, int(i) % n_heads) for i in np.flatnonzero(labels)]
    padded = (-n) % n_heads  # a [layer, head] grid: pad with negatives scored at the minimum
    grid = torch.tensor(np.r_[scores, np.full(padded, scores.min())]).reshape(-1, n_heads)
    truth = GroundTruth(heads=tuple(heads), source="test")
    fpr, tpr, _ = roc_curve(np.r_[labels, np.zeros(padded, dtype=int)], grid.reshape(-1).numpy())
    curve = roc_curve_points(grid, truth)
    assert curve is not None
    assert np.allclose(curve["fpr"], fpr) and np.allclose(curve["tpr"], tpr)


def test_auc_of_one_class_or_all_ties() -> None:
    assert _auc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])) is None
    assert _auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert _auc(np.array([0, 1]), np.array([0.0, 1.0])) == 1.0
    assert _auc(np.array([0, 1]), np.array([1.0, 0.0])) == 0.0
