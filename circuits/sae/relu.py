"""ReLU SAE with an L1 penalty weighted by decoder row norms (the "modern" ReLU+L1 recipe).

    f = ReLU((x - b_dec) W_enc + b_enc)        x̂ = f W_dec + b_dec
    loss = ‖x − x̂‖² + λ Σ_i f_i ‖W_dec,i‖

Weighting the L1 by decoder norms stops the SAE from shrinking latents while growing their decoder rows,
so the decoder can stay unconstrained (Anthropic, April 2024 update). With `normalize_decoder=True` the
norms are 1 and this is the classic unit-norm-decoder, plain-L1 SAE (the circuit paper's choice).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from circuits.sae.base import SAE


class ReLUSAE(SAE):
    arch = "relu"

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def _forward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        f = torch.relu(self.pre_acts(x_n))  # [g, b, d_sae]
        recon = self._decode_n(f)
        mse = self.mse(x_n, recon)
        # Σ_b Σ_i f_bi ‖d_i‖ = Σ_i ‖d_i‖ Σ_b f_bi: weight after summing the batch (cheaper, same value).
        l1 = (f.sum(1) * self.decoder_norms()).sum(-1) / f.shape[1]  # [g]
        loss = mse + self.cfg.l1_coefficient * sparsity_scale * l1
        return f, recon, {"loss": loss, "mse": mse, "l1": l1}

    @torch.no_grad()
    def _forward_backward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Callable[[], Tensor], dict[str, Tensor]]:
        """`_forward_n` and its backward in closed form (no autograd graph, fewer [batch, d_sae] passes).

        On top of the shared linear part (`SAE._closed_form_linear_grads`), with c = λ·scale,
        n_i = ‖d_i‖ and S_i = Σ_b f_bi: ∂/∂f = R W_decᵀ + (c/b) n, ∂/∂pre = ∂/∂f ⊙ 1[f > 0], and the L1
        term's ∂/∂W_dec = (c/b) S_i d_i / n_i.
        """
        b = x_n.shape[1]
        coef = self.cfg.l1_coefficient * sparsity_scale
        w_dec = self.W_dec
        f = self.pre_acts(x_n).clamp_min_(0)  # [g, b, d_sae]
        diff, mse = self._closed_form_residual(x_n, f)
        norms = w_dec.norm(dim=-1)  # [g, d_sae]
        f_sum = f.sum(1)  # [g, d_sae]
        l1 = (f_sum * norms).sum(-1) / b
        grad_f = torch.baddbmm((coef / b) * norms[:, None, :], diff, w_dec.transpose(1, 2), alpha=2.0 / b,
                               out=self._workspace("grad_f", f))  # [g, b, d_sae]
        # ∂/∂pre in place of ∂/∂f: one [g, b, d_sae] buffer fewer (a fresh one costs its page faults)
        grad_pre = torch.ops.aten.threshold_backward.grad_input(grad_f, f, 0, grad_input=grad_f)
        self._closed_form_linear_grads(x_n, f, diff, grad_pre,
                                       extra_w_dec=w_dec * ((coef / b) * f_sum / norms)[..., None])
        return f, self._lazy_recon(diff, x_n), {"loss": mse + coef * l1, "mse": mse, "l1": l1}
