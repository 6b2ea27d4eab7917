"""The shared activation pass: contexts drawn from the whole corpus, cached by content, split by context."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.analysis.lm_activations import collect_activations, corpus_dir, ensure_corpus
from circuits.errors import CircuitsError
from circuits.models import load_model
from circuits.sae.sources import hook_activations


def test_collect_cache_and_split(tiny_model_dir: Path, corpus_txt: Path, tmp_path: Path) -> None:
    lm = load_model(str(tiny_model_dir))
    hook = "blocks.0.hook_resid_post"
    calls: list[tuple[str, int, int]] = []
    data = collect_activations(lm.model, lm.tokenizer, corpus_txt, hook, model_name="tiny", n_contexts=12,
                               context_size=16, seed=3, model_batch=5, cache=tmp_path,
                               progress=lambda *a: calls.append(a))
    assert data.tokens.shape == (12, 16) and data.acts.shape == (12, 16, 32)
    assert not data.meta["from_cache"] and calls[-1] == ("activations", 12, 12)
    torch.testing.assert_close(data.acts[:2], hook_activations(lm.model, data.tokens[:2], hook))
    again = collect_activations(lm.model, lm.tokenizer, corpus_txt, hook, model_name="tiny", n_contexts=12,
                                context_size=16, seed=3, cache=tmp_path)
    assert again.meta["from_cache"] and torch.equal(again.tokens, data.tokens)
    other = collect_activations(lm.model, lm.tokenizer, corpus_txt, hook, model_name="tiny", n_contexts=12,
                                context_size=16, seed=4, cache=tmp_path)
    assert not torch.equal(other.tokens, data.tokens)  # another seed, other contexts
    train, held = data.split(3)
    bos = data.tokens == data.bos_token_id
    assert train.shape[0] + held.shape[0] == int((~bos).sum())
    torch.testing.assert_close(held, data.acts[9:][~bos[9:]])
    assert torch.equal(data.eval_tokens(3, 2), data.tokens[9:11])
    with pytest.raises(CircuitsError, match="n_eval_contexts"):
        data.split(12)
    with pytest.raises(CircuitsError, match="fewer than"):
        collect_activations(lm.model, lm.tokenizer, corpus_txt, hook, model_name="tiny", n_contexts=10**6,
                            context_size=16, cache=tmp_path)


def test_corpus_location_and_reuse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from circuits.corpus import CorpusSource

    monkeypatch.setenv("CIRCUITS_CORPUS", str(tmp_path / "c"))
    assert corpus_dir() == tmp_path / "c"
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.md").write_text("Some documentation text. " * 20)
    src = CorpusSource(name="x", version="1", licence="MIT", root=root, files=(root / "a.md",))
    from circuits.corpus import build_corpus

    built = build_corpus(tmp_path / "c", [src])
    path, manifest = ensure_corpus()  # reused, not rebuilt
    assert path == tmp_path / "c" and manifest["sha256"] == built["sha256"]


def test_attention_sink_rows_are_left_out() -> None:
    from circuits.analysis.lm_activations import SINK_NORM_RATIO, ActivationSet

    acts = torch.ones(3, 5, 4)
    acts[:, 0] *= 100.0  # a sink at position 0 of every context
    tokens = torch.ones(3, 5, dtype=torch.long)
    tokens[1, 2] = 0  # one BOS
    data = ActivationSet(tokens, acts, 0, {})
    assert data.sink_norm == pytest.approx(2.0 * SINK_NORM_RATIO)
    assert data.rows().shape == (3 * 4 - 1, 4)
    assert data.summary()["sink_rows_excluded"] == 3 and data.summary()["bos_rows"] == 1
