"""Codes encoded inside the forward hook equal the codes of the held-activations path (the old find)."""

from __future__ import annotations

import pytest
import torch

from circuits.discovery.activations import head_activations
from circuits.discovery.codes import encode_codes, fit_code_sae, streamed_codes
from circuits.discovery.config import FindConfig
from circuits.discovery.pipeline import split_prompts


def _held_codes(model, prompts, config: FindConfig) -> torch.Tensor:
    """The previous pipeline: one pass over train + scoring prompts holding every activation."""
    train_tokens, score_set = split_prompts(prompts, config.n_train)
    tokens = torch.cat([train_tokens, score_set.positive, score_set.negative])
    acts = head_activations(model, tokens, config.hook, config.position, config.batch_size)
    split = train_tokens.shape[0] * (tokens.shape[1] if config.position == "each" else 1)
    return encode_codes(acts[:split], acts[split:], config)


@pytest.mark.parametrize("overrides", [
    {},
    {"sae": "per-head", "hook": "z"},
    {"position": "each", "hook": "z"},
    {"arch": "batchtopk", "batch_size": 7},
    {"sae": "per-head", "arch": "topk", "position": "last"},
])
def test_streamed_codes_equal_held_codes(planted, overrides) -> None:
    task, loaded, _ = planted
    config = FindConfig(**{"n_train": 10, "n_score": 30, "steps": 30, **overrides})
    prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
    held = _held_codes(loaded.model, prompts, config)
    train_tokens, score_set = split_prompts(prompts, config.n_train)
    acts_train = head_activations(loaded.model, train_tokens, config.hook, config.position, config.batch_size)
    sae = fit_code_sae(acts_train, config)
    tokens = torch.cat([score_set.positive, score_set.negative])
    streamed = streamed_codes(loaded.model, tokens, sae, config)
    assert streamed.shape == held.shape
    if config.hook == "z":  # the same products in the same order: bit-equal
        assert torch.equal(streamed, held)
    else:  # "result" folds W_O into the encoder: equal up to float rounding, i.e. bar near-ties
        assert (streamed != held).float().mean() <= 1e-3
    assert len(held.unique()) > 1  # the codes carry information, so equality means something
    assert not any(hp.fwd_hooks for hp in loaded.model.hook_dict.values())  # the early stop left no hook


def test_batches_fill_only_their_rows(planted) -> None:
    task, loaded, _ = planted
    config = FindConfig(n_train=10, n_score=30, steps=10, batch_size=8)
    prompts = task.prompts(loaded.tokenizer, 40, 0)
    train_tokens, score_set = split_prompts(prompts, 10)
    sae = fit_code_sae(head_activations(loaded.model, train_tokens, config.hook), config)
    tokens = torch.cat([score_set.positive, score_set.negative])  # 60 prompts: 8 batches
    whole = streamed_codes(loaded.model, tokens, sae, config)
    even = streamed_codes(loaded.model, tokens, sae, config, range(0, 8, 2))
    odd = streamed_codes(loaded.model, tokens, sae, config, range(1, 8, 2))
    assert torch.equal(even + odd, whole)
    assert not even[8:16].any() and not odd[:8].any()
