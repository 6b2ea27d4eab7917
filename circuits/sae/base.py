"""What every SAE architecture shares: one config dataclass, the batched parameter layout, and the
`encode` / `decode` / `forward` interface.

Every architecture is batched over a leading `groups` dimension so that many independent SAEs (one per
attention head, say) train as ONE tensor program:

    W_enc [groups, d_in, d_sae]   W_dec [groups, d_sae, d_in]   b_enc [groups, d_sae]   b_dec [groups, d_in]
    x     [groups, batch, d_in]   latents [groups, batch, d_sae]

An ordinary SAE is groups=1; a 2-D input `[batch, d_in]` is accepted when groups == 1 and outputs are
then 2-D as well. Groups never interact: every loss term is a per-group batch mean, and the value to
minimise is their sum, so each group's gradient is exactly the one it would get if trained alone.

Loss units (all architectures): `mse` is the squared error summed over d_in and averaged over the batch
(SAELens's convention), computed on normalised inputs (`input_scale`, see below). Sparsity
coefficients are therefore relative to that sum.

Input normalisation lives in the buffer `input_scale [groups]`: the SAE sees `x * input_scale` and its
reconstruction is divided by it again, so `encode`/`decode`/`forward` always take and return the
caller's units. `fold_input_scale()` folds it into the weights (done on save) for tools that know
nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from circuits.errors import CircuitsError

ARCHS = ("relu", "topk", "batchtopk", "gated", "jumprelu", "matryoshka")
K_ARCHS = ("topk", "batchtopk", "matryoshka")  # sparsity set by k, not by a coefficient


@dataclass
class SAEConfig:
    """Shape, architecture and loss hyperparameters of a (batched) SAE.

    Only the fields of the chosen `arch` matter; the rest are ignored. `normalize_decoder=None` means
    the architecture's own default (unit-norm decoder rows for all but ReLU, whose modern form weights
    the L1 by decoder norms instead and leaves them free).
    """

    d_in: int
    d_sae: int
    arch: str = "relu"
    groups: int = 1
    # ReLU / Gated: L1 coefficient (ReLU: each latent weighted by its decoder row norm).
    l1_coefficient: float = 1.0
    # TopK / BatchTopK: active latents per row (BatchTopK: on average over the batch).
    k: int = 32
    # AuxK (TopK / BatchTopK): k_aux (None: d_in // 2) and its coefficient; 0 turns it off.
    aux_k: int | None = None
    aux_k_coefficient: float = 1.0 / 32.0
    # BatchTopK / Matryoshka: momentum of the running inference threshold.
    threshold_momentum: float = 0.99
    # Matryoshka: sizes of the nested prefixes, strictly increasing and ending at d_sae (SAELens's
    # `matryoshka_widths`); None: d_sae/16, d_sae/8, d_sae/4, d_sae/2, d_sae.
    matryoshka_widths: list[int] | None = None
    # JumpReLU: L0 coefficient, STE kernel bandwidth, initial threshold.
    l0_coefficient: float = 1.0
    bandwidth: float = 0.001
    threshold_init: float = 0.001
    # Decoder: unit-norm rows (None: the architecture's default) and the initial row norm.
    normalize_decoder: bool | None = None
    decoder_init_norm: float | None = None
    apply_b_dec_to_input: bool = True
    dtype: str = "float32"
    # Provenance (SAELens cfg fields), filled by whoever knows them.
    model_name: str = ""
    hook_name: str = ""
    hook_layer: int = -1
    hook_head_index: int | None = None
    context_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise CircuitsError(f"unknown SAE architecture '{self.arch}' (known: {', '.join(ARCHS)})")
        for name in ("d_in", "d_sae", "groups"):
            if int(getattr(self, name)) < 1:
                raise CircuitsError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.arch in K_ARCHS and not 1 <= self.k <= self.d_sae:
            raise CircuitsError(f"k must be between 1 and d_sae={self.d_sae}, got {self.k}")
        if self.matryoshka_widths is not None:
            self.matryoshka_widths = [int(w) for w in self.matryoshka_widths]
            w = self.matryoshka_widths
            increasing = all(b > a for a, b in zip(w, w[1:], strict=False))
            if not w or w[0] < 1 or not increasing or w[-1] != self.d_sae:
                raise CircuitsError(
                    "matryoshka_widths must be strictly increasing positive sizes ending at "
                    f"d_sae={self.d_sae}, got {w}"
                )
        if self.aux_k is not None and self.aux_k < 1:
            raise CircuitsError(f"aux_k must be positive, got {self.aux_k}")
        if self.bandwidth <= 0 or self.threshold_init <= 0:
            raise CircuitsError("bandwidth and threshold_init must be positive")
        if self.dtype not in ("float32", "float64", "bfloat16", "float16"):
            raise CircuitsError(f"unsupported dtype '{self.dtype}'")

    @property
    def unit_decoder(self) -> bool:
        """Whether decoder rows are kept at unit norm (with gradient projection) during training."""
        if self.normalize_decoder is not None:
            return bool(self.normalize_decoder)
        return self.arch != "relu"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def k_aux(self) -> int:
        return min(self.d_sae, self.aux_k if self.aux_k is not None else max(1, self.d_in // 2))

    @property
    def prefix_sizes(self) -> list[int]:
        """Matryoshka prefix sizes (the configured widths, or the default geometric set)."""
        if self.matryoshka_widths is not None:
            return list(self.matryoshka_widths)
        return default_matryoshka_widths(self.d_sae)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_matryoshka_widths(d_sae: int, levels: int = 5) -> list[int]:
    """Nested prefix sizes d_sae / 2^(levels-1), ..., d_sae / 2, d_sae (at least 1, duplicates dropped)."""
    return sorted({max(1, round(d_sae / 2**j)) for j in range(levels)})


class SAEOutput:
    """recon: like x; latents: [groups, batch, d_sae] (2-D for a 2-D input); losses: name -> [groups].

    recon may be given as a function and is then computed on first read: the trainer never reads it, and
    building it costs passes over a [groups, batch, d_in] tensor every step.
    """

    def __init__(self, recon: Tensor | Callable[[], Tensor], latents: Tensor, losses: dict[str, Tensor]):
        self._recon = recon
        self.latents = latents
        self.losses = losses

    @property
    def recon(self) -> Tensor:
        if callable(self._recon):
            self._recon = self._recon()
        return self._recon

    @property
    def loss(self) -> Tensor:
        """The scalar to minimise: the sum over groups of each group's total loss."""
        return self.losses["loss"].sum()


