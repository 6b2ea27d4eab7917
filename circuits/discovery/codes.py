"""Latents -> integer codes: the argmax latent, with one extra code for "no latent fired".

The paper's argmax sends an all-zero latent vector to code 0, merging "silent" with latent 0;
here silence gets its own code (d_sae), so the two stay distinguishable.
"""

from __future__ import annotations

import torch


def codes_from_latents(latents: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """latents: [..., d_sae] -> codes: [...] long in [0, d_sae]; d_sae means no latent > threshold."""
    d_sae = latents.shape[-1]
    values, idx = latents.max(dim=-1)
    return torch.where(values > threshold, idx, torch.full_like(idx, d_sae))


def n_codes(d_sae: int) -> int:
    """Number of distinct codes an SAE with d_sae latents can emit (the silent code included)."""
    return d_sae + 1
