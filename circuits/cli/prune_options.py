"""edge-prune's options, shared by `find --method edge-prune|ensemble` and `compare`: one definition of each
flag and its help. Every flag defaults to None, meaning "the method's own default"
(circuits.methods.edge_prune: STEPS, TARGET, OBJECTIVE, INIT, LR), so a default lives in one place."""

from __future__ import annotations

from typing import Any

import typer

PRUNE_METHODS = ("edge-prune", "ensemble")  # the methods that read these options
# per-step cost measured by benchmarks/edge_prune_cost.py; 10 steps is the README tables' setting
STEPS_HELP = ("edge-prune / ensemble: mask training steps (default 200, ~2.4 CPU s each on SmolLM2-135M IOI; "
              "faster: 10, the setting of the README's tables, 2.9 min end to end against 10.5; "
              "0 keeps the EAP-IG warm start)")


def prune_steps_option() -> Any:
    return typer.Option(None, "--prune-steps", help=STEPS_HELP)


def prune_target_option() -> Any:
    return typer.Option(None, "--prune-target", help="edge-prune's target: a fraction (< 1) of the graph's "
                                                      "edges or an edge count (default 0.1)")


def prune_objective_option() -> Any:
    return typer.Option(None, "--prune-objective",
                        help="edge-prune's faithfulness term: raise (maximise faithfulness, CPR's aim; "
                             "default) | metric (match the full model's metric, CMD's aim) | kl")


def prune_init_option() -> Any:
    return typer.Option(None, "--prune-init", help="edge-prune's warm start: eap-ig (default) | zeros")


def prune_lr_option() -> Any:
    return typer.Option(None, "--prune-lr", help="edge-prune's Adam learning rate on the gate logits "
                                                  "(default 0.1)")


def prune_overrides(steps: int | None, target: float | None, objective: str | None, init: str | None,
                    lr: float | None) -> dict[str, Any]:
    """The prune options the user set, keyed as methods read them (prune_steps, ...); unset ones left out."""
    given = {"prune_steps": steps, "prune_target": target, "prune_objective": objective, "prune_init": init,
             "prune_lr": lr}
    return {key: value for key, value in given.items() if value is not None}
