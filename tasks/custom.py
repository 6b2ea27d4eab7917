"""A researcher's own task, written down as a file: `circuits find --task path/to/task.jsonl`.

Format (JSON Lines; blank lines are skipped). Each line is one record:

- a prompt pair, with our field names or auto-circuit's:

  ours                       auto-circuit      meaning
  ``positive``               ``clean``         prompt the model should solve
  ``negative``               ``corrupt``       its minimal corruption (same token length)
  ``answer`` (str or list)   ``answers``       correct next token(s) after the positive prompt
  ``wrong_answers`` (opt.)   ``wrong_answers`` wrong next token(s) to compare against
  ``negative_answer`` (opt.)                   the corrupted prompt's answer, used as the wrong
                                               answer when ``wrong_answers`` is absent

  e.g. ``{"positive": "When Mary and John went to the store, John gave a drink to",
  "negative": "When Mary and John went to the store, Mary gave a drink to", "answer": " Mary",
  "wrong_answers": [" John"]}``. Unknown fields are ignored, so auto-circuit files load as they are.
- ``{"ground_truth": {"heads": [[layer, head], ...], "edges": [[[l, h], [l, h]], ...]}}`` (optional,
  once): the reference circuit, which turns on evaluation. ``edges`` (sender layer < receiver layer),
  ``classes`` and ``source`` are optional. Instead of this line, a sidecar file ``<stem>.truth.json``
  beside the task file may hold the same object.
- ``{"task": {"name": "my-task", "wrong": "max" | "mean"}}`` (optional, once): settings.

A ``.json`` file holds the same records as a list, or an object ``{"prompts": [...]}`` as auto-circuit
writes (with optional ``ground_truth`` and ``task`` keys beside ``prompts``).

Metric, per prompt, on the logits at the last position of the positive prompt:
``mean(logit[answers]) - max(logit[wrong answers])`` (``"wrong": "mean"`` uses the mean instead, as
auto-circuit does). With ``max`` the metric is positive exactly when every correct answer's mean beats
every wrong answer, so "metric > 0" means "solved", as for the built-in tasks.

Pairs are tokenised with the model's tokenizer. A pair is dropped, and counted in ``task.dropped``,
when the tokenizer cannot encode it, when an answer is not exactly one token, when the positive and
negative prompts have different lengths, or when its length is not the most common one (so the set is
one batch). A file with no usable pair is an error.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuits.errors import CircuitsError
from circuits.jsonio import read_json
from circuits.tokenizer import Tokenizer, WordTokenizer, split_pieces
from tasks._common import single_token
from tasks.base import GroundTruth, Head, PromptSet, first_change

FIELDS: dict[str, tuple[str, ...]] = {  # our name first, then accepted aliases (auto-circuit's)
    "positive": ("positive", "clean"),
    "negative": ("negative", "corrupt"),
    "answer": ("answer", "answers"),
    "wrong_answers": ("wrong_answers",),
    "negative_answer": ("negative_answer",),
}
WRONG_REDUCTIONS = ("max", "mean")
RESERVED_NAMES = ("ioi", "greaterthan", "docstring")  # built-in tasks; a file never shadows them
DROP_REASONS = {
    "untokenizable": "the tokenizer cannot encode the text",
    "answer_not_one_token": "an answer or wrong answer is not exactly one token",
    "different_lengths": "positive and negative prompts tokenise to different lengths",
    "other_length": "not the most common token length",
}


class TaskFileError(CircuitsError, ValueError):
    """A task file that cannot be used, explained with its path and line."""


@dataclass(frozen=True)
class Pair:
    """One prompt pair as written in the file (texts, not tokens)."""

    where: str  # "line 7" / "record 7", for messages
    positive: str
    negative: str
    answers: tuple[str, ...]
    wrong: tuple[str, ...]


@dataclass(frozen=True)
class FileGroundTruth(GroundTruth):
    """Ground truth read from a file; range errors name the file and line it came from."""

    location: str = ""

    def validate(self, n_layers: int, n_heads: int, where: str = "") -> None:
        try:
            super().validate(n_layers, n_heads, where)
        except CircuitsError as err:
            raise TaskFileError(f"{self.location}: {err}") from None


@dataclass
class CustomTask:
    """A Task (tasks.base.Task protocol) whose pairs and ground truth come from a file."""

    path: Path
    pairs: list[Pair]
    name: str
    truth: FileGroundTruth | None = None
    wrong_reduction: str = "max"
    published_model: str = ""
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> pairs, from the last prompts() call
    n_usable: int | None = None
    _encoded: dict[int, tuple[Tokenizer, list[_Encoded], dict[str, int]]] = field(default_factory=dict,
                                                                                 repr=False)

    # -- Task protocol -------------------------------------------------------------------------------

    def word_tokenizer(self) -> WordTokenizer:
        """A closed vocabulary over every piece of the file's texts (texts it cannot split are left
        out; their pairs are then dropped as untokenizable)."""
        pieces: set[str] = set()
        for pair in self.pairs:
            for text in (pair.positive, pair.negative, *pair.answers, *pair.wrong):
                try:
                    pieces.update(split_pieces(text))
                except ValueError:
                    continue
        return WordTokenizer(sorted(pieces))

    def prompts(self, tokenizer: Tokenizer, n: int, seed: int) -> PromptSet:
        """`n` usable pairs, chosen by a seeded shuffle; raises when the file has fewer."""
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise CircuitsError(f"{self.name}: the number of prompts must be a positive integer, got {n!r}")
        usable, dropped = self._tokenised(tokenizer)
        self.dropped, self.n_usable = dict(dropped), len(usable)
        if not usable:
            raise TaskFileError(f"{self.path}: no usable prompt pair out of {len(self.pairs)} "
                                f"({_describe_drops(dropped)})")
        if n > len(usable):
            raise TaskFileError(f"{self.path}: asked for {n} prompt pairs but only {len(usable)} are usable "
                                f"({_describe_drops(dropped) or 'none dropped'}); lower --n-score and "
                                f"--n-train so that n-train + n-score <= {len(usable)}")
        order = list(range(len(usable)))
        random.Random(seed).shuffle(order)
        rows = [usable[i] for i in order[:n]]
        n_ans = max(len(r.answers) for r in rows)
        n_wrong = max(len(r.wrong) for r in rows)
        return PromptSet(
            positive=torch.tensor([r.positive for r in rows], dtype=torch.long),
            negative=torch.tensor([r.negative for r in rows], dtype=torch.long),
            answer=torch.tensor([r.answers[0] for r in rows], dtype=torch.long),
            wrong=torch.tensor([_pad(r.wrong, n_wrong) for r in rows], dtype=torch.long),
            positive_text=[r.pair.positive for r in rows],
            negative_text=[r.pair.negative for r in rows],
            extra={
                "answers": torch.tensor([_pad(r.answers, n_ans) for r in rows], dtype=torch.long),
                "answer_mask": torch.tensor([_mask(len(r.answers), n_ans) for r in rows]),
                "wrong_mask": torch.tensor([_mask(len(r.wrong), n_wrong) for r in rows]),
            },
        )

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        """logits: [n, vocab] -> [n] mean answer logit minus the max (or mean) wrong-answer logit."""
        logits = logits.float()
        device = logits.device
        answers = prompts.extra["answers"].to(device)  # [n, A]
        a_mask = prompts.extra["answer_mask"].to(device)  # [n, A] bool
        wrong = prompts.wrong.to(device)  # [n, W]
        w_mask = prompts.extra["wrong_mask"].to(device)  # [n, W] bool
        answer_logit = (logits.gather(1, answers) * a_mask).sum(1) / a_mask.sum(1)  # [n]
        wrong_logits = logits.gather(1, wrong)  # [n, W]
        if self.wrong_reduction == "max":
            wrong_logit = wrong_logits.masked_fill(~w_mask, float("-inf")).max(1).values
        else:
            wrong_logit = (wrong_logits * w_mask).sum(1) / w_mask.sum(1)
        return answer_logit - wrong_logit

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        """The file's ground truth, whatever the model (the researcher vouches for it)."""
        return self.truth

    def positions(self, prompts: PromptSet) -> dict[str, torch.Tensor]:
        """The first token the corruption changes (tasks.base.named_positions): the one place every pair
        of a file names, whatever its templates."""
        return {"changed token": first_change(prompts)}

    # -- reporting -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What the run's JSON records about the file: counts, drops (after prompts()) and the metric."""
        return {
            "path": str(self.path),
            "pairs_in_file": len(self.pairs),
            "usable_pairs": self.n_usable,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "drop_reasons": {k: DROP_REASONS[k] for k in self.dropped},
            "metric": f"mean logit(answers) - {self.wrong_reduction} logit(wrong answers), last position",
            "ground_truth": self.truth.location if self.truth is not None else None,
        }

    # -- tokenisation ------------------------------------------------------------------------------

    def _tokenised(self, tokenizer: Tokenizer) -> tuple[list[_Encoded], dict[str, int]]:
        cached = self._encoded.get(id(tokenizer))
        if cached is None or cached[0] is not tokenizer:  # the tokenizer is kept, so its id stays unique
            cached = (tokenizer, *_encode_pairs(self.pairs, tokenizer))
            self._encoded[id(tokenizer)] = cached
        return cached[1], cached[2]


