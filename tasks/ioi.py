"""Indirect object identification (Wang et al. 2022) on the recipe of REFERENCE.md §3.

"Then, Mary and John went to the store. John gave a ring to" -> " Mary". The subject S (John)
is repeated, the indirect object IO (Mary) is the answer. ABBA puts IO first in the opening clause,
BABA puts S first. The corruption ("ABC") replaces IO, S1 and S2 by three distinct fresh names in
the same template, so the repeated-name cue is gone.
"""

from __future__ import annotations

import random
from functools import lru_cache

import torch

from circuits.tokenizer import Tokenizer, WordTokenizer
from tasks._common import Row, build_prompt_set, require_pool, single_token_words, word_vocabulary
from tasks._vocab import FILLER_WORDS, NAMES, OBJECTS, PLACES, unique
from tasks.base import GroundTruth, PromptSet, edges_from_classes

# ABBA order: {A} = IO, {B} = S. Every template has 15 word pieces, so for the word tokenizer all
# prompts share one length; for a subword tokenizer the modal length is kept.
ABBA_TEMPLATES: tuple[str, ...] = (
    "Then, {A} and {B} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Later, {A} and {B} went to the {PLACE}. {B} handed a {OBJECT} to",
    "Afterwards, {A} and {B} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Soon after {A} and {B} went to the {PLACE}, {B} gave a {OBJECT} to",
    "When {A} and {B} finally arrived at the {PLACE}, {B} gave a {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {B} gave a {OBJECT} to",
    "While {A} and {B} were walking to the {PLACE}, {B} gave a {OBJECT} to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {B} gave it to",
    "Then, {A} and {B} had a long argument, and afterwards {B} said to",
)
BABA_TEMPLATES: tuple[str, ...] = tuple(t.replace("{A} and {B}", "{B} and {A}", 1) for t in ABBA_TEMPLATES)

# Ground truth for gpt2-small (ACDC repo, acdc/ioi/utils.py; REFERENCE.md §2).
_IOI_CLASSES: dict[str, tuple[tuple[int, int], ...]] = {
    "name mover": ((9, 9), (10, 0), (9, 6)),
    "backup name mover": ((10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0), (11, 9)),
    "negative name mover": ((10, 7), (11, 10)),
    "s2 inhibition": ((7, 3), (7, 9), (8, 6), (8, 10)),
    "induction": ((5, 5), (5, 8), (5, 9), (6, 9)),
    "duplicate token": ((0, 1), (0, 10), (3, 0)),
    "previous token": ((2, 2), (4, 11)),
}
# Class-level connections between head classes (the INPUT/OUTPUT ones do not give head->head edges).
_IOI_CLASS_EDGES: list[tuple[str, str]] = [
    ("previous token", "induction"),
    ("induction", "s2 inhibition"),
    ("duplicate token", "s2 inhibition"),
    ("s2 inhibition", "name mover"),
    ("s2 inhibition", "backup name mover"),
    ("s2 inhibition", "negative name mover"),
]
GPT2_NAMES = ("gpt2-small", "gpt2")


