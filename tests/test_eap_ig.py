"""EAP and EAP-IG over every edge of the residual-stream graph, against brute force on tiny float64 models.

EAP (one point at the clean input) must equal finite differences of patching one edge; EAP-IG with many
points must equal a numerical path integral of the gradient computed here with plain hooks; the GQA model
must score like its multi-head twin; the batch size must change nothing; the registered "eap-ig" baseline
must recover planted heads and their edge.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ToyTask
from test_baselines import float64_model
from test_gqa import gqa_model, mha_twin

from circuits._compat import HookedTransformer, HookedTransformerConfig
from circuits.discovery.config import FindConfig
from circuits.edges.attribution import edge_attributions, interpolation_points
from circuits.edges.graph import ComputeGraph
from circuits.errors import CircuitsError
from circuits.evaluation.metrics import edge_auc
from circuits.methods import BASELINES, run_baseline, run_registered_baseline
from circuits.methods.base import split_qkv_inputs
from circuits.methods.registry import REGISTRY, MethodInput
from tasks.base import PromptSet


@pytest.fixture
def toy():
    task = ToyTask()
    tok = task.word_tokenizer()
    return task, tok, task.prompts(tok, 8, seed=0)


def parallel_model(vocab: int, seed: int = 2) -> HookedTransformer:
    """GPT-J style: attention and MLP read the same residual stream (the MLP does not read its own layer's
    heads), RMSNorm."""
    cfg = HookedTransformerConfig(n_layers=2, n_heads=3, d_model=16, d_head=4, n_ctx=16, d_vocab=vocab,
                                  d_mlp=32, act_fn="gelu", normalization_type="RMS", parallel_attn_mlp=True,
                                  seed=seed, device="cpu", default_prepend_bos=False, dtype=torch.float64)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    model.eval()
    return model


def smooth_model(vocab: int, seed: int = 1) -> HookedTransformer:
    """float64_model with a GELU MLP (a smooth integrand for the path integral)."""
    cfg = HookedTransformerConfig(n_layers=2, n_heads=3, d_model=16, d_head=4, n_ctx=16, d_vocab=vocab,
                                  d_mlp=32, act_fn="gelu", normalization_type="LN", seed=seed, device="cpu",
                                  default_prepend_bos=False, dtype=torch.float64)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    model.eval()
    return model


# ---- brute force: plain hooks, no code shared with circuits.edges.attribution ------------------------------
def sender_outputs(model: HookedTransformer, tokens: torch.Tensor) -> list[torch.Tensor]:
    """What every sender writes to the residual stream, in sender order: [n, pos, d_model] each."""
    graph = ComputeGraph.of(model)
    _, cache = model.run_with_cache(tokens)
    out = [cache["blocks.0.hook_resid_pre"]]
    for l in range(graph.n_layers):
        for h in range(graph.n_heads):
            out.append(cache[f"blocks.{l}.attn.hook_z"][:, :, h] @ model.blocks[l].attn.W_O[h])
        if graph.has_mlp:
            out.append(cache[f"blocks.{l}.hook_mlp_out"])
    return out


def receiver_hooks(model: HookedTransformer, r: int) -> list[tuple[str, int | None]]:
    """(hook name, head index or None) of every tensor that is receiver r's input."""
    graph = ComputeGraph.of(model)
    if r == graph.logits:
        return [(f"blocks.{graph.n_layers - 1}.hook_resid_post", None)]
    layer, within = divmod(r, graph.block)
    if within == graph.n_heads:
        return [(f"blocks.{layer}.hook_mlp_in", None)]
    return [(f"blocks.{layer}.hook_{x}_input", within) for x in "qkv"]


def with_receiver_inputs(model: HookedTransformer, run):
    before = model.cfg.use_hook_mlp_in
    if not model.cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    try:
        with split_qkv_inputs(model):
            return run()
    finally:
        model.cfg.use_hook_mlp_in = before


