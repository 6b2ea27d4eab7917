"""Run under torchrun by test_ddp.py: DDP training (full, interrupted + resumed) on fixed data.

Rank 0 writes the final weights of both runs to OUT/{full,resumed}.safetensors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from circuits.sae import SAEConfig, TrainConfig, Trainer, make_sae
from circuits.sae.distributed import distributed_context
from circuits.sae.sources import TensorSource


def data() -> torch.Tensor:
    return torch.randn(2, 96, 6, generator=torch.Generator().manual_seed(0)) * 2 + 1


def trainer(arch: str, rank: int, world: int, ckpt: Path | None = None) -> Trainer:
    kw = {"k": 3, "aux_k": 4} if arch in ("topk", "batchtopk") else {"l1_coefficient": 0.3}
    sae = make_sae(SAEConfig(d_in=6, d_sae=12, arch=arch, groups=2, **kw), seed=1)
    cfg = TrainConfig(
        steps=20,
        batch_size=32,
        lr=3e-3,
        seed=2,
        lr_decay_steps=5,
        sparsity_warmup_steps=4,
        normalize_inputs=True,
        dead_after_rows=64,
        checkpoint_every=5 if ckpt else 0,
        checkpoint_dir=str(ckpt) if ckpt else None,
    )
    return Trainer(sae, TensorSource(data(), seed=2, rank=rank, world=world), cfg)


def main(out: Path, arch: str) -> None:
    torch.set_num_threads(1)
    with distributed_context("cpu") as (rank, world):
        full = trainer(arch, rank, world)
        full.run()
        cut = trainer(arch, rank, world, out / "ckpt")
        cut.run(until=12)  # interrupted after the step-10 checkpoint
        resumed = trainer(arch, rank, world)
        resumed.load_checkpoint(out / "ckpt" / "checkpoint.pt")
        resumed.run()
        if rank == 0:
            for name, t in (("full", full), ("resumed", resumed)):
                state = {k: v.detach().contiguous() for k, v in t.sae.state_dict().items()}
                save_file(state, str(out / f"{name}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
    # Leave without running C++ static destructors: gloo's threads occasionally abort the process there
    # ("terminate called without an active exception") after every result is written; the test checks the
    # results, not torch's teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
