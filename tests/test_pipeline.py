"""The discrete-SAE pipeline on tiny models: shapes, planted circuits, determinism."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from circuits.discovery.activations import head_activations
from circuits.discovery.config import FindConfig
from circuits.discovery.pipeline import find_circuit
from circuits.errors import CircuitsError

FAST = dict(n_train=10, n_score=40, steps=100, sae="per-head", hook="z")


def test_head_activations_shapes_and_result_is_z_times_wo(toy_task):
    tok = toy_task.word_tokenizer()
    model = tiny_model(tok.vocab_size, n_layers=3, n_heads=4)
    prompts = toy_task.prompts(tok, 6, seed=0)
    z = head_activations(model, prompts.positive, hook="z", position="mean")
    result = head_activations(model, prompts.positive, hook="result", position="mean")
    assert z.shape == (6, 12, 8)
    assert result.shape == (6, 12, 32)
    _, cache = model.run_with_cache(prompts.positive)
    z_full = torch.stack([cache[f"blocks.{l}.attn.hook_z"] for l in range(3)], 2)  # [n, seq, L, H, d]
    expected = torch.einsum("nplhd,lhdm->nplhm", z_full, torch.stack([b.attn.W_O for b in model.blocks]))
    assert torch.allclose(result, expected.mean(1).reshape(6, 12, 32), atol=1e-5)
    last = head_activations(model, prompts.positive, hook="z", position="last")
    assert torch.allclose(last, z_full[:, -1].reshape(6, 12, 8), atol=1e-6)
    each = head_activations(model, prompts.positive, hook="z", position="each")  # [n*seq, head, d]
    seq = prompts.seq_len
    assert each.shape == (6 * seq, 12, 8)
    assert torch.allclose(each.reshape(6, seq, 12, 8), z_full.reshape(6, seq, 12, 8), atol=1e-6)


def test_unknown_hook_and_position_are_clear_errors(toy_task):
    tok = toy_task.word_tokenizer()
    model = tiny_model(tok.vocab_size)
    tokens = toy_task.prompts(tok, 2, 0).positive
    with pytest.raises(CircuitsError, match="unknown hook"):
        head_activations(model, tokens, hook="q")
    with pytest.raises(CircuitsError, match="unknown position"):
        head_activations(model, tokens, position="first")


@pytest.mark.parametrize("hook, position", [("z", "mean"), ("result", "mean"), ("z", "each")])
def test_planted_heads_rank_first(planted, hook, position):
    task, loaded, heads = planted
    result = find_circuit(task, loaded, FindConfig(**{**FAST, "hook": hook, "position": position}))
    ranked = torch.argsort(result.node_scores.reshape(-1), descending=True)[:len(heads)]
    top = {divmod(int(i), loaded.n_heads) for i in ranked}
    assert top == heads
    assert result.evaluation["roc_auc"] == 1.0
    assert result.circuit == frozenset(heads)
    assert result.evaluation["edge_roc_auc"] == 1.0


def test_shared_sae_never_scores_constant_heads(planted):
    """A head whose output is constant emits one code on both sets, so it can never score."""
    task, loaded, heads = planted
    result = find_circuit(task, loaded, FindConfig(**{**FAST, "sae": "shared"}))
    assert result.node_scores.shape == (2, 4)
    for layer in range(2):
        for h in range(4):
            if (layer, h) not in heads:
                assert result.node_scores[layer, h] == 0


def test_same_seed_same_circuit_and_other_seed_runs(planted):
    task, loaded, heads = planted
    a = find_circuit(task, loaded, FindConfig(seed=3, **FAST))
    b = find_circuit(task, loaded, FindConfig(seed=3, **FAST))
    assert torch.equal(a.node_scores, b.node_scores)
    assert a.circuit == b.circuit
    assert a.edge_scores == b.edge_scores
    assert a.to_json()["heads"] == b.to_json()["heads"]
    # Another seed draws other prompts and another SAE: other scores, the same planted heads on top.
    n = FAST["n_train"] + FAST["n_score"]
    assert not torch.equal(task.prompts(loaded.tokenizer, n, 3).positive,
                           task.prompts(loaded.tokenizer, n, 4).positive)
    c = find_circuit(task, loaded, FindConfig(seed=4, **FAST))
    assert c.to_json()["config"]["seed"] == 4 and a.to_json()["config"]["seed"] == 3
    assert not torch.equal(a.node_scores, c.node_scores)
    assert a.edge_scores != c.edge_scores
    assert c.evaluation["roc_auc"] == a.evaluation["roc_auc"] == 1.0
    ranked = torch.argsort(c.node_scores.reshape(-1), descending=True)[:len(heads)]
    assert {divmod(int(i), loaded.n_heads) for i in ranked} == heads


def test_result_json_has_every_field(planted):
    task, loaded, _ = planted
    payload = find_circuit(task, loaded, FindConfig(**FAST)).to_json()
    for key in ("task", "model", "config", "heads", "edges", "evaluation", "timings"):
        assert key in payload
    assert len(payload["heads"]) == loaded.n_layers * loaded.n_heads
    assert payload["config"]["seed"] == 0
    assert payload["timings"]["total"] >= sum(v for k, v in payload["timings"].items() if k != "total") - 1e-6
    assert all(e["source"][0] < e["target"][0] for e in payload["edges"])


@pytest.mark.parametrize("bad, match", [
    (dict(n_train=1), "n-train"), (dict(n_score=0), "n-score"), (dict(d_sae=0), "d-sae"),
    (dict(hook="q"), "unknown hook"), (dict(sae="many"), "SAE mode"), (dict(score="x"), "unknown score"),
])
def test_bad_config_is_rejected(planted, bad, match):
    task, loaded, _ = planted
    with pytest.raises(CircuitsError, match=match):
        find_circuit(task, loaded, FindConfig(**{**FAST, **bad}))
