"""What each graph node writes to and reads from the residual stream: one definition for patching and
attribution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from circuits.errors import CircuitsError

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer


def head_writes(model: HookedTransformer, layer: int, z: torch.Tensor) -> torch.Tensor:
    """z [..., p, H, d_head] -> each head's write to the residual stream [..., p, H, d_model]: z @ W_O (no
    b_O, which no head owns). With a norm after attention (Gemma), every head's write is scaled by that norm's
    factor in the same run, so the writes sum to the attention output exactly when b_O is zero."""
    block = model.blocks[layer]
    writes = torch.einsum("...phd,hdm->...phm", z, block.attn.W_O)
    if model.cfg.use_normalization_before_and_after:
        ln = block.ln1_post
        if type(ln).__name__ not in ("RMSNorm", "RMSNormPre"):
            raise CircuitsError("edge-level methods support an RMS norm after attention, not "
                                f"{type(ln).__name__}")
        total = writes.sum(-2) + block.attn.b_O  # [..., p, d_model]
        scale = (total.pow(2).mean(-1, keepdim=True) + ln.eps).rsqrt()  # [..., p, 1]
        weight = getattr(ln, "w", None)
        writes = writes * scale[..., None, :] * (1.0 if weight is None else weight)
    return writes


@contextmanager
def mlp_inputs(model: HookedTransformer) -> Iterator[None]:
    """Turn on TransformerLens's hook_mlp_in (each MLP's own input) for the duration; no-op without MLPs."""
    if model.cfg.attn_only:
        yield
        return
    before = bool(model.cfg.use_hook_mlp_in)
    model.set_use_hook_mlp_in(True)
    try:
        yield
    finally:
        model.set_use_hook_mlp_in(before)
