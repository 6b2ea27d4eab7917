"""The shipped default (`FindConfig()`: one shared SAE on hook_result, mean over positions, count score,
Otsu selection) recovers a planted circuit that only its heads can see.

Positives and negatives use one vocabulary and, prompt by prompt, the same tokens: a negative is its
positive with two words swapped. Every head reads tokens, but the attention of each head is fixed by
hand to one position: the planted heads look at the swapped positions, every other head at a filler
position whose token is drawn the same way in both sets. So only the planted heads' outputs differ
between the sets; the controls below remove that difference and the recovery assertion must fail.
"""

from __future__ import annotations

import pytest
import torch

from circuits._compat import HookedTransformer, HookedTransformerConfig
from circuits.discovery.config import FindConfig
from circuits.discovery.pipeline import find_circuit
from circuits.models import LoadedModel
from circuits.tokenizer import WordTokenizer
from tasks.base import GroundTruth, PromptSet

A_WORDS = [" apple", " arch", " axe", " aunt"]
B_WORDS = [" bear", " bell", " bird", " boat"]
WORDS = A_WORDS + B_WORDS
PLANTED = {(0, 1): 2, (1, 3): 3}  # planted head -> the (swapped) position it attends to
FILLER = 1  # position every other head attends to: [bos, filler, x, y, end]
TRUTH = GroundTruth(heads=tuple(sorted(PLANTED)), edges=(((0, 1), (1, 3)),), source="planted")


class SwapTask:
    """`f a b end` (positive) against `f b a end` (negative): a from A_WORDS, b from B_WORDS, f from both.

    With `swap=False` the negatives are drawn exactly like the positives (no signal anywhere).
    """

    name = "swap"
    published_model = "none"

    def __init__(self, swap: bool = True):
        self.swap = swap
        self._tok = WordTokenizer.from_texts(WORDS + [" end"])

    def word_tokenizer(self) -> WordTokenizer:
        return self._tok

    def prompts(self, tokenizer, n: int, seed: int) -> PromptSet:
        gen = torch.Generator().manual_seed(seed)

        def draw() -> list[str]:
            f = torch.randint(0, len(WORDS), (n,), generator=gen).tolist()
            a = torch.randint(0, len(A_WORDS), (n,), generator=gen).tolist()
            b = torch.randint(0, len(B_WORDS), (n,), generator=gen).tolist()
            return [WORDS[i] + A_WORDS[j] + B_WORDS[k] + " end" for i, j, k in zip(f, a, b, strict=True)]

        pos_text = draw()
        if self.swap:
            neg_text = [" ".join(_swap(t.split(" "))) for t in pos_text]
        else:
            neg_text = draw()
        positive = torch.tensor([tokenizer.encode(t) for t in pos_text])
        negative = torch.tensor([tokenizer.encode(t) for t in neg_text])
        return PromptSet(positive, negative, positive[:, 2], negative[:, 2:3], pos_text, neg_text)

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        rows = torch.arange(logits.shape[0])
        return logits[rows, -1, prompts.answer] - logits[rows, -1, prompts.wrong[:, 0]]

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        return TRUTH


def _swap(parts: list[str]) -> list[str]:
    """['', f, a, b, end] -> ['', f, b, a, end]"""
    return [parts[0], parts[1], parts[3], parts[2], *parts[4:]]


