"""The offline corpus (docstrings, comments and docs of installed Python code) and the streamed, shuffled
activation buffer over it, on a tiny fake installation and a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuits.corpus import (
    CORPUS_MANIFEST,
    CallableTokenizer,
    CorpusSource,
    activation_batches,
    build_corpus,
    corpus_files,
    count_tokens,
    distribution_sources,
    read_manifest,
    stdlib_source,
    verify_corpus,
)
from circuits.corpus.build import file_document, python_prose
from circuits.errors import CircuitsError
from circuits.sae.sources import ModelActivationSource, iter_documents

MODULE = '''#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""The module docstring explains why this module exists and what it is for."""

import os  # noqa: F401

# A comment block that spans
# two lines of prose.
X = "# not a comment"


def f():
    """A function docstring with some detail about its behaviour."""
    # ----------
    return 1
'''

WORDS = ("the parser reads every token of the input and builds a tree of nodes that the compiler walks to "
         "emit code for each function class and module in order").split()


def _prose(seed: int, n_words: int = 60) -> str:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(WORDS), (n_words,), generator=gen).tolist()
    return " ".join(WORDS[i] for i in idx).capitalize() + "."


def _fake_stdlib(root: Path) -> Path:
    """A small stdlib-like tree: Python files, docs, and files that must be skipped."""
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "__pycache__").mkdir()
    for i in range(6):
        body = f'"""{_prose(i)}\n\n{_prose(100 + i)}"""\n\n# {_prose(200 + i, 20)}\nx = {i}\n'
        (root / "pkg" / f"mod{i}.py").write_text(body)
    (root / "guide.rst").write_text("Guide\n=====\n\n" + _prose(7) + "\n\n" + _prose(8) + "\n")
    (root / "notes.md").write_text("# Notes\n\n" + _prose(9) + "\n")
    (root / "short.py").write_text('"""Too short."""\n')
    (root / "binary.py").write_bytes(b'"""' + _prose(10).encode() + b'"""\x00\x01')
    (root / "latin.md").write_bytes(_prose(11).encode() + b"\xe9\xff")
    (root / "tests" / "test_x.py").write_text(f'"""{_prose(12)}"""\n')
    (root / "__pycache__" / "mod.py").write_text(f'"""{_prose(13)}"""\n')
    (root / "LICENSE.md").write_text(_prose(14))
    (root / "data.json").write_text(json.dumps({"text": _prose(15)}))
    return root


def test_python_prose_takes_docstrings_and_comments_only() -> None:
    text = python_prose(MODULE)
    assert text.split("\n\n") == [
        "The module docstring explains why this module exists and what it is for.",
        "A comment block that spans two lines of prose.",
        "A function docstring with some detail about its behaviour.",
    ]
    assert "not a comment" not in text and "noqa" not in text and "coding" not in text
    # A file that does not parse still gives its comments.
    assert python_prose("def broken(:\n    # still prose here\n") == "still prose here"


def test_stdlib_source_skips_tests_caches_licences_and_non_text(tmp_path: Path) -> None:
    src = stdlib_source(_fake_stdlib(tmp_path / "lib"))
    rel = [p.relative_to(src.root).as_posix() for p in src.files]
    assert rel == sorted(rel) and "tests/test_x.py" not in rel and "__pycache__/mod.py" not in rel
    assert "LICENSE.md" not in rel and "data.json" not in rel and "pkg/mod0.py" in rel
    assert src.licence == "PSF-2.0" and src.name == "python-stdlib"
    assert file_document(src.root / "binary.py") is None and file_document(src.root / "latin.md") is None
    with pytest.raises(CircuitsError, match="does not exist"):
        stdlib_source(tmp_path / "missing")


def test_build_manifest_hash_shards_and_determinism(tmp_path: Path) -> None:
    src = stdlib_source(_fake_stdlib(tmp_path / "lib"))
    a = build_corpus(tmp_path / "a", [src], min_doc_chars=100, shard_chars=1000)
    b = build_corpus(tmp_path / "b", [src], min_doc_chars=100, shard_chars=1000)
    assert a == b  # same files, same bytes, same manifest
    for shard in a["shards"]:
        assert (tmp_path / "a" / shard["file"]).read_bytes() == (tmp_path / "b" / shard["file"]).read_bytes()
    assert len(a["shards"]) > 1 and a["documents"] == 8  # 6 modules + guide.rst + notes.md
    assert a["sources"][0]["licence"] == "PSF-2.0" and a["sources"][0]["documents"] == 8
    assert a["sources"][0]["files_skipped"] == 3  # short.py, binary.py, latin.md
    assert read_manifest(tmp_path / "a") == a and verify_corpus(tmp_path / "a") == a
    docs = list(iter_documents(tmp_path / "a"))  # the SAE sources read a corpus directory directly
    assert len(docs) == 8 and sum(map(len, docs)) == a["characters"]
    assert "\n\n" in docs[0]  # document boundaries and inner structure are kept
    records = [json.loads(line) for f in corpus_files(tmp_path / "a") for line in f.read_text().splitlines()]
    assert [r["path"] for r in records][:2] == ["guide.rst", "notes.md"] and records[0]["source"] == src.name
    # Tampering is caught; rebuilding needs overwrite, and a smaller rebuild leaves no stale shard.
    first = tmp_path / "a" / a["shards"][0]["file"]
    first.write_text(first.read_text().replace("the", "a", 1))
    with pytest.raises(CircuitsError, match="does not match its sha256"):
        verify_corpus(tmp_path / "a")
    with pytest.raises(CircuitsError, match="already holds a corpus"):
        build_corpus(tmp_path / "a", [src])
    small = build_corpus(tmp_path / "a", [src], min_doc_chars=100, max_chars=500, overwrite=True)
    assert small["characters"] < a["characters"] and small["build"]["max_chars"] == 500
    assert sorted(p.name for p in (tmp_path / "a").glob("shard-*")) == [s["file"] for s in small["shards"]]
    assert not list((tmp_path / "a").glob(".*tmp"))  # atomic writes leave no temporary file
    empty = CorpusSource(name="empty", version="0", licence="MIT", root=tmp_path, files=())
    with pytest.raises(CircuitsError, match="no document"):
        build_corpus(tmp_path / "c", [empty])


def _dist(site: Path, name: str, meta_lines: list[str], files: dict[str, str], description: str = "") -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("\n".join(["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0",
                                              *meta_lines]) + "\n\n" + description)
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    record = [f"{rel},," for rel in files] + [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_distribution_sources_need_licence_metadata(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    _dist(site, "alpha", ["License-Expression: MIT"], {"alpha/__init__.py": f'"""{_prose(1)}"""\n'},
          description=_prose(2))
    _dist(site, "beta", ["Classifier: License :: OSI Approved :: BSD License"],
          {"beta/core.py": f'"""{_prose(3)}"""\n', "beta/README.md": _prose(4), "beta/blob.bin": "x"})
    _dist(site, "gamma", [], {"gamma/__init__.py": f'"""{_prose(5)}"""\n'})
    sources, skipped = distribution_sources([site])
    assert [s.name for s in sources] == ["alpha", "beta"]
    assert [s.licence for s in sources] == ["MIT", "BSD License"]
    assert skipped == [{"name": "gamma", "reason": "no licence metadata"}]
    assert [p.name for p in sources[1].files] == ["README.md", "core.py"]
    assert sources[0].description.startswith(_prose(2)[:20])
    manifest = build_corpus(tmp_path / "out", sources, skipped=skipped, min_doc_chars=50)
    assert manifest["skipped_sources"] == skipped
    assert [(s["name"], s["documents"]) for s in manifest["sources"]] == [("alpha", 2), ("beta", 2)]
    _, skipped = distribution_sources([site], exclude=["Alpha"])
    assert {"name": "alpha", "reason": "excluded"} in skipped
    with pytest.raises(CircuitsError, match="does not exist"):
        distribution_sources([tmp_path / "nowhere"])


def test_real_stdlib_gives_prose(tmp_path: Path) -> None:
    """The machine's own standard library: enough files, real docstrings, a bounded quick build."""
    src = stdlib_source()
    assert len(src.files) > 500
    json_init = next(p for p in src.files if p.relative_to(src.root).as_posix() == "json/__init__.py")
    doc = file_document(json_init)
    assert doc is not None and "JSON" in doc
    manifest = build_corpus(tmp_path / "c", [src], max_chars=300_000)
    assert 300_000 <= manifest["characters"] < 600_000 and manifest["sources"][0]["licence"] == "PSF-2.0"


# ---- the activation stream ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A built fake corpus and a tiny random 2-layer model whose word vocabulary covers it."""
    from circuits._compat import HookedTransformer, HookedTransformerConfig
    from circuits.models import load_model, save_checkpoint
    from circuits.tokenizer import WordTokenizer

    root = tmp_path_factory.mktemp("corpus")
    corpus = root / "corpus"
    build_corpus(corpus, [stdlib_source(_fake_stdlib(root / "lib"))], min_doc_chars=100, shard_chars=1500)
    tok = WordTokenizer.from_texts(list(iter_documents(corpus)))
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=32,
                                  d_vocab=tok.vocab_size, act_fn="gelu", normalization_type="LN", seed=0,
                                  device="cpu", default_prepend_bos=False)
    torch.manual_seed(0)
    save_checkpoint(root / "model", HookedTransformer(cfg), tok, {"name": "tiny-corpus"})
    return corpus, load_model(str(root / "model"))


HOOK = "blocks.1.hook_resid_post"


def test_activation_batches_are_shuffled_bounded_and_deterministic(tiny) -> None:
    corpus, loaded = tiny
    kw = dict(batch_size=32, context_size=16, model_batch=4, buffer_rows=128, max_batches=6)
    batches = list(activation_batches(loaded.model, loaded.tokenizer, corpus, HOOK, seed=1, **kw))
    assert len(batches) == 6 and all(b.shape == (32, 16) for b in batches)
    again = list(activation_batches(loaded.model, loaded.tokenizer, corpus, HOOK, seed=1, **kw))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    other = next(activation_batches(loaded.model, loaded.tokenizer, corpus, HOOK, seed=2, **kw))
    assert not torch.equal(other, batches[0])
    # Every served row is a real activation of the corpus, just not in corpus order (shuffled).
    ordered = ModelActivationSource(loaded.model, loaded.tokenizer, HOOK, corpus, context_size=16,
                                    model_batch=4, buffer_rows=10**6)
    ordered._refill(2048)  # noqa: SLF001 - reach the unshuffled rows through the same code path
    pool = ordered.buffer
    served = torch.cat(batches)
    nearest = (served[:, None] - pool[None]).abs().amax(-1).amin(-1)  # [rows served]
    assert float(nearest.max()) < 1e-5
    in_order = ModelActivationSource(loaded.model, loaded.tokenizer, HOOK, corpus, context_size=16,
                                     model_batch=4)._read_rows()  # noqa: SLF001
    assert not torch.equal(batches[0], in_order[:32])
    # The buffer stays bounded while streaming: at most buffer_rows plus one model batch of rows.
    source = ModelActivationSource(loaded.model, loaded.tokenizer, HOOK, corpus, context_size=16,
                                   model_batch=4, buffer_rows=128)
    for _ in range(60):
        source.next_batch(32)
        assert source.buffer.shape[0] <= 128 + 4 * 16
    assert source.passes >= 1  # the tiny corpus was cycled


def test_activation_batches_accept_a_plain_callable_tokenizer(tiny) -> None:
    corpus, loaded = tiny
    tok = loaded.tokenizer
    fn = CallableTokenizer(lambda text: tok.encode(text, prepend_bos=False), tok.bos_token_id)
    sample = next(iter_documents(corpus))
    assert fn.encode(sample) == tok.encode(sample)
    assert fn.encode(sample, prepend_bos=False) == tok.encode(sample)[1:]
    plain = next(activation_batches(loaded.model, lambda t: tok.encode(t, prepend_bos=False), corpus, HOOK,
                                    bos_token_id=tok.bos_token_id, batch_size=8, context_size=16,
                                    buffer_rows=64))
    ours = next(activation_batches(loaded.model, tok, corpus, HOOK, batch_size=8, context_size=16,
                                   buffer_rows=64))
    assert torch.equal(plain, ours)
    with pytest.raises(CircuitsError, match="bos_token_id"):
        next(activation_batches(loaded.model, lambda t: [1], corpus, HOOK))
    with pytest.raises(CircuitsError, match="no hook"):
        next(activation_batches(loaded.model, tok, corpus, "blocks.9.hook_nothing"))
    assert count_tokens(corpus, lambda t: tok.encode(t, prepend_bos=False))["documents"] == 8
    assert read_manifest(corpus)["documents"] == 8 and (corpus / CORPUS_MANIFEST).is_file()
