"""Head outputs -> SAE latents -> integer codes: the argmax latent, with one extra code for "no latent
fired". The SAEs are fit here too (`fit_saes`), on the training prompts' activations; the scoring
prompts are then encoded inside the forward hook (`streamed_codes`), so their activations are never held.

The paper's argmax sends an all-zero latent vector to code 0, merging "silent" with latent 0;
here silence gets its own code (d_sae), so the two stay distinguishable.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch

from circuits.discovery.activations import stream_head_activations
from circuits.discovery.config import FindConfig
from circuits.discovery.shard import broadcast_from_rank0
from circuits.progress import Progress
from circuits.sae import SAE, SAEConfig, make_sae, train_sae
from circuits.sae.distributed import rank_and_world

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer


def codes_from_latents(latents: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """latents: [..., d_sae] -> codes: [...] long in [0, d_sae]; d_sae means no latent > threshold."""
    d_sae = latents.shape[-1]
    values, idx = latents.max(dim=-1)
    return torch.where(values > threshold, idx, torch.full_like(idx, d_sae))


def n_codes(d_sae: int) -> int:
    """Number of distinct codes an SAE with d_sae latents can emit (the silent code included)."""
    return d_sae + 1


def fit_saes(x: torch.Tensor, config: FindConfig, progress: Progress | None = None) -> SAE:
    """Train `groups` SAEs at once on x: [groups, n, d_in] (full batch, inputs normalised per group).

    Trained in this process alone even under torchrun: `fit_code_sae` broadcasts rank 0's SAE.
    """
    groups, n_rows, d_in = x.shape
    sae_cfg = SAEConfig(d_in=d_in, d_sae=config.resolved_d_sae(), arch=config.arch, groups=groups,
                        l1_coefficient=config.l1, k=min(config.k, config.resolved_d_sae()),
                        normalize_decoder=True)
    sae_seed = config.seed if config.sae_seed is None else config.sae_seed
    sae = make_sae(sae_cfg, seed=sae_seed).to(x.device)
    if rank_and_world()[0] == 0:
        callback = (lambda step, total, _metrics: progress("sae", step, total)) if progress else None
        train_sae(sae, x, steps=config.steps, lr=config.lr, batch_size=n_rows, seed=sae_seed,
                  callback=callback, b_dec_init="mean", normalize_inputs=True, distributed=False)
    broadcast_from_rank0(list(sae.state_dict().values()))
    sae.eval()
    return sae


def fit_code_sae(acts_train: torch.Tensor, config: FindConfig, progress: Progress | None = None) -> SAE:
    """acts_train: [rows, head, d] -> the SAE(s) codes come from: shared (one SAE, every head's vector a
    row) or per-head (one group per head)."""
    if config.sae == "per-head":
        x = acts_train.transpose(0, 1).contiguous()  # [head, rows, d]
    else:
        x = acts_train.reshape(1, -1, acts_train.shape[-1])  # [1, rows*head, d]
    with torch.enable_grad():
        return fit_saes(x, config, progress)


@torch.no_grad()
def head_codes(sae: SAE, acts: torch.Tensor, per_head: bool) -> torch.Tensor:
    """acts: [rows, head, d] -> codes [rows, head]; per_head: `sae` has one group per head of acts."""
    if per_head:
        return codes_from_latents(sae.encode(acts.transpose(0, 1).contiguous())).transpose(0, 1)
    return codes_from_latents(sae.encode(acts.reshape(1, -1, acts.shape[-1]))[0]).reshape(acts.shape[:2])


@torch.no_grad()
def encode_codes(acts_train: torch.Tensor, acts_score: torch.Tensor, config: FindConfig,
                 progress: Progress | None = None) -> torch.Tensor:
    """acts_*: [n, head, d] -> codes of the scoring rows: [n_score_rows, head] (SAEs fit on acts_train).

    Holds every scoring activation; `streamed_codes` gives the same codes without them.
    """
    sae = fit_code_sae(acts_train, config, progress)
    return head_codes(sae, acts_score, config.sae == "per-head")


@torch.no_grad()
def folded_encoders(model: HookedTransformer, sae: SAE, per_head: bool) -> list[torch.Tensor]:
    """Per layer, [head, d_head, d_sae]: W_O (z -> the head's output) times the SAE's input projection,
    so that a head's z goes straight to latent space: codes of `hook` "result" without forming z @ W_O.

    Per layer and batch of b prompts that is b·head·d_head·d_sae multiply-adds instead of
    b·head·d_model·(d_head + d_sae) (about 15x fewer on gpt2-small); codes agree up to float rounding.
    """
    n_heads = model.cfg.n_heads
    projection = sae.input_projection()  # [g, d_model, d_sae]
    folded = []
    for layer in range(model.cfg.n_layers):
        w_o = model.blocks[layer].attn.W_O.to(projection.dtype)  # [head, d_head, d_model]
        heads = (projection[layer * n_heads:(layer + 1) * n_heads] if per_head
                 else projection.expand(n_heads, -1, -1))  # [head, d_model, d_sae]
        folded.append(torch.bmm(w_o, heads))
    return folded


@torch.no_grad()
def streamed_codes(model: HookedTransformer, tokens: torch.Tensor, sae: SAE, config: FindConfig,
                   batches: range | None = None,
                   stream: Callable[[slice, Callable[[int, int, torch.Tensor], None]], None] | None = None
                   ) -> torch.Tensor:
    """tokens: [n, seq] -> codes [n*rows_per_prompt, layer*head], encoded inside the forward hook, so
    only codes are kept. batches: which batches of `config.batch_size` prompts to run (a rank's share);
    rows of the others stay 0. stream(rows, consume): what is encoded for the prompts `rows` (consume as
    in `stream_head_activations`); default: the heads' outputs (discovery.effect passes the effects),
    for hook "result" read as z and encoded through `folded_encoders`."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    per_head = config.sae == "per-head"
    device = model.blocks[0].attn.W_O.device  # the hooks run here; the SAE was fit where acts_train is
    if sae.W_enc.device != device:
        sae = copy.deepcopy(sae).to(device)
    # per-head: each layer's hook encodes with that layer's groups only
    coders = [sae.select_groups(l * n_heads, (l + 1) * n_heads) if per_head else sae for l in range(n_layers)]
    fold = stream is None and config.hook == "result"
    folded = folded_encoders(model, sae, per_head) if fold else []
    rows_per_prompt = tokens.shape[1] if config.position == "each" else 1
    codes = torch.zeros(tokens.shape[0] * rows_per_prompt, n_layers * n_heads, dtype=torch.long)

    def encode(offset: int, row_start: int, layer: int, acts: torch.Tensor) -> None:  # acts: [b, head, d]
        if fold:  # acts is z [b, head, d_head]
            xw = torch.bmm(acts.transpose(0, 1).to(folded[layer].dtype), folded[layer])  # [head, b, d_sae]
            block = _projected_codes(coders[layer], xw, per_head)
        else:
            block = head_codes(coders[layer], acts, per_head)  # [b, head]
        row = offset + row_start
        codes[row:row + acts.shape[0], layer * n_heads:(layer + 1) * n_heads] = block

    size = config.batch_size
    for b in batches if batches is not None else range((tokens.shape[0] + size - 1) // size):
        consume = partial(encode, b * size * rows_per_prompt)
        if stream is not None:
            stream(slice(b * size, (b + 1) * size), consume)
            continue
        stream_head_activations(model, tokens[b * size:(b + 1) * size], consume, "z" if fold else config.hook,
                                config.position, size)
    return codes


def _projected_codes(sae: SAE, xw: torch.Tensor, per_head: bool) -> torch.Tensor:
    """xw: [head, b, d_sae] (inputs times the input projection) -> codes [b, head]."""
    if per_head:  # one group per head
        return codes_from_latents(sae.encode_projected(xw)).transpose(0, 1)
    # one SAE: every (head, prompt) is a row, and encoding is row by row, so their order is free
    heads, b, d_sae = xw.shape
    return codes_from_latents(sae.encode_projected(xw.reshape(1, heads * b, d_sae))[0]).reshape(heads, b).T
