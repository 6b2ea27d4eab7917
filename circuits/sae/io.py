"""SAE files in SAELens's layout: a directory with `cfg.json` and `sae_weights.safetensors`.

Written so that SAELens ≥ 6 (`SAE.load_from_disk`) and SAEBench-style tools read them:
- tensors for groups == 1 have SAELens shapes: W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae],
  b_dec [d_in]; Gated adds b_gate (our b_enc), r_mag, b_mag; JumpReLU and BatchTopK add threshold [d_sae];
- `architecture`: relu → "standard", topk → "topk", gated → "gated", jumprelu → "jumprelu", and batchtopk →
  "jumprelu" with its global inference threshold copied to every latent (what SAELens does too);
  matryoshka (BatchTopK inside) → "jumprelu" the same way: SAELens's `matryoshka_batchtopk` is a training
  architecture only and is saved for inference as JumpReLU; the prefix sizes ride along in our config;
- input normalisation is folded into the weights, so `normalize_activations` is "none";
- our own full config rides along under the key "circuits" (SAELens ignores unknown keys), which is how
  a batchtopk SAE comes back as batchtopk and a batched (groups > 1) SAE comes back whole. A batched file
  keeps the leading groups dimension on every tensor; SAELens cannot load those (one SAE per file there).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from circuits.atomic import atomic_write, atomic_write_text
from circuits.errors import CircuitsError
from circuits.jsonio import read_json
from circuits.sae.base import SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = 1
# SAELens reads configs without a version >= 6 through its legacy converter; ours follow the 6.x layout.
SAELENS_LAYOUT_VERSION = "6.0.0"

_TO_SAELENS = {
    "relu": "standard",
    "topk": "topk",
    "gated": "gated",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",
    "matryoshka": "jumprelu",
}
_FROM_SAELENS = {"standard": "relu", "topk": "topk", "gated": "gated", "jumprelu": "jumprelu"}


def _tensor_names(arch: str) -> dict[str, str]:
    """Our parameter/buffer name -> file tensor name."""
    names = {"W_enc": "W_enc", "W_dec": "W_dec", "b_dec": "b_dec", "b_enc": "b_enc"}
    if arch == "gated":
        names.update(b_enc="b_gate", r_mag="r_mag", b_mag="b_mag")
    if arch in ("jumprelu", "batchtopk", "matryoshka"):
        names["threshold"] = "threshold"
    return names


def sae_state_for_file(sae: SAE) -> dict[str, torch.Tensor]:
    """File tensors (input scale folded, SAELens names, groups squeezed when 1)."""
    sae = copy.deepcopy(sae).cpu()
    sae.fold_input_scale()
    cfg = sae.cfg
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in _tensor_names(cfg.arch).items():
        if ours == "threshold":
            if cfg.arch == "jumprelu":
                value = _tensor(sae, "threshold")  # exp(log_threshold); every arch here has one
            else:  # batchtopk, matryoshka: the global threshold per group, copied to every latent
                value = _tensor(sae, "threshold").clamp_min(0)[:, None].expand(cfg.groups, cfg.d_sae)
        else:
            value = getattr(sae, ours)
        value = value.detach()
        out[theirs] = (value[0] if cfg.groups == 1 else value).contiguous().clone()
    return out


def save_sae(sae: SAE, directory: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `cfg.json` and `sae_weights.safetensors` into `directory` (each file atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg
    meta = {
        "sae_lens_version": SAELENS_LAYOUT_VERSION,
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "hook_head_index": cfg.hook_head_index,
        "context_size": cfg.context_size or None,
        "prepend_bos": True,
    }
    meta.update(metadata or {})
    hook = cfg.hook_name or ""
    doc: dict[str, Any] = {
        "architecture": _TO_SAELENS[cfg.arch],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "hook_z"
        if hook.endswith("hook_z") and cfg.hook_head_index is None
        else "none",
        "metadata": meta,
        "circuits": {"format": FORMAT_VERSION, "config": cfg.to_dict()},
    }
    if cfg.arch == "topk":
        doc.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    # circuits.atomic: the one write path, so every output file gets the same permissions (0o666 minus the
    # umask; safetensors' own writer gave 0o600) and a crash never leaves half a file.
    state = sae_state_for_file(sae)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    atomic_write_text(directory / CFG_FILE, json.dumps(doc, indent=2))
    return directory


def read_sae_config(directory: Path) -> tuple[SAEConfig, dict[str, Any]]:
    """Our SAEConfig for a saved SAE directory (ours or SAELens's), and the raw cfg.json."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CircuitsError(f"SAE directory {directory} does not exist")
    path = directory / CFG_FILE
    doc = read_json(path, expect_object=True,
                    missing=f"{directory}: missing {CFG_FILE} (not an SAE directory)")
    try:
        ours = doc.get("circuits", {}).get("config")
        if ours is not None:
            cfg = SAEConfig.from_dict(ours)
        else:
            theirs = doc.get("architecture", "standard")
            if theirs not in _FROM_SAELENS:
                raise CircuitsError(
                    f"{path}: unsupported SAE architecture '{theirs}' (supported: {', '.join(_FROM_SAELENS)})"
                )
            meta = doc.get("metadata") or {}
            cfg = SAEConfig(
                d_in=int(doc["d_in"]),
                d_sae=int(doc["d_sae"]),
                arch=_FROM_SAELENS[theirs],
                k=int(doc.get("k", 1)),
                normalize_decoder=False,
                apply_b_dec_to_input=bool(doc.get("apply_b_dec_to_input", True)),
                dtype=str(doc.get("dtype", "float32")).replace("torch.", ""),
                model_name=str(meta.get("model_name") or ""),
                hook_name=str(meta.get("hook_name") or ""),
                hook_head_index=meta.get("hook_head_index"),
                context_size=int(meta.get("context_size") or 0),
            )
            if doc.get("normalize_activations", "none") != "none":
                raise CircuitsError(
                    f"{path}: normalize_activations='{doc['normalize_activations']}' is not supported"
                )
    except CircuitsError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise CircuitsError(f"{path}: bad SAE config ({err})") from None
    return cfg, doc


def load_sae(directory: Path, arch: str | None = None, d_in: int | None = None) -> SAE:
    """Load an SAE directory; refuse (CircuitsError, one line) a missing or corrupt file, tensors whose
    names or shapes do not match the config, or an architecture / d_in other than the expected ones."""
    from circuits.sae import make_sae

    directory = Path(directory)
    cfg, _ = read_sae_config(directory)
    if arch is not None and cfg.arch != arch:
        raise CircuitsError(f"{directory}: SAE architecture is '{cfg.arch}', expected '{arch}'")
    if d_in is not None and cfg.d_in != d_in:
        raise CircuitsError(
            f"{directory}: SAE expects inputs of size d_in={cfg.d_in}, but the activations have size {d_in}"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CircuitsError(f"{directory}: missing {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CircuitsError(f"{weights}: corrupt weights file ({type(err).__name__})") from None
    sae = make_sae(cfg)
    names = _tensor_names(cfg.arch)
    expected = set(names.values())
    if set(tensors) != expected:
        raise CircuitsError(
            f"{weights}: tensors {sorted(tensors)} do not match a {cfg.arch} SAE "
            f"(expected {sorted(expected)})"
        )
    with torch.no_grad():
        for ours, theirs in names.items():
            value = tensors[theirs]
            if cfg.groups == 1:
                value = value.unsqueeze(0)
            if ours == "threshold":
                want = (cfg.groups, cfg.d_sae)
                if tuple(value.shape) != want:
                    raise CircuitsError(
                        f"{weights}: 'threshold' has shape {tuple(value.shape)}, config implies {want}"
                    )
                if cfg.arch == "jumprelu":
                    _tensor(sae, "log_threshold").copy_(value.clamp_min(1e-12).log())
                else:  # batchtopk, matryoshka: every latent carries the group's threshold
                    _tensor(sae, "threshold").copy_(value[:, 0])
                continue
            target = getattr(sae, ours)
            if tuple(value.shape) != tuple(target.shape):
                shown = tuple(target.shape[1:]) if cfg.groups == 1 else tuple(target.shape)
                raise CircuitsError(
                    f"{weights}: '{theirs}' has shape {tuple(tensors[theirs].shape)}, config implies {shown}"
                )
            if not torch.isfinite(value).all():
                raise CircuitsError(f"{weights}: '{theirs}' contains NaN or infinite values")
            target.copy_(value.to(target.dtype))
    sae.eval()
    return sae


def _tensor(sae: SAE, name: str) -> torch.Tensor:
    """An architecture-specific parameter or buffer of `sae` (threshold, log_threshold) as a tensor."""
    value = getattr(sae, name)
    assert isinstance(value, torch.Tensor), f"{type(sae).__name__}.{name} is not a tensor"
    return value