def positional_model(vocab: int, targets: dict[tuple[int, int], int], seed: int = 0) -> HookedTransformer:
    """A 2-layer x 4-head attention-only model without LayerNorm; head (l, h) attends (almost) only to
    position targets[(l, h)] (queries before it see their own prefix), values read the token only.

    Residual: dims [0, 16) one-hot token, [16, 24) one-hot position, [24, 32) written by the heads, so
    keys read positions exactly in both layers and every head's value is a random function of the
    attended token alone.
    """
    assert vocab <= 16
    cfg = HookedTransformerConfig(n_layers=2, n_heads=4, d_model=32, d_head=8, n_ctx=8, d_vocab=vocab,
                                  attn_only=True, normalization_type=None, seed=seed, device="cpu",
                                  default_prepend_bos=False)
    model = HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    sharp = 30.0 * cfg.d_head ** 0.5  # score 30 on the target key after the 1/sqrt(d_head) scale
    with torch.no_grad():
        model.embed.W_E.zero_()
        model.embed.W_E[:, :vocab] = torch.eye(vocab)
        model.pos_embed.W_pos.zero_()
        model.pos_embed.W_pos[:, 16:24] = torch.eye(8)
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            for p in (attn.W_Q, attn.b_Q, attn.W_K, attn.b_K, attn.W_V, attn.b_V, attn.W_O, attn.b_O):
                p.zero_()
            for h in range(cfg.n_heads):
                attn.b_Q[h, 0] = sharp
                attn.W_K[h, 16 + targets.get((layer, h), FILLER), 0] = 1.0
                attn.W_V[h, :16] = torch.randn(16, 8, generator=gen)
                attn.W_O[h, :, 24:] = torch.randn(8, 8, generator=gen)
    model.eval()
    return model


def planted_setup(signal: str) -> tuple[SwapTask, LoadedModel]:
    task = SwapTask(swap=signal != "no-swap")
    tok = task.word_tokenizer()
    targets = PLANTED if signal != "heads-look-away" else {}
    loaded = LoadedModel(model=positional_model(tok.vocab_size, targets), tokenizer=tok, name="planted-swap",
                         ground_truth={task.name: TRUTH})
    return task, loaded


def test_positives_and_negatives_are_permutations_of_the_same_tokens():
    task, _ = planted_setup("planted")
    prompts = task.prompts(task.word_tokenizer(), 50, seed=0)
    assert torch.equal(prompts.positive.sort(1).values, prompts.negative.sort(1).values)
    assert torch.equal(prompts.positive[:, :2], prompts.negative[:, :2])  # bos and filler unchanged
    assert not torch.equal(prompts.positive, prompts.negative)


def test_only_the_planted_heads_outputs_differ():
    """The construction itself: other heads' pooled outputs are a function of the filler token only."""
    from circuits.discovery.activations import head_activations

    task, loaded = planted_setup("planted")
    prompts = task.prompts(loaded.tokenizer, 40, seed=0)
    pos = head_activations(loaded.model, prompts.positive, hook="result", position="mean")  # [n, head, d]
    neg = head_activations(loaded.model, prompts.negative, hook="result", position="mean")
    same = (pos - neg).abs().amax(dim=(0, 2)).reshape(2, 4) < 1e-5
    for layer in range(2):
        for h in range(4):
            assert bool(same[layer, h]) == ((layer, h) not in PLANTED), (layer, h)


@pytest.mark.parametrize("signal", ["planted", "heads-look-away", "no-swap"])
def test_default_config_recovers_planted_heads_and_nothing_without_the_signal(signal):
    task, loaded = planted_setup(signal)
    config = FindConfig()
    assert (config.sae, config.hook, config.position, config.score, config.selection) == (
        "shared", "result", "mean", "count", "otsu")  # the shipped default is what this test covers
    result = find_circuit(task, loaded, config)
    auc = result.evaluation["roc_auc"]
    recovered = auc == 1.0 and result.circuit == frozenset(PLANTED)
    if signal == "planted":
        assert recovered, (auc, result.node_scores)
        assert all(result.node_scores[l, h] >= 3 for l, h in PLANTED)
        assert all(result.node_scores[l, h] == 0 for l in range(2) for h in range(4) if (l, h) not in PLANTED)
    elif signal == "heads-look-away":  # the prompts still differ, but no head reads where they differ
        assert not recovered
        assert auc == 0.5 and not result.circuit and float(result.node_scores.abs().max()) == 0.0
    else:  # no-swap: negatives drawn like positives; any positive-only code is sampling chance
        assert not recovered
        assert auc <= 0.75 and float(result.node_scores.max()) <= 1.0, result.node_scores
