"""Tiny random models of Gemma 3's architecture, built offline in milliseconds, for tests that must not need
the 270M weights package: the same block (q/k RMSNorm, RMSNorm before and after attention and MLP, one
key/value head shared by every query head, gated gelu-tanh MLP, rotary with a local base on sliding-window
layers and a global base on full layers, embeddings scaled by sqrt(d_model)), with small dimensions.

- `tiny_gemma_tl`: a HookedTransformer from a HookedTransformerConfig written out by hand (independent of
  `circuits.models.gemma.gemma3_config`, so it checks that mapping rather than repeating it);
- `tiny_gemma_hf` + `tiny_gemma_tokenizer`: a transformers Gemma3ForCausalLM and a word-level tokenizer,
  for the conversion path.
"""

from __future__ import annotations

from typing import Any

import torch

from circuits._compat import HookedTransformer, HookedTransformerConfig

N_LAYERS, N_HEADS, D_MODEL, D_HEAD, D_MLP, WINDOW = 3, 4, 32, 16, 64, 4
LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"]  # Gemma 3's 5:1, shortened
ROPE_LOCAL, ROPE_GLOBAL = 10_000.0, 1_000_000.0
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids 0..3


def tiny_gemma_tl(vocab: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """3 layers (local, local, global; window 4) x 4 query heads over 1 key/value head, d_model 32, random
    weights, norm scales included (so no norm is accidentally the identity)."""
    cfg = HookedTransformerConfig(
        n_layers=N_LAYERS, n_heads=N_HEADS, n_key_value_heads=1, d_model=D_MODEL, d_head=D_HEAD, d_mlp=D_MLP,
        n_ctx=64, d_vocab=vocab, act_fn="gelu_pytorch_tanh", gated_mlp=True, normalization_type="RMS",
        final_rms=True, eps=1e-6, use_normalization_before_and_after=True, use_qk_norm=True,
        positional_embedding_type="rotary", rotary_base=ROPE_GLOBAL, rotary_base_local=ROPE_LOCAL,
        use_local_attn=True, window_size=WINDOW, attn_types=["local", "local", "global"],
        original_architecture="Gemma3ForCausalLM", seed=seed, device="cpu", default_prepend_bos=False,
        dtype=dtype)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w"):  # every RMSNorm scale, q/k norms included
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    model.eval()
    return model


def tiny_gemma_tokenizer(words: list[str]) -> Any:
    """A word-level fast tokenizer with Gemma's special tokens (<bos> = 2, <eos> = 1); words keep their
    leading space as "▁" pieces, as Gemma's SentencePiece vocabulary does."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = sorted({w.strip() for w in words} | {"▁" + w.strip() for w in words})
    vocab = {tok: i for i, tok in enumerate([*SPECIAL, *pieces])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    backend.decoder = decoders.Replace("▁", " ")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def tiny_gemma_hf(vocab: int, seed: int = 0) -> Any:
    """transformers Gemma3ForCausalLM with the tiny shape and random weights (norm scales included)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=D_MODEL, intermediate_size=D_MLP, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=1, head_dim=D_HEAD, query_pre_attn_scalar=D_HEAD,
        sliding_window=WINDOW, layer_types=LAYER_TYPES, max_position_embeddings=64, rms_norm_eps=1e-6,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": ROPE_LOCAL},
                         "full_attention": {"rope_type": "default", "rope_theta": ROPE_GLOBAL}},
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # Gemma norms scale by (1 + w); w starts at 0
                p.copy_(0.3 * torch.randn_like(p))
    model.eval()
    return model
