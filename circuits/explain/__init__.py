"""Explain a circuit: what each of its heads does on the task, in discrete codes, each code checked
causally (`circuits explain RUN_DIR`, `circuits find --explain`).

Per circuit head: codes (the argmax latent of an SAE over the head's output), where the head looks from
the answer position (shares on the task's named positions), what its output does to the metric directly
(through the unembedding) and what patching it with the counterfactual output costs; a role line from
those measurements alone."""

from __future__ import annotations

from typing import Any

from circuits.explain.config import ExplainConfig

__all__ = ["ExplainConfig", "explain_circuit"]


def __getattr__(name: str) -> Any:
    """explain_circuit on first use: it imports torch and the pipeline; the CLI's options need neither."""
    if name == "explain_circuit":
        from circuits.explain.explain import explain_circuit

        return explain_circuit
    raise AttributeError(name)