@dataclass(frozen=True)
class _Encoded:
    pair: Pair
    positive: list[int]
    negative: list[int]
    answers: list[int]
    wrong: list[int]


def _encode_pairs(pairs: list[Pair], tokenizer: Tokenizer) -> tuple[list[_Encoded], dict[str, int]]:
    """Encode every pair; keep those of the most common length (ties -> the shorter)."""
    dropped: Counter[str] = Counter()
    kept: list[_Encoded] = []
    for pair in pairs:
        try:
            pos = list(tokenizer.encode(pair.positive, prepend_bos=True))
            neg = list(tokenizer.encode(pair.negative, prepend_bos=True))
        except (ValueError, KeyError):
            dropped["untokenizable"] += 1
            continue
        answers = [single_token(tokenizer, a) for a in pair.answers]
        wrong = [single_token(tokenizer, w) for w in pair.wrong]
        if any(t is None for t in answers + wrong):
            dropped["answer_not_one_token"] += 1
            continue
        if len(pos) != len(neg):
            dropped["different_lengths"] += 1
            continue
        kept.append(_Encoded(pair, pos, neg, [int(t) for t in answers if t is not None],
                             [int(t) for t in wrong if t is not None]))
    if kept:
        lengths = Counter(len(e.positive) for e in kept)
        target = min(lengths, key=lambda length: (-lengths[length], length))
        other = [e for e in kept if len(e.positive) != target]
        if other:
            dropped["other_length"] += len(other)
            kept = [e for e in kept if len(e.positive) == target]
    return kept, {k: v for k, v in dropped.items() if v}


