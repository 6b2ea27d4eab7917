"""Thread policy: a passive OpenMP wait by default, set before torch loads; the user's settings win."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from circuits import threads

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**base, **env}, check=True)
    return res.stdout.strip()


def test_importing_circuits_first_makes_the_wait_passive() -> None:
    code = "import circuits, os; from circuits.threads import passive_wait; " \
           "print(os.environ['OMP_WAIT_POLICY'], passive_wait())"
    assert _python(code) == "PASSIVE True"


def test_user_environment_wins() -> None:
    code = "import circuits, os; from circuits.threads import passive_wait; " \
           "print(os.environ['OMP_WAIT_POLICY'], passive_wait())"
    assert _python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE False"


def test_torch_loaded_first_falls_back_to_one_thread_for_small_problems() -> None:
    code = ("import torch; torch.set_num_threads(2); import circuits; "
            "from circuits.threads import threads_for; print(threads_for(1000), threads_for(10**9))")
    assert _python(code) == "1 None"


def test_thread_policy_leaves_an_explicit_choice_alone(monkeypatch) -> None:
    monkeypatch.setitem(threads._state, "passive", False)
    monkeypatch.setitem(threads._state, "threads_at_import", torch.get_num_threads() + 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with threads.thread_policy(1000):
        assert torch.get_num_threads() == before  # the user called torch.set_num_threads: kept
    monkeypatch.setitem(threads._state, "threads_at_import", before)
    torch.set_num_threads(2)
    monkeypatch.setitem(threads._state, "threads_at_import", 2)
    with threads.thread_policy(1000):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)
