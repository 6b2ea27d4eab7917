"""Activations of a real language model over the offline corpus, collected once and cached on disk, so
that several analyses (the SmolLM2 benchmarks, `circuits sae absorption --model ...`) share one pass.

Why not the streamed source (circuits.sae.sources.ModelActivationSource): it reads the corpus in order,
so a short run sees only the first sources; here contexts are drawn uniformly from the WHOLE corpus
(seeded), which a few hundred contexts need to be representative, and every position's activation is
kept with its tokens, so the same contexts serve SAE training (non-BOS rows), held-out metrics and CE
loss recovered (the tokens and the residual at the hook).

Cache: `$CIRCUITS_CACHE` (default ~/.cache/circuits) / activations / <key>.safetensors, the key a hash of
the corpus's content hash, model, hook, context size, number of contexts and seed. The corpus itself
lives at `$CIRCUITS_CORPUS` (default ~/.cache/circuits/corpus) and is built there when missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuits.atomic import atomic_write
from circuits.errors import CircuitsError
from circuits.progress import Progress
from circuits.sae.sources import SINK_NORM_RATIO

CORPUS_ENV = "CIRCUITS_CORPUS"
CACHE_ENV = "CIRCUITS_CACHE"
# A smaller corpus than the full build (~64 M characters): 400 k characters from each of the ~126 sources,
# 8 M in all (about 2 M SmolLM2 tokens, ~200 s to build on 2 cores): what a few hundred contexts need.
DEFAULT_MAX_CHARS = 8_000_000
DEFAULT_MAX_CHARS_PER_SOURCE = 400_000


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "circuits").expanduser()


def corpus_dir(path: Path | str | None = None) -> Path:
    """The corpus directory: `path`, else $CIRCUITS_CORPUS, else ~/.cache/circuits/corpus."""
    if path is not None:
        return Path(path).expanduser()
    return Path(os.environ.get(CORPUS_ENV) or cache_root() / "corpus").expanduser()


def ensure_corpus(path: Path | str | None = None, max_chars: int | None = DEFAULT_MAX_CHARS,
                  max_chars_per_source: int | None = DEFAULT_MAX_CHARS_PER_SOURCE,
                  progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """Reuse the corpus at `corpus_dir(path)` (whatever its size) or build it there; returns the directory
    and its manifest."""
    from circuits.corpus import CORPUS_MANIFEST, build_corpus, read_manifest

    out = corpus_dir(path)
    if (out / CORPUS_MANIFEST).is_file():
        return out, read_manifest(out)
    manifest = build_corpus(out, max_chars=max_chars, max_chars_per_source=max_chars_per_source,
                            progress=progress)
    return out, manifest


@dataclass
class ActivationSet:
    """Every position's activation at one hook for contexts sampled from a corpus."""

    tokens: Tensor  # [n_ctx, seq] int64
    acts: Tensor  # [n_ctx, seq, d] float32, BOS positions included
    bos_token_id: int
    meta: dict[str, Any]

    @property
    def d_in(self) -> int:
        return int(self.acts.shape[-1])

    @property
    def sink_norm(self) -> float:
        """Rows above this norm are attention sinks (SINK_NORM_RATIO x the median non-BOS row norm)."""
        norms = self.acts[self.tokens != self.bos_token_id].norm(dim=-1)
        return float(norms.median()) * SINK_NORM_RATIO

    def keep_mask(self, contexts: slice = slice(None)) -> Tensor:
        """[c, seq] True where a row is an SAE row: not BOS and not an attention sink."""
        norms = self.acts[contexts].norm(dim=-1)
        return (self.tokens[contexts] != self.bos_token_id) & (norms <= self.sink_norm)

    def rows(self, contexts: slice = slice(None)) -> Tensor:
        """SAE rows (not BOS, not attention sinks) of the chosen contexts -> [n_rows, d]."""
        return self.acts[contexts][self.keep_mask(contexts)]

    def split(self, n_eval_contexts: int) -> tuple[Tensor, Tensor]:
        """(train rows, held-out rows): the last n_eval_contexts contexts are held out (contexts are
        already in random order)."""
        n = self.tokens.shape[0]
        if not 0 < n_eval_contexts < n:
            raise CircuitsError(f"n_eval_contexts must be between 1 and {n - 1}, got {n_eval_contexts}")
        return self.rows(slice(0, n - n_eval_contexts)), self.rows(slice(n - n_eval_contexts, n))

    def eval_tokens(self, n_eval_contexts: int, n: int) -> Tensor:
        """The first n held-out contexts' tokens [n, seq] (for CE loss recovered)."""
        first = self.tokens.shape[0] - n_eval_contexts
        return self.tokens[first:first + min(n, n_eval_contexts)]

    def summary(self) -> dict[str, Any]:
        """Row counts for the record: positions, BOS, attention-sink rows left out."""
        bos = self.tokens == self.bos_token_id
        keep = self.keep_mask()
        return {"positions": int(bos.numel()), "bos_rows": int(bos.sum()),
                "sink_rows_excluded": int((~bos & ~keep).sum()), "sink_norm": self.sink_norm,
                "sink_rows_at_position_0": int((~bos[:, 0] & ~keep[:, 0]).sum()),
                "median_row_norm": self.sink_norm / SINK_NORM_RATIO}


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cached_tensors(kind: str, key_parts: dict[str, Any], compute: Callable[[], dict[str, Tensor]],
                   cache: Path | None = None) -> tuple[dict[str, Tensor], dict[str, Any], bool]:
    """Tensors keyed by `key_parts` under cache/<kind>/<hash>.safetensors, computed (and written
    atomically) when absent. Returns (tensors, key_parts as stored, whether it came from the cache)."""
    from safetensors.torch import load_file, save_file

    directory = (cache or cache_root()) / kind
    path = directory / f"{_key(key_parts)}.safetensors"
    if path.is_file():
        return load_file(str(path)), key_parts, True
    tensors = compute()
    directory.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, tmp,
                                             metadata={"key": json.dumps(key_parts, sort_keys=True)}))
    return tensors, key_parts, False


