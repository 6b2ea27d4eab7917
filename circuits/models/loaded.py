"""LoadedModel: a model with its tokenizer and shipped ground truth (a leaf: every loader returns one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from circuits.tokenizer import Tokenizer
from tasks.base import GroundTruth

if TYPE_CHECKING:  # TransformerLens is imported only when a model is built or loaded (it takes seconds)
    from circuits._compat import HookedTransformer


@dataclass
class LoadedModel:
    """A model with the tokenizer its prompts must use and any ground truth shipped with it."""

    model: HookedTransformer
    tokenizer: Tokenizer
    name: str
    ground_truth: dict[str, GroundTruth] = field(default_factory=dict)  # task name -> main (mean) truth
    # task name -> ablation -> the circuits shipped beside the main one (circuits.truths)
    other_truths: dict[str, dict[str, GroundTruth]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.cfg.n_heads)
