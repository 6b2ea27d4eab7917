"""Models the project has never seen, from a directory: our own checkpoint layout and a Hugging Face
model directory, offline, end to end through `circuits find --task FILE --model DIR` with evaluation."""

from __future__ import annotations

import json
import random
import shutil
import socket
from pathlib import Path

import pytest
import torch
from conftest import plant_heads, tiny_model
from typer.testing import CliRunner

from circuits.cli.main import app
from circuits.errors import ModelLoadError
from circuits.models import load_model, save_checkpoint
from circuits.models.hf_dir import is_hf_model_dir
from circuits.tokenizer import HFTokenizer
from tasks.custom import load_task_file

runner = CliRunner()
POS = [" p" + c for c in "abcdefgh"]
NEG = [" n" + c for c in "abcdefgh"]
PLANTED = {(0, 1), (1, 3)}
TRUTH = {"heads": [[0, 1], [1, 3]], "edges": [[[0, 1], [1, 3]]], "source": "planted"}
# The planted models carry codes, not the task's behaviour: the accuracy check would (rightly) refuse them.
FAST = ["--n-train", "10", "--n-score", "40", "--steps", "100", "--json", "--sae", "per-head", "--hook", "z",
        "--no-check-task"]


def toy_task_file(path: Path, truth: dict | None = None, n: int = 50) -> Path:
    """Positives built from p-words, negatives from n-words: heads that read tokens tell them apart."""
    rng = random.Random(0)
    lines = [{"positive": "".join(rng.choice(POS) for _ in range(4)) + " end",
              "negative": "".join(rng.choice(NEG) for _ in range(4)) + " end",
              "answer": " pa", "wrong_answers": [" na"]} for _ in range(n)]
    if truth is not None:
        lines.append({"ground_truth": truth})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def find(*args: str):
    return runner.invoke(app, ["find", *args])


def assert_clean_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# -- our own checkpoint layout ---------------------------------------------------------------------


@pytest.fixture
def planted_checkpoint(tmp_path) -> tuple[Path, Path]:
    task_file = toy_task_file(tmp_path / "toy.jsonl", TRUTH)
    tok = load_task_file(task_file).word_tokenizer()
    model = tiny_model(tok.vocab_size)
    plant_heads(model, PLANTED)
    save_checkpoint(tmp_path / "my-model", model, tok, {"note": "saved by the test"})
    return task_file, tmp_path / "my-model"


def test_a_model_that_does_not_solve_the_task_is_refused_before_the_run(planted_checkpoint):
    task_file, model_dir = planted_checkpoint
    args = [a for a in FAST if a != "--no-check-task"]
    result = find("--task", str(task_file), "--model", str(model_dir), *args)
    assert result.exit_code == 2
    assert "does not solve task 'toy'" in result.stderr and "positive prompts" in result.stderr


def test_unseen_checkpoint_dir_and_task_file_end_to_end_with_evaluation(planted_checkpoint):
    task_file, model_dir = planted_checkpoint
    assert not is_hf_model_dir(model_dir)
    result = find("--task", str(task_file), "--model", str(model_dir), *FAST)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"] == "my-model" and payload["task"] == "toy"
    assert len(payload["heads"]) == 8
    ev = payload["evaluation"]
    assert ev["roc_auc"] == 1.0 and ev["edge_roc_auc"] == 1.0
    assert {tuple(h) for h in payload["circuit"]} == PLANTED
    assert ev["truth_source"] == "planted" and ev["roc_curve"]["tpr"][-1] == 1.0


def test_checkpoint_dir_missing_weights_is_a_clean_error(planted_checkpoint):
    task_file, model_dir = planted_checkpoint
    (model_dir / "model.safetensors").unlink()
    assert_clean_error(find("--task", str(task_file), "--model", str(model_dir)), "missing model.safetensors")


def test_ground_truth_head_outside_the_model_fails_before_the_run(planted_checkpoint):
    task_file, model_dir = planted_checkpoint
    lines = task_file.read_text().splitlines()
    lines[-1] = json.dumps({"ground_truth": {"heads": [[0, 1], [5, 0]]}})
    task_file.write_text("\n".join(lines) + "\n")
    result = find("--task", str(task_file), "--model", str(model_dir), *FAST)
    assert_clean_error(result, f"{task_file}:line {len(lines)}", "(5,0) does not exist", "2 layers x 4 heads")


# -- Hugging Face model directories ------------------------------------------------------------------


