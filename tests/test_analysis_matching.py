"""Cross-seed latent matching: Hungarian vs brute force, known permutations, batched seed training."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from circuits.analysis.matching import cosine_matrix, histogram, hungarian_match, match_latents
from circuits.analysis.seeds import (
    ArchSetting,
    SeedRunConfig,
    pairwise_consistency,
    run_seed_consistency,
    stacked_sae,
    train_across_seeds,
)
from circuits.errors import CircuitsError
from circuits.sae import SAEConfig, make_sae, train_sae
from circuits.sae.synthetic import make_features


def brute_force(sim: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Best total over every injective row -> column map (rows <= cols)."""
    n, m = sim.shape
    best = max(itertools.permutations(range(m), n), key=lambda cols: sim[np.arange(n), list(cols)].sum())
    return float(sim[np.arange(n), list(best)].sum()), best


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_matches_brute_force_on_permutations_of_5(seed):
    sim = np.random.default_rng(seed).uniform(-1, 1, (5, 5))
    total, cols = brute_force(sim)
    m = hungarian_match(sim)
    assert m.total == pytest.approx(total)
    assert tuple(m.cols.tolist()) == cols  # continuous random values: the optimum is unique
    assert sorted(m.cols.tolist()) == list(range(5))


def test_hungarian_rectangular_matches_brute_force():
    sim = np.random.default_rng(7).uniform(-1, 1, (4, 6))
    total, cols = brute_force(sim)
    m = hungarian_match(torch.as_tensor(sim))
    assert m.total == pytest.approx(total)
    assert tuple(m.cols.tolist()) == cols
    assert len(set(m.cols.tolist())) == 4


def test_match_latents_recovers_a_known_permutation_up_to_scale():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 16, generator=gen)
    perm = torch.randperm(200, generator=gen)
    scale = torch.rand(200, 1, generator=gen) + 0.1
    b = a[perm] * scale  # b[i] = a[perm[i]] rescaled: cosine 1
    m = match_latents(a, b)
    inverse = torch.argsort(perm)
    assert torch.equal(torch.as_tensor(m.cols), inverse)
    assert m.shared_fraction(0.999) == 1.0
    assert np.allclose(m.similarity, 1.0)


def test_cosine_matrix_is_one_matmul_of_unit_rows():
    a, b = torch.randn(3, 4), torch.randn(5, 4)
    cos = torch.nn.functional.cosine_similarity
    expected = torch.tensor([[float(cos(x, y, dim=0)) for y in b] for x in a])
    assert torch.allclose(cosine_matrix(a, b).float(), expected, atol=1e-6)
    with pytest.raises(ValueError):
        cosine_matrix(a, torch.randn(5, 3))


def test_histogram_counts_everything():
    h = histogram(np.array([-2.0, 0.0, 0.5, 1.0]), bins=4)
    assert sum(h["counts"]) == 4 and len(h["edges"]) == 5


def test_pairwise_consistency_on_constructed_seeds():
    """Seed 1 = seed 0 permuted (all shared); seed 2 keeps half of seed 0's latents, the rest orthogonal."""
    d, f = 64, 16
    basis = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1))).Q.T  # [d, d]
    s0 = basis[:f]
    s1 = s0[torch.randperm(f, generator=torch.Generator().manual_seed(2))]
    s2 = torch.cat([s0[: f // 2], basis[f: f + f // 2]])  # new half: orthogonal to all of s0
    out = pairwise_consistency(torch.stack([s0, s1, s2]), seeds=[10, 11, 12], threshold=0.7, bins=10)
    by_pair = {tuple(p["seeds"]): p["shared_fraction"] for p in out["pairs"]}
    assert by_pair == {(10, 11): 1.0, (10, 12): 0.5, (11, 12): 0.5}
    assert out["shared_fraction"] == pytest.approx(2 / 3)
    assert sum(out["histogram"]["counts"]) == 3 * f
    # If seed 2's new half never fires, every pair of live latents is shared.
    alive = torch.ones(3, f, dtype=torch.bool)
    alive[2, f // 2:] = False
    out = pairwise_consistency(torch.stack([s0, s1, s2]), seeds=[10, 11, 12], alive=alive)
    assert [p["shared_fraction_alive"] for p in out["pairs"]] == [1.0, 1.0, 1.0]
    assert [p["both_alive"] for p in out["pairs"]] == [f, f // 2, f // 2]


def test_stacked_groups_train_exactly_like_single_seeds():
    """Batching seeds as groups changes nothing: group i is the SAE seed i gives alone."""
    feats = make_features(16, 8, mean_l0=2, seed=0)
    x, _ = feats.sample(512, seed=1)
    setting, run = ArchSetting("topk", k=2), SeedRunConfig(d_sae=16, seeds=(3, 5), steps=30, batch_size=64)
    cfg = setting.sae_config(8, 16, groups=2)
    stacked = stacked_sae(cfg, run.seeds)
    alone = make_sae(setting.sae_config(8, 16, groups=1), seed=5)
    assert torch.equal(stacked.W_dec[1], alone.W_dec[0])
    batched = train_across_seeds(x, setting, run)
    train_sae(alone, x, steps=run.steps, lr=run.lr, batch_size=run.batch_size, seed=run.data_seed,
              lr_decay_steps=run.steps // 5, dead_after_rows=20_000)
    assert torch.allclose(batched.W_dec[1], alone.W_dec[0], atol=1e-5)
    assert not torch.allclose(batched.W_dec[0], batched.W_dec[1], atol=1e-2)


def test_seed_consistency_run_matches_k_to_relu_l0():
    feats = make_features(24, 12, mean_l0=3, seed=0)
    x, _ = feats.sample(1024, seed=1)
    xe, _ = feats.sample(256, seed=2)
    settings = [ArchSetting("topk"), ArchSetting("relu", l1_coefficient=1.0)]  # topk listed first on purpose
    result = run_seed_consistency(x, xe, settings, SeedRunConfig(d_sae=32, seeds=(0, 1), steps=60),
                                  directions=feats.directions)
    topk, relu = result["architectures"]
    assert topk["setting"]["k"] == max(1, round(relu["l0"]["mean"]))
    assert topk["k_matched_to_l0"] == pytest.approx(relu["l0"]["mean"])
    for entry in (topk, relu):
        for which in ("decoder", "encoder"):
            block = entry[which]
            assert 0.0 <= block["shared_fraction"] <= 1.0
            assert sum(block["histogram"]["counts"]) == 32  # one pair of seeds, 32 latents
        assert len(entry["per_seed"]["mmcs"]) == 2


def test_seed_consistency_refuses_bad_input():
    x = torch.randn(64, 4)
    with pytest.raises(CircuitsError):
        run_seed_consistency(x, x, [ArchSetting("relu")], SeedRunConfig(seeds=(0,)))
    with pytest.raises(CircuitsError):
        run_seed_consistency(x, x, [ArchSetting("topk")], SeedRunConfig(seeds=(0, 1)))
    with pytest.raises(CircuitsError):
        ArchSetting("nope")
    with pytest.raises(CircuitsError):
        SeedRunConfig(seeds=(1, 1))


def test_stacked_sae_copies_every_parameter():
    for arch in ("gated", "jumprelu", "batchtopk"):
        cfg = SAEConfig(d_in=4, d_sae=6, arch=arch, k=2)
        stacked = stacked_sae(cfg, [7, 9])
        single = make_sae(cfg, seed=9).state_dict()
        for name, value in stacked.state_dict().items():
            assert torch.equal(value[1], single[name][0]), (arch, name)
