"""`random:<arch>`: a published architecture with random weights, sized to the task's word tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from circuits.errors import ModelLoadError, did_you_mean
from circuits.tokenizer import Tokenizer

if TYPE_CHECKING:  # TransformerLens is imported only when a model is built or loaded (it takes seconds)
    from circuits._compat import HookedTransformer

# Shapes of the published models (REFERENCE.md §4); vocabulary comes from the tokenizer.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, n_ctx=1024,
                       act_fn="gelu_new", normalization_type="LN"),
    "attn-only-4l": dict(n_layers=4, n_heads=8, d_model=512, d_head=64, d_mlp=None, attn_only=True,
                         n_ctx=2048, normalization_type="LN", positional_embedding_type="shortformer"),
}


def random_model(arch: str, tokenizer: Tokenizer, seed: int = 0) -> HookedTransformer:
    """The named architecture with random weights, sized to the tokenizer's vocabulary."""
    from circuits._compat import HookedTransformer, HookedTransformerConfig

    if arch not in ARCHITECTURES:
        raise ModelLoadError(f"unknown architecture '{arch}'{did_you_mean(arch, ARCHITECTURES)} "
                             f"(known: {', '.join(ARCHITECTURES)})")
    cfg = HookedTransformerConfig(**ARCHITECTURES[arch], d_vocab=tokenizer.vocab_size, seed=seed,
                                  device="cpu", default_prepend_bos=False)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    model.eval()
    return model
