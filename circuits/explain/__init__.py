"""Explain a circuit: what each of its heads does on the task, in discrete codes, each code checked
causally (`circuits explain RUN_DIR`, `circuits find --explain`).

Per circuit head: codes (the argmax latent of an SAE over the head's output), where the head looks from
the answer position (shares on the task's named positions), what its output does to the metric directly
(through the unembedding) and what patching it with the counterfactual output costs; a role line from
those measurements alone."""

from circuits.explain.explain import ExplainConfig, explain_circuit

__all__ = ["ExplainConfig", "explain_circuit"]
