"""Load a Hugging Face model directory (config.json + safetensors weights + tokenizer files) as a
HookedTransformer, offline and without unpickling anything.

transformers reads the directory (`local_files_only`, `use_safetensors=True`, no remote code); then
TransformerLens's own converters turn the config and weights into a HookedTransformer of the same
architecture. TransformerLens's `from_pretrained` insists on a hub model name and fetches the hub
config, so we call its local-path config and weight converters directly, and keep the weights
unprocessed (no layer-norm folding or centring): hook_z and the logits are the original model's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from circuits.errors import ModelLoadError
from circuits.models.loaded import LoadedModel

CONFIG_FILE = "config.json"
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt",
           "training_args.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


def is_hf_model_dir(path: Path) -> bool:
    """A directory whose config.json names a transformers `model_type` (our own checkpoints don't)."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "model_type" in data


def check_hf_dir(path: Path) -> dict[str, Any]:
    """Refuse, with one line, a directory that lacks safetensors weights or tokenizer files."""
    path = Path(path)
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path / CONFIG_FILE}: not a readable JSON config ({err})") from None
    has_safetensors = any((path / f).is_file() for f in SAFETENSORS) or any(path.glob("*.safetensors"))
    if not has_safetensors:
        pickled = sorted(p.name for p in path.iterdir() if p.name in PICKLED or p.suffix in (".bin", ".pt"))
        if pickled:
            raise ModelLoadError(f"{path}: weights are only in pickle format ({', '.join(pickled)}); "
                                 f"loading them could run arbitrary code, so they are refused. Convert them "
                                 f"once with model.save_pretrained(dir, safe_serialization=True)")
        raise ModelLoadError(f"{path}: missing weights (model.safetensors, or sharded *.safetensors with "
                             f"model.safetensors.index.json)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"{path}: missing tokenizer files (tokenizer.json, or vocab.json + merges.txt); "
                             f"save them with tokenizer.save_pretrained(dir)")
    if config.get("auto_map"):
        raise ModelLoadError(f"{path}: the config asks for remote code (auto_map), which is never run")
    return config


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Library code does not print: silence transformers' progress bars and info logs while loading."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _tl_config_dir(config: dict[str, Any], architecture: str) -> Path:
    """A scratch copy of config.json for TransformerLens's local-path converter.

    The copy (1) names the architecture transformers actually loaded, (2) fills `n_ctx` from
    `n_positions` for GPT-2 configs, which TransformerLens 3.9 reads but recent transformers no
    longer write, and (3) lives at a neutral path: TransformerLens guesses some architectures from
    the path's text ("llama", "gemma"), which must not depend on the user's folder name.
    """
    tmp = Path(tempfile.mkdtemp(prefix="circuits-hfcfg-"))
    patched = {**config, "architectures": [architecture]}
    if "n_positions" in patched:
        patched.setdefault("n_ctx", patched["n_positions"])
    (tmp / CONFIG_FILE).write_text(json.dumps(patched))
    return tmp


def load_hf_model_dir(directory: Path, name: str | None = None) -> LoadedModel:
    """A Hugging Face model directory -> LoadedModel (HookedTransformer + HFTokenizer)."""
    import torch

    from circuits._compat import HookedTransformer
    from circuits.tokenizer import HFTokenizer

    directory = Path(directory).expanduser()
    config = check_hf_dir(directory)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(
                str(directory), use_safetensors=True, local_files_only=True, trust_remote_code=False,
                dtype=torch.float32)
        except Exception as err:
            raise ModelLoadError(f"{directory}: transformers cannot load the model "
                                 f"({type(err).__name__}: {_first_line(err)})") from None
        try:
            hf_tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True,
                                                         trust_remote_code=False)
        except Exception as err:
            raise ModelLoadError(f"{directory}: cannot load the tokenizer "
                                 f"({type(err).__name__}: {_first_line(err)})") from None
    check_start_token(hf_tokenizer, directory)
    architecture = type(hf_model).__name__
    model = _convert(hf_model, hf_tokenizer, config, architecture, directory, HookedTransformer)
    model.cfg.model_name = directory.name
    model.eval()
    return LoadedModel(model=model, tokenizer=HFTokenizer(hf_tokenizer), name=name or directory.name,
                       manifest={"source": "huggingface", "architecture": architecture,
                                 "model_type": config.get("model_type")})


def tl_config(config: dict[str, Any], architecture: str, source: Path) -> Any:
    """The HookedTransformerConfig TransformerLens derives from a transformers config dict (no weights
    needed: a cached conversion rebuilds its model from this and a saved state dict)."""
    with _tl_scratch(config, architecture) as scratch:
        try:
            with _quiet_transformers():
                return _tl_config_at(scratch, config)
        except Exception as err:
            raise ModelLoadError(f"{source}: TransformerLens cannot convert this {architecture} "
                                 f"({type(err).__name__}: {_first_line(err)})") from None


def _convert(hf_model: Any, hf_tokenizer: Any, config: dict[str, Any], architecture: str, directory: Path,
             hooked_cls: type) -> Any:
    """transformers model -> HookedTransformer with the same weights (TransformerLens converters)."""
    from circuits._compat import tl_loading as loading

    with _tl_scratch(config, architecture) as scratch:
        try:
            with _quiet_transformers():
                cfg = _tl_config_at(scratch, hf_model.config.to_dict())
                state = loading.get_pretrained_state_dict(str(scratch), cfg, hf_model)
                model = hooked_cls(cfg, tokenizer=hf_tokenizer, move_to_device=False)
                model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                                  center_unembed=False, fold_value_biases=False,
                                                  refactor_factored_attn_matrices=False)
        except Exception as err:
            raise ModelLoadError(f"{directory}: TransformerLens cannot convert this {architecture} "
                                 f"({type(err).__name__}: {_first_line(err)})") from None
    return model


@contextlib.contextmanager
def _tl_scratch(config: dict[str, Any], architecture: str) -> Iterator[Path]:
    scratch = _tl_config_dir(config, architecture)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _tl_config_at(scratch: Path, hf_cfg: dict[str, Any]) -> Any:
    from circuits._compat import tl_loading as loading

    cfg = loading.get_pretrained_model_config(str(scratch), hf_cfg=hf_cfg, device="cpu",
                                              default_prepend_bos=False, fold_ln=False, local_files_only=True)
    cfg.tokenizer_name = None  # the tokenizer is handed over by the caller, never fetched by name
    return cfg


def check_start_token(hf_tokenizer: Any, where: Path) -> None:
    """Prompts start with BOS (or EOS where there is none): refuse a tokenizer that has neither."""
    if hf_tokenizer.bos_token_id is None and hf_tokenizer.eos_token_id is None:
        raise ModelLoadError(f"{where}: the tokenizer has neither a BOS nor an EOS token to start "
                             f"prompts with")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