def save_tiny_gpt2(directory: Path, words: list[str], planted: set[tuple[int, int]] | None = None) -> None:
    """A 2-layer, d=32 GPT-2 and a word-level byte-level tokenizer, built offline and saved as safetensors."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    eos = "<|endoftext|>"
    vocab = {eos: 0, **{"Ġ" + w.strip(): i + 1 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=eos))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=eos, eos_token=eos, unk_token=eos)
    config = GPT2Config(vocab_size=len(vocab), n_positions=16, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    if planted is not None:  # silence every other head: zero its value weights and bias
        d, dh = config.n_embd, config.n_embd // config.n_head
        with torch.no_grad():
            for layer, block in enumerate(model.transformer.h):
                for h in range(config.n_head):
                    if (layer, h) not in planted:
                        cols = slice(2 * d + h * dh, 2 * d + (h + 1) * dh)
                        block.attn.c_attn.weight[:, cols] = 0
                        block.attn.c_attn.bias[cols] = 0
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    save_tiny_gpt2(directory, [*POS, *NEG, " end"], planted=PLANTED)
    return directory


def test_hf_dir_loads_offline_with_the_original_logits(hf_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    def no_network(*args, **kwargs):
        raise AssertionError("loading a model directory tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert is_hf_model_dir(hf_dir)
    loaded = load_model(str(hf_dir))
    assert isinstance(loaded.tokenizer, HFTokenizer)
    assert loaded.name == "tiny-gpt2" and (loaded.n_layers, loaded.n_heads) == (2, 4)
    ids = torch.tensor([loaded.tokenizer.encode(" pa pb nc end")])
    assert ids.shape == (1, 5)  # BOS + one token per word
    reference = AutoModelForCausalLM.from_pretrained(hf_dir, use_safetensors=True, local_files_only=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_hf_dir_end_to_end_with_a_sidecar_ground_truth(hf_dir, tmp_path):
    task_file = toy_task_file(tmp_path / "toy.jsonl")
    (tmp_path / "toy.truth.json").write_text(json.dumps(TRUTH))
    result = find("--task", str(task_file), "--model", str(hf_dir), *FAST)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"] == "tiny-gpt2" and len(payload["heads"]) == 8
    assert payload["evaluation"]["roc_auc"] == 1.0
    assert {tuple(h) for h in payload["circuit"]} == PLANTED
    assert payload["task_file"]["dropped_total"] == 0


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_other_architectures_load_with_the_original_logits(hf_dir, tmp_path, arch):
    """The folder is called my-llama on purpose: TransformerLens guesses architectures from path text."""
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    shape = dict(vocab_size=17, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=0)
    config, cls = ((LlamaConfig(**shape, num_key_value_heads=4), LlamaForCausalLM) if arch == "llama"
                   else (GPTNeoXConfig(**shape), GPTNeoXForCausalLM))
    torch.manual_seed(0)
    directory = tmp_path / "my-llama"
    cls(config).save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(hf_dir).save_pretrained(directory)
    loaded = load_model(str(directory))
    ids = torch.tensor([[0, 1, 5, 16, 3]])
    reference = AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True, local_files_only=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), reference(ids).logits, atol=1e-4, rtol=1e-4)
    assert loaded.manifest["model_type"] == arch


def _copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst)
    for name in names:
        (dst / name).unlink()
    return dst


def test_hf_dir_missing_weights_pickles_or_tokenizer_are_clean_errors(hf_dir, tmp_path):
    task_file = toy_task_file(tmp_path / "toy.jsonl")
    no_weights = _copy_without(hf_dir, tmp_path / "no-weights", "model.safetensors")
    assert_clean_error(find("--task", str(task_file), "--model", str(no_weights)), "missing weights")

    pickled = _copy_without(hf_dir, tmp_path / "pickled", "model.safetensors")
    (pickled / "pytorch_model.bin").write_bytes(b"never unpickled")
    assert_clean_error(find("--task", str(task_file), "--model", str(pickled)), "pickle", "refused")

    no_tok = _copy_without(hf_dir, tmp_path / "no-tokenizer", "tokenizer.json")
    with pytest.raises(ModelLoadError, match="missing tokenizer files"):
        load_model(str(no_tok))

    bad_config = shutil.copytree(hf_dir, tmp_path / "remote-code")
    config = json.loads((bad_config / "config.json").read_text())
    (bad_config / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ModelLoadError, match="remote code"):
        load_model(str(bad_config))
