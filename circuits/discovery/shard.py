"""Discovery sharded over processes (torchrun): codes are per prompt, so ranks split the scoring batches.

Each rank encodes its share of the batches (the same batches a single process would run, so every
prompt's codes are computed exactly as there), the SAE is trained once on rank 0 and broadcast, and the
code table [rows, head] is summed with all_reduce (rows a rank did not run are 0). Edge scores need
per-prompt joint codes, and the table is small (rows x heads integers), so the table itself is summed
rather than per-code counts (a joint head-pair count table would be pairs x codes^2).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from circuits.sae.distributed import rank_and_world


def my_batches(n_batches: int) -> range:
    """Indices of the batches this rank runs: round-robin, so shares differ by at most one batch."""
    rank, world = rank_and_world()
    return range(rank, n_batches, world)


def broadcast_from_rank0(tensors: list[torch.Tensor]) -> None:
    """Overwrite every tensor in place with rank 0's (a no-op in a single process)."""
    if rank_and_world()[1] == 1:
        return
    for t in tensors:
        dist.broadcast(t, src=0)


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """all_reduce SUM of t across ranks (t itself in a single process); on NCCL via this rank's GPU."""
    if rank_and_world()[1] == 1:
        return t
    device = t.device
    work = t.cuda() if dist.get_backend() == "nccl" else t
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(device)
