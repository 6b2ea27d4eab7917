"""Codes of the circuit heads: the argmax latent of a discrete SAE over each head's output (discovery.codes'
definition, silence its own code), and what each row's code writes (its latent times its decoder row).

Two sources. Own: one SAE per circuit head, fit at once (one group each, vectorised over heads) on the
heads' writes at the answer position over the positives and negatives explained. The run's: a run of the
discrete-SAE method is refit from its saved configuration on its own training prompts (the fit is
deterministic in the seed, so this is the run's SAE) and read at the run's hook and pooling."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from circuits.discovery.activations import head_activations, head_index
from circuits.discovery.codes import codes_from_latents, fit_code_sae, fit_saes
from circuits.discovery.config import FindConfig
from circuits.sae import SAE
from tasks.base import Head

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer


@dataclass
class HeadCodes:
    """codes [rows, c] long (d_sae = silent) and contributions [rows, c, d_model]: what the code's latent
    writes on that row (zero when silent); rows = positives then negatives."""

    codes: torch.Tensor
    contributions: torch.Tensor
    n_codes: int  # codes an SAE can emit (d_sae + 1)
    source: dict[str, Any]  # how the codes were made, for the JSON


@torch.no_grad()
def _top_latent_writes(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [g, rows, d_in] -> (codes [g, rows], the argmax latent's decoded write [g, rows, d_in])."""
    latents = sae.encode(x)  # [g, rows, d_sae]
    codes = codes_from_latents(latents)  # [g, rows]
    fired = (codes < latents.shape[-1])[..., None]  # [g, rows, 1]
    index = codes.clamp(max=latents.shape[-1] - 1)[..., None]  # [g, rows, 1]
    top = torch.zeros_like(latents).scatter_(-1, index, latents.gather(-1, index) * fired)  # one latent
    writes = sae.decode(top) - sae.decode(torch.zeros_like(top))  # [g, rows, d_in]
    return codes, writes


def own_codes(writes: torch.Tensor, config: FindConfig) -> HeadCodes:
    """writes: [rows, c, d_model] (the heads' writes at the answer position) -> codes from one SAE per head,
    fit here on exactly these rows (the explanation describes them; it predicts nothing)."""
    x = writes.transpose(0, 1).contiguous()  # [c, rows, d_model]
    with torch.enable_grad():
        sae = fit_saes(x, config)
    codes, contrib = _top_latent_writes(sae, x)
    return HeadCodes(codes=codes.T, contributions=contrib.transpose(0, 1),
                     n_codes=config.resolved_d_sae() + 1,
                     source={"kind": "own", "sae": "one per circuit head (vectorised)", "d_sae":
                             config.resolved_d_sae(), "arch": config.arch, "steps": config.steps,
                             "l1": config.l1, "input": "the head's write at the answer position",
                             "rows": "the positives and negatives explained"})


def run_codes(model: HookedTransformer, config: FindConfig, train_tokens: torch.Tensor,
              tokens: torch.Tensor, heads: list[Head]) -> HeadCodes:
    """The run's SAE, refit from its configuration on its training prompts `train_tokens` [n_train, seq];
    codes of `tokens` [rows, seq] at the run's hook and pooling. Contributions are in residual space (a
    hook-z latent's decoder row goes through the head's W_O); pooled over positions for pooling "mean"."""
    acts_train = head_activations(model, train_tokens, config.hook, config.position, config.batch_size)
    sae = fit_code_sae(acts_train, config)
    del acts_train
    n_heads = model.cfg.n_heads
    idx = [head_index(l, h, n_heads) for l, h in heads]
    acts = head_activations(model, tokens, config.hook, config.position, config.batch_size)
    acts = acts[:, idx]  # [rows, c, d]
    if config.sae == "per-head":
        parts = [_top_latent_writes(sae.select_groups(i, i + 1), acts[:, j][None]) for j, i in enumerate(idx)]
        codes = torch.cat([p[0] for p in parts]).T  # [rows, c]
        contrib = torch.cat([p[1] for p in parts]).transpose(0, 1)  # [rows, c, d_in]
    else:
        flat_codes, flat = _top_latent_writes(sae, acts.reshape(1, -1, acts.shape[-1]))
        codes = flat_codes[0].reshape(acts.shape[:2])
        contrib = flat[0].reshape(acts.shape)
    if config.hook == "z":  # d_head -> d_model through each head's W_O
        w_o = torch.stack([model.blocks[l].attn.W_O[h] for l, h in heads]).float()  # [c, d_head, d_model]
        contrib = torch.einsum("rcd,cdm->rcm", contrib, w_o)
    return HeadCodes(codes=codes, contributions=contrib, n_codes=config.resolved_d_sae() + 1,
                     source={"kind": "run", "sae": config.sae, "arch": config.arch, "d_sae":
                             config.resolved_d_sae(), "hook": config.hook, "position": config.position,
                             "input": f"the run's SAE refit from its configuration (seed {config.seed}) on "
                                      f"its {train_tokens.shape[0]} training prompts",
                             "code_direct_effect": "of the write pooled over positions (the run's pooling), "
                                                   "read at the answer position" if config.position == "mean"
                             else "of the write at the answer position"})


def own_sae_config(seed: int, steps: int, d_sae: int) -> FindConfig:
    """The FindConfig fields an explanation's own per-head SAEs use (the rest: find's defaults)."""
    return replace(FindConfig(), sae="per-head", seed=seed, steps=steps, d_sae=d_sae)
