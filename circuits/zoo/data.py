"""The training stream for a zoo model: the task's own prompts plus filler text from its vocabulary.

Task rows are positive prompts; the loss is on the answer position (cross-entropy to the uniform
distribution over the correct answers, so greater-than rewards every later year) plus a lighter
next-token loss on the other positions, so the model also learns the templates. Filler rows are
random token sequences from the task vocabulary whose second half repeats the first: predictable only
by copying, they make the model compute with its heads instead of memorising prompt strings.

Prompt seeds are namespaced (`prompt_seed`) so training, held-out evaluation and the ground-truth
search never draw from the same seed, and all three stay far from the small seeds a user passes to
`circuits find`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from circuits.tokenizer import Tokenizer
from tasks.base import PromptSet, Task

# Purpose -> base of the prompt seeds used for it (see `prompt_seed`).
SEED_BASES = {"train": 10_000_000, "heldout": 20_000_000, "ground_truth": 30_000_000}
CHUNKS_PER_SEED = 10_000  # training chunks per model seed before the namespaces could meet


def prompt_seed(purpose: str, seed: int, chunk: int = 0) -> int:
    """The prompt seed for `purpose` ("train" | "heldout" | "ground_truth"), model seed and chunk."""
    if purpose not in SEED_BASES:
        raise ValueError(f"unknown prompt purpose '{purpose}' (known: {', '.join(SEED_BASES)})")
    if not 0 <= chunk < CHUNKS_PER_SEED:
        raise ValueError(f"chunk {chunk} out of range")
    return SEED_BASES[purpose] + seed * CHUNKS_PER_SEED + chunk


AnswerSetFn = Callable[[PromptSet, int], torch.Tensor]


def _single_answer(prompts: PromptSet, vocab_size: int) -> torch.Tensor:
    """[n, vocab] bool: only `prompts.answer` is correct."""
    out = torch.zeros(len(prompts), vocab_size, dtype=torch.bool)
    out[torch.arange(len(prompts)), prompts.answer] = True
    return out


def _later_years(prompts: PromptSet, vocab_size: int) -> torch.Tensor:
    """Greater-than: every two-digit year token above the start year's is correct.

    Reads `extra["greater"]` ([n, vocab] bool) when the task provides it; otherwise uses the
    year tokens of `extra["digit_ids"]` ([n, 100], the token of "00".."99") and `extra["yy"]` ([n]).
    """
    if "greater" in prompts.extra:
        return prompts.extra["greater"].bool()
    if "digit_ids" in prompts.extra and "yy" in prompts.extra:
        years = prompts.extra["digit_ids"].long()  # [n, 100]
        later = torch.arange(100)[None, :] > prompts.extra["yy"].long()[:, None]  # [n, 100]
        out = torch.zeros(len(prompts), vocab_size, dtype=torch.bool)
        out.scatter_(1, years, later)
        return out
    return _single_answer(prompts, vocab_size)


ANSWER_SETS: dict[str, AnswerSetFn] = {"greaterthan": _later_years}


def _years_after_01(prompts: PromptSet, vocab_size: int) -> torch.Tensor:
    """Greater-than negatives start at XX01: every year token from 02 on is correct."""
    years = prompts.extra["digit_ids"].long()  # [n, 100]
    later = (torch.arange(100) > 1)[None, :].expand(len(prompts), 100)
    return torch.zeros(len(prompts), vocab_size, dtype=torch.bool).scatter_(1, years, later)


# Tasks whose negative prompts are still well-posed task text, with their own correct answers. Some of
# them join the training rows so the negatives are in-distribution (greater-than prompts never start at
# 01 otherwise, and the model's answer there would be arbitrary). IOI's and docstring's negatives have
# no correct answer and are not trained on.
NEGATIVE_ANSWER_SETS: dict[str, AnswerSetFn] = {"greaterthan": _years_after_01}
NEGATIVE_EVERY = 8  # one negative row per this many positive rows


def _docstring_variants(task: Task, tokenizer: Tokenizer, n: int, seed: int) -> list[tuple[list[int], int]]:
    """Docstring prompts in other shapes: 0-3 prefix args, 1-3 documented args, 0-2 suffix args.

    The task's own template always puts the answer at the same position of the def (2 prefix,
    2 documented, 1 suffix), so a model trained on it alone can answer by position. Varying the
    shape leaves one rule that always works: the answer is the def argument that follows the last
    documented one. Returns (tokens with BOS, answer token) pairs.
    """
    rng = random.Random(seed)
    args = [a for a in getattr(task, "arg_names", ()) if (" " + a) in _vocab(tokenizer)]
    descs = [w for w in getattr(task, "desc_words", ()) if (" " + w) in _vocab(tokenizer)]
    fns = [f for f in getattr(task, "func_names", ()) if (" " + f) in _vocab(tokenizer)]
    if len(args) < 10 or not descs or not fns:
        return []
    rows = []
    for _ in range(n):
        prefix, documented, suffix = rng.randint(0, 3), rng.randint(1, 3), rng.randint(0, 2)
        names = rng.sample(args, prefix + documented + 1 + suffix)
        words = [rng.choice(descs) for _ in range(3 + 2 * documented)]
        lines = [f"def {rng.choice(fns)}(self, {', '.join(names)}):", f'    """{" ".join(words[:3])}', ""]
        lines += [f"    :param {a}: {words[3 + 2 * i]} {words[4 + 2 * i]}"
                  for i, a in enumerate(names[prefix:prefix + documented])]
        lines.append("    :param")
        rows.append((list(tokenizer.encode("\n".join(lines))),
                     tokenizer.encode(" " + names[prefix + documented], prepend_bos=False)[0]))
    return rows


