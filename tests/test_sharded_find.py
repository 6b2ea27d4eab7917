"""`circuits find` under torchrun with 2 CPU processes (gloo) equals the single-process run exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.sae.test_ddp import _free_port

ROOT = Path(__file__).resolve().parent.parent
FIND = ["-m", "circuits.cli.main", "find", "--task", "ioi", "--model", "tiny-ioi", "--n-score", "150",
        "--json"]


def _run(cmd: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout)  # one JSON object: only rank 0 prints
    out.pop("timings")
    return out


def test_two_ranks_equal_one_process() -> None:
    single = _run([sys.executable, *FIND])
    sharded = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *FIND])
    assert sharded["heads"] == single["heads"]  # node scores and selection
    assert sharded["edges"] == single["edges"]
    assert sharded == single
