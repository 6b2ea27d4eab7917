"""Peak-memory estimate of `circuits find` / `circuits compare` from the run's sizes, checked before any work.

A run that would not fit is refused in one line (with the largest --n-score that fits) instead of being
killed by the OS after minutes. The estimate lives in `estimate_find_bytes` alone, so a change to the
pipeline's memory profile (e.g. streamed codes) is one edit here. It counts what the run adds on top of
the process as it stands after the model is loaded (the model's weights are already in memory then).

Calibrated on tiny-ioi with streamed codes: 21 KB measured per --n-score step (n_score 2,000 -> 8,000
added 126 MB of peak RSS) against 25 KB estimated; the edge-score chunk dominates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from circuits.discovery.config import FindConfig
from circuits.errors import CircuitsError

FLOAT, LONG = 4, 8  # bytes per float32 activation, per int64 code / token
EDGE_CHUNK = 4096  # pairs per chunk in discovery.scoring.edge_scores


@dataclass(frozen=True)
class ModelSizes:
    """What the estimate needs from a loaded model and its prompts."""

    n_layers: int
    n_heads: int
    d_head: int
    d_model: int
    seq: int  # tokens per prompt
    n_params: int = 0

    @classmethod
    def of(cls, loaded: object, seq: int) -> ModelSizes:
        cfg = loaded.model.cfg  # type: ignore[attr-defined]
        n_params = sum(p.numel() for p in loaded.model.parameters())  # type: ignore[attr-defined]
        return cls(int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_head), int(cfg.d_model), int(seq),
                   int(n_params))


def estimate_find_bytes(config: FindConfig, sizes: ModelSizes, streamed: bool = True) -> int:
    """Bytes a find run adds at its peak: tokens, SAE training activations, the forward pass of one batch,
    the codes of every scoring row and the edge-scoring chunk. streamed=False: the scoring activations are
    held whole (the pipeline before codes were computed inside the forward hook)."""
    heads = sizes.n_layers * sizes.n_heads
    d = sizes.d_model if config.hook == "result" else sizes.d_head
    rows_per_prompt = sizes.seq if config.position == "each" else 1
    score_rows = 2 * config.n_score * rows_per_prompt
    train_rows = config.n_train * rows_per_prompt
    tokens = 2 * (config.n_train + 2 * config.n_score) * sizes.seq * LONG  # prompt set + concatenation
    train_acts = 3 * train_rows * heads * d * FLOAT  # activations, their copy, the SAE's batch
    sae = 4 * config.resolved_d_sae() * d * FLOAT * (heads if config.sae == "per-head" else 1)  # + Adam
    batch = min(config.batch_size, 2 * config.n_score)
    forward = batch * sizes.seq * (  # residual streams, per-head outputs, attention patterns
        sizes.n_layers * (4 * sizes.d_model + 3 * sizes.n_heads * sizes.d_head + sizes.n_heads * sizes.seq)
        + heads * d) * FLOAT * 2
    if config.signal == "effect":  # the whole forward is kept for its backward (MLPs too), plus gradients
        # and one layer's per-position effects [batch, seq, head, d]
        forward = 4 * forward + 3 * batch * sizes.seq * sizes.n_heads * d * FLOAT
    codes = 3 * score_rows * heads * LONG  # codes, the summed copy, position offsets
    n_pairs = sum(sizes.n_heads * sizes.n_heads * (sizes.n_layers - 1 - layer) for layer in
                  range(sizes.n_layers)) if config.edges else 0
    edge = 4 * score_rows * min(n_pairs, EDGE_CHUNK) * LONG  # keys pos/neg, isin mask, unique
    held = score_rows * heads * d * FLOAT if not streamed else 0
    return tokens + train_acts + sae + forward + codes + edge + held


def largest_n_score(config: FindConfig, sizes: ModelSizes, budget: int, extra: int = 0) -> int:
    """The largest --n-score whose estimate (+ extra) fits in `budget` bytes (0 if none does)."""
    from dataclasses import replace

    lo, hi = 0, config.n_score
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_find_bytes(replace(config, n_score=mid), sizes) + extra <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def available_bytes() -> int:
    """Memory this process may still take: psutil's (or /proc/meminfo's) available memory, capped by a
    cgroup limit when one applies (a container)."""
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except ImportError:
        free = _meminfo_available()
    cgroup = _cgroup_room()
    return min(free, cgroup) if cgroup is not None else free


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def _cgroup_room() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if limit == "max":
        return None
    return max(0, int(limit) - int(used))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(config: FindConfig, sizes: ModelSizes, force: bool = False, extra: int = 0,
                 what: str = "this run") -> int:
    """Raise a one-line CircuitsError when the estimate (+ extra bytes) exceeds the available memory,
    unless `force`; returns the estimate. CIRCUITS_MEMORY_BYTES overrides the available memory (tests)."""
    need = estimate_find_bytes(config, sizes) + extra
    override = os.environ.get("CIRCUITS_MEMORY_BYTES")
    have = int(override) if override else available_bytes()
    if need > have and not force:
        fits = largest_n_score(config, sizes, have, extra)
        hint = f"the largest --n-score that fits is {fits}" if fits else "no --n-score fits"
        raise CircuitsError(f"{what} needs about {_gib(need)} of memory but {_gib(have)} is available; "
                            f"{hint} (or pass --force to run anyway)")
    return need


def estimate_baseline_bytes(n_prompts: int, sizes: ModelSizes) -> int:
    """Bytes the baselines of `circuits compare` add (patching, EAP, ACDC): a full activation cache with
    gradients of `n_prompts` prompt pairs, every layer's heads and residual stream."""
    per_token = sizes.n_layers * (4 * sizes.n_heads * sizes.d_head + 4 * sizes.d_model
                                  + sizes.n_heads * sizes.seq)
    return 2 * 2 * n_prompts * sizes.seq * per_token * FLOAT  # clean + corrupt, values + gradients
