"""Synthetic activations with hierarchical features: a parent feature is always active with its children.

Layout of the feature index: parents [0, P), then the children of parent p at
P + p*C ... P + p*C + C - 1, then `n_free` independent features. Sampling per row:

- each parent is active with probability `p_parent`;
- given an active parent, with probability `p_child` exactly one of its C children (uniform) is active too,
  otherwise the parent is active alone. A child is never active without its parent;
- each free feature is active with probability `p_free`;
- active features get magnitudes U(magnitude_low, magnitude_high); x = coefficients @ directions.

Parent and child directions ("the family") are mutually orthogonal when they fit in d_in, so that
"the child latent carries the parent direction" is measurable without cross-talk; free features are
random unit vectors (superposition). This is the setting in which Chanin et al. (2024) show that sparsity
pressure makes a child latent absorb its parent's direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuits.errors import CircuitsError


@dataclass
class HierarchicalFeatures:
    directions: Tensor  # [n_features, d_in], unit rows
    n_parents: int
    children_per_parent: int
    n_free: int
    p_parent: float
    p_child: float
    p_free: float
    magnitude_low: float = 0.5
    magnitude_high: float = 1.5

    @property
    def n_features(self) -> int:
        return int(self.directions.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.directions.shape[1])

    @property
    def n_children(self) -> int:
        return self.n_parents * self.children_per_parent

    def parent_of(self) -> Tensor:
        """[n_features] long: the parent index of each child, -1 for parents and free features."""
        out = torch.full((self.n_features,), -1, dtype=torch.long)
        out[self.n_parents:self.n_parents + self.n_children] = torch.arange(self.n_parents).repeat_interleave(
            self.children_per_parent)
        return out

    def child_slice(self, parent: int) -> slice:
        start = self.n_parents + parent * self.children_per_parent
        return slice(start, start + self.children_per_parent)

    @property
    def mean_l0(self) -> float:
        return self.n_parents * self.p_parent * (1 + self.p_child) + self.n_free * self.p_free

    def sample(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """(x [n, d_in], coefficients [n, n_features]) drawn from `seed`."""
        gen = torch.Generator().manual_seed(int(seed))
        P, C = self.n_parents, self.children_per_parent
        parent_on = torch.rand(n, P, generator=gen) < self.p_parent  # [n, P]
        child_on = parent_on & (torch.rand(n, P, generator=gen) < self.p_child)  # [n, P]
        which = torch.randint(0, C, (n, P), generator=gen)  # [n, P]
        children = torch.zeros(n, P, C, dtype=torch.bool)
        children.scatter_(2, which[..., None], child_on[..., None])
        free_on = torch.rand(n, self.n_free, generator=gen) < self.p_free
        on = torch.cat([parent_on, children.reshape(n, P * C), free_on], dim=1)
        mags = torch.empty(n, self.n_features).uniform_(self.magnitude_low, self.magnitude_high,
                                                        generator=gen)
        coeff = on * mags
        return coeff @ self.directions, coeff


def make_hierarchy(n_parents: int = 4, children_per_parent: int = 4, n_free: int = 32, d_in: int = 32,
                   p_parent: float = 0.15, p_child: float = 0.7, p_free: float = 0.04, seed: int = 0,
                   magnitude: tuple[float, float] = (0.5, 1.5)) -> HierarchicalFeatures:
    """Random directions (family orthogonal where it fits) and the sampling probabilities."""
    if min(n_parents, children_per_parent, d_in) < 1 or n_free < 0:
        raise CircuitsError("n_parents, children_per_parent and d_in must be positive, n_free >= 0")
    for name, p in (("p_parent", p_parent), ("p_child", p_child), ("p_free", p_free)):
        if not 0.0 <= p <= 1.0:
            raise CircuitsError(f"{name} must be a probability, got {p}")
    gen = torch.Generator().manual_seed(int(seed) + 20_011)
    n_family = n_parents * (1 + children_per_parent)
    family = torch.randn(d_in, n_family, generator=gen)
    if n_family <= d_in:
        family = torch.linalg.qr(family).Q  # orthonormal columns
    family = family.T
    free = torch.randn(n_free, d_in, generator=gen)
    d = torch.cat([family, free])
    d = d / d.norm(dim=-1, keepdim=True)
    return HierarchicalFeatures(directions=d, n_parents=n_parents, children_per_parent=children_per_parent,
                                n_free=n_free, p_parent=p_parent, p_child=p_child, p_free=p_free,
                                magnitude_low=magnitude[0], magnitude_high=magnitude[1])