def patched_metric(model, task, prompts: PromptSet, s: int, r: int, eps: float) -> float:
    """Mean metric when receiver r's input gets eps * (out_corrupt(s) - out_clean(s)) added."""
    delta = sender_outputs(model, prompts.negative)[s] - sender_outputs(model, prompts.positive)[s]

    def add(x, hook, head):
        x = x.clone()
        if head is None:
            x += eps * delta
        else:
            x[:, :, head] += eps * delta
        return x

    hooks = [(name, lambda x, hook, head=head: add(x, hook, head)) for name, head in receiver_hooks(model, r)]
    with torch.no_grad():
        logits = with_receiver_inputs(model, lambda: model.run_with_hooks(prompts.positive, fwd_hooks=hooks))
    return float(task.metric(logits[:, -1], prompts).mean())


def input_gradients(model, task, prompts: PromptSet, alpha: float, receivers: list[int]
                    ) -> dict[int, torch.Tensor]:
    """d (summed metric) / d input of each receiver [n, pos, d_model], at embeddings
    e_corr + alpha (e_clean - e_corr)."""
    e_corr = sender_outputs(model, prompts.negative)[0]
    saved: dict[tuple[str, int | None], torch.Tensor] = {}

    def interpolate(x, hook):
        return (e_corr + alpha * (x - e_corr)).detach().requires_grad_(True)

    def save(x, hook):
        saved[(hook.name, None)] = x

    names = {name for r in receivers for name, _ in receiver_hooks(model, r)}
    hooks = [("blocks.0.hook_resid_pre", interpolate)] + [(name, save) for name in names]

    def run():
        with torch.enable_grad():
            logits = model.run_with_hooks(prompts.positive, fwd_hooks=hooks)
            return task.metric(logits[:, -1], prompts).sum()

    metric = with_receiver_inputs(model, run)
    keys = list(saved)
    grads = dict(zip(keys, torch.autograd.grad(metric, [saved[k] for k in keys]), strict=True))
    out = {}
    for r in receivers:
        parts = [grads[(name, None)] if head is None else grads[(name, None)][:, :, head]
                 for name, head in receiver_hooks(model, r)]
        out[r] = sum(parts[1:], parts[0])
    return out


# ---- EAP: finite differences -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", ["serial", "parallel"])
def test_eap_edges_are_finite_differences_of_patching_one_edge(toy, make):
    """m = 1 at alpha = 1 is EAP: each edge's score is d metric / d eps of patching that edge by eps, for
    every kind of edge (input, head and MLP senders; head, MLP and logits receivers)."""
    task, tok, prompts = toy
    model = (float64_model(tok.vocab_size, n_layers=2, n_heads=3, attn_only=False) if make == "serial"
             else parallel_model(tok.vocab_size))
    graph = ComputeGraph.of(model)
    attr = edge_attributions(model, task, prompts, ig_steps=1, alphas="right", batch_size=3)
    assert attr.alphas == (1.0,)
    hs, hr, ms, mr, logits = (graph.head_sender, graph.head_receiver, graph.mlp_sender, graph.mlp_receiver,
                              graph.logits)
    cases = [(0, hr(0, 1)), (0, mr(1)), (0, hr(1, 2)), (hs(0, 2), hr(1, 1)), (hs(0, 0), mr(1)),
             (ms(0), hr(1, 0)), (ms(0), mr(1)), (hs(1, 2), logits), (ms(1), logits), (ms(0), logits),
             (hs(0, 1), logits)]
    if make == "serial":
        cases += [(hs(0, 0), mr(0)), (hs(1, 1), mr(1))]
    else:  # an MLP does not read its own layer's heads when they run in parallel
        assert not graph.valid[hs(0, 0), mr(0)] and attr.edge[hs(0, 0), mr(0)] == 0
    eps = 1e-4
    nontrivial = 0
    for s, r in cases:
        assert graph.valid[s, r]
        up, down = (patched_metric(model, task, prompts, s, r, e) for e in (eps, -eps))
        fd = (up - down) / (2 * eps)
        assert float(attr.edge[s, r]) == pytest.approx(fd, rel=1e-4, abs=1e-7), graph.edge_names()
        nontrivial += abs(fd) > 1e-4
    assert nontrivial >= len(cases) - 3  # the scores are not all zero
    assert (attr.edge[~graph.valid] == 0).all()
    cfg = model.cfg
    assert not cfg.use_split_qkv_input and not cfg.use_hook_mlp_in  # the temporary switches are undone


