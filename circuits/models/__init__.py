"""Load a model: a TransformerLens hub name, a local checkpoint directory, a bundled zoo model,
or `random:<arch>` (a real architecture with random weights and the task's word tokenizer).

TransformerLens stays behind this module (and `_compat`), so a move to its 4.x API touches here.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from circuits.errors import ModelLoadError
from circuits.tokenizer import HFTokenizer, Tokenizer, WordTokenizer
from tasks.base import GroundTruth, Task

if TYPE_CHECKING:  # TransformerLens is imported only when a model is built or loaded (it takes seconds)
    from circuits._compat import HookedTransformer

# Shapes of the published models (REFERENCE.md §4); vocabulary comes from the tokenizer.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, n_ctx=1024,
                       act_fn="gelu_new", normalization_type="LN"),
    "attn-only-4l": dict(n_layers=4, n_heads=8, d_model=512, d_head=64, d_mlp=None, attn_only=True,
                         n_ctx=2048, normalization_type="LN", positional_embedding_type="shortformer"),
}

ZOO_DIR = Path(__file__).resolve().parent.parent / "tasks" / "zoo" / "models"
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, MANIFEST_FILE = (
    "config.json", "model.safetensors", "tokenizer.json", "manifest.json")


@dataclass
class LoadedModel:
    """A model with the tokenizer its prompts must use and any ground truth shipped with it."""

    model: HookedTransformer
    tokenizer: Tokenizer
    name: str
    ground_truth: dict[str, GroundTruth] = field(default_factory=dict)  # task name -> truth
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.cfg.n_heads)


def random_model(arch: str, tokenizer: Tokenizer, seed: int = 0) -> HookedTransformer:
    """The named architecture with random weights, sized to the tokenizer's vocabulary."""
    from circuits._compat import HookedTransformer, HookedTransformerConfig

    if arch not in ARCHITECTURES:
        raise ModelLoadError(f"unknown architecture '{arch}' (known: {', '.join(ARCHITECTURES)})")
    cfg = HookedTransformerConfig(**ARCHITECTURES[arch], d_vocab=tokenizer.vocab_size, seed=seed,
                                  device="cpu", default_prepend_bos=False)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    model.eval()
    return model


_CFG_KEYS = ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn",
             "normalization_type", "attn_only", "positional_embedding_type", "seed")


def save_checkpoint(directory: Path, model: HookedTransformer, tokenizer: WordTokenizer,
                    manifest: dict[str, Any]) -> None:
    """Write config.json, model.safetensors, tokenizer.json and manifest.json (no pickles)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {k: getattr(model.cfg, k) for k in _CFG_KEYS}
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()
             if not k.endswith((".IGNORE", ".mask"))}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, directory / WEIGHTS_FILE)
    _write_json(directory / CONFIG_FILE, cfg)
    _write_json(directory / TOKENIZER_FILE, tokenizer.to_dict())
    _write_json(directory / MANIFEST_FILE, manifest)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"{path.parent}: missing {path.name}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err})") from None


def load_checkpoint(directory: Path, name: str | None = None) -> LoadedModel:
    """Load a directory written by `save_checkpoint`; errors name the missing or corrupt file."""
    from circuits._compat import HookedTransformer, HookedTransformerConfig

    directory = Path(directory)
    cfg_dict = _read_json(directory / CONFIG_FILE)
    tok_dict = _read_json(directory / TOKENIZER_FILE)
    manifest = _read_json(directory / MANIFEST_FILE) if (directory / MANIFEST_FILE).exists() else {}
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{directory}: missing {WEIGHTS_FILE}")
    try:
        tokenizer = WordTokenizer(list(tok_dict["vocab"]))
        cfg = HookedTransformerConfig(**{k: v for k, v in cfg_dict.items() if k in _CFG_KEYS},
                                      device="cpu", default_prepend_bos=False)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"{directory}: bad config or tokenizer ({err})") from None
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ModelLoadError(f"{weights}: corrupt weights file ({err})") from None
    model = HookedTransformer(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith((".IGNORE", ".mask"))]
    if missing or unexpected:
        raise ModelLoadError(f"{weights}: weights do not match the config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    truth = {t: GroundTruth.from_dict(g) for t, g in manifest.get("ground_truth", {}).items()}
    return LoadedModel(model=model, tokenizer=tokenizer, name=name or directory.name,
                       ground_truth=truth, manifest=manifest)


def zoo_names() -> list[str]:
    """Names of the bundled small task models."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within `timeout_s` (DNS included)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


