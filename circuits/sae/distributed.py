"""Process-group setup for training under `torchrun` (gloo on CPU, NCCL on GPUs).

`torchrun --nproc_per_node N $(which circuits) sae train ...` sets RANK / WORLD_SIZE / MASTER_ADDR; the
trainer then wraps the SAE in DistributedDataParallel (see circuits/sae/trainer.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@contextmanager
def distributed_context(device: str = "cpu") -> Iterator[tuple[int, int]]:
    """Initialise the default process group when launched by torchrun; yields (rank, world_size).
    A no-op (0, 1) in an ordinary process. The group is destroyed on exit."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        if dist.is_available() and dist.is_initialized():
            yield dist.get_rank(), dist.get_world_size()
        else:
            yield 0, 1
        return
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    try:
        yield dist.get_rank(), dist.get_world_size()
        dist.barrier()  # leave together: a rank tearing down gloo while another still talks aborts
    finally:
        dist.destroy_process_group()


def device_for_rank(device: str) -> str:
    """'cuda' under torchrun means this rank's GPU (LOCAL_RANK)."""
    if device == "cuda" and launched_by_torchrun():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
