"""Train a small HookedTransformer on one task, and measure it on held-out prompts.

Deterministic from the config's seed: weights, training prompts and filler all come from seeded
generators, and the loop runs in a fixed order. The library never prints: pass `progress` to see it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from circuits._compat import HookedTransformer, HookedTransformerConfig
from circuits.tokenizer import Tokenizer
from circuits.zoo.data import TaskPool, build_pool, content_ids, filler_batch, prompt_seed
from tasks.base import PromptSet, Task

Progress = Callable[[int, int, float], None]  # (step done, total steps, recent loss)


@dataclass(frozen=True)
class TrainConfig:
    """Model shape and training recipe; everything that decides the trained weights."""

    task: str
    seed: int = 0
    n_layers: int = 4
    n_heads: int = 8
    d_model: int = 128
    d_head: int = 16
    d_mlp: int | None = None  # None: attention-only
    n_ctx: int = 128
    steps: int = 1000
    batch_size: int = 64
    filler_batch_size: int = 16  # filler rows per step, on top of batch_size task rows
    filler_length: int = 24
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    lm_weight: float = 0.1  # next-token loss on the non-answer positions of task rows
    filler_weight: float = 0.5  # next-token loss on the repeated half of filler rows
    head_l1: float = 0.003  # group lasso on each head's W_O: unused heads go to zero, so the
    # behaviour concentrates in few heads (without it docstring spread over 18 of 32 heads)
    n_train_prompts: int = 20_000
    threads: int = 1  # torch intra-op threads while training (1: fastest on shared cores, reproducible)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes recorded in the manifest

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_config(self, vocab_size: int) -> HookedTransformerConfig:
        attn_only = self.d_mlp is None
        return HookedTransformerConfig(
            n_layers=self.n_layers, n_heads=self.n_heads, d_model=self.d_model, d_head=self.d_head,
            d_mlp=self.d_mlp, attn_only=attn_only, act_fn=None if attn_only else "gelu",  # type: ignore[arg-type]
            n_ctx=self.n_ctx, d_vocab=vocab_size, normalization_type="LN", seed=self.seed,
            device="cpu", default_prepend_bos=False)


# The shipped recipe per task (greater-than needs MLPs to compare numbers; the others are
# attention-only, as the published docstring model is).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "ioi": {},
    "docstring": {"batch_size": 32},  # prompts of 48 tokens: half the rows for the same cost
    "greaterthan": {"d_mlp": 256},
}


def default_config(task: str, seed: int = 0, **overrides: Any) -> TrainConfig:
    """The recipe the shipped `tiny-<task>` model was trained with, with optional overrides."""
    return replace(TrainConfig(task=task, seed=seed, **TASK_DEFAULTS.get(task, {})), **overrides)


@dataclass
class TrainResult:
    model: HookedTransformer
    tokenizer: Tokenizer
    config: TrainConfig
    losses: list[float]  # per step: total loss
    answer_losses: list[float]  # per step: loss at the answer position
    seconds: float
    pool: TaskPool


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 10 %."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _task_loss(model: HookedTransformer, pool: TaskPool, idx: torch.Tensor,
               lm_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, answer) loss on task rows `idx`: CE to the correct answers + LM elsewhere."""
    lengths = pool.lengths[idx]  # [b]
    width = int(lengths.max())
    tokens = pool.tokens[idx, :width]  # [b, width]
    logits = model(tokens)  # [b, width, vocab]
    log_probs = logits.log_softmax(-1)
    last = log_probs[torch.arange(len(idx)), lengths - 1]  # [b, vocab]
    valid = pool.valid[idx].float()  # [b, vocab]
    # Cross-entropy against the uniform distribution over the correct answers: plain CE for one
    # answer; for greater-than it rewards spreading over every later year, so the model must read the
    # start year (-log P(set) would be solved by always answering "99").
    answer = -((last * valid).sum(-1) / valid.sum(-1)).mean()
    if lm_weight <= 0 or width < 2:
        return answer, answer
    targets = tokens[:, 1:]  # [b, width-1]
    inside = torch.arange(width - 1)[None, :] < (lengths - 1)[:, None]  # [b, width-1]
    nll = -log_probs[:, :-1].gather(-1, targets[..., None])[..., 0]  # [b, width-1]
    lm = (nll * inside).sum() / inside.sum().clamp(min=1)
    return answer + lm_weight * lm, answer


