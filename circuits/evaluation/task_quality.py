"""Does a model solve a task? Accuracy and mean metric on positive and negative prompts (the zoo's
`quality` figures), and a one-line refusal for a model that does not solve it: a circuit search on such a
model would explain a behaviour that is not there.
"""

from __future__ import annotations

from typing import Any

from circuits.errors import CircuitsError
from circuits.models.loaded import LoadedModel
from tasks.base import Task

# "Solves": at least this fraction of positive prompts with metric > 0. Lower than the zoo's shipping gate
# (0.95), which is for models trained on the task alone; a pretrained LM is not: SmolLM2-135M gets the
# docstring task (logit(answer) > every other argument's) on about 80 % of prompts.
SOLVES_MIN_ACCURACY = 0.7
QUALITY_PROMPTS = 20  # the check `circuits find` runs first: cheap next to the run (2 x 20 prompts)


def task_quality(loaded: LoadedModel, task: Task, n: int = 100, seed: int = 0,
                 batch_size: int = 16) -> dict[str, Any]:
    """Accuracy (metric > 0) and mean metric on `n` positive prompts and on their negatives."""
    from circuits.zoo.train import quality

    prompts = task.prompts(loaded.tokenizer, n, seed)
    figures = quality(loaded.model, task, loaded.tokenizer, prompts, batch_size=batch_size)
    return {"model": loaded.name, "task": task.name, "seed": seed, **figures}


def require_solves(loaded: LoadedModel, task: Task, n: int = 100, seed: int = 0,
                   min_accuracy: float = SOLVES_MIN_ACCURACY) -> dict[str, Any]:
    """`task_quality`, or CircuitsError (one line) when the positive accuracy is below `min_accuracy`."""
    figures = task_quality(loaded, task, n, seed)
    if figures["positive_accuracy"] < min_accuracy:
        raise CircuitsError(f"model '{loaded.name}' does not solve task '{task.name}': metric > 0 on "
                            f"{figures['positive_accuracy']:.0%} of {figures['n_scored']} positive prompts "
                            f"(needs {min_accuracy:.0%})")
    return figures
