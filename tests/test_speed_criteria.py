"""benchmarks/speed.py's `criteria`: issue 14's targets read from one report, met or not, None if not run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _speed():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("speed_benchmark", BENCH / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(find_over_forward: float, contended: float, peak_ratio: float | None, relu: float) -> dict:
    return {
        "ratios": {"find_over_forward_paired": find_over_forward},
        "contended": [{"model": "tiny-ioi", "ratios": {"find_contended_over_alone": contended}}],
        "memory": None if peak_ratio is None else {"peak_rss_max_over_min": peak_ratio},
        "sae_throughput": {"results": {"relu": {"ours_over_saelens": relu},
                                       "topk": {"ours_over_saelens": 2.0}}},
        "sharded_find": {"equal": True},
    }


def test_criteria_met_and_missed() -> None:
    criteria = _speed().criteria
    good = criteria(_report(1.05, 1.7, 1.02, 1.3))
    assert all(row["met"] for row in good.values()), good
    bad = criteria(_report(1.12, 2.5, 1.15, 1.1))
    assert [name for name, row in bad.items() if row["met"]] == ["2-process sharded find equals 1-process"]
    assert bad["min SAE throughput over SAELens >= 1.2"]["value"] == 1.1
    partial = criteria(_report(1.0, 1.0, None, 1.3))
    assert partial["peak RSS max/min over n_score sizes <= 1.1"] == {"value": None, "met": None}
