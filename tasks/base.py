"""The Task protocol, the PromptSet a task produces, and ground truth as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from circuits.errors import CircuitsError
from circuits.tokenizer import Tokenizer

Head = tuple[int, int]  # (layer, head)


@dataclass(frozen=True)
class PromptSet:
    """Positive prompts the model solves and their minimal corruptions, tokenised once.

    All rows share one length, and positive[i] and negative[i] have the same length, so the set
    runs as one batch and position-wise means are well defined.
    """

    positive: torch.Tensor  # [n, seq] long, BOS first
    negative: torch.Tensor  # [n, seq] long
    answer: torch.Tensor  # [n] long: the correct next token after positive[i]
    wrong: torch.Tensor  # [n, w] long: wrong-answer tokens (task-specific meaning)
    positive_text: list[str] = field(default_factory=list)
    negative_text: list[str] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # task-specific, each [n, ...]

    def __post_init__(self) -> None:
        n = self.positive.shape[0]
        if self.positive.shape != self.negative.shape:
            raise CircuitsError(f"positive {tuple(self.positive.shape)} and negative "
                             f"{tuple(self.negative.shape)} prompts differ in shape")
        if self.answer.shape != (n,) or self.wrong.shape[0] != n:
            raise CircuitsError("answer / wrong do not match the number of prompts")

    def __len__(self) -> int:
        return int(self.positive.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.positive.shape[1])

    def without(self, other: PromptSet) -> tuple[PromptSet, int]:
        """The pairs whose positive and negative are both absent from `other` (as positives or negatives)
        -> (those pairs, how many were dropped): held-out prompts never seen by a method fitted on `other`
        (a task with few distinct prompts can draw the same pair under two seeds)."""
        if self.seq_len != other.seq_len:
            return self, 0
        seen = {tuple(r) for r in other.positive.tolist()} | {tuple(r) for r in other.negative.tolist()}
        rows = [i for i, (p, q) in enumerate(zip(self.positive.tolist(), self.negative.tolist(), strict=True))
                if tuple(p) not in seen and tuple(q) not in seen]
        return (self if len(rows) == len(self) else self.subset(rows)), len(self) - len(rows)

    def subset(self, index: torch.Tensor | slice | list[int]) -> PromptSet:
        """Rows `index` of every field (texts included)."""
        if isinstance(index, slice):
            rows = list(range(len(self)))[index]
        elif isinstance(index, torch.Tensor):
            rows = index.tolist()
        else:
            rows = list(index)
        idx = torch.tensor(rows, dtype=torch.long)
        return PromptSet(
            positive=self.positive[idx],
            negative=self.negative[idx],
            answer=self.answer[idx],
            wrong=self.wrong[idx],
            positive_text=[self.positive_text[i] for i in rows] if self.positive_text else [],
            negative_text=[self.negative_text[i] for i in rows] if self.negative_text else [],
            extra={k: v[idx] for k, v in self.extra.items()},
        )


@dataclass(frozen=True)
class GroundTruth:
    """A reference circuit over heads: the head set, optional classes, and head->head edges."""

    heads: tuple[Head, ...]
    edges: tuple[tuple[Head, Head], ...] = ()
    classes: dict[str, tuple[Head, ...]] = field(default_factory=dict)
    source: str = ""  # where it comes from (paper / repo file / "ablation")
    method: dict[str, Any] = field(default_factory=dict)  # how it was computed, when computed

    def head_set(self) -> frozenset[Head]:
        return frozenset(self.heads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": [list(h) for h in self.heads],
            "edges": [[list(a), list(b)] for a, b in self.edges],
            "classes": {k: [list(h) for h in v] for k, v in self.classes.items()},
            "source": self.source,
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "ground truth") -> GroundTruth:
        """Parse a ground-truth object; any wrong type is one CircuitsError naming `where` (the file and
        the field, e.g. "manifest.json: ground_truth.ioi") and the field inside it."""

        def kind(x: Any) -> str:
            return "null" if x is None else type(x).__name__

        def head(x: Any, at: str) -> Head:
            if not (isinstance(x, list) and len(x) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in x)):
                raise CircuitsError(f"{at}: a head must be [layer, head] (two integers), found "
                                    f"{str(x)[:40]!s}")
            return (x[0], x[1])

        def heads_of(x: Any, at: str) -> tuple[Head, ...]:
            if not isinstance(x, list):
                raise CircuitsError(f"{at}: expected a list of [layer, head], found {kind(x)}")
            return tuple(head(h, f"{at}[{i}]") for i, h in enumerate(x))

        if not isinstance(data, dict):
            raise CircuitsError(f"{where}: expected an object with 'heads', found {kind(data)}")
        if "heads" not in data:
            raise CircuitsError(f"{where}: missing field 'heads'")
        edges_raw = data.get("edges", [])
        if not isinstance(edges_raw, list):
            raise CircuitsError(f"{where}.edges: expected a list of [[layer, head], [layer, head]], "
                                f"found {kind(edges_raw)}")
        edges = []
        for i, e in enumerate(edges_raw):
            if not (isinstance(e, list) and len(e) == 2):
                raise CircuitsError(f"{where}.edges[{i}]: an edge must be [[layer, head], [layer, head]]")
            edges.append((head(e[0], f"{where}.edges[{i}][0]"), head(e[1], f"{where}.edges[{i}][1]")))
        classes = data.get("classes", {})
        if not isinstance(classes, dict):
            raise CircuitsError(f"{where}.classes: expected an object, found {kind(classes)}")
        method = data.get("method", {})
        if not isinstance(method, dict):
            raise CircuitsError(f"{where}.method: expected an object, found {kind(method)}")
        return cls(
            heads=heads_of(data["heads"], f"{where}.heads"),
            edges=tuple(edges),
            classes={str(k): heads_of(v, f"{where}.classes.{k}") for k, v in classes.items()},
            source=str(data.get("source", "")),
            method=dict(method),
        )

    def validate(self, n_layers: int, n_heads: int, where: str = "") -> None:
        """Raise when a head does not exist in a model of this shape (`where`: the file it came from)."""
        for layer, h in list(self.heads) + [x for e in self.edges for x in e]:
            if not (0 <= layer < n_layers and 0 <= h < n_heads):
                at = f"{where}: " if where else ""
                raise CircuitsError(f"{at}ground-truth head ({layer},{h}) does not exist in a model with "
                                    f"{n_layers} layers x {n_heads} heads")


def ground_truths_from(data: Any, where: str) -> dict[str, GroundTruth]:
    """A task name -> ground-truth mapping (a manifest's `ground_truth`, a shipped data file), each entry
    checked; errors name `where` and the field."""
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        raise CircuitsError(f"{where}: expected an object mapping task names to ground truth, found {kind}")
    return {str(task): GroundTruth.from_dict(truth, f"{where}.{task}") for task, truth in data.items()}


def edges_from_classes(classes: dict[str, tuple[Head, ...]],
                       class_edges: list[tuple[str, str]]) -> tuple[tuple[Head, Head], ...]:
    """Head->head edges implied by class-level connections (sender strictly below receiver)."""
    out: set[tuple[Head, Head]] = set()
    for src, dst in class_edges:
        for a in classes[src]:
            for b in classes[dst]:
                if a[0] < b[0]:
                    out.add((a, b))
    return tuple(sorted(out))


class Task(Protocol):
    """A behaviour to find a circuit for.

    `metric` is per prompt and positive when the model solves the prompt, so "solved" means
    metric > 0 for every task.
    """

    name: str
    published_model: str  # the TransformerLens model its published ground truth is for

    def word_tokenizer(self) -> Tokenizer:
        """The task's own closed-vocabulary tokenizer (offline models)."""
        ...

    def prompts(self, tokenizer: Tokenizer, n: int, seed: int) -> PromptSet:
        """`n` positive/negative pairs for this tokenizer, deterministic in `seed`."""
        ...

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        """logits: [n, vocab] at the final position -> [n] task metric."""
        ...

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        """Published ground truth for `model_name`, or None."""
        ...

    # Optional (not part of the protocol, so a task without it still is a Task): `positions(prompts) ->
    # dict[str, Tensor [n]]`, the token positions the task's structure names in each positive prompt (IOI:
    # IO, S1, S2). Read through `named_positions`, which gives {} for a task that names none.


def named_positions(task: Task, prompts: PromptSet) -> dict[str, torch.Tensor]:
    """name -> [n] long position in each positive prompt, as the task names them (its optional `positions`
    method); {} when it names none. Explanations read a head's attention onto these positions."""
    hook = getattr(task, "positions", None)
    if hook is None:
        return {}
    found = hook(prompts)
    n, seq = len(prompts), prompts.seq_len
    for name, pos in found.items():
        if pos.shape != (n,) or bool(((pos < 0) | (pos >= seq)).any()):
            raise CircuitsError(f"task {task.name}: position '{name}' must be [n] indices into the prompt")
    return {str(k): v.long() for k, v in found.items()}


def first_change(prompts: PromptSet) -> torch.Tensor:
    """[n] the first position where each positive prompt differs from its corruption (0 when none does):
    where the cue the corruption removes starts."""
    differs = prompts.positive != prompts.negative  # [n, seq]
    return torch.where(differs.any(1), differs.int().argmax(1), 0)
