"""TransformerLens hub models: fail fast and clearly offline instead of sitting in a retry loop."""

from __future__ import annotations

import os
import socket
import threading

from circuits.errors import ModelLoadError, did_you_mean
from circuits.models.checkpoint import zoo_names
from circuits.models.loaded import LoadedModel
from circuits.tokenizer import HFTokenizer


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
        from circuits.models.random_arch import ARCHITECTURES

        known = [*zoo_names(), *(f"random:{a}" for a in ARCHITECTURES), "smollm2-135m", *KNOWN_HUB_REPOS,
                 *getattr(tl_loading, "OFFICIAL_MODEL_NAMES", [])]
        raise ModelLoadError(f"unknown model '{name}'{did_you_mean(name, known)}: not a bundled model "
                             f"({_zoo_hint()}), not a directory, and not a TransformerLens model "
                             f"name") from None


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
