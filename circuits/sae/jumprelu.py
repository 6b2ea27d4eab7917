"""JumpReLU SAE (Rajamanoharan et al. 2024b, arXiv 2407.14435).

    z = (x − b_dec) W_enc + b_enc;   f = z ⊙ H(z − θ);   x̂ = f W_dec + b_dec
    loss = ‖x − x̂‖² + λ Σ_i H(z_i − θ_i)        (an L0 penalty)

θ = exp(log_threshold) is learned per latent. H has zero gradient almost everywhere, so θ is trained
through straight-through estimators with a rectangle kernel K of bandwidth ε:
    ∂/∂θ JumpReLU(z) = −(θ/ε) K((z − θ)/ε),   ∂/∂θ H(z − θ) = −(1/ε) K((z − θ)/ε),
and no pseudo-gradient flows to z through H (the paper's choice). Decoder rows are kept at unit norm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from circuits.sae.base import SAE, add_grad, rectangle


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:  # z [g,b,f], θ [g,f]
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta[:, None, :]).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        th = theta[:, None, :]
        grad_z = grad * (z > th).to(z.dtype)
        grad_theta = (-(th / eps) * rectangle((z - th) / eps) * grad).sum(1)
        return grad_z, grad_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta[:, None, :]).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        th = theta[:, None, :]
        grad_theta = (-(1.0 / eps) * rectangle((z - th) / eps) * grad).sum(1)
        return torch.zeros_like(z), grad_theta, None


class _JumpReLUWithL0(torch.autograd.Function):
    """Both of the above in one pass: (JumpReLU(z) [g,b,f], mean over rows of Σ_i H(z_i − θ_i) [g]).
    Same gradients as `jumprelu` + `step(...).sum(-1).mean(-1)`, with the mask and the kernel window
    computed once (the training hot path)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> tuple[Tensor, Tensor]:
        mask = z > theta[:, None, :]
        ctx.save_for_backward(z, theta, mask)
        ctx.bandwidth = bandwidth
        return z * mask, mask.sum(-1).to(z.dtype).mean(-1)

    @staticmethod
    def backward(ctx: Any, grad_f: Tensor, grad_l0: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta, mask = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((z - theta[:, None, :]).abs() < eps / 2).to(z.dtype)  # K((z − θ)/ε), rectangle
        rows = z.shape[1]
        grad_theta = -(1.0 / eps) * (
            theta * (window * grad_f).sum(1) + window.sum(1) * (grad_l0[:, None] / rows)
        )
        return grad_f * mask, grad_theta, None


def jumprelu_with_l0(z: Tensor, theta: Tensor, bandwidth: float) -> tuple[Tensor, Tensor]:
    return _JumpReLUWithL0.apply(z, theta, bandwidth)


def jumprelu(z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    return _JumpReLU.apply(z, theta, bandwidth)


def step(z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    return _Step.apply(z, theta, bandwidth)


class JumpReLUSAE(SAE):
    arch = "jumprelu"

    def _init_extra(self, gen: torch.Generator) -> None:
        g, f, dtype = self.cfg.groups, self.cfg.d_sae, self.cfg.torch_dtype
        self.log_threshold = nn.Parameter(torch.full((g, f), math.log(self.cfg.threshold_init), dtype=dtype))

    @property
    def threshold(self) -> Tensor:
        return torch.exp(self.log_threshold)

    def activate(self, pre: Tensor) -> Tensor:
        return pre * (pre > self.threshold[:, None, :]).to(pre.dtype)

    def _forward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        pre = self.pre_acts(x_n)
        theta = self.threshold
        f, l0 = jumprelu_with_l0(pre, theta, self.cfg.bandwidth)
        recon = self._decode_n(f)
        mse = self.mse(x_n, recon)
        loss = mse + self.cfg.l0_coefficient * sparsity_scale * l0
        return f, recon, {"loss": loss, "mse": mse, "l0_penalty": l0}

    @torch.no_grad()
    def _forward_backward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Callable[[], Tensor], dict[str, Tensor]]:
        """`_forward_n` and its backward in closed form, on top of `SAE._closed_form_linear_grads`.

        mask = 1[z > θ], window = K((z − θ)/ε), c = λ0·scale: ∂/∂f = R W_decᵀ, ∂/∂z = ∂/∂f ⊙ mask, and
        ∂/∂θ = −(1/ε)(θ Σ_b window ⊙ ∂/∂f + (c/b) Σ_b window) (both straight-through estimators), then
        ∂/∂log θ = θ ∂/∂θ.
        """
        b = x_n.shape[1]
        coef = self.cfg.l0_coefficient * sparsity_scale
        eps = self.cfg.bandwidth
        theta = self.threshold  # [g, d_sae]
        pre = self.pre_acts(x_n)  # [g, b, d_sae]
        mask = pre > theta[:, None, :]
        window = ((pre - theta[:, None, :]).abs() < eps / 2).to(pre.dtype)
        f = pre.mul_(mask)  # in place: pre is not needed past the window
        l0 = mask.sum(-1).to(f.dtype).mean(-1)  # [g]
        diff, mse = self._closed_form_residual(x_n, f)
        grad_f = torch.bmm(diff, self.W_dec.transpose(1, 2), out=self._workspace("grad_f", f)).mul_(2.0 / b)
        grad_theta = -(1.0 / eps) * (theta * (window * grad_f).sum(1) + window.sum(1) * (coef / b))
        grad_pre = grad_f.mul_(mask)  # [g, b, d_sae], in place of ∂/∂f
        self._closed_form_linear_grads(x_n, f, diff, grad_pre)
        add_grad(self.log_threshold, grad_theta * theta)
        return f, self._lazy_recon(diff, x_n), {"loss": mse + coef * l0, "mse": mse, "l0_penalty": l0}
