"""ExplainConfig: the knobs of `circuits explain`, each default and help written once (the CLI reads them
through `circuits.cli.common.config_option`). Imports nothing heavy, so the CLI can build its options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from circuits.errors import CircuitsError


def _knob(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ExplainConfig:
    """The prompts are the run's own scoring prompts (its seed and n_train), the first `n_prompts`."""

    n_prompts: int = _knob(64, "positive/negative pairs explained (the run's first scoring ones)")
    max_codes: int = _knob(4, "codes listed per head, most frequent on the positives first")
    examples: int = _knob(3, "example prompts per code")
    steps: int = _knob(200, "Adam steps of the per-head SAEs (runs without an SAE of their own)")
    d_sae: int = _knob(16, "latents per head of those SAEs: a vocabulary a reader can go through")
    batch_size: int = _knob(64, "prompts per forward pass")

    def validate(self) -> None:
        for name in ("n_prompts", "max_codes", "steps", "d_sae", "batch_size"):
            if getattr(self, name) < 1:
                raise CircuitsError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.examples < 0:
            raise CircuitsError(f"--examples must be zero or more, got {self.examples}")
