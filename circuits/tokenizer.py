"""Tokenizers the pipeline can use: a word-level one for offline task models, and an adapter over
Hugging Face tokenizers so hub models go through the same two calls (`encode`, `decode`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

# Pieces: a newline, a 4-space indent, two-digit chunks (so "1705" -> "17" "05", as in GPT-2),
# single digits, words (with their leading space), and single punctuation marks.
_PIECE = re.compile(r"\n| {4}| ?\d\d| ?\d| ?[A-Za-z_]+| ?[^\sA-Za-z0-9_]")

BOS, PAD, UNK = "<bos>", "<pad>", "<unk>"


class Tokenizer(Protocol):
    """What tasks and the pipeline need from any tokenizer."""

    @property
    def bos_token_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def split_pieces(text: str) -> list[str]:
    """Split text into word-level pieces; raises when some characters match no piece."""
    pieces = _PIECE.findall(text)
    if sum(len(p) for p in pieces) != len(text):
        raise ValueError(f"text has characters the word tokenizer cannot split: {text!r}")
    return pieces


class WordTokenizer:
    """A closed-vocabulary word tokenizer: every piece a task can produce is one token.

    Unknown pieces raise instead of silently mapping to <unk>, so a prompt that the model could
    not have seen is an error, not a quiet corruption of the data.
    """

    def __init__(self, vocab: list[str]):
        if vocab[:3] != [BOS, PAD, UNK]:
            vocab = [BOS, PAD, UNK] + [v for v in vocab if v not in (BOS, PAD, UNK)]
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate entries")
        self.vocab: list[str] = vocab
        self.index: dict[str, int] = {v: i for i, v in enumerate(vocab)}
        self.bos_token_id = 0
        self.pad_token_id = 1
        self.unk_token_id = 2

    @classmethod
    def from_texts(cls, texts: Iterable[str], extra: Iterable[str] = ()) -> WordTokenizer:
        pieces: set[str] = set(extra)
        for text in texts:
            pieces.update(split_pieces(text))
        return cls(sorted(pieces))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __contains__(self, piece: str) -> bool:
        return piece in self.index

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]:
        ids = [self.bos_token_id] if prepend_bos else []
        for piece in split_pieces(text):
            if piece not in self.index:
                raise ValueError(f"piece {piece!r} is not in the tokenizer's vocabulary")
            ids.append(self.index[piece])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids if int(i) != self.bos_token_id)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "word", "vocab": self.vocab}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> WordTokenizer:
        data = json.loads(Path(path).read_text())
        if data.get("type") != "word" or not isinstance(data.get("vocab"), list):
            raise ValueError(f"{path} is not a word-tokenizer file")
        return cls(data["vocab"])


class HFTokenizer:
    """Adapter over a Hugging Face tokenizer (as attached to a HookedTransformer)."""

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer
        bos = hf_tokenizer.bos_token_id
        self.bos_token_id = int(bos if bos is not None else hf_tokenizer.eos_token_id)
        self.vocab_size = int(len(hf_tokenizer))

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]:
        ids = list(self.hf.encode(text, add_special_tokens=False))
        return ([self.bos_token_id] if prepend_bos else []) + ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids])
