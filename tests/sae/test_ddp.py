"""DistributedDataParallel with 2 CPU processes (gloo) under torchrun.

Two ranks with half of each global batch must equal one process with the whole batch (gradients are
averaged), resume must be exact under DDP too, and the CLI must run under torchrun. One case (~12 s)
runs in the fast suite; the others are marked slow.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from circuits.sae.sources import save_activations

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize("arch", ["relu", pytest.param("topk", marks=pytest.mark.slow)])
def test_two_processes_equal_one_and_resume_exactly(arch: str, tmp_path: Path) -> None:
    sys.path.insert(0, str(HERE))
    import ddp_worker

    res = _torchrun(str(HERE / "ddp_worker.py"), str(tmp_path), arch)
    assert res.returncode == 0, res.stderr[:6000]
    full = load_file(str(tmp_path / "full.safetensors"))
    resumed = load_file(str(tmp_path / "resumed.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)  # exact resume under DDP
    single = ddp_worker.trainer(arch, 0, 1)
    single.run()
    for k, v in single.sae.state_dict().items():
        assert torch.allclose(full[k], v, atol=1e-5), k  # 2 × half batch == 1 × whole batch


@pytest.mark.slow
def test_cli_under_torchrun(tmp_path: Path) -> None:
    acts = tmp_path / "acts.safetensors"
    save_activations(acts, torch.randn(400, 8, generator=torch.Generator().manual_seed(1)))
    res = _torchrun(
        "-m",
        "circuits.cli.sae",
        "train",
        "--data",
        str(acts),
        "--out",
        str(tmp_path / "sae"),
        "--arch",
        "batchtopk",
        "--k",
        "4",
        "--tokens",
        "1280",
        "--batch-size",
        "64",
        "--checkpoint-every",
        "5",
        "--json",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)  # only rank 0 prints
    assert summary["world_size"] == 2 and summary["steps"] == 20
    assert (tmp_path / "sae" / "cfg.json").is_file() and not (tmp_path / "sae" / "checkpoint.pt").exists()
