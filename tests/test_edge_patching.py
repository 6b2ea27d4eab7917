"""The edge-patching primitive against brute force: one edge at a time, whole circuits, GQA, gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import ToyTask
from test_baselines import float64_model
from test_gqa import gqa_model, mha_twin

from circuits.ablation import z_hook
from circuits.edges.graph import ComputeGraph
from circuits.edges.patching import EdgePatcher, task_metric
from circuits.edges.writes import mlp_inputs
from circuits.methods.base import split_qkv_inputs


@pytest.fixture
def toy():
    task = ToyTask()
    tok = task.word_tokenizer()
    return task, tok, task.prompts(tok, 6, seed=0)


def brute_force_logits(model, prompts, removed: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """Last-position logits with the edges of `removed` [S, R] patched, written as plainly as possible:
    one hook per node, a Python loop over each receiver's senders, the current outputs read from this run."""
    graph = ComputeGraph.of(model)
    L, H = graph.n_layers, graph.n_heads
    post_norm = bool(model.cfg.use_normalization_before_and_after)  # Gemma: RMSNorm after attention
    _, corrupt = model.run_with_cache(prompts.negative)

    def write(z: torch.Tensor, layer: int, h: int, scale: torch.Tensor | None) -> torch.Tensor:
        """Head h's write: z @ W_O, divided by the post-attention norm's own scale (TransformerLens's
        ln1_post.hook_scale in the same run) and times its weight, where the model has that norm."""
        out = z[:, :, h] @ model.blocks[layer].attn.W_O[h]
        return out if scale is None else out / scale * model.blocks[layer].ln1_post.w

    def corrupt_out(s: int) -> torch.Tensor:  # [n, p, d]
        if s == 0:
            out = corrupt["blocks.0.hook_resid_pre"]
        else:
            layer, within = divmod(s - 1, graph.block)
            scale = corrupt[f"blocks.{layer}.ln1_post.hook_scale"] if post_norm else None
            out = (corrupt[f"blocks.{layer}.hook_mlp_out"] if within == H
                   else write(corrupt[z_hook(layer)], layer, within, scale))
        return out.mean(0, keepdim=True).expand_as(out) if mean else out

    current: dict[int, torch.Tensor] = {}
    z_now: dict[int, torch.Tensor] = {}

    def input_delta(r: int) -> torch.Tensor:
        total = torch.zeros_like(corrupt["blocks.0.hook_resid_pre"])
        for s in range(graph.n_senders):
            if removed[s, r] and graph.valid[s, r]:
                total = total + corrupt_out(s) - current[s]
        return total

    def save_embed(x, hook):
        current[0] = x

    def save_z(z, hook):
        layer = hook.layer()
        z_now[layer] = z
        if not post_norm:
            for h in range(H):
                current[graph.head_sender(layer, h)] = write(z, layer, h, None)

    def save_scale(scale, hook):  # fires after hook_z of the same layer, before any later receiver
        layer = hook.layer()
        for h in range(H):
            current[graph.head_sender(layer, h)] = write(z_now[layer], layer, h, scale)

    def save_mlp(x, hook):
        current[graph.mlp_sender(hook.layer())] = x

    def head_in(x, hook):
        layer = hook.layer()
        return torch.stack([x[:, :, h] + input_delta(graph.head_receiver(layer, h)) for h in range(H)], 2)

    def mlp_in(x, hook):
        return x + input_delta(graph.mlp_receiver(hook.layer()))

    def final(x, hook):
        return x + input_delta(graph.logits)

    hooks = [("blocks.0.hook_resid_pre", save_embed)]
    for layer in range(L):
        hooks += [(z_hook(layer), save_z)] + [(f"blocks.{layer}.hook_{x}_input", head_in) for x in "qkv"]
        if post_norm:
            hooks.append((f"blocks.{layer}.ln1_post.hook_scale", save_scale))
        if graph.has_mlp:
            hooks += [(f"blocks.{layer}.hook_mlp_out", save_mlp), (f"blocks.{layer}.hook_mlp_in", mlp_in)]
    hooks.append((f"blocks.{L - 1}.hook_resid_post", final))
    with torch.no_grad(), split_qkv_inputs(model), mlp_inputs(model):
        return model.run_with_hooks(prompts.positive, fwd_hooks=hooks)[:, -1]


def _single(graph: ComputeGraph, s: int, r: int) -> torch.Tensor:
    keep = torch.ones(graph.n_senders, graph.n_receivers)
    keep[s, r] = 0
    return keep


