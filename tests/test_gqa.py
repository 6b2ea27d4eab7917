"""Every method on grouped-query attention (several query heads share one key/value head, as in SmolLM2).

Reference: the GQA model's multi-head twin (W_K, W_V repeated per query head, TransformerLens's plain
attention). It computes the same function, and on it every head's own key/value input is separate, so
brute-force patching there is the answer each method must give on the GQA model.
"""

from __future__ import annotations

import pytest
import torch
from conftest import ToyTask
from test_baselines import brute_force_edge_logits, brute_force_z_patch, clean_metric

from circuits._compat import HookedTransformer, HookedTransformerConfig
from circuits.ablation import PassCount, metric_under_masks, reference_z, z_hook
from circuits.methods import BASELINES, run_baseline
from circuits.methods.eap import eap_attributions
from circuits.methods.patching import activation_patching, single_head_masks
from circuits.zoo.ground_truth import find_ground_truth
from tasks.base import PromptSet

L, H, KV = 2, 4, 2


def gqa_model(vocab: int, attn_only: bool = True, seed: int = 3) -> HookedTransformer:
    """2 layers, 4 query heads over 2 key/value heads, rotary, RMSNorm (and a gated SiLU MLP): Llama-like."""
    cfg = HookedTransformerConfig(n_layers=L, n_heads=H, n_key_value_heads=KV, d_model=32, d_head=8, n_ctx=16,
                                  d_vocab=vocab, attn_only=attn_only, d_mlp=None if attn_only else 48,
                                  act_fn="silu", gated_mlp=not attn_only, normalization_type="RMS",
                                  positional_embedding_type="rotary", rotary_dim=8, seed=seed, device="cpu",
                                  default_prepend_bos=False, dtype=torch.float64)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    with torch.no_grad():  # random RMS weights and biases, so nothing is accidentally symmetric
        for name, p in model.named_parameters():
            if name.endswith((".w", "b_Q", "_b_K", "_b_V", "b_O")):
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith(".w") else 0.0))
    model.eval()
    return model


def mha_twin(model: HookedTransformer) -> HookedTransformer:
    """The same network as plain multi-head attention: each query head gets a copy of its key/value head."""
    cfg = HookedTransformerConfig.unwrap(model.cfg.to_dict())
    cfg.n_key_value_heads = None
    twin = HookedTransformer(cfg)
    state = {k: v for k, v in model.state_dict().items() if "._W_" not in k and "._b_" not in k}
    for layer, block in enumerate(model.blocks):
        for name in ("W_K", "W_V", "b_K", "b_V"):
            state[f"blocks.{layer}.attn.{name}"] = getattr(block.attn, name).detach().clone()  # repeated
    twin.load_state_dict(state, strict=False)
    twin.eval()
    return twin


@pytest.fixture(params=[True, False], ids=["attn-only", "mlp"])
def setup(request) -> tuple[ToyTask, PromptSet, HookedTransformer, HookedTransformer]:
    task = ToyTask()
    tok = task.word_tokenizer()
    model = gqa_model(tok.vocab_size, attn_only=request.param)
    return task, task.prompts(tok, 10, seed=0), model, mha_twin(model)


def test_the_twin_computes_the_same_function(setup):
    task, prompts, model, twin = setup
    assert model.cfg.n_key_value_heads == KV and twin.cfg.n_key_value_heads is None
    with torch.no_grad():
        torch.testing.assert_close(model(prompts.positive), twin(prompts.positive), rtol=1e-9, atol=1e-9)
    assert model.blocks[0].attn._W_K.shape[0] == KV  # really grouped


def test_patching_and_ablation_on_gqa_match_brute_force(setup):
    task, prompts, model, twin = setup
    clean = clean_metric(twin, task, prompts)
    _, corrupt = twin.run_with_cache(prompts.negative)
    for ablation in ("mean", "counterfactual"):
        result = activation_patching(model, task, prompts, ablation)
        for layer in range(L):
            for head in range(H):
                z_neg = corrupt[z_hook(layer)][:, :, head]  # [n, pos, d_head]
                ref = z_neg.mean(0) if ablation == "mean" else z_neg
                want = abs(brute_force_z_patch(twin, task, prompts, layer, head, reference=ref) - clean)
                assert float(result.node_scores[layer, head]) == pytest.approx(want, rel=1e-6, abs=1e-9)
    keep = torch.rand(4, L, H, generator=torch.Generator().manual_seed(1)) > 0.5
    got = metric_under_masks(model, task, prompts, keep, reference_z(model, prompts, "resample", seed=2))
    want = metric_under_masks(twin, task, prompts, keep, reference_z(twin, prompts, "resample", seed=2))
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def test_eap_on_gqa_equals_finite_differences_of_per_query_head_patching(setup):
    """The bug this fixes: hook_{k,v}_input had 3 key/value copies against 9 query heads on SmolLM2."""
    task, prompts, model, twin = setup
    attr = eap_attributions(model, task, prompts, edges=True, batch_size=4)
    eps = 1e-5
    clean = clean_metric(twin, task, prompts)
    for layer, head in [(0, 0), (0, 3), (1, 2)]:
        fd = (brute_force_z_patch(twin, task, prompts, layer, head, eps) - clean) / eps
        assert float(attr.node[layer, head]) == pytest.approx(fd, rel=1e-3, abs=1e-7)
    # receivers 0 and 1 share a key/value head: an edge into one must not move the other
    for sender, receiver in [((0, 1), (1, 0)), ((0, 1), (1, 1)), ((0, 2), (1, 3))]:
        logits = brute_force_edge_logits(twin, prompts, sender, receiver, eps)
        fd = (float(task.metric(logits, prompts).mean()) - clean) / eps
        u, v = sender[0] * H + sender[1], receiver[0] * H + receiver[1]
        assert float(attr.edge[u, v]) == pytest.approx(fd, rel=1e-3, abs=1e-7)
    twin_attr = eap_attributions(twin, task, prompts, edges=True, batch_size=4)
    torch.testing.assert_close(attr.edge, twin_attr.edge, rtol=1e-6, atol=1e-9)
    assert not model.cfg.use_split_qkv_input and not model.cfg.ungroup_grouped_query_attention  # restored