class SAE(nn.Module):
    """Batched SAE base class; subclasses define the activation and the loss terms."""

    arch: ClassVar[str] = ""

    input_scale: Tensor  # buffer [groups]: inputs are multiplied by it before encoding

    def __init__(self, cfg: SAEConfig, seed: int = 0):
        super().__init__()
        if cfg.arch != self.arch:
            raise CircuitsError(f"{type(self).__name__} needs arch '{self.arch}', config says '{cfg.arch}'")
        self.cfg = cfg
        g, d, f = cfg.groups, cfg.d_in, cfg.d_sae
        dtype = cfg.torch_dtype
        gen = torch.Generator().manual_seed(int(seed))
        # Decoder rows: random directions at the initial norm; encoder = decoder transpose (Gao et al.).
        w_dec = torch.randn(g, f, d, generator=gen, dtype=torch.float64)
        norm = (
            cfg.decoder_init_norm if cfg.decoder_init_norm is not None else (1.0 if cfg.unit_decoder else 0.1)
        )
        w_dec = (w_dec / w_dec.norm(dim=-1, keepdim=True) * norm).to(dtype)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.transpose(1, 2).clone())
        self.b_enc = nn.Parameter(torch.zeros(g, f, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(g, d, dtype=dtype))
        self.register_buffer("input_scale", torch.ones(g, dtype=dtype))
        self._init_extra(gen)

    def _init_extra(self, gen: torch.Generator) -> None:
        """Architecture-specific parameters and buffers."""

    # ---- shapes -------------------------------------------------------------------------------
    def _as_3d(self, x: Tensor) -> tuple[Tensor, bool]:
        """[batch, d] -> [1, batch, d] when groups == 1; checks the group and feature sizes."""
        squeeze = x.dim() == 2
        if squeeze:
            if self.cfg.groups != 1:
                raise CircuitsError(f"a 2-D input needs groups == 1 (this SAE has {self.cfg.groups} groups)")
            x = x.unsqueeze(0)
        if x.dim() != 3 or x.shape[0] != self.cfg.groups:
            raise CircuitsError(f"expected input [groups={self.cfg.groups}, batch, d], got {tuple(x.shape)}")
        return x, squeeze

    # ---- the shared interface ------------------------------------------------------------------
    def pre_acts(self, x_n: Tensor) -> Tensor:
        """Encoder pre-activations of normalised input x_n [g, b, d_in] -> [g, b, d_sae]."""
        return torch.baddbmm(self._encoder_bias()[:, None, :], x_n, self.W_enc)

    def _encoder_bias(self) -> Tensor:
        """[g, d_sae]: b_enc − b_dec W_enc (b_enc alone when b_dec is not applied to the input).

        (x − b_dec) W_enc = x W_enc − b_dec W_enc: folding b_dec into the bias keeps the input out of the
        autograd graph, so backward skips a [g, b, d_sae] x [g, d_sae, d_in] product per step.
        """
        if not self.cfg.apply_b_dec_to_input:
            return self.b_enc
        return self.b_enc - self._b_dec_encoded()

    def _b_dec_encoded(self) -> Tensor:
        """[g, d_sae]: b_dec W_enc, what subtracting b_dec from the input takes off every pre-activation."""
        return torch.bmm(self.b_dec[:, None, :], self.W_enc)[:, 0]

    # ---- encoding from a projection of the input -------------------------------------------------------
    def input_projection(self) -> Tensor:
        """[g, d_in, d_sae]: the one product every encoder takes of a raw input, input scale included.

        encode(x) == encode_projected(x @ input_projection()) up to float rounding. A caller that holds x
        only as z @ M (a head's output, z @ W_O) multiplies M into this once, then maps each z straight
        to latent space without forming x (discovery.codes: 15x fewer multiply-adds per head on gpt2).
        """
        return self.W_enc * self.input_scale[:, None, None]

    def encode_projected(self, xw: Tensor) -> Tensor:
        """Latents [g, b, d_sae] from xw = x @ input_projection() [g, b, d_sae] (x raw, not normalised)."""
        return self.activate(xw + self._encoder_bias()[:, None, :])

    def activate(self, pre: Tensor) -> Tensor:
        """Latents from pre-activations (inference path)."""
        raise NotImplementedError

    def _encode_n(self, x_n: Tensor) -> Tensor:
        return self.activate(self.pre_acts(x_n))

    def _decode_n(self, f: Tensor) -> Tensor:
        return torch.baddbmm(self.b_dec[:, None, :], f, self.W_dec)

    def _normalise(self, x: Tensor) -> Tensor:
        return x * self.input_scale[:, None, None]

    # ---- closed-form backward, shared by the architectures that have one ----------------------------
    def _closed_form_residual(self, x_n: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂ − x in a buffer reused every step [g, b, d_in], mse [g]); x̂ itself is never formed."""
        diff = self._workspace("diff", x_n)
        torch.baddbmm(x_n, f, self.W_dec, beta=-1.0, out=diff).add_(self.b_dec[:, None, :])
        return diff, torch.linalg.vector_norm(diff, dim=-1).square_().mean(-1)

    def _closed_form_linear_grads(self, x_n: Tensor, f: Tensor, diff: Tensor, grad_pre: Tensor,
                                  extra_w_dec: Tensor | None = None) -> None:
        """Add the gradients of W_enc, b_enc, W_dec, b_dec to .grad, given ∂loss/∂pre and x̂ − x.

        With R = 2(x̂ − x)/b (never formed: 2/b rides on the products) and δ = Σ_b ∂/∂pre:
            ∂/∂W_dec = fᵀR (+ extra_w_dec)    ∂/∂b_dec = Σ_b R    ∂/∂b_enc = δ    ∂/∂W_enc = xᵀ ∂/∂pre
        and, when b_dec is applied to the input (pre = x W_enc + b_enc − b_dec W_enc), ∂/∂W_enc −= b_dec ⊗ δ,
        ∂/∂b_dec −= W_enc δ.
        """
        two_b = 2.0 / x_n.shape[1]
        delta = grad_pre.sum(1)  # [g, d_sae]
        grad_w_dec = torch.bmm(f.transpose(1, 2), diff).mul_(two_b)
        if extra_w_dec is not None:
            grad_w_dec.add_(extra_w_dec)
        grad_b_dec = diff.sum(1).mul_(two_b)
        if self.cfg.apply_b_dec_to_input:
            grad_w_enc = torch.baddbmm(self.b_dec[:, :, None] * delta[:, None, :], x_n.transpose(1, 2),
                                       grad_pre, alpha=1.0, beta=-1.0)
            grad_b_dec.sub_(torch.bmm(self.W_enc, delta[:, :, None])[..., 0])
        else:
            grad_w_enc = torch.bmm(x_n.transpose(1, 2), grad_pre)
        add_grad(self.W_enc, grad_w_enc)
        add_grad(self.W_dec, grad_w_dec)
        add_grad(self.b_enc, delta)
        add_grad(self.b_dec, grad_b_dec)

    def _lazy_recon(self, diff: Tensor, x_n: Tensor) -> Callable[[], Tensor]:
        """x̂ (normalised) from the step's residual buffer, computed only if read, before the next step."""
        step = self._next_step()

        def recon() -> Tensor:
            self._check_step(step)  # diff is overwritten by the next step
            return diff + x_n

        return recon

    def _workspace(self, name: str, like: Tensor) -> Tensor:
        """A scratch tensor shaped like `like`, kept between calls: a fresh [g, b, d_in] tensor every
        training step is page-faulted afresh (glibc returns large freed blocks to the OS), which costs
        as much as a pass over it."""
        buffers = self.__dict__.setdefault("_workspaces", {})
        buf = buffers.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = buffers[name] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf

    def _next_step(self) -> int:
        """Count closed-form steps, so that a lazy output of one can tell it has been overwritten."""
        self.__dict__["_closed_form_steps"] = self.__dict__.get("_closed_form_steps", 0) + 1
        return int(self.__dict__["_closed_form_steps"])

    def _check_step(self, step: int) -> None:
        if self.__dict__.get("_closed_form_steps") != step:
            raise RuntimeError("SAEOutput.recon of forward_backward must be read before the next "
                               "forward_backward call (its buffer is reused)")

    def _normalised_input(self, x: Tensor) -> Tensor:
        """x * input_scale, reused while the same, unmodified x and scale come back: full-batch training
        passes one tensor every step, and rescaling it each time is a pass over [groups, batch, d_in]."""
        if (x.requires_grad and torch.is_grad_enabled()) or torch.is_inference_mode_enabled():
            return self._normalise(x)  # a graph through x, or a tensor autograd may not reuse later
        key = (x._version, self.input_scale._version, self.input_scale.data_ptr())
        cached = self.__dict__.get("_x_n_cache")
        if cached is not None and cached[0] is x and cached[1] == key:
            return cached[2]
        x_n = self._normalise(x)
        self.__dict__["_x_n_cache"] = (x, key, x_n)  # holds x, so its storage cannot be reused meanwhile
        return x_n

    def encode(self, x: Tensor) -> Tensor:
        """x: [groups, batch, d_in] (or [batch, d_in]) -> latents [groups, batch, d_sae]."""
        x, squeeze = self._as_3d(x)
        f = self._encode_n(self._normalise(x.to(self.W_enc.dtype)))
        return f.squeeze(0) if squeeze else f

    def decode(self, f: Tensor) -> Tensor:
        """latents [groups, batch, d_sae] (or [batch, d_sae]) -> reconstruction [groups, batch, d_in]."""
        squeeze = f.dim() == 2
        if squeeze:
            f = f.unsqueeze(0)
        out = self._decode_n(f) / self.input_scale[:, None, None]
        return out.squeeze(0) if squeeze else out

    def forward(
        self, x: Tensor, *, sparsity_scale: float = 1.0, dead_mask: Tensor | None = None
    ) -> SAEOutput:
        """Reconstruction, latents and per-group loss terms.

        sparsity_scale multiplies the sparsity coefficient (the trainer's warm-up); dead_mask
        [groups, d_sae] bool marks latents the trainer considers dead (used by AuxK).
        """
        return self._in_input_space(x, self._forward_n, sparsity_scale, dead_mask)

    def _forward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def forward_backward(
        self, x: Tensor, *, sparsity_scale: float = 1.0, dead_mask: Tensor | None = None
    ) -> SAEOutput:
        """`forward` followed by `loss.backward()`: the same output (detached), gradients added to .grad.

        The trainer's step (one process). Architectures whose gradients are closed-form override
        `_forward_backward_n` to skip autograd; the result equals the autograd one up to float rounding
        (tests/test_sae_speed.py). Under DDP the trainer uses `forward` + backward instead (its gradient
        hooks live in autograd).
        """
        return self._in_input_space(x, self._forward_backward_n, sparsity_scale, dead_mask)

    def _in_input_space(self, x: Tensor, step: Callable[[Tensor, float, Tensor | None],
                                                       tuple[Tensor, Tensor | Callable[[], Tensor],
                                                             dict[str, Tensor]]],
                        sparsity_scale: float, dead_mask: Tensor | None) -> SAEOutput:
        """Normalise x, run `step` in normalised space, return the reconstruction in x's scale (and
        shape: a 2-D x gives 2-D recon and latents)."""
        x, squeeze = self._as_3d(x)
        x_n = self._normalised_input(x.to(self.W_enc.dtype))
        f, recon_n, losses = step(x_n, sparsity_scale, dead_mask)
        scale = self.input_scale[:, None, None].clone()  # a lazy recon must not see later changes

        def recon() -> Tensor:
            out = (recon_n() if callable(recon_n) else recon_n) / scale
            return out.squeeze(0) if squeeze else out

        latents = f.squeeze(0) if squeeze else f
        return SAEOutput(recon=recon if callable(recon_n) else recon(), latents=latents, losses=losses)

    def _forward_backward_n(
        self, x_n: Tensor, sparsity_scale: float, dead_mask: Tensor | None
    ) -> tuple[Tensor, Tensor | Callable[[], Tensor], dict[str, Tensor]]:
        """Autograd reference: (latents, reconstruction, losses), all detached, after backward. A closed
        form may return the reconstruction as a function (computed only if read)."""
        with torch.enable_grad():
            f, recon_n, losses = self._forward_n(x_n, sparsity_scale, dead_mask)
            losses["loss"].sum().backward()
        return f.detach(), recon_n.detach(), {k: v.detach() for k, v in losses.items()}

    # ---- helpers shared by the architectures ------------------------------------------------------
    @staticmethod
    def mse(x_n: Tensor, recon_n: Tensor) -> Tensor:
        """Squared error summed over d_in, mean over batch: [groups]."""
        return (recon_n - x_n).pow(2).sum(-1).mean(-1)

    def decoder_norms(self) -> Tensor:
        """[groups, d_sae]: norm of each latent's decoder row."""
        return self.W_dec.norm(dim=-1)

    @torch.no_grad()
    def set_decoder_unit_norm(self) -> None:
        """Rescale decoder rows to unit norm (the constraint, applied after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the gradient component along each (unit) decoder row, so Adam's step moves
        the row tangentially to the unit sphere (Bricken et al. 2023; Gao et al. 2024)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.W_dec.grad.sub_((self.W_dec.grad * w).sum(-1, keepdim=True) * w)

    @torch.no_grad()
    def fold_input_scale(self) -> None:
        """Fold `input_scale` into the weights so that the SAE works on raw inputs with scale 1.

        encode(x) = act((s x - b_dec) W_enc + b_enc) = act((x - b_dec/s)(s W_enc) + b_enc) and
        decode(f) = (f W_dec + b_dec)/s: so W_enc *= s, W_dec /= s, b_dec /= s (thresholds, which
        live in latent space, are unchanged).
        """
        s = self.input_scale
        self._fold_encoder_scale(s)
        self.W_dec.div_(s[:, None, None])
        self.b_dec.div_(s[:, None])
        self.input_scale.fill_(1.0)

    def _fold_encoder_scale(self, s: Tensor) -> None:
        self.W_enc.mul_(s[:, None, None])

    def select_groups(self, start: int, stop: int) -> SAE:
        """The SAEs of groups [start, stop) as one batched SAE (a copy; groups never interact, so its
        outputs equal the corresponding slice of this SAE's). Every parameter and buffer leads with groups."""
        cfg = SAEConfig.from_dict({**self.cfg.to_dict(), "groups": stop - start})
        part = type(self)(cfg)
        part.load_state_dict({k: v[start:stop].clone() for k, v in self.state_dict().items()})
        part.train(self.training)
        return part.to(self.W_enc.device)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"arch={c.arch}, groups={c.groups}, d_in={c.d_in}, d_sae={c.d_sae}"

    @property
    def uses_dead_mask(self) -> bool:
        """Whether `forward` reads dead_mask (AuxK), so the trainer must track dead latents for it."""
        return False


def add_grad(param: Tensor, grad: Tensor) -> None:
    """Accumulate a hand-computed gradient into param.grad, as backward() would."""
    if param.grad is None:
        param.grad = grad
    else:
        param.grad.add_(grad)


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel K(u) = 1[|u| < 1/2] used by the JumpReLU straight-through estimators."""
    return (u.abs() < 0.5).to(u.dtype)
