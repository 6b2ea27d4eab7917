"""TopK SAE with the AuxK loss (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024).

TopK:       f = ReLU(TopK_k((x − b_dec) W_enc + b_enc))       x̂ = f W_dec + b_dec, unit-norm decoder rows.
AuxK:       e = x − x̂ (detached); ê = TopK_{k_aux}(pre-activations of DEAD latents) W_dec;
            loss = ‖e‖² + α ‖e − ê‖², α = aux_k_coefficient (1/32), k_aux = d_in/2 by default, in the same
            units as the main term (OpenAI's and dictionary_learning's choice; EleutherAI sparsify ships
            with it off). "Dead" comes from the trainer: no firing within its dead window.
BatchTopK:  in training, keep the k × batch largest activations over the whole batch (per group), so a row
            may use more or fewer than k latents; at inference use a global threshold θ per group,
            a running mean (momentum `threshold_momentum`) of the smallest kept activation per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits.sae.base import SAE


def topk_rows(pre: Tensor, k: int) -> Tensor:
    """Keep the k largest entries of every row (ReLU'd), zero elsewhere: [g, b, f] -> [g, b, f]."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


def sparse_decode(w_dec: Tensor, b_dec: Tensor, bags: Tensor, latents: Tensor, values: Tensor,
                  batch: int) -> Tensor:
    """Σ values · W_dec[latent] per row, touching only the active latents (embedding_bag), + b_dec.

    w_dec: [g, f, d]; b_dec: [g, d]; bags, latents, values: [g, n] (row in the batch, latent index, value
    of each active entry; rows ascending within a group) -> [g, batch, d]. Why: with k of f latents active
    the dense f @ W_dec and its two backward products cost f/k times more (64x at k=32, f=2048).
    """
    g, f, d = w_dec.shape
    rows = (bags + torch.arange(g, device=bags.device)[:, None] * batch).reshape(-1)  # [g*n]
    flat = (latents + torch.arange(g, device=latents.device)[:, None] * f).reshape(-1)  # into [g*f, d]
    counts = torch.bincount(rows, minlength=g * batch)
    offsets = torch.cumsum(counts, 0) - counts  # [g*batch] exclusive: start of each row's entries
    out = F.embedding_bag(flat, w_dec.reshape(g * f, d), offsets, mode="sum",
                          per_sample_weights=values.reshape(-1))  # [g*batch, d]
    return out.reshape(g, batch, d) + b_dec[:, None, :]


class TopKSAE(SAE):
    arch = "topk"

    @property
    def uses_dead_mask(self) -> bool:
        return self.cfg.aux_k_coefficient > 0

    def activate(self, pre: Tensor) -> Tensor:
        return topk_rows(pre, self.cfg.k)

    def _train_activate(self, pre: Tensor) -> Tensor:
        return topk_rows(pre, self.cfg.k)

    def auxk(self, pre: Tensor, residual: Tensor, dead_mask: Tensor | None) -> Tensor:
        """‖e − ê‖² (sum over d_in, mean over rows) per group [g]; 0 where a group has no dead latent."""
        g = pre.shape[0]
        if dead_mask is None or self.cfg.aux_k_coefficient <= 0 or not bool(dead_mask.any()):
            return pre.new_zeros(g)
        k_aux = min(self.cfg.k_aux, self.cfg.d_sae)
        masked = pre.masked_fill(~dead_mask[:, None, :], float("-inf"))
        vals, idx = masked.topk(k_aux, dim=-1, sorted=False)
        vals = torch.where(torch.isfinite(vals), torch.relu(vals), torch.zeros_like(vals))
        f_aux = torch.zeros_like(pre).scatter(-1, idx, vals)
        e_hat = torch.bmm(f_aux, self.W_dec)  # no bias: it models the residual
        aux = (e_hat - residual).pow(2).sum(-1).mean(-1)
        return aux * dead_mask.any(-1).to(aux.dtype)

    def _sparse_train(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """Training activation as (dense latents without gradient, sparse reconstruction with it)."""
        g, b, k = pre.shape[0], pre.shape[1], self.cfg.k
        vals, idx = pre.topk(k, dim=-1, sorted=False)  # [g, b, k]
        vals = torch.relu(vals)
        with torch.no_grad():
            f = torch.zeros_like(pre).scatter(-1, idx, vals)
        bags = torch.arange(b, device=pre.device).repeat_interleave(k).expand(g, -1)  # [g, b*k]
        recon = sparse_decode(self.W_dec, self.b_dec, bags, idx.reshape(g, -1), vals.reshape(g, -1), b)
        return f, recon

    def _forward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        pre = self.pre_acts(x_n)
        if self.training:
            f, recon = self._sparse_train(pre)
        else:
            f = self.activate(pre)
            recon = self._decode_n(f)
        mse = self.mse(x_n, recon)
        aux = self.auxk(pre, (x_n - recon).detach(), dead_mask)
        loss = mse + self.cfg.aux_k_coefficient * aux
        return f, recon, {"loss": loss, "mse": mse, "auxk": aux}


class BatchTopKSAE(TopKSAE):
    arch = "batchtopk"
    threshold: Tensor  # buffer [groups]: the inference threshold; < 0 until training sets it
    synced_buffers = ("threshold",)  # averaged across DDP ranks by the trainer

    def _init_extra(self, gen: torch.Generator) -> None:
        # -1 marks "not yet estimated"; inference then falls back to per-row TopK.
        self.register_buffer("threshold", torch.full((self.cfg.groups,), -1.0, dtype=self.cfg.torch_dtype))

    def activate(self, pre: Tensor) -> Tensor:
        if self.training:
            return self._batch_topk(pre)
        theta = self.threshold[:, None, None]
        if bool((self.threshold < 0).any()):  # untrained groups: per-row TopK
            return torch.where(theta < 0, topk_rows(pre, self.cfg.k), pre * (pre > theta))
        return pre * (pre > theta)

    def _batch_topk(self, pre: Tensor) -> Tensor:
        g, b, f = pre.shape
        flat = torch.relu(pre).reshape(g, b * f)
        vals, idx = flat.topk(min(self.cfg.k * b, b * f), dim=-1, sorted=False)
        return torch.zeros_like(flat).scatter(-1, idx, vals).reshape(g, b, f)

    def _sparse_train(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        g, b, f_size = pre.shape
        flat = torch.relu(pre).reshape(g, b * f_size)
        vals, idx = flat.topk(min(self.cfg.k * b, b * f_size), dim=-1, sorted=False)  # [g, k*b]
        idx, order = idx.sort(dim=-1)  # row-major: entries of one row are contiguous
        vals = vals.gather(-1, order)
        with torch.no_grad():
            f = torch.zeros_like(flat).scatter(-1, idx, vals).reshape(g, b, f_size)
            self._update_threshold(f)
        recon = sparse_decode(self.W_dec, self.b_dec, idx // f_size, idx % f_size, vals, b)
        return f, recon

    def _train_activate(self, pre: Tensor) -> Tensor:
        f = self._batch_topk(pre)
        self._update_threshold(f)
        return f

    @torch.no_grad()
    def _update_threshold(self, f: Tensor) -> None:
        """Running mean of the smallest kept positive activation per group (f: [g, b, d_sae])."""
        kept_min = torch.where(f > 0, f, torch.full_like(f, float("inf"))).amin(dim=(1, 2))
        kept_min = torch.where(torch.isfinite(kept_min), kept_min, self.threshold.clamp_min(0))
        m = self.cfg.threshold_momentum
        fresh = self.threshold < 0
        self.threshold.copy_(torch.where(fresh, kept_min, m * self.threshold + (1 - m) * kept_min))
