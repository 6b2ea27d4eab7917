"""Greater-than (Hanna et al. 2023) on the recipe of REFERENCE.md §3, in two forms picked from the tokenizer.

"The war lasted from the year 1705 to the year 17" -> an end year above the start year.
We keep Hanna et al.'s full template, with the second "the year" (ACDC's variant drops it).
The corruption starts the span at XX01, where no continuation is meaningfully smaller, so the cue is
gone; negatives are scored with their positive's YY.

**Two-digit form** (GPT-2-style tokenizers, and the word tokenizer: " 1705" -> " 17" + "05").
Years run from 1102 to 1798 with YY in 02..98; a year is kept only when " XXYY" encodes as the two
tokens " XX" + "YY", so the answer is always the next single token. The metric is
P(YY' > YY) - P(YY' <= YY), summing the softmax over the full vocabulary at the 100 tokens
"00".."99". `answer` is the token of YY+1 (the smallest correct answer) and `wrong` is [[token of
YY]] (the largest incorrect one); `extra["digit_ids"]` is [n, 100], the ids of "00".."99".

**Digit form** (tokenizers that split numbers into single digits, e.g. SmolLM2/Llama-3 style:
" 1732" -> " " "1" "7" "3" "2"). The prompt still ends after the end year's century digits, so the
next token is the end year's tens digit D'. With T the start year's tens digit, the metric is
P(D' > T) - P(D' < T) over the ten tokens "0".."9" (softmax over the full vocabulary). The equal
digit D' = T is **excluded from both sides**: "1732 to 173x" can end above or below 1732 depending on
the units digit, so it is neither right nor wrong. YY runs over 10..89 (T in 1..8), so both sides
are non-empty; the corruption XX01 has T = 0. `answer` is the token of T+1 (the smallest correct
digit), `wrong` is [[token of T-1]] (the largest incorrect one); `extra["digit_ids"]` is [n, 10].

The form is chosen by `number_form(tokenizer)`: digit form when "0".."9" are single tokens and
" 1732" ends with the tokens "1" "7" "3" "2"; otherwise the two-digit form (which then needs
"00".."99" as single tokens). `metric` reads the form from the width of `extra["digit_ids"]`.
`extra["yy"]` is YY in both forms.
"""

from __future__ import annotations

import random
from functools import lru_cache

import torch

from circuits.errors import CircuitsError
from circuits.tokenizer import Tokenizer, WordTokenizer
from tasks._common import (
    Row,
    build_prompt_set,
    require_pool,
    single_token,
    single_token_words,
    word_vocabulary,
)
from tasks._vocab import EVENT_NOUNS, FILLER_WORDS, unique
from tasks.base import GroundTruth, PromptSet, edges_from_classes, first_change

TEMPLATE = "The {noun} lasted from the year {XX}{YY} to the year {XX}"
CENTURIES = tuple(range(11, 18))  # XX: 1102..1798
YY_RANGE = tuple(range(2, 99))  # YY: 02..98 (two-digit form)
DIGIT_YY_RANGE = tuple(range(10, 90))  # YY: 10..89 (digit form: tens digit 1..8)

# Ground truth for gpt2-small (ACDC repo, acdc/greaterthan/utils.py; Hanna et al. 2023).
_GT_CLASSES: dict[str, tuple[tuple[int, int], ...]] = {
    "0305": ((0, 3), (0, 5)),
    "01": ((0, 1),),
    "AMID": ((5, 5), (6, 1), (6, 9), (7, 10), (8, 11), (9, 1)),
}
_GT_CLASS_EDGES = [("0305", "AMID"), ("01", "AMID")]
GPT2_NAMES = ("gpt2-small", "gpt2")


