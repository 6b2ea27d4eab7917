"""An explanation of a saved `find` result (its JSON payload): the circuit, the prompts' seed and split,
and, for a discrete-SAE run, the configuration its SAE is refit from."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from circuits.discovery.config import FindConfig
from circuits.errors import CircuitsError
from circuits.explain.config import ExplainConfig
from circuits.explain.explain import explain_circuit
from circuits.models.loaded import LoadedModel
from circuits.progress import Progress
from tasks.base import Head, Task


def run_circuit(payload: dict[str, Any]) -> list[Head]:
    """The circuit heads of a find payload (its `heads` with in_circuit), checked."""
    try:
        return sorted((int(h["layer"]), int(h["head"])) for h in payload["heads"] if h["in_circuit"])
    except (KeyError, TypeError, ValueError):
        raise CircuitsError("the run's 'heads' must be a list of {layer, head, score, in_circuit}") from None


def sae_run_config(payload: dict[str, Any]) -> FindConfig | None:
    """The run's FindConfig when a discrete-SAE method (sae or a variant) found it, else None."""
    from circuits.methods.registry import get_method
    from circuits.methods.sae import sae_overrides

    key = str((payload.get("method") or {}).get("key", "sae"))
    config = payload.get("config")
    if not isinstance(config, dict):
        return None
    try:
        if sae_overrides(get_method(key)) is None:
            return None
    except CircuitsError:  # a method this version does not know: explain with own SAEs
        return None
    names = {f.name for f in fields(FindConfig)}
    try:
        found = FindConfig(**{k: v for k, v in config.items() if k in names})
        found.validate()
    except (TypeError, CircuitsError) as err:
        raise CircuitsError(f"the run's config cannot be read back: {str(err).splitlines()[0]}") from None
    return found


def explain_payload(task: Task, loaded: LoadedModel, payload: dict[str, Any],
                    config: ExplainConfig | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """explain_circuit on a find payload's circuit, its seed and n_train (the run's first scoring prompts);
    the run's SAE gives the codes where the run had one."""
    run_config = sae_run_config(payload)
    saved = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    seed = int(saved.get("seed", 0)) if saved else 0
    n_train = int(saved.get("n_train", FindConfig().n_train)) if saved else FindConfig().n_train
    return explain_circuit(task, loaded, run_circuit(payload), seed=seed, n_train=n_train,
                           run_config=run_config, config=config, progress=progress)
