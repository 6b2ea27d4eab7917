"""With CIRCUITS_BOUND_HEAP=1, find fixes glibc's mmap threshold on CPU (pipeline.bound_cpu_heap), so peak
memory stays flat in the number of scoring batches; the measurement itself is benchmarks/memory.py."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from circuits.discovery import pipeline

ROOT = Path(__file__).resolve().parent.parent


def _glibc() -> bool:
    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_bound_cpu_heap_sets_threshold_once() -> None:
    code = ("from circuits.discovery import pipeline as p; a = p.bound_cpu_heap(); b = p.bound_cpu_heap(); "
            "print(a, b)")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         check=True, timeout=120).stdout.split()
    assert out == ["True", "True"]


def test_bound_cpu_heap_respects_user_setting() -> None:
    code = "from circuits.discovery import pipeline as p; print(p.bound_cpu_heap())"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         check=True, timeout=120).stdout.split()
    assert out == ["False"]


def test_threshold_is_below_per_batch_tensors() -> None:
    # gpt2-small at 128 prompts x 16 tokens: residual [128, 16, 768] float32 = 6 MiB must be mapped
    assert pipeline.MMAP_THRESHOLD <= 128 * 16 * 768 * 4
