"""Machinery the three built-in tasks share: token filtering, a closed vocabulary, and the loop that
turns a random prompt sampler into a PromptSet of one token length."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from circuits.errors import CircuitsError
from circuits.tokenizer import Tokenizer, WordTokenizer, split_pieces
from tasks._vocab import PUNCTUATION
from tasks.base import PromptSet

PILOT_SEED = 0x5EED  # fixed, so a task's prompt length depends on the tokenizer only, never on `seed`
PILOT_SAMPLES = 256


@dataclass
class Row:
    """One sampled prompt pair before tokenisation."""

    positive: str
    negative: str
    answer: str  # the answer as text, e.g. " Mary" (must be one token)
    wrong: list[str]  # wrong answers as text, each one token
    extra: dict[str, list[int] | int] = field(default_factory=dict)


def check_n(task: str, n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise CircuitsError(f"{task}: the number of prompts must be a positive integer, got {n!r}")


def single_token(tokenizer: Tokenizer, text: str) -> int | None:
    """The id of `text` when it encodes to exactly one token, else None (unknown pieces included)."""
    try:
        ids = tokenizer.encode(text, prepend_bos=False)
    except (ValueError, KeyError):  # WordTokenizer raises on pieces outside its vocabulary
        return None
    return int(ids[0]) if len(ids) == 1 else None


def single_token_words(tokenizer: Tokenizer, words: Iterable[str], prefix: str = " ") -> list[str]:
    """The words that encode to one token with `prefix` in front (the originals' filter)."""
    return [w for w in words if single_token(tokenizer, prefix + w) is not None]


def require_pool(task: str, what: str, pool: list[str], minimum: int) -> None:
    if len(pool) < minimum:
        raise CircuitsError(f"{task}: only {len(pool)} {what} encode to a single token with this tokenizer "
                         f"(need at least {minimum})")


def word_vocabulary(texts: Iterable[str], words: Iterable[str],
                    filler: Iterable[str] = ()) -> WordTokenizer:
    """A word tokenizer covering every piece of `texts`, every word of them and of `words` in both
    forms (with and without a leading space), `filler` words also capitalised, and punctuation.

    The extra forms make the vocabulary usable for free text built from the same words (a model
    trained on it sees sentence-initial and mid-sentence forms), not only for the task's templates.
    """
    pieces: set[str] = set(PUNCTUATION)
    filler = list(filler)
    all_words = set(words) | set(filler) | {w[:1].upper() + w[1:] for w in filler}
    for text in texts:
        for piece in split_pieces(text):
            pieces.add(piece)
            if piece.strip().replace("_", "a").isalnum():
                all_words.add(piece.strip())
    for word in all_words:
        pieces.update((word, " " + word))
    return WordTokenizer(sorted(pieces))


def build_prompt_set(task: str, tokenizer: Tokenizer, n: int, seed: int,
                     sample: Callable[[random.Random], Row], capacity: int) -> PromptSet:
    """Sample distinct prompts with `sample` until `n` have the task's single token length.

    The length is the modal length of a fixed pilot sample (ties -> the shorter), so every seed
    gives prompts of the same length for one tokenizer. Rows whose positive or negative has any
    other length are dropped, like the originals drop names that are not one token.
    """
    check_n(task, n)
    if n > capacity:
        raise CircuitsError(f"{task}: asked for {n} prompts but this tokenizer allows at most {capacity} "
                         f"distinct ones")
    encode = _encoder(task, tokenizer)
    target = _modal_length(task, encode, sample)
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[tuple[Row, list[int], list[int]]] = []
    for _ in range(50 * n + 2000):
        row = sample(rng)
        if row.positive in seen:
            continue
        seen.add(row.positive)
        pos, neg = encode(row.positive), encode(row.negative)
        if len(pos) == target and len(neg) == target:
            rows.append((row, pos, neg))
            if len(rows) == n:
                break
    if len(rows) < n:
        raise CircuitsError(f"{task}: could only generate {len(rows)} distinct prompts of {target} tokens "
                         f"with this tokenizer (asked for {n})")
    answer = [_token(task, tokenizer, r.answer) for r, _, _ in rows]
    wrong = [[_token(task, tokenizer, w) for w in r.wrong] for r, _, _ in rows]
    extra_keys = rows[0][0].extra.keys()
    return PromptSet(
        positive=torch.tensor([p for _, p, _ in rows], dtype=torch.long),
        negative=torch.tensor([q for _, _, q in rows], dtype=torch.long),
        answer=torch.tensor(answer, dtype=torch.long),
        wrong=torch.tensor(wrong, dtype=torch.long),
        positive_text=[r.positive for r, _, _ in rows],
        negative_text=[r.negative for r, _, _ in rows],
        extra={k: torch.tensor([r.extra[k] for r, _, _ in rows], dtype=torch.long) for k in extra_keys},
    )


def _encoder(task: str, tokenizer: Tokenizer) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        try:
            return list(tokenizer.encode(text, prepend_bos=True))
        except (ValueError, KeyError) as err:
            raise CircuitsError(f"{task}: this tokenizer cannot encode the task's prompts ({err})") from None

    return encode


def _token(task: str, tokenizer: Tokenizer, text: str) -> int:
    tok = single_token(tokenizer, text)
    if tok is None:  # pools are filtered beforehand, so this is a bug in the task, not bad input
        raise CircuitsError(f"{task}: answer {text!r} is not a single token for this tokenizer")
    return tok


def _modal_length(task: str, encode: Callable[[str], list[int]],
                  sample: Callable[[random.Random], Row]) -> int:
    rng = random.Random(PILOT_SEED)
    lengths: Counter[int] = Counter()
    for _ in range(PILOT_SAMPLES):
        row = sample(rng)
        pos, neg = encode(row.positive), encode(row.negative)
        if len(pos) == len(neg):
            lengths[len(pos)] += 1
    if not lengths:
        raise CircuitsError(f"{task}: no prompt and its corruption tokenize to the same length with this "
                         f"tokenizer")
    return min(lengths, key=lambda length: (-lengths[length], length))