# TransformerLens names of the published task models -> hub repositories, so that the offline check
# needs no TransformerLens import (seconds); any other name is resolved by TransformerLens itself.
KNOWN_HUB_REPOS = {"gpt2-small": "gpt2", "gpt2": "gpt2",
                   "attn-only-4l": "NeelNanda/Attn_Only_4L512W_C4_Code"}


def _hub_repo_id(name: str) -> str:
    """The hub repository behind a TransformerLens model name; unknown names are a clear error."""
    if name in KNOWN_HUB_REPOS:
        return KNOWN_HUB_REPOS[name]
    from circuits._compat import tl_loading

    try:
        return tl_loading.get_official_model_name(name)
    except ValueError:
        raise ModelLoadError(f"unknown model '{name}': not a bundled model ({_zoo_hint()}), not a "
                             f"directory, and not a TransformerLens model name") from None


def _in_local_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _zoo_hint() -> str:
    names = zoo_names()
    return ", ".join(names) if names else "none installed"


def load_hub_model(name: str) -> LoadedModel:
    """A TransformerLens pretrained model; fails fast and clearly when the hub cannot be reached.

    Without a connection, only a model already in the local Hugging Face cache can load; anything
    else fails at once instead of sitting in the hub client's retry loop.
    """
    repo_id = _hub_repo_id(name)
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not _hub_reachable()
    if offline and not _in_local_cache(repo_id):
        raise ModelLoadError(
            f"cannot load model '{name}': the Hugging Face hub is unreachable and '{repo_id}' is not in the "
            f"local cache. Use a bundled model ({_zoo_hint()}), 'random:gpt2-small', or a local "
            f"checkpoint directory (--model path/to/dir).")
    from circuits._compat import HookedTransformer

    try:
        model = HookedTransformer.from_pretrained(name, device="cpu")
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise ModelLoadError(f"cannot load model '{name}': {type(err).__name__}: {first_line}") from None
    model.eval()
    return LoadedModel(model=model, tokenizer=HFTokenizer(model.tokenizer), name=name)


def load_model(spec: str, task: Task | None = None, seed: int = 0) -> LoadedModel:
    """Resolve `spec`: random:<arch> | zoo name | local directory (ours, or a Hugging Face one) |
    TransformerLens name."""
    if spec.startswith("random:"):
        if task is None:
            raise ModelLoadError("a random model needs a task (its tokenizer sets the vocabulary)")
        tokenizer = task.word_tokenizer()
        return LoadedModel(model=random_model(spec.split(":", 1)[1], tokenizer, seed),
                           tokenizer=tokenizer, name=spec)
    if spec in zoo_names():
        return load_checkpoint(ZOO_DIR / spec, name=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        from circuits.hf_models import is_hf_model_dir, load_hf_model_dir

        if is_hf_model_dir(path):  # config.json with a transformers model_type (ours has none)
            return load_hf_model_dir(path)
        if (path / CONFIG_FILE).is_file() and (path / TOKENIZER_FILE).is_file():
            return load_checkpoint(path)
        raise ModelLoadError(f"{path}: not a model directory (needs {CONFIG_FILE}, {WEIGHTS_FILE}, "
                             f"{TOKENIZER_FILE}; or a Hugging Face directory: config.json with "
                             f"model_type, *.safetensors, tokenizer files)")
    if "/" in spec or spec.startswith("."):
        raise ModelLoadError(f"model directory '{spec}' does not exist")
    return load_hub_model(spec)
