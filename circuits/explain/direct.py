"""Direct effect: a write to the residual stream read through the unembedding of answer minus wrong
answer, with the final norm's scale frozen at its value on each prompt (the usual direct logit
attribution). Linear in the write for a model without a norm after attention (SmolLM2, GPT-2); with one
(Gemma) the writes are post-norm scaled (edges.writes.head_writes) and the reading is approximate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tasks.base import PromptSet

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer

TARGET = "logit(answer) − logit(wrong[0])"


@torch.no_grad()
def token_directions(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """tokens [n] -> [n, d_model]: what raises each token's logit against the mean logit (W_U[:, t] minus
    W_U's mean column), times the final norm's weight where it has one."""
    w_u = model.W_U.float()  # [d_model, vocab]
    directions = (w_u[:, tokens] - w_u.mean(1, keepdim=True)).T  # [n, d_model]
    weight = getattr(getattr(model, "ln_final", None), "w", None)
    return directions * weight.float() if weight is not None else directions


def answer_directions(model: HookedTransformer, prompts: PromptSet) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, d_model] the answer's direction, [n, d_model] the wrong answer's): their difference reads
    logit(answer) - logit(wrong[0])."""
    return token_directions(model, prompts.answer), token_directions(model, prompts.wrong[:, 0])


@torch.no_grad()
def direct_effects(model: HookedTransformer, writes: torch.Tensor, directions: torch.Tensor,
                   scale: torch.Tensor) -> torch.Tensor:
    """writes [n, c, d_model], directions [n, d_model], scale [n] (the norm divides by it) -> [n, c]: each
    write's direct effect."""
    if model.cfg.normalization_type in ("LN", "LNPre"):  # LayerNorm centres before it scales
        writes = writes - writes.mean(-1, keepdim=True)
    return torch.einsum("ncm,nm->nc", writes, directions) / scale[:, None]


def is_exact(model: HookedTransformer) -> bool:
    """Whether the reading is linear in the write: no norm after attention and no logit soft cap."""
    cap = model.cfg.output_logits_soft_cap
    return not model.cfg.use_normalization_before_and_after and not (cap is not None and cap > 0)
