"""Where training activations come from: an in-memory tensor, a saved activation file, or a model hook
run over a local text corpus (plain text, JSONL or a sharded corpus directory built by circuits.corpus;
streamed, batched, through a shuffle buffer).

Every source yields `[groups, batch, d_in]` float tensors and can save and restore its position
(`state_dict` / `load_state_dict`), which is what makes `--resume` exact. Under DDP a source serves
only its rank's share of each global batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from circuits.errors import CircuitsError, did_you_mean


class ActivationSource(Protocol):
    """What the trainer needs from a source of activations."""

    groups: int
    d_in: int

    def next_batch(self, batch_size: int) -> Tensor:
        """The next global batch of `batch_size` rows per group; returns this rank's share
        [groups, batch_size // world, d_in]."""
        ...

    def sample(self, n: int) -> Tensor:
        """Up to n rows per group [groups, n', d_in] for data-dependent initialisation; the same on
        every rank, and it does not move the stream's position."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _rank_slice(batch: Tensor, rank: int, world: int) -> Tensor:
    """Rows of the global batch [g, B, d] that belong to `rank`."""
    size = batch.shape[1]
    if size % world:
        raise CircuitsError(f"batch size {size} is not divisible by the number of processes {world}")
    per = size // world
    return batch[:, rank * per : (rank + 1) * per]


class TensorSource:
    """Minibatches from an in-memory tensor x [groups, n, d_in] (or [n, d_in]).

    The row order is an endless stream of per-epoch permutations drawn from `seed`, and batch t takes
    rows [t*B, (t+1)*B) of that stream, so the position (rows consumed) is the whole state. When
    n <= batch size every step is the full batch. Rows are shared across groups (row i of every group
    is drawn together), which suits per-head SAEs whose rows are prompts.
    """

    def __init__(self, x: Tensor, seed: int = 0, rank: int = 0, world: int = 1):
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3:
            raise CircuitsError(f"activations must be [groups, n, d_in] or [n, d_in], got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise CircuitsError("no activations to train on (0 rows)")
        if not torch.isfinite(x).all():
            raise CircuitsError("activations contain NaN or infinite values")
        self.x = x
        self.groups, self.n, self.d_in = (int(s) for s in x.shape)
        self.seed, self.rank, self.world = int(seed), int(rank), int(world)
        self.position = 0
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _epoch_perm(self, epoch: int) -> Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=gen)
            self._perm_epoch = epoch
        return self._perm

    def _indices(self, start: int, count: int) -> Tensor:
        out, pos = [], start
        while count > 0:
            epoch, offset = divmod(pos, self.n)
            take = min(count, self.n - offset)
            out.append(self._epoch_perm(epoch)[offset : offset + take])
            pos, count = pos + take, count - take
        return torch.cat(out)

    def next_batch(self, batch_size: int) -> Tensor:
        if batch_size >= self.n:  # full batch, in row order
            return _rank_slice(self.x, self.rank, self.world) if self.world > 1 else self.x
        idx = self._indices(self.position, batch_size)
        self.position += batch_size
        return _rank_slice(self.x[:, idx], self.rank, self.world)

    def sample(self, n: int) -> Tensor:
        if n >= self.n:
            return self.x
        gen = torch.Generator().manual_seed(self.seed * 7919 + 17)
        return self.x[:, torch.randperm(self.n, generator=gen)[:n]]

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


# ---- saved activation files ------------------------------------------------------------------------
ACTIVATION_KEY = "activations"


def save_activations(path: Path, acts: Tensor, meta: dict[str, str] | None = None) -> None:
    """Write activations [n, d_in] or [groups, n, d_in] as safetensors (key 'activations')."""
    from safetensors.torch import save_file

    from circuits.atomic import atomic_write

    tensors = {ACTIVATION_KEY: acts.detach().contiguous().cpu()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta or {}))


def load_activations(path: Path) -> Tensor:
    """Read a saved activation file: .safetensors (key 'activations', or its only tensor) or .npy
    (loaded without pickle). Returns [groups, n, d_in] float32."""
    path = Path(path)
    if not path.is_file():
        raise CircuitsError(f"activation file {path} does not exist")
    try:
        if path.suffix == ".npy":
            arr = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if ACTIVATION_KEY in tensors:
                arr = tensors[ACTIVATION_KEY]
            elif len(tensors) == 1:
                arr = next(iter(tensors.values()))
            else:
                raise CircuitsError(f"{path}: several tensors and none named '{ACTIVATION_KEY}'")
    except CircuitsError:
        raise
    except Exception as err:  # numpy / safetensors raise assorted errors on corrupt files
        raise CircuitsError(
            f"{path}: not a readable activation file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if arr.dim() == 2:
        arr = arr.unsqueeze(0)
    if arr.dim() != 3 or not arr.is_floating_point():
        raise CircuitsError(
            f"{path}: expected float activations [n, d_in] or [groups, n, d_in], "
            f"got {tuple(arr.shape)} {arr.dtype}"
        )
    return arr.float()


# ---- text corpora -----------------------------------------------------------------------------------
def iter_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """Stream documents from a local corpus: JSONL (one object per line, `text_field`) when the file
    ends in .jsonl/.json, else plain text with one document per non-empty line. A directory is a sharded
    corpus (circuits.corpus): its shards in the order of its corpus.json, else its sorted .jsonl/.txt."""
    path = Path(path)
    if path.is_dir():
        from circuits.corpus.files import corpus_files  # lazy: the corpus package imports this module

        for shard in corpus_files(path):
            yield from iter_documents(shard, text_field)
        return
    if not path.is_file():
        raise CircuitsError(f"corpus file {path} does not exist")
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    with path.open("r", encoding="utf-8", errors="strict") as handle:
        for lineno, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if not jsonl:
                yield line
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise CircuitsError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                raise CircuitsError(f"{path}:{lineno}: no string field '{text_field}'")
            yield obj[text_field]


def iter_token_contexts(
    path: Path,
    tokenizer: Any,
    context_size: int,
    text_field: str = "text",
    stats: dict[str, int] | None = None,
) -> Iterator[list[int]]:
    """Pack a corpus into token contexts of `context_size`: each document is encoded with BOS first and
    appended to one stream that is cut into full contexts; the last partial context is yielded only when
    the corpus gives no full one. Documents the tokenizer cannot encode (a word tokenizer's unknown
    pieces) are skipped and counted in stats['skipped_documents']."""
    if context_size < 2:
        raise CircuitsError(f"context size must be at least 2, got {context_size}")
    stats = stats if stats is not None else {}
    stats.setdefault("documents", 0)
    stats.setdefault("skipped_documents", 0)
    stream: list[int] = []
    emitted = 0
    for doc in iter_documents(path, text_field):
        try:
            ids = list(tokenizer.encode(doc, prepend_bos=True))
        except (ValueError, KeyError):
            stats["skipped_documents"] += 1
            continue
        stats["documents"] += 1
        stream.extend(ids)
        while len(stream) >= context_size:
            yield stream[:context_size]
            stream = stream[context_size:]
            emitted += 1
    if emitted == 0 and len(stream) >= 2:
        yield stream


def hook_layer(hook_name: str) -> int | None:
    """The block index in a TransformerLens hook name ('blocks.3.attn.hook_z' -> 3), else None."""
    parts = hook_name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def check_hook(model: Any, hook_name: str) -> None:
    """A clear error for a hook the model lacks or one whose activations are not [batch, pos, ...]."""
    if hook_name not in model.hook_dict:
        examples = [h for h in model.hook_dict if h.startswith("blocks.0.")][:6]
        near = did_you_mean(hook_name, model.hook_dict)
        raise CircuitsError(f"model has no hook '{hook_name}'"
                            + (near or f" (examples: {', '.join(examples)}, ...)"))
    if any(s in hook_name for s in ("hook_pattern", "hook_attn_scores")):
        raise CircuitsError(f"hook '{hook_name}' is indexed [batch, head, query, key], not by token position")


@torch.no_grad()
def hook_activations(model: Any, tokens: Tensor, hook_name: str, head_index: int | None = None) -> Tensor:
    """Activations of one hook for tokens [b, seq] -> [b, seq, d_in] (trailing dims flattened, or one
    head's slice of a [b, seq, head, d] hook when head_index is given)."""
    store: dict[str, Tensor] = {}

    def save(act: Tensor, hook: Any) -> None:
        store["act"] = act.detach()

    layer = hook_layer(hook_name)
    kwargs: dict[str, Any] = {"return_type": None}
    if layer is not None and layer + 1 < model.cfg.n_layers:
        kwargs = {"stop_at_layer": layer + 1}
    model.run_with_hooks(tokens, fwd_hooks=[(hook_name, save)], **kwargs)
    act = store["act"]
    if head_index is not None:
        if act.dim() != 4 or not 0 <= head_index < act.shape[2]:
            raise CircuitsError(f"hook '{hook_name}' has shape {tuple(act.shape)}: no head {head_index}")
        act = act[:, :, head_index]
    return act.reshape(act.shape[0], act.shape[1], -1).float()


# Rows whose norm exceeds this multiple of the batch's median row norm are attention-sink "massive
# activations" (SmolLM2-135M at block 12: ~24,000 against a median of ~145, at position 0 of every context
# and on some newlines). Left in, a handful of rows hold most of the variance of the SAE's inputs.
SINK_NORM_RATIO = 10.0


class ModelActivationSource:
    """Activations of one hook of a loaded model, streamed over a local text corpus.

    Contexts are read in corpus order (rank r of N takes every N-th context), run through the model in
    batches of `model_batch` contexts, flattened to rows (BOS positions dropped unless `keep_bos`), and
    pushed into a shuffle buffer of `buffer_rows` rows: when it falls below half, it is refilled and
    reshuffled, and batches are served from its front (the SAELens scheme). When the corpus ends, the
    next pass starts (counted in `passes`). State = contexts read, pass, buffer, generator state.
    """

    groups = 1

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        hook_name: str,
        corpus: Path,
        context_size: int = 128,
        model_batch: int = 16,
        buffer_rows: int = 16384,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        text_field: str = "text",
        keep_bos: bool = False,
        head_index: int | None = None,
        device: str | torch.device = "cpu",
        sink_norm_ratio: float | None = SINK_NORM_RATIO,
    ):
        check_hook(model, hook_name)
        n_ctx = int(model.cfg.n_ctx)
        if context_size > n_ctx:
            raise CircuitsError(f"context size {context_size} exceeds the model's n_ctx={n_ctx}")
        self.model, self.tokenizer, self.hook_name = model, tokenizer, hook_name
        self.corpus, self.context_size, self.text_field = Path(corpus), int(context_size), text_field
        self.model_batch, self.buffer_rows = max(1, model_batch), max(2, buffer_rows)
        self.seed, self.rank, self.world = int(seed), int(rank), int(world)
        self.keep_bos, self.head_index, self.device = keep_bos, head_index, device
        self.sink_norm_ratio = sink_norm_ratio
        self.bos = int(getattr(tokenizer, "bos_token_id", -1))
        self.stats: dict[str, int] = {}
        first = self._first_contexts(1)
        if not first:
            raise CircuitsError(
                f"corpus {self.corpus} has no usable text for this tokenizer "
                f"({self.stats.get('skipped_documents', 0)} documents skipped)"
            )
        probe = hook_activations(model, torch.tensor(first[:1], device=device), hook_name, head_index)
        self.d_in = int(probe.shape[-1])
        self.contexts_read = 0  # global context index of the next context (all ranks)
        self.passes = 0
        self._pass_start = 0  # contexts_read when the current pass began
        self.gen = torch.Generator().manual_seed(self.seed * 104_729 + self.rank)
        self.buffer = torch.empty(0, self.d_in)
        self._iter: Iterator[list[int]] | None = None

    # ---- the token stream -----------------------------------------------------------------------------
    def _contexts(self) -> Iterator[list[int]]:
        return iter_token_contexts(
            self.corpus, self.tokenizer, self.context_size, self.text_field, self.stats
        )

    def _first_contexts(self, n: int) -> list[list[int]]:
        out = []
        for ctx in self._contexts():
            out.append(ctx)
            if len(out) >= n:
                break
        return out

    def _next_context(self) -> list[int]:
        """The next context of the global stream (any rank), starting a new pass at the end."""
        for _ in range(2):
            if self._iter is None:
                self._iter = self._contexts()
                skip = self.contexts_read - self._pass_start
                for _ in range(skip):
                    next(self._iter)
            try:
                ctx = next(self._iter)
                self.contexts_read += 1
                return ctx
            except StopIteration:
                self._iter = None
                self.passes += 1
                self._pass_start = self.contexts_read
        raise CircuitsError(f"corpus {self.corpus} yields no contexts")

    def _rows(self, contexts: list[list[int]]) -> Tensor:
        """Model activations for contexts -> rows [n, d_in] (BOS positions dropped unless keep_bos)."""
        out = []
        by_len: dict[int, list[list[int]]] = {}
        for ctx in contexts:
            by_len.setdefault(len(ctx), []).append(ctx)
        for batch in by_len.values():
            tokens = torch.tensor(batch, device=self.device)
            acts = hook_activations(self.model, tokens, self.hook_name, self.head_index)  # [b, s, d]
            keep = torch.ones_like(tokens, dtype=torch.bool) if self.keep_bos else tokens != self.bos
            if self.sink_norm_ratio is not None and bool((tokens != self.bos).any()):
                # attention-sink rows would dominate FVU and the input scaling
                norms = acts.norm(dim=-1)  # [b, s]
                limit = float(norms[tokens != self.bos].median()) * self.sink_norm_ratio
                sinks = keep & (norms > limit)
                self.stats["sink_rows_dropped"] = self.stats.get("sink_rows_dropped", 0) + int(sinks.sum())
                keep = keep & ~sinks
            out.append(acts[keep].cpu())
        return torch.cat(out) if out else torch.empty(0, self.d_in)

    def _read_rows(self) -> Tensor:
        """One model batch of this rank's contexts."""
        mine: list[list[int]] = []
        while len(mine) < self.model_batch:
            index = self.contexts_read
            ctx = self._next_context()
            if index % self.world == self.rank:
                mine.append(ctx)
        return self._rows(mine)

    def _refill(self, target: int) -> None:
        parts = [self.buffer]
        rows = self.buffer.shape[0]
        while rows < target:
            new = self._read_rows()
            parts.append(new)
            rows += new.shape[0]
        buffer = torch.cat(parts)
        self.buffer = buffer[torch.randperm(buffer.shape[0], generator=self.gen)]

    # ---- the source protocol ------------------------------------------------------------------------------
    def next_batch(self, batch_size: int) -> Tensor:
        if batch_size % self.world:
            raise CircuitsError(f"batch size {batch_size} is not divisible by {self.world} processes")
        per = batch_size // self.world
        if self.buffer.shape[0] < max(per, self.buffer_rows // 2):
            self._refill(max(self.buffer_rows, 2 * per))
        batch, self.buffer = self.buffer[:per], self.buffer[per:]
        return batch.unsqueeze(0)

    def sample(self, n: int) -> Tensor:
        rows, parts = 0, []
        contexts = self._contexts()
        while rows < n:
            chunk = [c for _, c in zip(range(self.model_batch), contexts, strict=False)]
            if not chunk:
                break
            part = self._rows(chunk)
            parts.append(part)
            rows += part.shape[0]
        return torch.cat(parts)[:n].unsqueeze(0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "contexts_read": self.contexts_read,
            "passes": self.passes,
            "pass_start": self._pass_start,
            "buffer": self.buffer.clone(),
            "rng": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.contexts_read = int(state["contexts_read"])
        self.passes = int(state["passes"])
        self._pass_start = int(state["pass_start"])
        self.buffer = state["buffer"].clone()
        self.gen.set_state(state["rng"])
        self._iter = None


def token_batches(
    path: Path, tokenizer: Any, context_size: int, n_contexts: int, text_field: str = "text"
) -> Tensor:
    """The first n_contexts full contexts of a corpus as tokens [n, context_size] (for evaluation)."""
    out: list[list[int]] = []
    for ctx in iter_token_contexts(path, tokenizer, context_size, text_field):
        if len(ctx) != context_size and out:
            break
        out.append(ctx)
        if len(out) >= n_contexts:
            break
    if not out:
        raise CircuitsError(f"corpus {path} has no usable text for this tokenizer")
    length = min(len(c) for c in out)
    return torch.tensor([c[:length] for c in out])
