"""Matryoshka SAE with BatchTopK inside (Bussmann et al. 2025, arXiv 2503.17547; Nabeshima 2024).

The dictionary is read as nested prefixes of sizes m_1 < m_2 < ... < m_L = d_sae (`cfg.prefix_sizes`).
Latents are chosen by BatchTopK over the WHOLE dictionary, exactly as in BatchTopKSAE; the loss then asks
every prefix to reconstruct the input on its own:

    x̂_m = f[:, :m] W_dec[:m] + b_dec              (the reconstruction from the first m latents only)
    loss = mean_l ‖x − x̂_{m_l}‖²  +  α AuxK        (AuxK on the full reconstruction's residual, as BatchTopK)

Why it reduces feature absorption: the first latents must reconstruct well without any later latent, so
a general ("parent") direction cannot be folded into the specific latents that live further out; it keeps
its own early latent, and the later latents only add what is specific. The mean (Bussmann's original)
rather than the sum (SAELens) keeps the loss in the units of the other architectures' `mse`.

Inference is BatchTopK's: one running threshold per group, so the file layout is BatchTopK's too (SAELens
saves its `matryoshka_batchtopk` training SAEs as `jumprelu` for inference, and so do we).
Loss terms: `loss`, `mse` (full dictionary, comparable to other architectures), `prefix_mse` (the mean
over prefixes that is minimised) and `auxk`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuits.sae.topk import BatchTopKSAE


class MatryoshkaSAE(BatchTopKSAE):
    arch = "matryoshka"

    def prefix_reconstructions(self, f: Tensor) -> list[Tensor]:
        """Normalised-unit reconstructions from each prefix of latents f [g, b, d_sae]: one [g, b, d_in]
        per prefix size, the last equal to the full decode. Costs one full decode in total (block sums)."""
        out: list[Tensor] = []
        partial = self.b_dec[:, None, :].expand(f.shape[0], f.shape[1], -1)  # [g, b, d_in]
        start = 0
        for end in self.cfg.prefix_sizes:
            partial = torch.baddbmm(partial, f[:, :, start:end], self.W_dec[:, start:end])
            out.append(partial)
            start = end
        return out

    def prefix_mses(self, x: Tensor) -> Tensor:
        """Per-prefix reconstruction error of x [groups, batch, d_in] (or [batch, d_in]) with the
        inference activation: [n_prefixes, groups], in the units of `mse` (normalised inputs)."""
        x, _ = self._as_3d(x)
        x_n = self._normalise(x.to(self.W_enc.dtype))
        f = self._encode_n(x_n)
        return torch.stack([self.mse(x_n, r) for r in self.prefix_reconstructions(f)])

    def _forward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        pre = self.pre_acts(x_n)  # [g, b, d_sae]
        f = self._train_activate(pre) if self.training else self.activate(pre)
        recons = self.prefix_reconstructions(f)
        per_prefix = torch.stack([self.mse(x_n, r) for r in recons])  # [n_prefixes, g]
        recon = recons[-1]
        prefix_mse = per_prefix.mean(0)
        aux = self.auxk(pre, (x_n - recon).detach(), dead_mask)
        loss = prefix_mse + self.cfg.aux_k_coefficient * aux
        return f, recon, {"loss": loss, "mse": per_prefix[-1], "prefix_mse": prefix_mse, "auxk": aux}
