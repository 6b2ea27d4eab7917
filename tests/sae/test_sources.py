"""Activation sources: in-memory minibatching, DDP shares, corpora, model hooks, activation files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from circuits.errors import CircuitsError
from circuits.models import load_model
from circuits.sae import SAEConfig, TrainConfig, Trainer, make_sae
from circuits.sae.sources import (
    ModelActivationSource,
    TensorSource,
    hook_activations,
    iter_documents,
    iter_token_contexts,
    load_activations,
    save_activations,
    token_batches,
)

HOOK = "blocks.0.hook_resid_post"


def test_tensor_source_epochs_cover_every_row_once() -> None:
    x = torch.arange(30, dtype=torch.float32).reshape(1, 30, 1)
    src = TensorSource(x, seed=3)
    rows = torch.cat([src.next_batch(10)[0, :, 0] for _ in range(3)])
    assert sorted(rows.tolist()) == list(range(30))
    more = torch.cat([src.next_batch(10)[0, :, 0] for _ in range(3)])
    assert sorted(more.tolist()) == list(range(30)) and not torch.equal(rows, more)


def test_tensor_source_rank_shares_make_the_global_batch() -> None:
    x = torch.randn(2, 50, 3)
    whole = TensorSource(x, seed=1).next_batch(8)
    parts = [TensorSource(x, seed=1, rank=r, world=2).next_batch(8) for r in range(2)]
    assert torch.equal(torch.cat(parts, dim=1), whole)


def test_tensor_source_rejects_bad_input() -> None:
    with pytest.raises(CircuitsError, match="0 rows"):
        TensorSource(torch.zeros(1, 0, 3))
    with pytest.raises(CircuitsError, match="NaN"):
        TensorSource(torch.tensor([[float("nan"), 1.0]]))


def test_corpus_readers(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\n\n second doc\n")
    assert list(iter_documents(txt)) == ["first doc", " second doc"]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"body": "two", "text": "three"}) + "\n")
    assert list(iter_documents(jsonl)) == ["one", "three"]
    with pytest.raises(CircuitsError, match="no string field 'body'"):
        list(iter_documents(jsonl, text_field="body"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(CircuitsError, match="bad.jsonl:2: malformed JSON"):
        list(iter_documents(bad))
    with pytest.raises(CircuitsError, match="does not exist"):
        list(iter_documents(tmp_path / "missing.txt"))


def test_token_contexts_pack_documents_and_skip_unknown_words(tiny_model_dir: Path, tmp_path: Path) -> None:
    tok = load_model(str(tiny_model_dir)).tokenizer
    corpus = tmp_path / "c.txt"
    corpus.write_text("The cat sees the dog.\nZebra xylophone!\nA bird runs.\n")
    stats: dict[str, int] = {}
    ctx = list(iter_token_contexts(corpus, tok, 4, stats=stats))
    stream = tok.encode("The cat sees the dog.") + tok.encode("A bird runs.")
    assert ctx == [stream[i : i + 4] for i in range(0, len(stream) - len(stream) % 4, 4)]
    assert stats == {"documents": 2, "skipped_documents": 1}


def test_model_source_rows_and_bos(tiny_model_dir: Path, corpus_txt: Path) -> None:
    lm = load_model(str(tiny_model_dir))
    src = ModelActivationSource(
        lm.model, lm.tokenizer, HOOK, corpus_txt, context_size=16, model_batch=4, buffer_rows=256
    )
    assert src.d_in == 32 and src.groups == 1
    batch = src.next_batch(64)
    assert batch.shape == (1, 64, 32)
    # Rows are real activations of the hook at non-BOS positions of the first contexts (the buffer's
    # first fill reads 256 rows, fewer than 32 contexts' worth), shuffled.
    first = torch.tensor(list(iter_token_contexts(corpus_txt, lm.tokenizer, 16))[:32])
    acts = hook_activations(lm.model, first, HOOK)
    pool = acts[first != lm.tokenizer.bos_token_id]
    bos_rows = acts[first == lm.tokenizer.bos_token_id]
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.cdist(batch[0], pool, compute_mode=exact).amin(-1).max() < 1e-4
    assert torch.cdist(batch[0], bos_rows, compute_mode=exact).amin() > 1e-3  # BOS positions are dropped
    order = [int(torch.cdist(r[None], pool, compute_mode=exact).argmin()) for r in batch[0]]
    assert order != sorted(order)  # shuffled


def test_model_source_resume_is_exact(tiny_model_dir: Path, corpus_txt: Path) -> None:
    lm = load_model(str(tiny_model_dir))

    def source() -> ModelActivationSource:
        return ModelActivationSource(
            lm.model, lm.tokenizer, HOOK, corpus_txt, context_size=16, model_batch=4, buffer_rows=128, seed=2
        )

    a = source()
    ref = [a.next_batch(48) for _ in range(12)]  # crosses refills
    b = source()
    for _ in range(5):
        b.next_batch(48)
    state = b.state_dict()
    c = source()
    c.load_state_dict(state)
    for i in range(5, 12):
        assert torch.equal(c.next_batch(48), ref[i])


def test_model_source_training_with_resume(tiny_model_dir: Path, corpus_txt: Path, tmp_path: Path) -> None:
    lm = load_model(str(tiny_model_dir))

    def trainer(every: int = 0) -> Trainer:
        src = ModelActivationSource(
            lm.model, lm.tokenizer, HOOK, corpus_txt, context_size=16, model_batch=4, buffer_rows=128, seed=1
        )
        sae = make_sae(SAEConfig(d_in=32, d_sae=48, arch="topk", k=4), seed=0)
        return Trainer(
            sae,
            src,
            TrainConfig(
                steps=12,
                batch_size=32,
                normalize_inputs=True,
                init_rows=256,
                checkpoint_every=every,
                checkpoint_dir=str(tmp_path),
            ),
        )

    full = trainer()
    full.run()
    cut = trainer(every=5)
    cut.run(until=8)
    resumed = trainer()
    resumed.load_checkpoint(tmp_path / "checkpoint.pt")
    resumed.run()
    assert torch.equal(full.sae.W_dec, resumed.sae.W_dec) and torch.equal(full.sae.b_enc, resumed.sae.b_enc)


def test_model_source_errors(tiny_model_dir: Path, corpus_txt: Path, tmp_path: Path) -> None:
    lm = load_model(str(tiny_model_dir))
    with pytest.raises(CircuitsError, match="no hook 'blocks.9.hook_resid_post'"):
        ModelActivationSource(lm.model, lm.tokenizer, "blocks.9.hook_resid_post", corpus_txt)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CircuitsError, match="no usable text"):
        ModelActivationSource(lm.model, lm.tokenizer, HOOK, empty, context_size=16)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("Zebra xylophone quartz.\n")
    with pytest.raises(CircuitsError, match="1 documents skipped"):
        ModelActivationSource(lm.model, lm.tokenizer, HOOK, unknown, context_size=16)
    with pytest.raises(CircuitsError, match="n_ctx"):
        ModelActivationSource(lm.model, lm.tokenizer, HOOK, corpus_txt, context_size=1000)
    with pytest.raises(CircuitsError, match="not by token position"):
        ModelActivationSource(
            lm.model, lm.tokenizer, "blocks.0.attn.hook_pattern", corpus_txt, context_size=16
        )


def test_head_index_selects_one_head(tiny_model_dir: Path, corpus_txt: Path) -> None:
    lm = load_model(str(tiny_model_dir))
    tokens = token_batches(corpus_txt, lm.tokenizer, 8, 2)
    z = hook_activations(lm.model, tokens, "blocks.1.attn.hook_z")
    z2 = hook_activations(lm.model, tokens, "blocks.1.attn.hook_z", head_index=2)
    assert z.shape == (2, 8, 32) and z2.shape == (2, 8, 8)
    assert torch.equal(z.reshape(2, 8, 4, 8)[:, :, 2], z2)


def test_activation_files(tmp_path: Path) -> None:
    x = torch.randn(20, 5)
    save_activations(tmp_path / "a.safetensors", x)
    assert torch.equal(load_activations(tmp_path / "a.safetensors"), x[None])
    np.save(tmp_path / "b.npy", x.numpy())
    assert torch.equal(load_activations(tmp_path / "b.npy"), x[None])
    (tmp_path / "c.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CircuitsError, match="not a readable activation file"):
        load_activations(tmp_path / "c.safetensors")
    np.save(tmp_path / "d.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CircuitsError, match="not a readable activation file"):
        load_activations(tmp_path / "d.npy")  # pickled objects are refused
    np.save(tmp_path / "e.npy", np.arange(5))
    with pytest.raises(CircuitsError, match="expected float activations"):
        load_activations(tmp_path / "e.npy")


def test_model_source_batch_larger_than_buffer(tiny_model_dir: Path, corpus_txt: Path) -> None:
    lm = load_model(str(tiny_model_dir))
    src = ModelActivationSource(
        lm.model, lm.tokenizer, HOOK, corpus_txt, context_size=16, model_batch=2, buffer_rows=8
    )
    assert src.next_batch(100).shape == (1, 100, 32)
    assert src.next_batch(100).shape == (1, 100, 32)


def test_model_source_drops_attention_sink_rows(tiny_model_dir: Path, corpus_txt: Path) -> None:
    """Rows above sink_norm_ratio x the batch's median row norm are left out (and counted); None keeps all."""
    lm = load_model(str(tiny_model_dir))

    def rows(ratio: float | None) -> tuple[torch.Tensor, dict[str, int]]:
        src = ModelActivationSource(lm.model, lm.tokenizer, HOOK, corpus_txt, context_size=16, model_batch=4,
                                    buffer_rows=256, sink_norm_ratio=ratio)
        contexts = [src._next_context() for _ in range(4)]
        return src._rows(contexts), src.stats

    kept_all, _ = rows(None)
    kept_default, stats_default = rows(10.0)  # the default: the tiny model has no sinks, nothing dropped
    assert torch.equal(kept_all, kept_default) and stats_default.get("sink_rows_dropped", 0) == 0
    kept_half, stats_half = rows(1.0)  # everything above the median norm goes
    median = float(kept_all.norm(dim=-1).median())
    assert stats_half["sink_rows_dropped"] > 0
    assert len(kept_half) + stats_half["sink_rows_dropped"] == len(kept_all)
    assert float(kept_half.norm(dim=-1).max()) <= median + 1e-4
