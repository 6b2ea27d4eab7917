"""Head outputs -> SAE latents -> integer codes: the argmax latent, with one extra code for "no latent
fired". The SAEs are fit here too (`fit_saes`), on the training prompts' activations.

The paper's argmax sends an all-zero latent vector to code 0, merging "silent" with latent 0;
here silence gets its own code (d_sae), so the two stay distinguishable.
"""

from __future__ import annotations

import torch

from circuits.discovery.config import FindConfig
from circuits.progress import Progress
from circuits.sae import SAE, SAEConfig, make_sae, train_sae


def codes_from_latents(latents: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """latents: [..., d_sae] -> codes: [...] long in [0, d_sae]; d_sae means no latent > threshold."""
    d_sae = latents.shape[-1]
    values, idx = latents.max(dim=-1)
    return torch.where(values > threshold, idx, torch.full_like(idx, d_sae))


def n_codes(d_sae: int) -> int:
    """Number of distinct codes an SAE with d_sae latents can emit (the silent code included)."""
    return d_sae + 1


def fit_saes(x: torch.Tensor, config: FindConfig, progress: Progress | None = None) -> SAE:
    """Train `groups` SAEs at once on x: [groups, n, d_in] (full batch, inputs normalised per group)."""
    groups, n_rows, d_in = x.shape
    sae_cfg = SAEConfig(d_in=d_in, d_sae=config.resolved_d_sae(), arch=config.arch, groups=groups,
                        l1_coefficient=config.l1, k=min(config.k, config.resolved_d_sae()),
                        normalize_decoder=True)
    sae_seed = config.seed if config.sae_seed is None else config.sae_seed
    sae = make_sae(sae_cfg, seed=sae_seed)
    callback = (lambda step, total, _metrics: progress("sae", step, total)) if progress else None
    train_sae(sae, x, steps=config.steps, lr=config.lr, batch_size=n_rows, seed=sae_seed,
              callback=callback, b_dec_init="mean", normalize_inputs=True)
    sae.eval()
    return sae


@torch.no_grad()
def encode_codes(acts_train: torch.Tensor, acts_score: torch.Tensor, config: FindConfig,
                 progress: Progress | None = None) -> torch.Tensor:
    """acts_*: [n, head, d] -> codes of the scoring rows: [n_score_rows, head] (SAEs fit on acts_train)."""
    n_heads, d = acts_train.shape[1], acts_train.shape[2]
    if config.sae == "per-head":
        with torch.enable_grad():
            sae = fit_saes(acts_train.transpose(0, 1).contiguous(), config, progress)  # x: [head, n, d]
        latents = sae.encode(acts_score.transpose(0, 1).contiguous())  # [head, n, d_sae]
        return codes_from_latents(latents).transpose(0, 1)  # [n, head]
    with torch.enable_grad():
        sae = fit_saes(acts_train.reshape(1, -1, d), config, progress)  # every head's vector is a row
    latents = sae.encode(acts_score.reshape(1, -1, d))  # [1, n*head, d_sae]
    return codes_from_latents(latents[0]).reshape(-1, n_heads)