def corpus_hash(corpus: Path) -> str:
    """A built corpus directory's content hash (its manifest's), or a single file's sha256."""
    corpus = Path(corpus)
    if corpus.is_dir():
        from circuits.corpus import read_manifest

        return str(read_manifest(corpus)["sha256"])
    if not corpus.is_file():
        raise CircuitsError(f"corpus {corpus} does not exist")
    return hashlib.sha256(corpus.read_bytes()).hexdigest()


def sample_contexts(corpus: Path, tokenizer: Any, n_contexts: int, context_size: int, seed: int
                    ) -> tuple[Tensor, int]:
    """n_contexts packed contexts [n, context_size] drawn without replacement, uniformly from the whole
    corpus (packing: circuits.sae.sources.iter_token_contexts); also the number of contexts available."""
    from circuits.sae.sources import iter_token_contexts

    every = [ctx for ctx in iter_token_contexts(corpus, tokenizer, context_size) if len(ctx) == context_size]
    if len(every) < n_contexts:
        raise CircuitsError(f"corpus {corpus} has {len(every)} contexts of {context_size} tokens, "
                            f"fewer than the {n_contexts} asked for")
    chosen = random.Random(seed).sample(range(len(every)), n_contexts)
    return torch.tensor([every[i] for i in chosen], dtype=torch.long), len(every)


def collect_activations(model: Any, tokenizer: Any, corpus: Path, hook_name: str, *, model_name: str,
                        n_contexts: int = 800, context_size: int = 128, seed: int = 0, model_batch: int = 8,
                        cache: Path | None = None, progress: Progress | None = None) -> ActivationSet:
    """Activations at `hook_name` of `model` for n_contexts contexts of the corpus (a built corpus
    directory or one text/JSONL file), from the cache when this exact request (corpus content hash
    included) was collected before."""
    from circuits.sae.sources import check_hook, hook_activations

    check_hook(model, hook_name)
    corpus = Path(corpus)
    bos = int(tokenizer.bos_token_id)
    key = {"corpus_sha256": corpus_hash(corpus), "model": model_name, "hook": hook_name,
           "n_contexts": n_contexts, "context_size": context_size, "seed": seed, "format": 1}
    available: list[int] = []

    def compute() -> dict[str, Tensor]:
        tokens, n_available = sample_contexts(corpus, tokenizer, n_contexts, context_size, seed)
        available.append(n_available)
        parts = []
        for start in range(0, n_contexts, model_batch):  # a loop over model batches
            parts.append(hook_activations(model, tokens[start:start + model_batch], hook_name))
            if progress:
                progress("activations", min(start + model_batch, n_contexts), n_contexts)
        return {"tokens": tokens, "acts": torch.cat(parts)}

    tensors, _, cached = cached_tensors("activations", key, compute, cache)
    meta = {**key, "from_cache": cached, "contexts_in_corpus": available[0] if available else None}
    return ActivationSet(tokens=tensors["tokens"], acts=tensors["acts"].float(), bos_token_id=bos, meta=meta)
