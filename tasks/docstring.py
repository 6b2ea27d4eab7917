"""Docstring (Heimersheim & Janiak 2023) on the recipe of REFERENCE.md §3.

    def load(self, port, size, files, items, mode, depth):
        \"\"\"main new whole

        :param files: first entry
        :param items: raw record
        :param

-> " mode". The def has 2 prefix, 3 matching and 1 suffix argument after `self`; the docstring
documents the first two matching ones, so the answer is the third matching argument. Wrong
answers are the other five argument names; the metric is logit(answer) - max logit(wrong). The
corruption ("random_random") puts fresh argument names in both the def and the docstring, so the
answer no longer appears and nothing says which name comes next.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

import torch

from circuits.tokenizer import Tokenizer, WordTokenizer
from tasks._common import Row, build_prompt_set, require_pool, single_token_words, word_vocabulary
from tasks._vocab import ARG_NAMES, DESC_WORDS, FILLER_WORDS, FUNC_NAMES, unique
from tasks.base import GroundTruth, PromptSet

TEMPLATE = ('def {fn}(self, {a1}, {a2}, {a3}, {a4}, {a5}, {a6}):\n'
            '    """{d1} {d2} {d3}\n'
            '\n'
            '    :param {p1}: {e1} {e2}\n'
            '    :param {p2}: {f1} {f2}\n'
            '    :param')
N_ARGS = 6  # 2 prefix + 3 matching + 1 suffix
N_FRESH = N_ARGS + 2  # the corruption's def names and docstring names, all new

# Ground truth for attn-only-4l (ACDC get_docstring_subgraph_true_edges; REFERENCE.md §2):
# the 37 edges restricted to head -> head (receiver input in the comment).
DOCSTRING_HEADS: tuple[tuple[int, int], ...] = ((0, 5), (1, 2), (1, 4), (2, 0), (3, 0), (3, 6))
DOCSTRING_EDGES: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((0, 5), (1, 4)),  # 1.4.v <- 0.5
    ((0, 5), (2, 0)),  # 2.0.q, 2.0.k <- 0.5
    ((1, 4), (2, 0)),  # 2.0.v <- 1.4
    ((0, 5), (1, 2)),  # 1.2.q, 1.2.k <- 0.5
    *(((sender, (3, h))) for h in (0, 6) for sender in (
        (1, 4),  # L3.q <- 1.4
        (0, 5),  # L3.v <- 0.5
        (2, 0),  # L3.k <- 2.0
        (1, 2),  # L3.k <- 1.2
    )),
)


class DocstringTask:
    """Docstring: answer = third matching argument, metric = logit(answer) - max logit(wrong)."""

    name = "docstring"
    published_model = "attn-only-4l"
    templates: tuple[str, ...] = (TEMPLATE,)
    arg_names: tuple[str, ...] = tuple(unique(ARG_NAMES))
    desc_words: tuple[str, ...] = tuple(unique(DESC_WORDS))
    func_names: tuple[str, ...] = tuple(unique(FUNC_NAMES))
    extra_words: list[str] = unique(FILLER_WORDS)

    def word_tokenizer(self) -> WordTokenizer:
        return _doc_word_tokenizer()

    def prompts(self, tokenizer: Tokenizer, n: int, seed: int) -> PromptSet:
        args = single_token_words(tokenizer, self.arg_names)
        descs = single_token_words(tokenizer, self.desc_words)
        fns = single_token_words(tokenizer, self.func_names)
        require_pool(self.name, "argument names", args, N_ARGS + N_FRESH)
        require_pool(self.name, "description words", descs, 1)
        require_pool(self.name, "function names", fns, 1)

        def sample(rng: random.Random) -> Row:
            names = rng.sample(args, N_ARGS + N_FRESH)
            clean, fresh = names[:N_ARGS], names[N_ARGS:]
            fn = rng.choice(fns)
            words = [rng.choice(descs) for _ in range(7)]
            pos = _render(fn, clean, clean[2:4], words)
            # random_random: fresh names in the def and different fresh names in the docstring.
            neg = _render(fn, fresh[:N_ARGS], fresh[N_ARGS:], words)
            answer = clean[4]
            wrong = [a for a in clean if a != answer]
            return Row(positive=pos, negative=neg, answer=" " + answer, wrong=[" " + w for w in wrong])

        capacity = math.perm(len(args), N_ARGS) * len(fns) * len(descs) ** 7
        return build_prompt_set(self.name, tokenizer, n, seed, sample, capacity)

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        """logits: [n, vocab] -> [n] logit(answer) - max over wrong of logit(wrong)."""
        correct = logits.gather(1, prompts.answer.to(logits.device)[:, None])[:, 0]
        wrong = logits.gather(1, prompts.wrong.to(logits.device)).max(1).values  # [n]
        return correct - wrong

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        return DOCSTRING_TRUTH if model_name == self.published_model else None

    def positions(self, prompts: PromptSet) -> dict[str, torch.Tensor]:
        """The argument names (tasks.base.named_positions): the answer in the def, and the two documented
        names in the docstring (their last occurrence). `wrong` is the def's names without the answer, so
        wrong[:, 2] and wrong[:, 3] are the documented ones."""
        return {"answer (def)": _last(prompts.positive, prompts.answer),
                "param 1 (doc)": _last(prompts.positive, prompts.wrong[:, 2]),
                "param 2 (doc)": _last(prompts.positive, prompts.wrong[:, 3])}


def _last(tokens: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """tokens: [n, seq], token: [n] -> [n] the last position holding `token` (0 when absent)."""
    hits = tokens == token[:, None]  # [n, seq]
    positions = torch.arange(tokens.shape[1])
    return torch.where(hits, positions, 0).max(1).values


def _render(fn: str, def_args: list[str], doc_args: list[str], words: list[str]) -> str:
    a = dict(zip(("a1", "a2", "a3", "a4", "a5", "a6"), def_args, strict=True))
    d = dict(zip(("d1", "d2", "d3", "e1", "e2", "f1", "f2"), words, strict=True))
    return TEMPLATE.format(fn=fn, p1=doc_args[0], p2=doc_args[1], **a, **d)


@lru_cache(maxsize=1)
def _doc_word_tokenizer() -> WordTokenizer:
    filled = _render(FUNC_NAMES[0], list(ARG_NAMES[:6]), list(ARG_NAMES[2:4]), list(DESC_WORDS[:7]))
    return word_vocabulary([filled], [*ARG_NAMES, *DESC_WORDS, *FUNC_NAMES], filler=FILLER_WORDS)


DOCSTRING_TRUTH = GroundTruth(
    heads=DOCSTRING_HEADS,
    edges=tuple(sorted(set(DOCSTRING_EDGES))),
    classes={},
    source="ArthurConmy/Automatic-Circuit-Discovery acdc/docstring/utils.py "
           "(get_docstring_subgraph_true_edges; Heimersheim & Janiak 2023)",
    method={"edges": "the 37 ground-truth edges restricted to head->head (several q/k/v inputs of one "
                     "receiver collapse into one edge); embedding and output edges omitted"},
)
