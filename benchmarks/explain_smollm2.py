"""`circuits explain` on SmolLM2-135M IOI: the circuit of EAP-IG (the leader at node level, issue 26)
explained head by head, and, beside it, the model's stored ablation circuit (the 9 heads whose mean
ablation costs most, circuits.truths) explained the same way.

Settings, fixed before any run: prompts seed 0, 10 training + 64 scoring pairs (EAP-IG scores on the 64,
`find --method eap-ig`'s defaults otherwise: m = 5, Otsu selection); the explanation on those same 64 pairs
(per-head SAEs with 16 latents, 200 steps: EAP-IG has no SAE of its own); one thread.

Published IOI classes (Wang et al. 2022 on GPT-2 small, REFERENCE.md §2) are read off the measurements by
rules written here before the run, since SmolLM2 has no published head list:
- name mover: kind "mover" and, of IO / S1 / S2, most attention on IO, at least ATTENDS (30 %);
- negative name mover: kind "negative mover", the same attention on IO;
- S-inhibition: kind "indirect", the same attention on S2 or S1 (from the answer position);
- a "suppressor" (raises the metric by lowering the wrong name's logit) is no class of the GPT-2 analysis;
- induction / duplicate token: these act at S2, not at the answer position, which is the only query this
  explanation reads, so they show as "indirect" reading some other position: no call is made for them;
- otherwise: none of the published classes.

    OMP_NUM_THREADS=1 python benchmarks/explain_smollm2.py [--n-score 64] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._report import emit  # noqa: E402
from circuits.discovery.config import FindConfig  # noqa: E402
from circuits.discovery.pipeline import find_circuit_with  # noqa: E402
from circuits.explain.config import ExplainConfig  # noqa: E402
from circuits.explain.explain import explain_circuit  # noqa: E402
from circuits.explain.roles import ATTENDS  # noqa: E402
from circuits.explain.run import explain_payload  # noqa: E402
from circuits.models import load_model  # noqa: E402
from tasks import get_task  # noqa: E402

MODEL, TASK, METHOD = "smollm2-135m", "ioi", "eap-ig"
OUT = ROOT / "benchmarks" / "results" / "explain_smollm2.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def published_class(head: dict[str, Any]) -> str:
    """The published IOI class a head's measurements match (the module docstring's rules)."""
    kind = head["role"]["kind"]
    named = {k: v for k, v in head["attention"].items() if k in ("IO", "S1", "S2")}
    top = max(named, key=lambda k: named[k]) if named else ""
    if not named or named[top] < ATTENDS:
        return "none of the published classes (from the answer position)"
    if kind == "mover" and top == "IO":
        return "name mover"
    if kind == "negative mover" and top == "IO":
        return "negative name mover"
    if kind == "indirect" and top in ("S1", "S2"):
        return "S-inhibition"
    return "none of the published classes (from the answer position)"


def summary(block: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per head: the role, the published class it matches, the main code."""
    rows = []
    for h in block["heads"]:
        main = h["codes"][0] if h["codes"] else None
        rows.append({"head": h["head"], "kind": h["role"]["kind"], "role": h["role"]["line"],
                     "published_class": published_class(h),
                     "main_code": None if main is None else {
                         k: main[k] for k in ("code", "n_positive", "n_negative", "positive_unique",
                                              "top_position", "top_share", "direct_effect")}
                     | {"patch_drop_fraction": main["patch"]["drop_fraction"],
                        "example": (main["examples"] or [None])[0]}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-score", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_task(TASK)
    loaded = load_model(MODEL, task, 0)
    config = FindConfig(n_train=10, n_score=args.n_score, seed=0)
    log(f"{METHOD} on {args.n_score} prompts")
    t0 = time.perf_counter()
    result = find_circuit_with(task, loaded, config, METHOD)
    find_seconds = time.perf_counter() - t0
    payload = result.to_json()
    log(f"circuit {payload['circuit']}; explaining")
    explain_config = ExplainConfig(n_prompts=args.n_score)
    explained = explain_payload(task, loaded, payload, explain_config)
    truth = loaded.ground_truth.get(TASK)
    truth_block = None
    if truth is not None:
        log(f"explaining the stored ablation circuit {sorted(truth.heads)}")
        truth_block = explain_circuit(task, loaded, list(truth.heads), seed=0, n_train=10,
                                      config=explain_config)
    report = {
        "task": TASK, "model": loaded.name, "method": METHOD,
        "settings": {"n_train": 10, "n_score": args.n_score, "seed": 0, "explain": vars(explain_config),
                     "threads": 1},
        "circuit": payload["circuit"], "find_seconds": find_seconds,
        "evaluation": {k: (payload["evaluation"] or {}).get(k) for k in ("roc_auc", "precision", "recall",
                                                                         "truth_source")},
        "roles": summary(explained),
        "explain": explained,
        "truth_circuit": None if truth is None else {
            "heads": [list(h) for h in sorted(truth.heads)], "source": truth.source,
            "roles": summary(truth_block or {"heads": []}), "explain": truth_block},
        "published_rules": __doc__.split("rules written here before the run, since SmolLM2 has no published "
                                         "head list:\n")[1].split("\n\n")[0],
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
