"""Thread settings that stay fast beside other torch jobs on a shared CPU.

Why: torch's OpenMP workers spin (busy-wait) between parallel regions by default. Beside another torch
process doing the same, the spinning threads of both starve each other: on a 2-core machine
`circuits find --task ioi` on tiny-ioi took 40 s instead of 3 s (benchmarks/speed.py, contended
scenario). A passive wait policy (sleep, don't spin) removes the stall and costs nothing measurable on
gpt2-small-sized matmuls, so it is the default.

The policy is an environment variable read once, when torch loads its OpenMP runtime; `circuits/__init__`
therefore calls `set_env_defaults()` before any of our modules imports torch (the CLI and every library
entry point go through it). Where torch was imported first, without the variable, the runtime spins, and
`thread_policy` falls back to one thread for small problems.

Overrides, the usual ways: OMP_WAIT_POLICY / OMP_NUM_THREADS in the environment (never replaced), or
`torch.set_num_threads(n)` (then nothing here changes the thread count).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

ENV_DEFAULTS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
# Work below this many multiply-adds per forward token (≈ parameters touched) counts as small: one thread
# is as fast as two there, and it cannot stall on a descheduled partner. tiny-* models: ~0.3 M; gpt2: 85 M.
SMALL_WORK = 4_000_000

_state: dict[str, object] = {}


def set_env_defaults() -> None:
    """Set ENV_DEFAULTS where the user has not, and note whether torch's runtime will see them."""
    if "passive" in _state:
        return
    user_set = os.environ.get("OMP_WAIT_POLICY")
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # The policy only takes effect if torch (and its OpenMP runtime) was not loaded before this point.
    torch_loaded = "torch" in sys.modules
    _state["passive"] = (user_set or "").upper() == "PASSIVE" or (user_set is None and not torch_loaded)
    _state["threads_at_import"] = sys.modules["torch"].get_num_threads() if torch_loaded else None


def passive_wait() -> bool:
    """Whether torch's OpenMP workers sleep rather than spin while idle."""
    set_env_defaults()
    return bool(_state["passive"])


def user_chose_threads() -> bool:
    """OMP_NUM_THREADS / MKL_NUM_THREADS set, or torch.set_num_threads called since circuits loaded."""
    if "OMP_NUM_THREADS" in os.environ or "MKL_NUM_THREADS" in os.environ:
        return True
    import torch

    set_env_defaults()
    first = _state["threads_at_import"]  # None: torch was loaded after circuits (then its default holds)
    return first is not None and torch.get_num_threads() != first


def threads_for(work_per_token: int) -> int | None:
    """Thread count to use for a problem of this size, or None to leave torch's setting alone."""
    if passive_wait() or user_chose_threads():
        return None
    return 1 if work_per_token < SMALL_WORK else None


@contextmanager
def thread_policy(work_per_token: int) -> Iterator[None]:
    """Run the body with `threads_for(work_per_token)` threads (unchanged where that is None)."""
    import torch

    n = threads_for(work_per_token)
    if n is None or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def model_work(model: object) -> int:
    """Multiply-adds per token of a TransformerLens model, roughly: its non-embedding parameter count."""
    cfg = model.cfg  # type: ignore[attr-defined]
    attn = 4 * cfg.d_model * cfg.n_heads * cfg.d_head
    mlp = 0 if cfg.attn_only else 2 * cfg.d_model * (cfg.d_mlp or 4 * cfg.d_model)
    return int(cfg.n_layers * (attn + mlp))