def _pad(ids: list[int], width: int) -> list[int]:
    return ids + [ids[0]] * (width - len(ids))  # padding is masked out of the metric


def _mask(n: int, width: int) -> list[bool]:
    return [True] * n + [False] * (width - n)


def _describe_drops(dropped: dict[str, int]) -> str:
    return "; ".join(f"{v} dropped: {DROP_REASONS[k]}" for k, v in dropped.items())


# -- reading the file -------------------------------------------------------------------------------


def load_task_file(path: str | Path) -> CustomTask:
    """Parse a task file (.jsonl or .json) and its optional `<stem>.truth.json` sidecar."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskFileError(f"task file {path} does not exist")
    records = _read_records(path)
    pairs: list[Pair] = []
    truth: FileGroundTruth | None = None
    settings: dict[str, Any] = {}
    for where, record in records:
        if not isinstance(record, dict):
            raise TaskFileError(f"{path}:{where}: expected a JSON object, got {type(record).__name__}")
        if "ground_truth" in record:
            if truth is not None:
                raise TaskFileError(f"{path}:{where}: a second ground_truth record (first at "
                                    f"{truth.location})")
            truth = parse_ground_truth(record["ground_truth"], f"{path}:{where}")
        elif "task" in record and not _has_any(record, "positive"):
            if settings:
                raise TaskFileError(f"{path}:{where}: a second task settings record")
            settings = _parse_settings(record["task"], f"{path}:{where}")
        else:
            pairs.append(_parse_pair(record, path, where))
    sidecar = truth_sidecar(path)
    if sidecar.is_file():
        if truth is not None:
            raise TaskFileError(f"{path}: ground truth is given twice, at {truth.location} and in {sidecar}")
        truth = parse_ground_truth(_read_json(sidecar), str(sidecar))
    if not pairs:
        raise TaskFileError(f"{path}: no prompt pair in the file (each line needs 'positive', "
                            f"'negative' and 'answer', or 'clean', 'corrupt' and 'answers')")
    name = settings.get("name") or _stem(path) or "custom"
    if name in RESERVED_NAMES:
        name = f"custom-{name}"
    return CustomTask(path=path, pairs=pairs, name=name, truth=truth,
                      wrong_reduction=settings.get("wrong", "max"))


def truth_sidecar(path: Path) -> Path:
    """`task.jsonl` -> `task.truth.json` beside it."""
    return path.with_name(_stem(path) + ".truth.json")


def _stem(path: Path) -> str:
    """`my.task.jsonl` -> `my.task`."""
    return path.name.removesuffix(".jsonl").removesuffix(".json")


def _read_json(path: Path) -> Any:
    return read_json(path, TaskFileError)


def _read_records(path: Path) -> list[tuple[str, Any]]:
    """(where, record) for each record: JSON Lines, or a .json list / {"prompts": [...]} object."""
    if path.suffix == ".json":
        data = _read_json(path)
        if isinstance(data, dict) and isinstance(data.get("prompts"), list):
            extra = [(key, {key: data[key]}) for key in ("ground_truth", "task") if key in data]
            return [(f"record {i}", r) for i, r in enumerate(data["prompts"], 1)] + extra
        if isinstance(data, list):
            return [(f"record {i}", r) for i, r in enumerate(data, 1)]
        raise TaskFileError(f"{path}: expected a list of records or an object with a 'prompts' list")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise TaskFileError(f"{path}: not UTF-8 text") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise TaskFileError(f"{path}:line {number}: malformed JSON ({err.msg} at column {err.colno})"
                                ) from None
    return records


def _has_any(record: dict[str, Any], key: str) -> bool:
    return any(alias in record for alias in FIELDS[key])


def _get(record: dict[str, Any], key: str) -> Any:
    for alias in FIELDS[key]:
        if alias in record:
            return record[alias]
    return None


def _texts(value: Any, what: str, at: str, allow_empty: bool = False) -> tuple[str, ...]:
    """A string or a list of strings -> tuple of strings."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise TaskFileError(f"{at}: '{what}' must be a string or a list of strings")
    if not items and not allow_empty:
        raise TaskFileError(f"{at}: '{what}' is empty")
    return tuple(items)


