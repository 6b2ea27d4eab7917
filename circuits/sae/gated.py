"""Gated SAE (Rajamanoharan et al. 2024, arXiv 2404.16014), the paper's formulation.

    x̃ = x − b_dec;  π_gate = x̃ W_gate + b_gate;  π_mag = x̃ (W_gate ⊙ exp(r_mag)) + b_mag
    f = 1[π_gate > 0] ⊙ ReLU(π_mag);  x̂ = f W_dec + b_dec
    loss = ‖x − x̂‖² + λ ‖ReLU(π_gate)‖₁ + ‖x − (ReLU(π_gate) sg(W_dec) + sg(b_dec))‖²

Choices (REFERENCE §8): we follow the paper and saprmarks/dictionary_learning, not SAELens v6: the
auxiliary reconstruction goes through a FROZEN (stop-gradient) copy of W_dec and b_dec, the decoder rows
are kept at unit norm (with gradient projection), and the L1 on ReLU(π_gate) is plain (not weighted by
decoder norms; with unit-norm rows the two coincide anyway, which is why freezing is consistent here).
The gate weight is stored as W_enc and b_gate as b_enc so the shared interface holds; the SAELens file
names (b_gate, r_mag, b_mag) are used on save.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from circuits.sae.base import SAE


class GatedSAE(SAE):
    arch = "gated"

    def _init_extra(self, gen: torch.Generator) -> None:
        g, f, dtype = self.cfg.groups, self.cfg.d_sae, self.cfg.torch_dtype
        self.r_mag = nn.Parameter(torch.zeros(g, f, dtype=dtype))
        self.b_mag = nn.Parameter(torch.zeros(g, f, dtype=dtype))

    def _paths(self, x_n: Tensor) -> tuple[Tensor, Tensor]:
        """(π_gate, π_mag), each [g, b, d_sae]; one bmm serves both paths."""
        if self.cfg.apply_b_dec_to_input:
            x_n = x_n - self.b_dec[:, None, :]
        return self._paths_from(torch.bmm(x_n, self.W_enc))

    def _paths_from(self, xw: Tensor) -> tuple[Tensor, Tensor]:
        """(π_gate, π_mag) from x̃ W_gate [g, b, d_sae]."""
        pi_gate = xw + self.b_enc[:, None, :]
        pi_mag = xw * torch.exp(self.r_mag)[:, None, :] + self.b_mag[:, None, :]
        return pi_gate, pi_mag

    @staticmethod
    def _gate(pi_gate: Tensor, pi_mag: Tensor) -> Tensor:
        return (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)

    def _encode_n(self, x_n: Tensor) -> Tensor:
        return self._gate(*self._paths(x_n))

    def encode_projected(self, xw: Tensor) -> Tensor:
        """x̃ W_gate = (s x − b_dec) W_gate = xw − b_dec W_gate; both paths read it."""
        if self.cfg.apply_b_dec_to_input:
            xw = xw - self._b_dec_encoded()[:, None, :]
        return self._gate(*self._paths_from(xw))

    def activate(self, pre: Tensor) -> Tensor:  # pragma: no cover - the gate needs both paths
        raise NotImplementedError("GatedSAE encodes from inputs (two paths), use encode()")

    def _forward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        pi_gate, pi_mag = self._paths(x_n)
        f = self._gate(pi_gate, pi_mag)
        recon = self._decode_n(f)
        mse = self.mse(x_n, recon)
        gate_act = torch.relu(pi_gate)
        l1 = gate_act.sum(-1).mean(-1)
        recon_aux = torch.baddbmm(self.b_dec.detach()[:, None, :], gate_act, self.W_dec.detach())
        aux = self.mse(x_n, recon_aux)
        loss = mse + self.cfg.l1_coefficient * sparsity_scale * l1 + aux
        return f, recon, {"loss": loss, "mse": mse, "l1": l1, "aux": aux}
