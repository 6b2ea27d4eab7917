"""Scores, codes, selection and evaluation against brute-force and hand-made answers."""

from __future__ import annotations

import pytest
import torch

from circuits.discovery.codes import codes_from_latents
from circuits.discovery.scoring import edge_scores, layered_pairs, node_scores
from circuits.discovery.selection import otsu_threshold, select_heads
from circuits.errors import CircuitsError
from circuits.evaluation.metrics import edge_auc, evaluate_heads
from tasks.base import GroundTruth


def test_codes_have_a_silent_code():
    latents = torch.tensor([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    assert codes_from_latents(latents).tolist() == [1, 3, 0]


def _brute_node(codes_pos, codes_neg, kind):
    out = []
    for h in range(codes_pos.shape[1]):
        neg = set(codes_neg[:, h].tolist())
        pos = codes_pos[:, h].tolist()
        if kind == "count":
            out.append(len(set(pos) - neg))
        else:
            out.append(sum(c not in neg for c in pos) / len(pos))
    return torch.tensor(out, dtype=torch.float)


def _brute_edge(codes_pos, codes_neg, pairs, kind):
    out = []
    for a, b in pairs.tolist():
        neg = set(zip(codes_neg[:, a].tolist(), codes_neg[:, b].tolist(), strict=True))
        pos = list(zip(codes_pos[:, a].tolist(), codes_pos[:, b].tolist(), strict=True))
        out.append(len(set(pos) - neg) if kind == "count" else sum(p not in neg for p in pos) / len(pos))
    return torch.tensor(out, dtype=torch.float)


@pytest.mark.parametrize("kind", ["count", "mass"])
def test_node_and_edge_scores_match_brute_force(kind):
    gen = torch.Generator().manual_seed(0)
    codes_pos = torch.randint(0, 5, (30, 6), generator=gen)
    codes_neg = torch.randint(0, 4, (25, 6), generator=gen)
    assert torch.allclose(node_scores(codes_pos, codes_neg, 5, kind), _brute_node(codes_pos, codes_neg, kind))
    pairs = layered_pairs(3, 2)
    assert pairs.shape == (12, 2)  # 2*2 (L0->L1) + 2*2 (L0->L2) + 2*2 (L1->L2)
    got = edge_scores(codes_pos, codes_neg, 5, pairs, kind, chunk=5)  # chunking must not matter
    assert torch.allclose(got, _brute_edge(codes_pos, codes_neg, pairs, kind))


def test_otsu_separates_two_groups_and_refuses_constant_scores():
    scores = torch.tensor([0.1, 0.2, 0.15, 5.0, 5.5, 0.05])
    assert 0.2 < otsu_threshold(scores) < 5.0
    assert select_heads(scores.reshape(2, 3)).sum() == 2
    assert select_heads(torch.zeros(2, 3)).sum() == 0
    assert select_heads(scores.reshape(2, 3), "top:3").sum() == 3
    with pytest.raises(CircuitsError):
        select_heads(scores.reshape(2, 3), "top:99")
    with pytest.raises(CircuitsError):
        select_heads(scores.reshape(2, 3), "median")


def test_evaluation_counts_and_auc():
    truth = GroundTruth(heads=((0, 0), (1, 1)), edges=(((0, 0), (1, 1)),))
    scores = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    ev = evaluate_heads(scores, {(0, 0), (1, 0)}, truth)
    assert ev["roc_auc"] == 1.0
    assert ev["precision"] == 0.5 and ev["recall"] == 0.5 and ev["f1"] == 0.5
    edges = {((0, 0), (1, 1)): 1.0, ((0, 1), (1, 0)): 2.0}
    assert edge_auc(edges, truth, 2, 2) == pytest.approx(2 / 3)
    with pytest.raises(CircuitsError, match="does not exist"):
        evaluate_heads(torch.zeros(1, 2), set(), truth)
