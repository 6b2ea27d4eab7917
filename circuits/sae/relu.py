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

from circuits.sae.base import SAE, add_grad


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

        With r = x̂ − x, R = 2r/b, c = λ·scale, n_i = ‖d_i‖, S_i = Σ_b f_bi (the loss summed over groups):
            ∂/∂b_dec (decoder) = Σ_b R          ∂/∂W_dec = fᵀR + (c/b) S_i d_i / n_i
            ∂/∂f = R W_decᵀ + (c/b) n           ∂/∂pre = ∂/∂f ⊙ 1[pre > 0]  (= 1[f > 0])
            ∂/∂b_enc = Σ_b ∂/∂pre =: δ          ∂/∂W_enc = xᵀ ∂/∂pre − b_dec ⊗ δ   ∂/∂b_dec −= W_enc δ
        (the last two terms only when b_dec is applied to the input: pre = x W_enc + b_enc − b_dec W_enc).
        Every [g, b, d_in] pass costs as much as a small matmul here, so r is built in one buffer (no
        x̂), 2/b rides on the matmuls, and x̂ itself is only computed if the caller reads it.
        """
        b = x_n.shape[1]
        coef = self.cfg.l1_coefficient * sparsity_scale
        w_enc, w_dec, b_dec = self.W_enc, self.W_dec, self.b_dec
        apply_b_dec = self.cfg.apply_b_dec_to_input
        bias = self.b_enc - torch.bmm(b_dec[:, None, :], w_enc)[:, 0] if apply_b_dec else self.b_enc
        f = torch.baddbmm(bias[:, None, :], x_n, w_enc).clamp_min_(0)  # [g, b, d_sae]
        diff = self._workspace("diff", x_n)  # x̂ − x: [g, b, d_in], the same buffer every step
        torch.baddbmm(x_n, f, w_dec, beta=-1.0, out=diff).add_(b_dec[:, None, :])
        mse = torch.linalg.vector_norm(diff, dim=-1).square_().mean(-1)  # [g]
        norms = w_dec.norm(dim=-1)  # [g, d_sae]
        f_sum = f.sum(1)  # [g, d_sae]
        l1 = (f_sum * norms).sum(-1) / b
        loss = mse + coef * l1
        two_b = 2.0 / b  # R = two_b * diff, never formed
        grad_f = torch.baddbmm((coef / b) * norms[:, None, :], diff, w_dec.transpose(1, 2), alpha=two_b,
                               out=self._workspace("grad_f", f))  # [g, b, d_sae]
        # ∂/∂pre in place of ∂/∂f: one [g, b, d_sae] buffer fewer (a fresh one costs its page faults)
        grad_pre = torch.ops.aten.threshold_backward.grad_input(grad_f, f, 0, grad_input=grad_f)
        delta = grad_pre.sum(1)  # [g, d_sae]
        grad_w_dec = torch.bmm(f.transpose(1, 2), diff).mul_(two_b)
        grad_w_dec.add_(w_dec * ((coef / b) * f_sum / norms)[..., None])
        grad_b_dec = diff.sum(1).mul_(two_b)
        if apply_b_dec:
            grad_w_enc = torch.baddbmm(b_dec[:, :, None] * delta[:, None, :], x_n.transpose(1, 2), grad_pre,
                                       alpha=1.0, beta=-1.0)
            grad_b_dec.sub_(torch.bmm(w_enc, delta[:, :, None])[..., 0])
        else:
            grad_w_enc = torch.bmm(x_n.transpose(1, 2), grad_pre)
        add_grad(w_enc, grad_w_enc)
        add_grad(w_dec, grad_w_dec)
        add_grad(self.b_enc, delta)
        add_grad(b_dec, grad_b_dec)
        step = self._next_step()

        def recon() -> Tensor:
            self._check_step(step)  # diff is overwritten by the next step
            return diff + x_n

        return f, recon, {"loss": loss, "mse": mse, "l1": l1}