@pytest.mark.parametrize("attn_only, normalization, positions", [
    (True, "LN", "standard"), (False, "LN", "standard"), (False, "RMS", "standard"),
    (True, "LNPre", "shortformer"), (False, None, "standard")])
def test_single_edges_and_whole_circuits_equal_brute_force(toy, attn_only, normalization, positions):
    task, tok, prompts = toy
    model = float64_model(tok.vocab_size, n_layers=3, n_heads=2, normalization=normalization,
                          attn_only=attn_only, positions=positions)
    graph = ComputeGraph.of(model)
    patcher = EdgePatcher(model, prompts)
    edges = graph.edge_index.tolist()
    gen = torch.Generator().manual_seed(0)
    picks = [edges[i] for i in torch.randperm(len(edges), generator=gen)[:10].tolist()]
    picks += [[0, graph.logits], [graph.head_sender(0, 1), graph.head_receiver(2, 0)]]
    if not attn_only:
        picks += [[graph.mlp_sender(0), graph.mlp_receiver(1)], [graph.mlp_sender(2), graph.logits],
                  [graph.head_sender(1, 0), graph.mlp_receiver(1)]]
    keeps = [_single(graph, s, r) for s, r in picks]
    circuit = (torch.rand(graph.n_senders, graph.n_receivers, generator=gen) < 0.6).double()  # many edges
    keeps += [circuit, torch.ones_like(circuit), torch.zeros_like(circuit)]
    keep = torch.stack(keeps)
    got = patcher.run(keep, lambda logits, idx: logits.log_softmax(-1)[..., 0] + logits[..., 1])
    for i in range(keep.shape[0]):
        want = brute_force_logits(model, prompts, keep[i] < 0.5)
        torch.testing.assert_close(got[i], want.log_softmax(-1)[:, 0] + want[:, 1], rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        clean, corrupted = model(prompts.positive)[:, -1], model(prompts.negative)[:, -1]
    full = patcher.logits(torch.ones(1, graph.n_senders, graph.n_receivers), torch.arange(len(prompts)))[0]
    empty = patcher.logits(torch.zeros(1, graph.n_senders, graph.n_receivers), torch.arange(len(prompts)))[0]
    torch.testing.assert_close(full, clean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(empty, corrupted, rtol=1e-7, atol=1e-7)  # all patched = the corrupted run
    assert not (got[:len(picks)] == got[-3]).all(1).all()  # single edges do change the output


def test_mean_intervention_equals_brute_force(toy):
    task, tok, prompts = toy
    model = float64_model(tok.vocab_size, n_layers=2, n_heads=2, attn_only=False)
    graph = ComputeGraph.of(model)
    patcher = EdgePatcher(model, prompts, intervention="mean")
    gen = torch.Generator().manual_seed(1)
    keep = (torch.rand(2, graph.n_senders, graph.n_receivers, generator=gen) < 0.5).double()
    got = patcher.run(keep, task_metric(task, prompts))
    for i in range(2):
        want = task.metric(brute_force_logits(model, prompts, keep[i] < 0.5, mean=True), prompts)
        torch.testing.assert_close(got[i], want, rtol=1e-9, atol=1e-9)


def test_gqa_edges_equal_the_multi_head_twin(toy):
    task, tok, prompts = toy
    model = gqa_model(tok.vocab_size, attn_only=False)
    twin = mha_twin(model)
    graph = ComputeGraph.of(model)
    gen = torch.Generator().manual_seed(2)
    keep = (torch.rand(3, graph.n_senders, graph.n_receivers, generator=gen) < 0.7).double()
    keep[0] = 1
    keep[0, graph.head_sender(0, 1), graph.head_receiver(1, 0)] = 0  # one query head of a shared kv group
    got = EdgePatcher(model, prompts).run(keep, task_metric(task, prompts))
    want = torch.stack([task.metric(brute_force_logits(twin, prompts, k < 0.5), prompts) for k in keep])
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    assert not model.cfg.ungroup_grouped_query_attention and not model.cfg.use_split_qkv_input


def test_partial_weights_carry_a_gradient_equal_to_finite_differences(toy):
    task, tok, prompts = toy
    model = float64_model(tok.vocab_size, n_layers=2, n_heads=2, attn_only=False)
    graph = ComputeGraph.of(model)
    patcher = EdgePatcher(model, prompts)
    gen = torch.Generator().manual_seed(3)
    keep = torch.rand(1, graph.n_senders, graph.n_receivers, generator=gen, dtype=torch.float64)
    keep.requires_grad_(True)
    idx = torch.arange(len(prompts))
    metric = task.metric(patcher.logits(keep, idx)[0], prompts).mean()
    (grad,) = torch.autograd.grad(metric, keep)
    eps = 1e-6
    for s, r in graph.edge_index[[0, 5, -1, -7]].tolist():
        bumped = keep.detach().clone()
        bumped[0, s, r] += eps
        with torch.no_grad():
            fd = (task.metric(patcher.logits(bumped, idx)[0], prompts).mean() - metric) / eps
        assert float(grad[0, s, r]) == pytest.approx(float(fd), rel=1e-4, abs=1e-7)
    assert float(grad[0][~graph.valid].abs().max()) == 0.0  # entries that are not edges do nothing


def test_graph_counts_and_names():
    graph = ComputeGraph(n_layers=2, n_heads=3, has_mlp=True)
    assert graph.sender_names[:2] == ["input", "a0.h0"] and graph.receiver_names[-1] == "logits"
    assert graph.sender_names[graph.mlp_sender(1)] == "m1"
    # input -> all 9 receivers; each layer-0 head -> m0, layer 1 (4), logits; m0 -> layer 1 (4), logits;
    # each layer-1 head -> m1, logits; m1 -> logits
    assert graph.n_edges == 9 + 3 * 6 + 5 + 3 * 2 + 1
    assert ComputeGraph(30, 9, True).n_edges == 44371  # SmolLM2-135M, q/k/v unsplit
    parallel = ComputeGraph(2, 3, True, parallel_attn_mlp=True)
    assert not bool(parallel.valid[parallel.head_sender(0, 0), parallel.mlp_receiver(0)])
    dense = torch.arange(graph.n_senders * graph.n_receivers, dtype=torch.float32).reshape(
        graph.n_senders, graph.n_receivers)
    assert torch.equal(graph.to_dense(graph.to_vector(dense))[graph.valid], dense[graph.valid])


def test_gemma_architecture_edges_equal_brute_force(toy):
    """Gemma 3's block (one key/value head for every query head, q/k norms, a norm after attention and after
    the MLP, local and global layers): single edges, a whole circuit, every edge kept (the clean model) and
    every edge patched (the corrupted run), both interventions, against the plain brute force."""
    from gemma_tiny import tiny_gemma_tl

    task, tok, prompts = toy
    model = tiny_gemma_tl(tok.vocab_size, seed=2, dtype=torch.float64)
    graph = ComputeGraph.of(model)
    gen = torch.Generator().manual_seed(1)
    edges = graph.edge_index.tolist()
    picks = [edges[i] for i in torch.randperm(len(edges), generator=gen)[:8].tolist()]
    hs, hr = graph.head_sender, graph.head_receiver
    picks += [[hs(0, 1), hr(2, 3)], [hs(1, 0), graph.logits], [graph.mlp_sender(0), hr(1, 2)],
              [hs(0, 2), graph.mlp_receiver(1)]]
    circuit = (torch.rand(graph.n_senders, graph.n_receivers, generator=gen) < 0.6).double()
    keep = torch.stack([_single(graph, s, r) for s, r in picks]
                       + [circuit, torch.ones_like(circuit), torch.zeros_like(circuit)])
    for intervention in ("counterfactual", "mean"):
        got = EdgePatcher(model, prompts, intervention).run(keep, lambda logits, idx: logits[..., 1]
                                                             - logits.logsumexp(-1))
        for i in range(keep.shape[0]):
            want = brute_force_logits(model, prompts, keep[i] < 0.5, mean=intervention == "mean")
            torch.testing.assert_close(got[i], want[:, 1] - want.logsumexp(-1), rtol=1e-8, atol=1e-8)
        assert not (got[:len(picks)] == got[-2]).all(1).all()  # single edges do change the output
    with torch.no_grad():
        clean, corrupted = model(prompts.positive)[:, -1], model(prompts.negative)[:, -1]
    patcher = EdgePatcher(model, prompts)
    every = torch.ones(1, graph.n_senders, graph.n_receivers)
    idx = torch.arange(len(prompts))
    torch.testing.assert_close(patcher.logits(every, idx)[0], clean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(patcher.logits(0 * every, idx)[0], corrupted, rtol=1e-7, atol=1e-7)
