"""Synthetic activations with known ground-truth features: sparse, in superposition (more features
than dimensions), so recovery can be scored exactly.

x = Σ_i a_i c_i d_i + noise, where d_i are unit feature directions [n_features, d_in], c_i ~ Bernoulli(p_i)
and a_i ~ U(magnitude_low, magnitude_high). Frequencies p_i are uniform, or follow a power law with
exponent `frequency_decay`, rescaled so that the expected number of active features is `mean_l0`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuits.errors import CircuitsError


@dataclass
class SyntheticFeatures:
    directions: Tensor  # [n_features, d_in], unit rows
    frequencies: Tensor  # [n_features], activation probability of each feature
    magnitude_low: float = 0.5
    magnitude_high: float = 1.5
    noise: float = 0.0

    @property
    def n_features(self) -> int:
        return int(self.directions.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.directions.shape[1])

    @property
    def mean_l0(self) -> float:
        return float(self.frequencies.sum())

    def sample(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """(x [n, d_in], coefficients [n, n_features]) drawn from `seed`."""
        gen = torch.Generator().manual_seed(int(seed))
        on = torch.rand(n, self.n_features, generator=gen) < self.frequencies
        mags = torch.empty(n, self.n_features).uniform_(
            self.magnitude_low, self.magnitude_high, generator=gen
        )
        coeff = on * mags
        x = coeff @ self.directions
        if self.noise > 0:
            x = x + self.noise * torch.randn(n, self.d_in, generator=gen)
        return x, coeff


def make_features(
    n_features: int,
    d_in: int,
    mean_l0: float,
    seed: int = 0,
    frequency_decay: float = 0.0,
    magnitude: tuple[float, float] = (0.5, 1.5),
    noise: float = 0.0,
) -> SyntheticFeatures:
    """Random unit directions (nearly orthogonal when d_in is large) and per-feature frequencies."""
    if not 0 < mean_l0 <= n_features:
        raise CircuitsError(f"mean_l0 must be in (0, n_features], got {mean_l0}")
    gen = torch.Generator().manual_seed(int(seed) + 10_007)
    d = torch.randn(n_features, d_in, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True)
    ranks = torch.arange(1, n_features + 1, dtype=torch.float64)
    p = ranks.pow(-float(frequency_decay))
    p = (p / p.sum() * mean_l0).clamp(max=1.0).float()
    return SyntheticFeatures(
        directions=d, frequencies=p, magnitude_low=magnitude[0], magnitude_high=magnitude[1], noise=noise
    )


def max_cosines(decoder: Tensor, features: Tensor) -> Tensor:
    """For each true feature [n_f, d], its best cosine with any decoder row [d_sae, d] -> [n_f]."""
    decoder, features = decoder.detach(), features.detach()
    dec = decoder / decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    feat = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (feat @ dec.T).amax(dim=-1)


def mean_max_cosine(decoder: Tensor, features: Tensor) -> float:
    """Mean over true features of the max cosine similarity to the decoder (MMCS, Sharkey et al.)."""
    return float(max_cosines(decoder, features).mean())