def _parse_pair(record: dict[str, Any], path: Path, where: str) -> Pair:
    at = f"{path}:{where}"
    missing = [" or ".join(repr(a) for a in FIELDS[key]) for key in ("positive", "negative", "answer")
               if not _has_any(record, key)]
    if missing:
        raise TaskFileError(f"{at}: missing field {', '.join(missing)}")
    positive, negative = _get(record, "positive"), _get(record, "negative")
    for key, value in (("positive", positive), ("negative", negative)):
        if not isinstance(value, str) or not value:
            raise TaskFileError(f"{at}: '{key}' must be a non-empty string")
    answers = _texts(_get(record, "answer"), "answer", at)
    if _has_any(record, "wrong_answers"):
        wrong = _texts(_get(record, "wrong_answers"), "wrong_answers", at)
    elif _has_any(record, "negative_answer"):
        wrong = _texts(_get(record, "negative_answer"), "negative_answer", at)
    else:
        raise TaskFileError(f"{at}: missing field 'wrong_answers' or 'negative_answer' (the corrupted "
                            f"prompt's answer), needed for the logit difference")
    return Pair(where=where, positive=positive, negative=negative, answers=answers, wrong=wrong)


def _parse_settings(value: Any, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TaskFileError(f"{at}: 'task' must be an object like "
                            f"{{\"name\": \"my-task\", \"wrong\": \"max\"}}")
    unknown = set(value) - {"name", "wrong"}
    if unknown:
        raise TaskFileError(f"{at}: unknown task setting(s) {', '.join(sorted(unknown))} "
                            f"(known: name, wrong)")
    if "name" in value and (not isinstance(value["name"], str) or not value["name"].strip()):
        raise TaskFileError(f"{at}: task name must be a non-empty string")
    if "wrong" in value and value["wrong"] not in WRONG_REDUCTIONS:
        raise TaskFileError(f"{at}: 'wrong' must be one of {', '.join(WRONG_REDUCTIONS)}")
    return dict(value)


def _head(value: Any, at: str) -> Head:
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)):
        raise TaskFileError(f"{at}: a head must be [layer, head] with non-negative integers, got "
                            f"{json.dumps(value)}")
    return (int(value[0]), int(value[1]))


def parse_ground_truth(data: Any, location: str) -> FileGroundTruth:
    """{"heads": [[l, h], ...], "edges": [[[l, h], [l, h]], ...], "classes": {...}, "source": ...}."""
    if not isinstance(data, dict) or "heads" not in data:
        raise TaskFileError(f"{location}: ground truth must be an object with a 'heads' list")
    if not isinstance(data["heads"], list) or not data["heads"]:
        raise TaskFileError(f"{location}: ground-truth 'heads' must be a non-empty list of [layer, head]")
    heads = tuple(dict.fromkeys(_head(h, location) for h in data["heads"]))
    edges_raw = data.get("edges", [])
    if not isinstance(edges_raw, list):
        raise TaskFileError(f"{location}: ground-truth 'edges' must be a list of [[l, h], [l, h]]")
    edges = []
    for edge in edges_raw:
        if not isinstance(edge, list) or len(edge) != 2:
            raise TaskFileError(f"{location}: an edge must be [[l, h], [l, h]], got {json.dumps(edge)}")
        a, b = _head(edge[0], location), _head(edge[1], location)
        if a[0] >= b[0]:
            raise TaskFileError(f"{location}: edge {list(a)} -> {list(b)} must go from an earlier layer "
                                f"to a later one")
        edges.append((a, b))
    classes_raw = data.get("classes", {})
    if not isinstance(classes_raw, dict) or not all(isinstance(v, list) for v in classes_raw.values()):
        raise TaskFileError(f"{location}: ground-truth 'classes' must map names to lists of heads")
    classes = {str(k): tuple(_head(h, location) for h in v) for k, v in classes_raw.items()}
    return FileGroundTruth(heads=heads, edges=tuple(edges), classes=classes,
                           source=str(data.get("source", "") or location), location=location)