def test_eap_node_scores_are_the_head_level_eap(toy):
    task, tok, prompts = toy
    model = float64_model(tok.vocab_size, n_layers=2, n_heads=3, attn_only=False)
    graph = ComputeGraph.of(model)
    eap = run_baseline("eap", model, task, prompts)
    attr = edge_attributions(model, task, prompts, ig_steps=1, alphas="right")
    torch.testing.assert_close(eap.node_scores, attr.node.abs())
    torch.testing.assert_close(eap.graph_edge_scores, attr.edge.abs())
    torch.testing.assert_close(eap.signed_graph_edge_scores, -attr.edge)  # higher = holds the metric up
    assert eap.edge_scores == graph.head_pairs(attr.edge.abs())
    assert eap.n_forward == pytest.approx(2.0) and eap.n_backward == pytest.approx(1.0)
    no_edges = run_baseline("eap", model, task, prompts, edges=False)
    assert no_edges.edge_scores is None and no_edges.graph_edge_scores is None
    torch.testing.assert_close(no_edges.node_scores, eap.node_scores)


# ---- EAP-IG: the path integral -----------------------------------------------------------------------------
def test_eap_ig_is_the_path_integral_of_the_gradient(toy):
    """Gradients at alpha = k/40 (k = 0..40), computed here with plain hooks, give (a) exactly the "left" sum
    with m = 40 and the midpoint sum with m = 20 (its points are the odd k), and (b) by Simpson's rule the
    integral the scores tend to: the midpoint sum is within its O(1/m^2) error of it, EAP is not. The input's
    edges add up to metric_corrupt - metric_clean (completeness of integrated gradients). A GELU MLP keeps
    the integrand smooth (ReLU's kinks make the sums converge slower)."""
    task, tok, prompts = toy
    prompts = prompts.subset(slice(0, 4))
    model = smooth_model(tok.vocab_size)
    graph = ComputeGraph.of(model)
    hs, hr, ms, mr = graph.head_sender, graph.head_receiver, graph.mlp_sender, graph.mlp_receiver
    cases = [(0, hr(0, 0)), (0, mr(0)), (hs(0, 1), hr(1, 2)), (ms(0), mr(1)), (hs(1, 0), graph.logits),
             (ms(1), graph.logits), (hs(0, 2), mr(0))]
    receivers = list(range(graph.n_receivers))
    grid = [input_gradients(model, task, prompts, k / 40, receivers) for k in range(41)]
    corrupt, clean = sender_outputs(model, prompts.negative), sender_outputs(model, prompts.positive)
    diffs = [(c - k).detach() for c, k in zip(corrupt, clean, strict=True)]

    def score(s: int, r: int, weights: list[float]) -> float:
        g = sum(w * grad[r] for w, grad in zip(weights, grid, strict=True))
        return float((diffs[s] * g).sum() / len(prompts))

    simpson = [(1 if k in (0, 40) else 4 if k % 2 else 2) / 120 for k in range(41)]
    left_weights = [1 / 40 if k < 40 else 0.0 for k in range(41)]
    mid_weights = [1 / 20 if k % 2 else 0.0 for k in range(41)]

    left = edge_attributions(model, task, prompts, ig_steps=40, alphas="left")
    midpoint = edge_attributions(model, task, prompts, alphas=[(k + 0.5) / 20 for k in range(20)])
    eap = edge_attributions(model, task, prompts, ig_steps=1, alphas="right")
    assert left.alphas[:2] == (0.0, 1 / 40) and len(left.alphas) == 40
    far = 0
    for s, r in cases:
        assert float(left.edge[s, r]) == pytest.approx(score(s, r, left_weights), rel=1e-6, abs=1e-9)
        assert float(midpoint.edge[s, r]) == pytest.approx(score(s, r, mid_weights), rel=1e-6, abs=1e-9)
        integral = score(s, r, simpson)
        assert float(midpoint.edge[s, r]) == pytest.approx(integral, rel=5e-3, abs=1e-5)
        far += abs(float(eap.edge[s, r]) - integral) > 0.05 * abs(integral) + 1e-3
    assert far >= 3  # the integral is not the clean-end gradient
    gap = midpoint.metric_corrupt - midpoint.metric_clean
    assert abs(gap) > 0.05
    assert sum(score(0, r, simpson) for r in receivers) == pytest.approx(gap, rel=1e-4)
    assert float(left.edge[0].sum()) == pytest.approx(sum(score(0, r, left_weights) for r in receivers),
                                                      rel=1e-6)
    assert float(midpoint.edge[0].sum()) == pytest.approx(gap, rel=1e-2)
    assert float(eap.edge[0].sum()) != pytest.approx(gap, rel=0.05)