class GreaterThanTask:
    """Greater-than: metric = P(later end year) - P(earlier), over two-digit or single-digit tokens."""

    name = "greaterthan"
    published_model = "gpt2-small"
    templates: tuple[str, ...] = (TEMPLATE,)
    nouns: tuple[str, ...] = tuple(unique(EVENT_NOUNS))
    extra_words: list[str] = unique(FILLER_WORDS)

    def word_tokenizer(self) -> WordTokenizer:
        return _gt_word_tokenizer()

    def prompts(self, tokenizer: Tokenizer, n: int, seed: int) -> PromptSet:
        nouns = single_token_words(tokenizer, self.nouns)
        require_pool(self.name, "nouns", nouns, 1)
        if number_form(tokenizer) == "digit":
            digit_ids = single_digit_tokens(tokenizer)
            years = valid_digit_years(tokenizer, digit_ids)
            answer_of, wrong_of = (lambda yy: str(yy // 10 + 1)), (lambda yy: str(yy // 10 - 1))
        else:
            digit_ids = two_digit_tokens(tokenizer)
            years = valid_years(tokenizer, digit_ids)
            answer_of, wrong_of = (lambda yy: f"{yy + 1:02d}"), (lambda yy: f"{yy:02d}")
        if not years:
            raise CircuitsError(f"{self.name}: no year 1102-1798 encodes as ' XX' + its last digits with "
                                f"this tokenizer")

        def sample(rng: random.Random) -> Row:
            noun = rng.choice(nouns)
            xx, yy = rng.choice(years)
            pos = TEMPLATE.format(noun=noun, XX=xx, YY=f"{yy:02d}")
            neg = TEMPLATE.format(noun=noun, XX=xx, YY="01")
            return Row(positive=pos, negative=neg, answer=answer_of(yy), wrong=[wrong_of(yy)],
                       extra={"yy": yy, "digit_ids": digit_ids})

        return build_prompt_set(self.name, tokenizer, n, seed, sample, len(nouns) * len(years))

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        """logits: [n, vocab] -> [n] P(later) - P(earlier); the form follows extra["digit_ids"]'s width."""
        probs = logits.float().softmax(-1)  # [n, vocab], over the full vocabulary
        digit_ids = prompts.extra["digit_ids"].to(logits.device)  # [n, 100] or [n, 10]
        digit_probs = probs.gather(1, digit_ids)  # [n, 100] two-digit form, [n, 10] digit form
        yy = prompts.extra["yy"].to(logits.device)  # [n]
        values = torch.arange(digit_ids.shape[1], device=logits.device)  # [100] or [10]
        if digit_ids.shape[1] == 10:  # digit form: tens digits; the equal digit counts on neither side
            start = (yy // 10)[:, None]  # [n, 1]
            return (digit_probs * (values > start)).sum(1) - (digit_probs * (values < start)).sum(1)
        greater = values[None, :] > yy[:, None]  # [n, 100]
        return (digit_probs * greater).sum(1) - (digit_probs * ~greater).sum(1)

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        return GREATERTHAN_GPT2_TRUTH if model_name in GPT2_NAMES else None

    def positions(self, prompts: PromptSet) -> dict[str, torch.Tensor]:
        """The start year's YY (two-digit form) or tens digit (digit form): the first token the XX01
        corruption changes (tasks.base.named_positions)."""
        return {"start year": first_change(prompts)}


def two_digit_tokens(tokenizer: Tokenizer) -> list[int]:
    """Token ids of "00".."99"; raises when the tokenizer does not have each as one token."""
    ids = [single_token(tokenizer, f"{i:02d}") for i in range(100)]
    missing = [f"{i:02d}" for i, t in enumerate(ids) if t is None]
    if missing:
        raise CircuitsError(f"greaterthan needs '00'..'99' to be single tokens; this tokenizer splits "
                         f"{', '.join(repr(m) for m in missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return [int(t) for t in ids if t is not None]


def number_form(tokenizer: Tokenizer) -> str:
    """"digit" when the tokenizer splits numbers into single digits (" 1732" ends "1" "7" "3" "2"),
    else "two-digit" (GPT-2 style: " 17" + "32")."""
    ids = [single_token(tokenizer, str(d)) for d in range(10)]
    if any(i is None for i in ids):
        return "two-digit"
    encoded = _encode(tokenizer, " 1732") or []
    return "digit" if encoded[-4:] == [ids[1], ids[7], ids[3], ids[2]] else "two-digit"


def single_digit_tokens(tokenizer: Tokenizer) -> list[int]:
    """Token ids of "0".."9"; raises when one is not a single token."""
    ids = [single_token(tokenizer, str(d)) for d in range(10)]
    if any(i is None for i in ids):
        raise CircuitsError("greaterthan (digit form) needs '0'..'9' to be single tokens")
    return [int(i) for i in ids if i is not None]


def valid_digit_years(tokenizer: Tokenizer, digit_ids: list[int]) -> list[tuple[int, int]]:
    """(XX, YY) pairs whose " XXYY" encodes as " XX"'s tokens + the tens and units digit tokens (digit
    form), for centuries where " XX01" does too."""
    years = []
    for xx in CENTURIES:
        century = _encode(tokenizer, f" {xx}")
        if not century or _encode(tokenizer, f" {xx}01") != [*century, digit_ids[0], digit_ids[1]]:
            continue
        for yy in DIGIT_YY_RANGE:
            if _encode(tokenizer, f" {xx}{yy:02d}") == [*century, digit_ids[yy // 10], digit_ids[yy % 10]]:
                years.append((xx, yy))
    return years


def valid_years(tokenizer: Tokenizer, digit_ids: list[int]) -> list[tuple[int, int]]:
    """(XX, YY) pairs whose " XXYY" encodes as [" XX", "YY"], for centuries where " XX01" does too."""
    years = []
    for xx in CENTURIES:
        century = single_token(tokenizer, f" {xx}")
        if century is None or _encode(tokenizer, f" {xx}01") != [century, digit_ids[1]]:
            continue
        years += [(xx, yy) for yy in YY_RANGE
                  if _encode(tokenizer, f" {xx}{yy:02d}") == [century, digit_ids[yy]]]
    return years


def _encode(tokenizer: Tokenizer, text: str) -> list[int] | None:
    try:
        return list(tokenizer.encode(text, prepend_bos=False))
    except (ValueError, KeyError):
        return None


@lru_cache(maxsize=1)
def _gt_word_tokenizer() -> WordTokenizer:
    filled = [TEMPLATE.format(noun=EVENT_NOUNS[0], XX=17, YY="05")]
    digits = [f"{i:02d}" for i in range(100)] + [str(i) for i in range(10)]
    return word_vocabulary(filled, [*EVENT_NOUNS, *digits], filler=FILLER_WORDS)


def _gt_truth() -> GroundTruth:
    heads = tuple(h for hs in _GT_CLASSES.values() for h in hs)
    assert len(heads) == len(set(heads)) == 9
    return GroundTruth(
        heads=heads,
        edges=edges_from_classes(_GT_CLASSES, _GT_CLASS_EDGES),
        classes=dict(_GT_CLASSES),
        source="ArthurConmy/Automatic-Circuit-Discovery acdc/greaterthan/utils.py (Hanna et al. 2023)",
        method={"edges": "head->head edges from the group pairs (0305, AMID) and (01, AMID); edges that "
                         "run through MLPs (MEARLY, MLATE) are not head->head and are omitted"},
    )


GREATERTHAN_GPT2_TRUTH = _gt_truth()
