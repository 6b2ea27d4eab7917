"""Shared fixtures: offline mode, a toy task and tiny models that run in milliseconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread for the whole session (every test directory): the tests are made of tiny ops, and on a busy
# 2-core machine a second intra-op thread makes each small matmul wait for a descheduled partner.
torch.set_num_threads(1)

from circuits._compat import HookedTransformer, HookedTransformerConfig  # noqa: E402
from circuits.models import LoadedModel  # noqa: E402
from circuits.tokenizer import WordTokenizer  # noqa: E402
from tasks.base import GroundTruth, PromptSet  # noqa: E402

POS_WORDS = [f" p{i}" for i in range(8)]
NEG_WORDS = [f" n{i}" for i in range(8)]


class ToyTask:
    """Positives use one set of words, negatives another: heads that read tokens tell them apart."""

    name = "toy"
    published_model = "none"

    def __init__(self, truth: GroundTruth | None = None):
        self.truth = truth
        self._tok = WordTokenizer.from_texts(POS_WORDS + NEG_WORDS + [" end"])

    def word_tokenizer(self) -> WordTokenizer:
        return self._tok

    def prompts(self, tokenizer, n: int, seed: int) -> PromptSet:
        if n <= 0:
            raise ValueError("n must be positive")
        gen = torch.Generator().manual_seed(seed)
        pos_idx = torch.randint(0, len(POS_WORDS), (n, 4), generator=gen)
        neg_idx = torch.randint(0, len(NEG_WORDS), (n, 4), generator=gen)
        pos_text = ["".join(POS_WORDS[i] for i in row) + " end" for row in pos_idx.tolist()]
        neg_text = ["".join(NEG_WORDS[i] for i in row) + " end" for row in neg_idx.tolist()]
        positive = torch.tensor([tokenizer.encode(t) for t in pos_text])
        negative = torch.tensor([tokenizer.encode(t) for t in neg_text])
        answer = positive[:, 1]
        wrong = negative[:, 1:2]
        return PromptSet(positive, negative, answer, wrong, pos_text, neg_text)

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        rows = torch.arange(logits.shape[0])
        return logits[rows, prompts.answer] - logits[rows, prompts.wrong[:, 0]]

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        return self.truth


def tiny_model(vocab: int, n_layers: int = 2, n_heads: int = 4, seed: int = 0,
               attn_only: bool = True) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=n_layers, n_heads=n_heads, d_model=32, d_head=8, n_ctx=16,
                                  d_vocab=vocab, attn_only=attn_only, d_mlp=None if attn_only else 64,
                                  act_fn="relu", normalization_type="LN", seed=seed, device="cpu",
                                  default_prepend_bos=False)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    model.eval()
    return model


def plant_heads(model: HookedTransformer, keep: set[tuple[int, int]]) -> None:
    """Silence every head outside `keep`: zero W_V and b_V make its z constant (zero)."""
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            for h in range(model.cfg.n_heads):
                if (layer, h) not in keep:
                    model.blocks[layer].attn.W_V[h] = 0
                    model.blocks[layer].attn.b_V[h] = 0


@pytest.fixture
def toy_task() -> ToyTask:
    return ToyTask()


@pytest.fixture
def planted() -> tuple[ToyTask, LoadedModel, set[tuple[int, int]]]:
    heads = {(0, 1), (1, 3)}
    task = ToyTask(GroundTruth(heads=tuple(sorted(heads)), edges=(((0, 1), (1, 3)),), source="planted"))
    tok = task.word_tokenizer()
    model = tiny_model(tok.vocab_size)
    plant_heads(model, heads)
    return task, LoadedModel(model=model, tokenizer=tok, name="planted-toy"), heads
