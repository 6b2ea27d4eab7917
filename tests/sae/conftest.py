"""Shared fixtures: a tiny 2-layer model saved as a checkpoint directory and small corpora."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = (
    "the cat dog bird sees chases likes a big small red blue runs sleeps and then "
    "quickly slowly house tree park near far"
).split()


def make_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "." for _ in range(n)
    ]


@pytest.fixture(scope="session")
def corpus_txt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(make_sentences(400)) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": s}) for s in make_sentences(400, seed=1)) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from circuits._compat import HookedTransformer, HookedTransformerConfig
    from circuits.models import save_checkpoint
    from circuits.tokenizer import WordTokenizer

    tok = WordTokenizer.from_texts(
        make_sentences(400) + make_sentences(400, seed=1), extra=[w.capitalize() for w in WORDS]
    )
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=64,
        d_vocab=tok.vocab_size,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
        device="cpu",
        default_prepend_bos=False,
    )
    torch.manual_seed(0)
    model = HookedTransformer(cfg)
    directory = tmp_path_factory.mktemp("model") / "tiny"
    save_checkpoint(directory, model, tok, {"name": "tiny-test"})
    return directory
