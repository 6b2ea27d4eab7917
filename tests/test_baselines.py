"""Baselines against brute-force patching on tiny models where the answer is known."""

from __future__ import annotations

import pytest
import torch
from conftest import ToyTask, tiny_model

from circuits._compat import HookedTransformer, HookedTransformerConfig
from circuits.errors import CircuitsError
from circuits.evaluation.metrics import edge_auc, evaluate_heads
from circuits.methods import BASELINES, run_baseline
from circuits.methods.acdc import acdc
from circuits.methods.base import split_qkv_inputs
from circuits.methods.eap import eap_attributions
from circuits.methods.patching import activation_patching


def float64_model(vocab: int, n_layers: int, n_heads: int = 3, normalization: str | None = "LN",
                  attn_only: bool = True, seed: int = 1, positions: str = "standard") -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=n_layers, n_heads=n_heads, d_model=16, d_head=4, n_ctx=16,
                                  d_vocab=vocab, attn_only=attn_only, d_mlp=None if attn_only else 32,
                                  act_fn="relu", normalization_type=normalization, seed=seed,
                                  positional_embedding_type=positions, device="cpu",
                                  default_prepend_bos=False, dtype=torch.float64)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    model.eval()
    return model


def brute_force_z_patch(model, task, prompts, layer, head, eps=1.0, reference=None):
    """Mean metric with one head's z moved eps of the way to `reference` (default: paired corrupt z)."""
    _, corrupt = model.run_with_cache(prompts.negative)
    target = corrupt[f"blocks.{layer}.attn.hook_z"][:, :, head] if reference is None else reference

    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = z[:, :, head] + eps * (target - z[:, :, head])
        return z

    with torch.no_grad():
        logits = model.run_with_hooks(prompts.positive, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
    return float(task.metric(logits[:, -1], prompts).mean())


def brute_force_edge_logits(model, prompts, sender, receiver, eps=1.0):
    """Last-position logits when receiver's q/k/v inputs (or the output, receiver=None) get
    eps * (result_corrupt(sender) - result_clean(sender)) added; sender=None is the embedding input."""
    _, clean = model.run_with_cache(prompts.positive)
    _, corrupt = model.run_with_cache(prompts.negative)
    if sender is None:
        delta = corrupt["blocks.0.hook_resid_pre"] - clean["blocks.0.hook_resid_pre"]
    else:
        l, h = sender
        dz = corrupt[f"blocks.{l}.attn.hook_z"][:, :, h] - clean[f"blocks.{l}.attn.hook_z"][:, :, h]
        delta = dz @ model.blocks[l].attn.W_O[h]  # [n, pos, d_model]
    hooks = []
    if receiver is None:
        def add_out(x, hook):
            return x + eps * delta
        hooks.append((f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", add_out))
    else:
        lv, hv = receiver

        def add_in(x, hook):
            x = x.clone()
            x[:, :, hv] = x[:, :, hv] + eps * delta
            return x
        hooks += [(f"blocks.{lv}.hook_{x}_input", add_in) for x in "qkv"]
    with torch.no_grad(), split_qkv_inputs(model):
        return model.run_with_hooks(prompts.positive, fwd_hooks=hooks)[:, -1]


@torch.no_grad()
def clean_metric(model, task, prompts) -> float:
    return float(task.metric(model(prompts.positive)[:, -1], prompts).mean())


@pytest.fixture
def task_and_prompts():
    task = ToyTask()
    tok = task.word_tokenizer()
    return task, tok, task.prompts(tok, 12, seed=0)


def test_eap_nodes_equal_exact_patching_when_the_model_is_linear(task_and_prompts):
    """One attention layer, no LayerNorm: the metric is linear in each head's z, so the first-order
    estimate is exact."""
    task, tok, prompts = task_and_prompts
    model = float64_model(tok.vocab_size, n_layers=1, n_heads=4, normalization=None)
    attr = eap_attributions(model, task, prompts, edges=False)
    clean = clean_metric(model, task, prompts)
    exact = torch.tensor([[brute_force_z_patch(model, task, prompts, 0, h) - clean for h in range(4)]],
                         dtype=torch.float64)
    assert exact.abs().max() > 1e-3  # the heads matter, so agreement is not trivial
    torch.testing.assert_close(attr.node.double(), exact, rtol=1e-4, atol=1e-6)


def test_eap_node_and_edge_attributions_are_the_metric_derivatives(task_and_prompts):
    """With LayerNorm and two layers: attributions equal finite differences of brute-force patching."""
    task, tok, prompts = task_and_prompts
    model = float64_model(tok.vocab_size, n_layers=2, n_heads=3)
    attr = eap_attributions(model, task, prompts, edges=True, batch_size=5)  # batches of 5, 5, 2
    eps = 1e-5
    clean = clean_metric(model, task, prompts)
    for layer, head in [(0, 0), (0, 2), (1, 1)]:
        fd = (brute_force_z_patch(model, task, prompts, layer, head, eps) - clean) / eps
        assert float(attr.node[layer, head]) == pytest.approx(fd, rel=1e-3, abs=1e-6)
    H = 3
    for sender, receiver in [((0, 0), (1, 2)), ((0, 1), (1, 0)), ((0, 2), (1, 1))]:
        logits = brute_force_edge_logits(model, prompts, sender, receiver, eps)
        fd = (float(task.metric(logits, prompts).mean()) - clean) / eps
        u, v = sender[0] * H + sender[1], receiver[0] * H + receiver[1]
        assert float(attr.edge[u, v]) == pytest.approx(fd, rel=1e-3, abs=1e-6)
    assert attr.edge[:H].abs().sum() > 0 and attr.edge[H:].abs().sum() == 0  # only layer 0 -> layer 1
    assert not model.cfg.use_split_qkv_input  # the temporary switch is undone


def test_patching_matches_a_loop_over_heads(task_and_prompts):
    task, tok, prompts = task_and_prompts
    model = tiny_model(tok.vocab_size, n_layers=2, n_heads=3)
    result = activation_patching(model, task, prompts, "mean")
    _, corrupt = model.run_with_cache(prompts.negative)
    clean = clean_metric(model, task, prompts)
    for layer in range(2):
        for head in range(3):
            mean_z = corrupt[f"blocks.{layer}.attn.hook_z"][:, :, head].mean(0)  # [pos, d_head]
            ablated = brute_force_z_patch(model, task, prompts, layer, head, reference=mean_z)
            assert float(result.node_scores[layer, head]) == pytest.approx(abs(ablated - clean), abs=1e-4)
    assert result.n_forward == 1 + 2 + 6  # negatives, intact + all ablated, one per head
    assert result.n_backward == 0 and not result.stochastic


def test_resample_patching_is_seeded(task_and_prompts):
    task, tok, prompts = task_and_prompts
    model = tiny_model(tok.vocab_size, n_layers=2, n_heads=3)
    a = activation_patching(model, task, prompts, "resample", seed=1)
    b = activation_patching(model, task, prompts, "resample", seed=1)
    c = activation_patching(model, task, prompts, "resample", seed=2)
    assert torch.equal(a.node_scores, b.node_scores) and a.stochastic
    assert not torch.equal(a.node_scores, c.node_scores)


def test_every_baseline_recovers_planted_heads(planted):
    task, loaded, heads = planted
    prompts = task.prompts(loaded.tokenizer, 24, seed=0)
    truth = task.ground_truth("planted-toy")
    L, H = loaded.n_layers, loaded.n_heads
    for name in BASELINES:
        result = run_baseline(name, loaded.model, task, prompts, seed=0, selection="positive")
        assert result.node_scores.shape == (L, H), name
        others = [result.node_scores[l, h] for l in range(L) for h in range(H) if (l, h) not in heads]
        assert max(float(x) for x in others) < 1e-6, name  # silenced heads do nothing
        assert min(float(result.node_scores[h]) for h in heads) > 1e-4, name
        assert result.selected == frozenset(heads), name  # "positive": every head with an effect
        assert evaluate_heads(result.node_scores, result.selected, truth)["roc_auc"] == 1.0
        assert result.seconds > 0 and result.n_forward > 0
        if result.edge_scores is not None:  # the planted edge is the only head->head edge that matters
            assert edge_auc(result.edge_scores, truth, L, H) == 1.0, name
            assert max(result.edge_scores, key=result.edge_scores.get) == ((0, 1), (1, 3))


def test_default_selection_is_label_free_otsu_on_the_scores(planted):
    task, loaded, heads = planted
    prompts = task.prompts(loaded.tokenizer, 24, seed=0)
    result = run_baseline("eap", loaded.model, task, prompts)
    assert result.selected and result.selected <= frozenset(heads)
    top = divmod(int(result.node_scores.reshape(-1).argmax()), loaded.n_heads)
    assert top in result.selected


def test_acdc_sweep_is_monotone_and_task_metric_variant_runs(planted):
    task, loaded, heads = planted
    prompts = task.prompts(loaded.tokenizer, 16, seed=0)
    result = acdc(loaded.model, task, prompts, distance="metric", exponents=(-6, -3, 0))
    assert {h for h in heads} <= {(l, h) for l, h in (result.node_scores > 0).nonzero().tolist()}
    per_tau = result.details["edges_per_tau"]
    assert per_tau == sorted(per_tau, reverse=True)  # larger tau prunes at least as much here
    assert result.details["taus"] == sorted(result.details["taus"])


def test_eap_on_a_model_with_mlps_and_costs(task_and_prompts):
    task, tok, prompts = task_and_prompts
    model = tiny_model(tok.vocab_size, n_layers=2, n_heads=3, attn_only=False)
    result = run_baseline("eap", model, task, prompts)
    assert result.n_forward == pytest.approx(2.0) and result.n_backward == pytest.approx(1.0)
    assert len(result.edge_scores) == 9  # 3 layer-0 heads x 3 layer-1 heads
    assert torch.isfinite(result.node_scores).all()


def test_unknown_baseline_is_a_clear_error(task_and_prompts):
    task, tok, prompts = task_and_prompts
    model = tiny_model(tok.vocab_size)
    with pytest.raises(CircuitsError, match="unknown baseline"):
        run_baseline("hisp", model, task, prompts)


def test_split_qkv_switch_is_restored_on_error():
    model = tiny_model(20)
    with pytest.raises(RuntimeError), split_qkv_inputs(model):
        assert model.cfg.use_split_qkv_input
        raise RuntimeError("boom")
    assert not model.cfg.use_split_qkv_input


def test_eap_batch_size_is_bounded_by_the_per_prompt_size():
    """auto_batch_size keeps a batch's [batch, pos, layer*head, d_model] tensor under the budget: a long
    prompt on a wide model gets small batches (SmolLM2 docstring at 32 prompts was killed for memory)."""
    from types import SimpleNamespace

    from circuits.methods.eap import BATCH_BUDGET, MAX_BATCH, auto_batch_size

    small = SimpleNamespace(cfg=SimpleNamespace(n_layers=2, n_heads=4, d_model=32))
    smollm2 = SimpleNamespace(cfg=SimpleNamespace(n_layers=30, n_heads=9, d_model=576))
    assert auto_batch_size(small, 16) == MAX_BATCH
    b = auto_batch_size(smollm2, 40)
    assert 1 <= b < MAX_BATCH and b * 40 * 270 * 576 <= BATCH_BUDGET
    assert auto_batch_size(smollm2, 10**6) == 1


def test_bounded_acdc_searches_only_eap_candidates_and_says_so(planted):
    task, loaded, heads = planted
    prompts = task.prompts(loaded.tokenizer, 12, seed=0)
    full = acdc(loaded.model, task, prompts, exponents=(-4, -2, 0))
    bounded = acdc(loaded.model, task, prompts, candidates=12)
    d = bounded.details
    assert d["bounded"] and d["candidate_edges"] == 12 and 0 < d["tested_edges"] <= 12
    assert not full.details["bounded"] and full.details["tested_edges"] > 12
    assert bounded.n_forward < full.n_forward and bounded.n_backward > 0  # the EAP pass is counted
    assert set(heads) <= {(l, h) for l, h in (bounded.node_scores > 0).nonzero().tolist()}
    graph = bounded.graph_edge_scores
    assert graph is not None and graph.shape == full.graph_edge_scores.shape
    stopped = acdc(loaded.model, task, prompts, time_budget=0.0)
    assert stopped.details["tested_edges"] == 0 and stopped.details["time_budget_s"] == 0.0
