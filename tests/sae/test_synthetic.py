"""Every architecture recovers known sparse features in superposition (mean max cosine >= 0.9).

Data: 64 unit feature directions in 32 dimensions (2× superposition), each active with probability 1/16
(mean L0 = 4), magnitudes U(0.5, 1.5). "The right sparsity": k = 4 for TopK / BatchTopK, and for the
penalty-based architectures the coefficient that puts their L0 near the data's L0 of 4 (chosen by L0 on
other data seeds, never by the cosine score tested here).
"""

from __future__ import annotations

import pytest
import torch

from circuits.sae import ARCHS, SAEConfig, make_sae, train_sae
from circuits.sae.synthetic import make_features, max_cosines, mean_max_cosine

RIGHT_SPARSITY = {
    "relu": {"l1_coefficient": 1.0},
    "topk": {"k": 4},
    "batchtopk": {"k": 4},
    "matryoshka": {"k": 4},
    "gated": {"l1_coefficient": 1.0},
    "jumprelu": {"l0_coefficient": 0.2, "bandwidth": 0.05, "threshold_init": 0.05},
}
# Matryoshka is left out of the >= 0.9 recovery claim on purpose: its first prefixes must reconstruct on
# their own, so on flat i.i.d. features with d_sae == n_features they spend latents on mixtures (mean max
# cosine 0.84 vs BatchTopK's 0.96 here). tests/sae/test_matryoshka.py tests it on hierarchical data.
RECOVERY_ARCHS = [a for a in ARCHS if a != "matryoshka"]


def _recover(arch: str, data_seed: int, sae_seed: int = 0) -> tuple[float, float]:
    feats = make_features(64, 32, mean_l0=4, seed=data_seed)
    x, _ = feats.sample(16384, seed=data_seed + 1)
    sae = make_sae(SAEConfig(d_in=32, d_sae=64, arch=arch, **RIGHT_SPARSITY[arch]), seed=sae_seed)
    train_sae(
        sae, x, steps=1000, lr=5e-3, batch_size=256, seed=sae_seed, lr_decay_steps=200, dead_after_rows=20_000
    )
    sae.eval()
    with torch.no_grad():
        l0 = float((sae.encode(x) > 0).sum(-1).float().mean())
    return mean_max_cosine(sae.W_dec[0], feats.directions), l0


def test_max_cosines_on_known_case() -> None:
    feats = torch.eye(3)
    dec = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert torch.allclose(max_cosines(dec, feats), torch.tensor([1.0, 2**-0.5, 2**-0.5]))


def test_synthetic_data_statistics() -> None:
    feats = make_features(64, 32, mean_l0=4, seed=0, frequency_decay=1.0)
    x, coeff = feats.sample(20000, seed=1)
    assert torch.allclose(feats.directions.norm(dim=-1), torch.ones(64))
    assert abs(float((coeff > 0).sum(-1).float().mean()) - 4.0) < 0.1
    assert feats.frequencies[0] > 5 * feats.frequencies[-1]  # power-law frequencies
    assert torch.allclose(x, coeff @ feats.directions, atol=1e-5)


@pytest.mark.parametrize("arch", RECOVERY_ARCHS)
def test_every_architecture_recovers_features(arch: str) -> None:
    mmcs, l0 = _recover(arch, data_seed=23)
    assert 2.0 <= l0 <= 8.0, f"{arch} is not at the data's sparsity (L0 {l0:.2f} vs 4)"
    assert mmcs >= 0.9, f"{arch}: mean max cosine {mmcs:.3f}"


@pytest.mark.slow
@pytest.mark.parametrize("arch", RECOVERY_ARCHS)
def test_recovery_holds_across_seeds(arch: str) -> None:
    scores = [_recover(arch, data_seed=100 + s, sae_seed=s)[0] for s in range(3)]
    assert min(scores) >= 0.9, f"{arch}: {scores}"