def test_every_method_scores_gqa_like_its_twin(setup):
    task, prompts, model, twin = setup
    for name in BASELINES:
        options = {"exponents": (-4, -2, 0)} if name == "acdc" else {}
        got = run_baseline(name, model, task, prompts, seed=1, **options)
        want = run_baseline(name, twin, task, prompts, seed=1, **options)
        assert got.node_scores.shape == (L, H), name
        torch.testing.assert_close(got.node_scores, want.node_scores, rtol=1e-5, atol=1e-8, msg=name)


class _Shifted:
    """ToyTask with its metric shifted and signed so the intact model solves it (full > empty = 0)."""

    def __init__(self, task: ToyTask, sign: float, offset: float):
        self.task, self.sign, self.offset = task, sign, offset
        self.name = "shifted"

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        return self.sign * (self.task.metric(logits, prompts) - self.offset)


def test_ground_truth_search_on_gqa_equals_its_twin(setup):
    task, prompts, model, twin = setup
    every, none = torch.ones(1, L, H, dtype=torch.bool), torch.zeros(1, L, H, dtype=torch.bool)
    full, empty = metric_under_masks(model, task, prompts, torch.cat([every, none]),
                                     reference_z(model, prompts, "mean")).mean(1).tolist()
    shifted = _Shifted(task, 1.0 if full > empty else -1.0, empty)
    got = find_ground_truth(model, shifted, prompts, threshold=0.8)
    want = find_ground_truth(twin, shifted, prompts, threshold=0.8)
    assert got.truth.heads == want.truth.heads and got.truth.edges == want.truth.edges
    for a, b in zip(got.single_head_effects, want.single_head_effects, strict=True):
        assert a["drop"] == pytest.approx(b["drop"], rel=1e-6, abs=1e-9)
    assert got.faithfulness.normalized >= 0.8


@pytest.mark.parametrize("ablation", ["mean", "counterfactual"])
def test_reusing_the_intact_and_ablated_prefixes_is_exact(setup, ablation):
    """Masks start at the first layer where they differ from the intact or the all-ablated run."""
    task, prompts, model, _ = setup
    reference = reference_z(model, prompts, ablation)
    circuits = torch.zeros(3, L, H, dtype=torch.bool)
    circuits[0, 1, 2] = circuits[1, 0, 3] = True
    circuits[2, 1] = True
    keep = torch.cat([single_head_masks(L, H), circuits])  # intact, empty, singles, small circuits
    fast, slow = PassCount(), PassCount()
    got = metric_under_masks(model, task, prompts, keep, reference, max_rows=30, reuse_prefix=True,
                             count=fast)
    want = metric_under_masks(model, task, prompts, keep, reference, max_rows=30, reuse_prefix=False,
                              count=slow)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert slow.forward == keep.shape[0] and fast.masks == slow.masks == keep.shape[0]
    # 2 base runs; intact/empty free; 4 layer-0 singles and 1 circuit full; 4 singles and 2 circuits half
    assert fast.forward == pytest.approx(2 + 4 + 1 + (4 + 2) / 2)


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_continuing_a_given_base_mask_is_exact_and_cheaper(setup, ablation):
    """Leave-one-out sets of S continue S's own run from the removed head's layer: the same scores for
    fewer passes than starting from the intact or all-ablated run."""
    task, prompts, model, _ = setup
    reference = reference_z(model, prompts, ablation, seed=1)
    near = torch.zeros(L, H, dtype=torch.bool)
    near[0, :2] = near[1, 1:] = True  # S: differs from both the intact and the empty run at layer 0
    members = near.nonzero().tolist()
    keep = near.repeat(len(members), 1, 1)
    for i, (layer, h) in enumerate(members):
        keep[i, layer, h] = False  # S minus one member
    fast, plain = PassCount(), PassCount()
    got = metric_under_masks(model, task, prompts, keep, reference, max_rows=30, reuse_prefix=True,
                             base_masks=near[None], count=fast)
    want = metric_under_masks(model, task, prompts, keep, reference, max_rows=30, reuse_prefix=False,
                              count=plain)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # S's run (1) + the layer-0 removals from scratch + the layer-1 removals from layer 1 of S's run
    n0, n1 = sum(layer == 0 for layer, _ in members), sum(layer == 1 for layer, _ in members)
    assert fast.forward == pytest.approx(1 + n0 + n1 * (L - 1) / L)
    assert fast.forward < plain.forward