class IOITask:
    """IOI: answer = IO name, wrong = [[S name]], metric = logit(IO) - logit(S).

    `extra` holds token positions in the positive prompt: `io_pos`, `s1_pos`, `s2_pos` ([n] each).
    """

    name = "ioi"
    published_model = "gpt2-small"
    abba_templates: tuple[str, ...] = ABBA_TEMPLATES
    baba_templates: tuple[str, ...] = BABA_TEMPLATES
    templates: tuple[str, ...] = ABBA_TEMPLATES + BABA_TEMPLATES
    names: tuple[str, ...] = tuple(unique(NAMES))
    places: tuple[str, ...] = PLACES
    objects: tuple[str, ...] = OBJECTS
    extra_words: list[str] = unique(FILLER_WORDS)

    def word_tokenizer(self) -> WordTokenizer:
        return _ioi_word_tokenizer()

    def prompts(self, tokenizer: Tokenizer, n: int, seed: int) -> PromptSet:
        names = single_token_words(tokenizer, self.names)
        places = single_token_words(tokenizer, self.places)
        objects = single_token_words(tokenizer, self.objects)
        require_pool(self.name, "names", names, 5)
        require_pool(self.name, "places", places, 1)
        require_pool(self.name, "objects", objects, 1)
        templates = self.templates

        def sample(rng: random.Random) -> Row:
            template = rng.choice(templates)
            io, s, c1, c2, c3 = rng.sample(names, 5)
            place, obj = rng.choice(places), rng.choice(objects)
            pos = _fill(template, io, s, s, place, obj)
            # ABC corruption: the same template with IO, S1 and S2 replaced by three distinct names.
            neg = _fill(template, c1, c2, c3, place, obj)
            return Row(positive=pos, negative=neg, answer=" " + io, wrong=[" " + s])

        capacity = len(names) * (len(names) - 1) * len(templates) * len(places) * len(objects)
        prompts = build_prompt_set(self.name, tokenizer, n, seed, sample, capacity)
        return _with_positions(prompts)

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        """logits: [n, vocab] -> [n] logit(IO) - logit(S)."""
        io = logits.gather(1, prompts.answer.to(logits.device)[:, None])[:, 0]
        s = logits.gather(1, prompts.wrong[:, :1].to(logits.device))[:, 0]
        return io - s

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        return IOI_GPT2_TRUTH if model_name in GPT2_NAMES else None

    def positions(self, prompts: PromptSet) -> dict[str, torch.Tensor]:
        """IO, S1 and S2 (tasks.base.named_positions), from the positions `prompts` builds in `extra`."""
        if "io_pos" not in prompts.extra:
            prompts = _with_positions(prompts)
        return {"IO": prompts.extra["io_pos"], "S1": prompts.extra["s1_pos"], "S2": prompts.extra["s2_pos"]}


def _fill(template: str, a: str, b1: str, b2: str, place: str, obj: str) -> str:
    """Fill a template: {A} once, the first {B} with b1 and the second with b2."""
    first, rest = template.split("{B}", 1)
    text = first + b1 + rest.replace("{B}", b2, 1)
    return text.replace("{A}", a).replace("{PLACE}", place).replace("{OBJECT}", obj)


def _with_positions(prompts: PromptSet) -> PromptSet:
    """Add io_pos / s1_pos / s2_pos: where the IO and S tokens sit in each positive prompt."""
    positions = torch.arange(prompts.seq_len)  # [seq]
    is_io = prompts.positive == prompts.answer[:, None]  # [n, seq]
    is_s = prompts.positive == prompts.wrong[:, :1]  # [n, seq]
    big = prompts.seq_len
    extra = dict(prompts.extra)
    extra["io_pos"] = torch.where(is_io, positions, big).min(1).values
    extra["s1_pos"] = torch.where(is_s, positions, big).min(1).values
    extra["s2_pos"] = torch.where(is_s, positions, -1).max(1).values
    return PromptSet(positive=prompts.positive, negative=prompts.negative, answer=prompts.answer,
                     wrong=prompts.wrong, positive_text=prompts.positive_text,
                     negative_text=prompts.negative_text, extra=extra)


@lru_cache(maxsize=1)
def _ioi_word_tokenizer() -> WordTokenizer:
    filled = [_fill(t, "Mary", "John", "John", PLACES[0], OBJECTS[0]) for t in IOITask.templates]
    return word_vocabulary(filled, [*NAMES, *PLACES, *OBJECTS], filler=FILLER_WORDS)


def _ioi_truth() -> GroundTruth:
    heads = tuple(h for hs in _IOI_CLASSES.values() for h in hs)
    assert len(heads) == len(set(heads)) == 26
    return GroundTruth(
        heads=heads,
        edges=edges_from_classes(_IOI_CLASSES, _IOI_CLASS_EDGES),
        classes=dict(_IOI_CLASSES),
        source="ArthurConmy/Automatic-Circuit-Discovery acdc/ioi/utils.py (Wang et al. 2022)",
        method={"edges": "class-level connections between head classes expanded to every head pair "
                         "with the sender in a strictly lower layer; INPUT/OUTPUT connections omitted"},
    )


IOI_GPT2_TRUTH = _ioi_truth()