def _filler_loss(model: HookedTransformer, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(tokens)[:, :-1]  # [b, length-1, vocab]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                          reduction="none").reshape(mask.shape)
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def _head_group_l1(model: HookedTransformer) -> torch.Tensor:
    """Sum over heads of ||W_O[layer, head]||_F."""
    return sum(block.attn.W_O.flatten(1).norm(dim=1).sum() for block in model.blocks)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with `n` intra-op threads (None: leave as is), restoring the previous count.

    Small models gain nothing from threads, and on shared cores OpenMP spin-waiting makes every op
    tens of times slower, so the zoo trains and searches on one thread.
    """
    old = torch.get_num_threads()
    if n is not None and n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train(task: Task, config: TrainConfig, progress: Progress | None = None,
          tokenizer: Tokenizer | None = None) -> TrainResult:
    """Train a fresh model on `task` with `config`; returns it in eval mode."""
    with torch_threads(config.threads):
        return _train(task, config, progress, tokenizer)


def _train(task: Task, config: TrainConfig, progress: Progress | None,
           tokenizer: Tokenizer | None) -> TrainResult:
    tokenizer = tokenizer or task.word_tokenizer()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    pool = build_pool(task, tokenizer, config.n_train_prompts, config.seed)
    filler_ids = content_ids(tokenizer)
    torch.manual_seed(config.seed)
    model = HookedTransformer(config.model_config(int(tokenizer.vocab_size)))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "W_pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "W_pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98))
    losses: list[float] = []
    answer_losses: list[float] = []
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, config)
        idx = torch.randint(0, len(pool), (config.batch_size,), generator=gen)
        loss, answer = _task_loss(model, pool, idx, config.lm_weight)
        if config.filler_batch_size > 0 and config.filler_weight > 0:
            f_tokens, f_mask = filler_batch(filler_ids, config.filler_batch_size, config.filler_length,
                                            gen, bos_id=int(tokenizer.bos_token_id))
            loss = loss + config.filler_weight * _filler_loss(model, f_tokens, f_mask)
        if config.head_l1 > 0:
            loss = loss + config.head_l1 * _head_group_l1(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        answer_losses.append(float(answer.detach()))
        if progress is not None:
            progress(step + 1, config.steps, losses[-1])
    model.eval()
    return TrainResult(model=model, tokenizer=tokenizer, config=config, losses=losses,
                       answer_losses=answer_losses, seconds=time.perf_counter() - t0, pool=pool)


@torch.no_grad()
def last_logits(model: HookedTransformer, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """tokens: [n, seq] -> logits at the final position [n, vocab]."""
    return torch.cat([model(tokens[i:i + batch_size])[:, -1] for i in range(0, len(tokens), batch_size)])


@torch.no_grad()
def quality(model: HookedTransformer, task: Task, tokenizer: Tokenizer, prompts: PromptSet,
            seen: set[tuple[int, ...]] | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Accuracy (metric > 0) on positives, and how often negatives still prefer the answer.

    `seen`: training prompts; held-out prompts that also occur there are counted and left out of the
    figures, so the accuracy is on prompts the model never trained on. `batch_size`: prompts per forward
    pass (full-sequence logits are [batch, seq, vocab]: keep it small for a 50k vocabulary).
    """
    rows = list(range(len(prompts)))
    if seen:
        rows = [i for i in rows if tuple(prompts.positive[i].tolist()) not in seen]
    if not rows:
        raise ValueError("every held-out prompt also occurs in the training prompts")
    ps = prompts.subset(rows)
    pos = task.metric(last_logits(model, ps.positive, batch_size), ps).float()  # [n]
    neg = task.metric(last_logits(model, ps.negative, batch_size), ps).float()  # [n]
    return {
        "n_heldout": len(prompts),
        "n_seen_in_training": len(prompts) - len(rows),
        "n_scored": len(rows),
        "positive_accuracy": float((pos > 0).float().mean()),
        "positive_mean_metric": float(pos.mean()),
        "negative_fraction_metric_positive": float((neg > 0).float().mean()),
        "negative_mean_metric": float(neg.mean()),
        "definition": "accuracy = fraction of prompts with task metric > 0 at the final position; "
                      "negatives scored with the positive's answer / wrong tokens",
    }


def heldout_prompts(task: Task, tokenizer: Tokenizer, n: int, seed: int) -> PromptSet:
    """The held-out evaluation prompts of the model trained with `seed` (a seed never used in training)."""
    return task.prompts(tokenizer, n, prompt_seed("heldout", seed))