def test_interpolation_points():
    assert interpolation_points(4, "left") == (0.0, 0.25, 0.5, 0.75)
    assert interpolation_points(4, "right") == (0.25, 0.5, 0.75, 1.0)
    assert interpolation_points(99, [0.1, 0.9]) == (0.1, 0.9)
    for steps, alphas in [(0, "left"), (3, "middle"), (3, [])]:
        with pytest.raises(CircuitsError):
            interpolation_points(steps, alphas)


# ---- GQA, batches, graph check -----------------------------------------------------------------------------
@pytest.mark.parametrize("attn_only", [False, True], ids=["mlp", "attn-only"])
def test_eap_ig_on_gqa_equals_its_multi_head_twin(toy, attn_only):
    task, tok, prompts = toy
    model = gqa_model(tok.vocab_size, attn_only=attn_only)
    twin = mha_twin(model)
    got = edge_attributions(model, task, prompts, ig_steps=3, batch_size=5)
    want = edge_attributions(twin, task, prompts, ig_steps=3, batch_size=5)
    assert got.edge.abs().max() > 1e-3
    torch.testing.assert_close(got.edge, want.edge, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(got.node, want.node, rtol=1e-5, atol=1e-8)
    cfg = model.cfg
    assert not cfg.use_split_qkv_input and not cfg.ungroup_grouped_query_attention and not cfg.use_hook_mlp_in


def test_batch_size_changes_nothing(toy):
    task, tok, prompts = toy
    model = float64_model(tok.vocab_size, n_layers=2, n_heads=3, attn_only=False)
    runs = [edge_attributions(model, task, prompts, ig_steps=3, batch_size=b) for b in (None, 1, 3)]
    for other in runs[1:]:
        torch.testing.assert_close(other.edge, runs[0].edge, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(other.node, runs[0].node, rtol=1e-6, atol=1e-9)
        assert other.metric_clean == pytest.approx(runs[0].metric_clean)
        assert other.metric_corrupt == pytest.approx(runs[0].metric_corrupt)


def test_a_graph_of_another_model_is_refused(toy):
    task, tok, prompts = toy
    model = float64_model(tok.vocab_size, n_layers=2, n_heads=3)
    with pytest.raises(CircuitsError, match="not this model's"):
        edge_attributions(model, task, prompts, graph=ComputeGraph(2, 4, False))


# ---- the registered method ---------------------------------------------------------------------------------
def test_registered_eap_ig_recovers_planted_heads_and_their_edge(planted):
    task, loaded, heads = planted
    prompts = task.prompts(loaded.tokenizer, 16, seed=0)
    truth = task.ground_truth("planted-toy")
    L, H = loaded.n_layers, loaded.n_heads
    assert "eap-ig" in BASELINES and REGISTRY["eap-ig"].label == "EAP-IG (inputs, m=5)"
    result = run_baseline("eap-ig", loaded.model, task, prompts, selection="positive")
    others = [float(result.node_scores[l, h]) for l in range(L) for h in range(H) if (l, h) not in heads]
    assert max(others) < 1e-6 and min(float(result.node_scores[h]) for h in heads) > 1e-4
    assert result.selected == frozenset(heads)
    assert edge_auc(result.edge_scores, truth, L, H) == 1.0
    assert max(result.edge_scores, key=result.edge_scores.get) == ((0, 1), (1, 3))
    graph = ComputeGraph.of(loaded.model)
    assert result.graph_edge_scores.shape == (graph.n_senders, graph.n_receivers)
    torch.testing.assert_close(result.graph_edge_scores, result.signed_graph_edge_scores.abs())
    assert result.n_forward == pytest.approx(2 + 5) and result.n_backward == pytest.approx(5)
    assert result.details["alphas"] == [0.0, 0.2, 0.4, 0.6, 0.8] and not result.stochastic
    out = result.to_json()
    assert "graph_edge_scores" not in out and "signed_graph_edge_scores" not in out
    json.dumps(out)
    two = run_baseline("eap-ig", loaded.model, task, prompts, ig_steps=2)
    assert two.n_backward == pytest.approx(2) and two.details["ig_steps"] == 2


def test_run_registered_baseline_passes_ig_steps(planted):
    task, loaded, _ = planted
    find = FindConfig(n_train=4, n_score=8)
    run = run_registered_baseline("eap-ig", MethodInput(task=task, loaded=loaded, find=find, seed=0,
                                                        options={"ig_steps": 3, "distance": "kl"}))
    assert run.details["ig_steps"] == 3 and run.backward == pytest.approx(3)
    assert run.node_scores.shape == (loaded.n_layers, loaded.n_heads)


def test_eap_ig_runs_on_a_loaded_model_without_mlps(toy):
    task, tok, prompts = toy
    model = float64_model(tok.vocab_size, n_layers=3, n_heads=2)
    result = run_baseline("eap-ig", model, task, prompts, ig_steps=2)
    graph = ComputeGraph.of(model)
    assert result.graph_edge_scores.shape == (graph.n_senders, graph.n_receivers) == (7, 7)
    assert len(result.edge_scores) == 3 * 2 * 2  # head -> head: layer pairs (0, 1), (0, 2), (1, 2)


def test_eap_and_eap_ig_edges_on_the_gemma_architecture(toy):
    """On a tiny Gemma-3-shaped model (one key/value head, norms after attention and MLP): EAP's edge scores
    are the derivative of patching one edge by a fraction eps (central differences through the edge patcher,
    itself checked against brute force on this architecture), for every kind of edge; EAP-IG (m = 5) runs
    and gives finite scores of its own."""
    from gemma_tiny import tiny_gemma_tl

    from circuits.edges.patching import EdgePatcher, task_metric

    task, tok, prompts = toy
    model = tiny_gemma_tl(tok.vocab_size, seed=3, dtype=torch.float64)
    graph = ComputeGraph.of(model)
    attr = edge_attributions(model, task, prompts, ig_steps=1, alphas="right")
    patcher = EdgePatcher(model, prompts)
    hs, hr, ms, mr = graph.head_sender, graph.head_receiver, graph.mlp_sender, graph.mlp_receiver
    cases = [(0, hr(0, 1)), (hs(0, 2), hr(2, 1)), (hs(1, 3), graph.logits), (ms(0), hr(1, 0)),
             (hs(0, 0), mr(1)), (ms(2), graph.logits)]
    eps = 1e-4
    keep = torch.ones(2 * len(cases), graph.n_senders, graph.n_receivers, dtype=torch.float64)
    for i, (s, r) in enumerate(cases):
        keep[2 * i, s, r], keep[2 * i + 1, s, r] = 1 - eps, 1 + eps
    metric = patcher.run(keep, task_metric(task, prompts)).double().mean(1)  # [2 * cases]
    for i, (s, r) in enumerate(cases):
        fd = float(metric[2 * i] - metric[2 * i + 1]) / (2 * eps)
        assert float(attr.edge[s, r]) == pytest.approx(fd, rel=1e-4, abs=1e-8), graph.edge_names()
    ig = edge_attributions(model, task, prompts, ig_steps=5)
    assert torch.isfinite(ig.edge).all() and not torch.allclose(ig.edge, attr.edge)
