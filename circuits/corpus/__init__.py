"""A real text corpus built offline (circuits.corpus.build) and activations of a model streamed over it.

The activation stream is the feature-SAE core's `ModelActivationSource` (circuits/sae/sources.py: token
contexts packed from documents, a fixed-size shuffle buffer refilled from the model); this package only
adds the corpus and a plain iterator over shuffled batches, so there is one implementation of each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuits.corpus.build import (
    CORPUS_MANIFEST,
    CorpusSource,
    build_corpus,
    corpus_files,
    count_tokens,
    distribution_sources,
    read_manifest,
    stdlib_source,
    verify_corpus,
)
from circuits.errors import CircuitsError
from circuits.sae.sources import ModelActivationSource


class CallableTokenizer:
    """Adapts a plain `text -> token ids` callable to the `encode(text, prepend_bos)` interface."""

    def __init__(self, fn: Callable[[str], list[int]], bos_token_id: int):
        self.fn, self.bos_token_id = fn, int(bos_token_id)

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]:
        ids = [int(i) for i in self.fn(text)]
        return [self.bos_token_id, *ids] if prepend_bos else ids


def activation_batches(
    model: Any,
    tokenizer: Any,
    corpus: Path,
    hook_name: str,
    *,
    batch_size: int = 4096,
    context_size: int = 128,
    model_batch: int = 16,
    buffer_rows: int = 65536,
    seed: int = 0,
    keep_bos: bool = False,
    bos_token_id: int | None = None,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[Tensor]:
    """Shuffled activation batches [batch_size, d_in] at `hook_name` of a HookedTransformer over a corpus
    (a file or a built corpus directory), never holding more than about `buffer_rows` rows.

    `tokenizer` is one with `encode(text, prepend_bos=True)` and `bos_token_id` (circuits.tokenizer), or
    a plain callable text -> ids together with `bos_token_id`. The stream cycles through the corpus
    (endless unless max_batches); rows from BOS positions are dropped unless keep_bos."""
    if batch_size < 1 or buffer_rows < 1:
        raise CircuitsError("batch_size and buffer_rows must be positive")
    if not hasattr(tokenizer, "encode"):
        if not callable(tokenizer) or bos_token_id is None:
            raise CircuitsError("tokenizer must have encode(), or be a callable given with bos_token_id")
        tokenizer = CallableTokenizer(tokenizer, bos_token_id)
    source = ModelActivationSource(
        model, tokenizer, hook_name, Path(corpus), context_size=context_size, model_batch=model_batch,
        buffer_rows=max(buffer_rows, batch_size), seed=seed, keep_bos=keep_bos, device=device,
    )
    served = 0
    while max_batches is None or served < max_batches:
        yield source.next_batch(batch_size)[0]
        served += 1


__all__ = [
    "CORPUS_MANIFEST",
    "CallableTokenizer",
    "CorpusSource",
    "activation_batches",
    "build_corpus",
    "corpus_files",
    "count_tokens",
    "distribution_sources",
    "read_manifest",
    "stdlib_source",
    "verify_corpus",
]