def _vocab(tokenizer: Tokenizer) -> set[str]:
    return set(getattr(tokenizer, "vocab", ()))


VariantFn = Callable[[Task, Tokenizer, int, int], list[tuple[list[int], int]]]
# Tasks whose own template lets a model answer by position: training adds the same number of rows in
# other shapes (`VARIANTS_PER_PROMPT` per task prompt), drawn with the chunk's training seed.
VARIANTS: dict[str, VariantFn] = {"docstring": _docstring_variants}
VARIANTS_PER_PROMPT = 1


def answer_sets(task: Task, prompts: PromptSet, vocab_size: int) -> torch.Tensor:
    """[n, vocab] bool: the tokens that count as a correct next token for each positive prompt."""
    fn = ANSWER_SETS.get(getattr(task, "name", ""), _single_answer)
    out = fn(prompts, vocab_size)
    if out.shape != (len(prompts), vocab_size) or not bool(out.any(1).all()):
        raise ValueError(f"task {getattr(task, 'name', '?')}: every prompt needs at least one answer")
    return out


@dataclass(frozen=True)
class TaskPool:
    """Positive prompts of possibly different lengths, right-padded into one tensor."""

    tokens: torch.Tensor  # [N, L] long, PAD after each row's end
    lengths: torch.Tensor  # [N] long: real length; the answer follows position lengths-1
    valid: torch.Tensor  # [N, vocab] bool: correct answers

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def rows(self) -> set[tuple[int, ...]]:
        """Each prompt as a tuple of token ids (to count held-out prompts seen in training)."""
        return {tuple(r[:n].tolist()) for r, n in zip(self.tokens, self.lengths, strict=True)}


def build_pool(task: Task, tokenizer: Tokenizer, n: int, seed: int, chunk_size: int = 500,
               pad_id: int = 1) -> TaskPool:
    """`n` training prompts drawn in chunks with training seeds (each chunk has its own length), plus
    one negative row per NEGATIVE_EVERY for tasks in NEGATIVE_ANSWER_SETS and rows in other shapes
    for tasks in VARIANTS."""
    sets: list[PromptSet] = []
    total, chunk = 0, 0
    vocab = int(tokenizer.vocab_size)
    while total < n:
        ps = task.prompts(tokenizer, min(chunk_size, n - total), prompt_seed("train", seed, chunk))
        sets.append(ps)
        total += len(ps)
        chunk += 1
    negative_fn = NEGATIVE_ANSWER_SETS.get(getattr(task, "name", ""))
    blocks: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tokens [k, seq], valid [k, vocab])
    for ps in sets:
        blocks.append((ps.positive, answer_sets(task, ps, vocab)))
        if negative_fn is not None:
            part = ps.subset(list(range(len(ps) // NEGATIVE_EVERY)))
            blocks.append((part.negative, negative_fn(part, vocab)))
    variant_fn = VARIANTS.get(getattr(task, "name", ""))
    if variant_fn is not None:
        for chunk, ps in enumerate(sets):
            for toks, answer in variant_fn(task, tokenizer, len(ps) * VARIANTS_PER_PROMPT,
                                           prompt_seed("train", seed, chunk)):
                valid = torch.zeros(1, vocab, dtype=torch.bool)
                valid[0, answer] = True
                blocks.append((torch.tensor([toks]), valid))
    width = max(int(t.shape[1]) for t, _ in blocks)
    rows = sum(len(t) for t, _ in blocks)
    tokens = torch.full((rows, width), pad_id, dtype=torch.long)
    lengths = torch.zeros(rows, dtype=torch.long)
    row = 0
    for block, _ in blocks:
        tokens[row:row + len(block), :block.shape[1]] = block
        lengths[row:row + len(block)] = block.shape[1]
        row += len(block)
    return TaskPool(tokens=tokens, lengths=lengths, valid=torch.cat([v for _, v in blocks]))


def content_ids(tokenizer: Tokenizer, special: int = 3) -> torch.Tensor:
    """Token ids that filler text may use: everything but <bos>, <pad>, <unk>."""
    return torch.arange(special, int(tokenizer.vocab_size))


def filler_batch(ids: torch.Tensor, batch: int, length: int, gen: torch.Generator,
                 bos_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences whose second half repeats the first.

    Returns tokens [batch, length] (BOS first) and a loss mask [batch, length - 1] that is True where
    the next token is predictable (inside the repeat).
    """
    half = (length - 1) // 2
    first = ids[torch.randint(0, len(ids), (batch, half), generator=gen)]  # [batch, half]
    tail = length - 1 - 2 * half
    extra = ids[torch.randint(0, len(ids), (batch, tail), generator=gen)]
    tokens = torch.cat([torch.full((batch, 1), bos_id), first, first, extra], dim=1)  # [batch, length]
    mask = torch.zeros(batch, length - 1, dtype=torch.bool)
    mask[:, half + 1:2 * half] = True  # predicting tokens 2+half .. 2*half: the repeat from its 2nd token
    return tokens, mask
