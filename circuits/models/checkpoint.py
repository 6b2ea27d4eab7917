"""Our own checkpoint directories (config.json, model.safetensors, tokenizer.json, manifest.json) and the
bundled zoo of tiny task models stored in that layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file, save_file

from circuits.atomic import atomic_write, atomic_write_text
from circuits.errors import CircuitsError, ModelLoadError
from circuits.jsonio import read_json
from circuits.models.loaded import LoadedModel
from circuits.tokenizer import WordTokenizer
from tasks.base import ground_truths_from

if TYPE_CHECKING:  # TransformerLens is imported only when a model is built or loaded (it takes seconds)
    from circuits._compat import HookedTransformer

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo" / "models"
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, MANIFEST_FILE = (
    "config.json", "model.safetensors", "tokenizer.json", "manifest.json")


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
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    _write_json(directory / CONFIG_FILE, cfg)
    _write_json(directory / TOKENIZER_FILE, tokenizer.to_dict())
    _write_json(directory / MANIFEST_FILE, manifest)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


def _read_json(path: Path) -> Any:
    return read_json(path, ModelLoadError, expect_object=True, missing=f"{path.parent}: missing {path.name}")


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
    where = f"{directory / MANIFEST_FILE}: ground_truth"
    try:  # wrong types and heads the model lacks name the file and the field, before any work
        truth = ground_truths_from(manifest.get("ground_truth", {}), where)
        for task, gt in truth.items():
            gt.validate(cfg.n_layers, cfg.n_heads, f"{where}.{task}")
    except CircuitsError as err:
        raise ModelLoadError(str(err)) from None
    return LoadedModel(model=model, tokenizer=tokenizer, name=name or directory.name,
                       ground_truth=truth, manifest=manifest)


def zoo_names() -> list[str]:
    """Names of the bundled small task models."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / CONFIG_FILE).is_file())
