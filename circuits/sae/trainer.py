"""Train a (batched) SAE: Adam with lr warm-up and linear decay, sparsity-coefficient warm-up, unit-norm
decoder with gradient projection where the architecture needs it, b_dec from the data (mean or
geometric median), input normalisation, dead-latent tracking, checkpoints and exact resume, and DDP.

The library never prints: pass `callback(step, total_steps, metrics)` to watch progress.

Determinism: parameters are initialised from the SAE's own seed, batches come from the source's own
generator, and nothing reads the global RNG, so the same seeds give the same SAE, and a run resumed from
a checkpoint continues bit-for-bit (the checkpoint holds the SAE, Adam's moments, the step, the
dead-latent counters and the source's position).

Distributed: when `torch.distributed` is initialised (torchrun), the SAE is wrapped in
DistributedDataParallel, each rank trains on its share of every global batch, and gradients are
averaged, so N ranks with batch B/N each equal one process with batch B.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from circuits.atomic import atomic_write
from circuits.errors import CircuitsError
from circuits.sae.base import SAE
from circuits.sae.distributed import rank_and_world as _distributed
from circuits.sae.sources import ActivationSource, TensorSource

ProgressCallback = Callable[[int, int, dict[str, float]], None]
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Optimisation settings. `batch_size` is rows per group per step, across all ranks."""

    steps: int = 1000
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0
    lr_warmup_steps: int = 0
    lr_decay_steps: int = 0  # linear decay to 0 over the last N steps
    sparsity_warmup_steps: int = 0  # L1 / L0 coefficient ramps from 0 over the first N steps
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    b_dec_init: str = "geometric_median"  # "geometric_median" | "mean" | "zeros"
    normalize_inputs: bool = False  # scale each group so that E‖x‖² = d_in
    init_rows: int = 4096  # rows used to estimate b_dec and the input scale
    dead_after_rows: int | None = None  # None: min(10M, a fifth of the run's rows)
    grad_clip_norm: float | None = None
    log_every: int = 10
    checkpoint_every: int = 0  # 0: no periodic checkpoints
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise CircuitsError("steps and batch_size must be positive")
        if self.lr <= 0:
            raise CircuitsError(f"lr must be positive, got {self.lr}")
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise CircuitsError(f"b_dec_init must be geometric_median, mean or zeros, "
                                f"not '{self.b_dec_init}'")
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]

    @property
    def dead_window(self) -> int:
        if self.dead_after_rows is not None:
            return int(self.dead_after_rows)
        return max(1, min(10_000_000, self.steps * self.batch_size // 5))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainStats:
    """What a run did. Per-group lists have one entry per group."""

    steps: int
    rows_seen: int  # rows per group, across ranks
    seconds: float
    final_losses: dict[str, list[float]]  # loss term -> per-group value at the last step
    dead_fraction: list[float]  # per group: latents that had not fired within the dead window at the end
    history: list[dict[str, float]] = field(default_factory=list)  # every log_every steps, means over groups


def geometric_median(x: Tensor, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """Per-group geometric median of rows, x [groups, n, d] -> [groups, d] (Weiszfeld's algorithm)."""
    x = x.double()
    y = x.mean(1)
    for _ in range(iters):
        dist_ = (x - y[:, None]).norm(dim=-1).clamp_min(1e-8)  # [g, n]
        w = 1.0 / dist_
        y_new = (w[..., None] * x).sum(1) / w.sum(1, keepdim=True)
        shift = (y_new - y).norm(dim=-1).max()
        y = y_new
        if shift < tol:
            break
    return y


def make_adam(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Adam:
    """Adam, fused (one kernel for all parameters) where torch has a fused kernel for their device and
    dtype: the same update up to float rounding, several times cheaper than the per-tensor loop on CPU."""
    kw: dict[str, Any] = {"lr": cfg.lr, "betas": cfg.adam_betas, "eps": cfg.adam_eps}
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device / dtype / torch
        return torch.optim.Adam(params, **kw)


class Trainer:
    """One training run of `sae` on `source`. Use `run()`; `save_checkpoint` / `load_checkpoint` for
    resuming (a fresh Trainer over the same source and config, then `load_checkpoint`, then `run`)."""

    def __init__(
        self, sae: SAE, source: ActivationSource, cfg: TrainConfig, callback: ProgressCallback | None = None,
        distributed: bool = True,
    ):
        if source.d_in != sae.cfg.d_in or source.groups != sae.cfg.groups:
            raise CircuitsError(
                f"activations are [groups={source.groups}, d_in={source.d_in}] but the SAE "
                f"expects [groups={sae.cfg.groups}, d_in={sae.cfg.d_in}]"
            )
        self.sae, self.source, self.cfg, self.callback = sae, source, cfg, callback
        # distributed=False: train in this process alone even under torchrun (one rank fits, then broadcasts)
        self.rank, self.world = _distributed() if distributed else (0, 1)
        if cfg.batch_size % self.world:
            raise CircuitsError(f"batch size {cfg.batch_size} is not divisible by {self.world} processes")
        self.device = sae.W_enc.device
        self.step = 0
        self.history: list[dict[str, float]] = []
        g, f = sae.cfg.groups, sae.cfg.d_sae
        self.rows_since_fired = torch.zeros(g, f, dtype=torch.long, device=self.device)
        self._initialised = False
        self.optimizer = make_adam(list(sae.parameters()), cfg)
        self.model: torch.nn.Module = sae
        self._last_losses: dict[str, Tensor] = {}

    # ---- initialisation from data -------------------------------------------------------------
    @torch.no_grad()
    def initialise_from_data(self) -> None:
        """Input scale and b_dec from a sample of the data (identical on every rank)."""
        sae, cfg = self.sae, self.cfg
        sample = self.source.sample(cfg.init_rows).to(self.device, sae.W_enc.dtype)  # [g, n, d]
        if cfg.normalize_inputs:
            mean_sq = sample.pow(2).sum(-1).mean(-1).clamp_min(1e-12)  # [g]
            sae.input_scale.copy_((sae.cfg.d_in / mean_sq).sqrt())
        sample = sample * sae.input_scale[:, None, None]
        if cfg.b_dec_init == "mean":
            sae.b_dec.copy_(sample.mean(1))
        elif cfg.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(sample).to(sae.b_dec.dtype))
        if sae.cfg.unit_decoder:
            sae.set_decoder_unit_norm()
        self._initialised = True

    def _wrap(self) -> None:
        if self.world > 1 and self.model is self.sae:
            # Buffers are synced once at construction (from rank 0, like the parameters), then kept in
            # sync by the trainer (all-reduce of `synced_buffers`), not re-broadcast on every forward.
            import inspect

            from torch.nn.parallel import DistributedDataParallel

            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
                self.model = DistributedDataParallel(self.sae, forward_sync_buffers=False)
            else:  # older torch
                self.model = DistributedDataParallel(self.sae, broadcast_buffers=False)

    # ---- schedules --------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        cfg, lr = self.cfg, self.cfg.lr
        if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
            lr *= (step + 1) / cfg.lr_warmup_steps
        if cfg.lr_decay_steps and step >= cfg.steps - cfg.lr_decay_steps:
            lr *= (cfg.steps - step) / cfg.lr_decay_steps
        return lr

    def sparsity_scale_at(self, step: int) -> float:
        w = self.cfg.sparsity_warmup_steps
        return min(1.0, (step + 1) / w) if w else 1.0

    # ---- one step -----------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Tensor]:
        sae, cfg = self.sae, self.cfg
        x = self.source.next_batch(cfg.batch_size).to(self.device, sae.W_enc.dtype)  # [g, b, d]
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        dead = self.rows_since_fired >= cfg.dead_window if sae.uses_dead_mask else None
        self.optimizer.zero_grad(set_to_none=True)
        if self.model is sae:  # one process: closed-form backward where the architecture has one
            out = sae.forward_backward(x, sparsity_scale=self.sparsity_scale_at(self.step), dead_mask=dead)
        else:  # DDP: its gradient all-reduce hooks live in autograd
            out = self.model(x, sparsity_scale=self.sparsity_scale_at(self.step), dead_mask=dead)
            out.loss.backward()
        if sae.cfg.unit_decoder:
            sae.remove_parallel_decoder_grad()
        if cfg.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip_norm)
        if any(group.get("fused") for group in self.optimizer.param_groups):
            # torch's fused CPU Adam reads a gradient as if laid out like its parameter: autograd's
            # transposed-layout gradients (W_enc's, from bmm) would be updated WRONGLY, so make them match.
            for param in self.sae.parameters():
                if param.grad is not None and param.grad.stride() != param.stride():
                    param.grad = torch.empty_like(param).copy_(param.grad)
        self.optimizer.step()
        if sae.cfg.unit_decoder:
            sae.set_decoder_unit_norm()
        with torch.no_grad():
            # fired: max > 0 over rows; l0: Σ sign⁺ in float (both exact, and several times cheaper than
            # reductions of a [g, b, d_sae] bool tensor).
            fired = out.latents.amax(1) > 0  # [g, d_sae]
            l0 = torch.sign(out.latents).clamp_min_(0).sum(-1).float().mean(-1)  # [g]
            if self.world > 1:
                fired_i = fired.to(torch.int32)
                dist.all_reduce(fired_i, op=dist.ReduceOp.MAX)
                fired = fired_i.bool()
                dist.all_reduce(l0)
                l0 /= self.world
                for buf in getattr(sae, "synced_buffers", ()):
                    value = getattr(sae, buf)
                    dist.all_reduce(value)
                    value /= self.world
            self.rows_since_fired += cfg.batch_size
            self.rows_since_fired[fired] = 0
        self.step += 1
        losses = {k: v.detach() for k, v in out.losses.items()}
        losses["l0"] = l0
        self._last_losses = losses
        return losses

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self, until: int | None = None) -> TrainStats:
        """Train to `cfg.steps` (or stop early after step `until`, as an interruption would)."""
        cfg = self.cfg
        stop = cfg.steps if until is None else min(cfg.steps, until)
        if not self._initialised and self.step == 0:
            self.initialise_from_data()
        self._wrap()
        self.sae.train()
        start = time.perf_counter()
        while self.step < stop:
            losses = self.train_step()
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                record = {"step": float(self.step), "lr": self.lr_at(self.step - 1)}
                record.update({k: float(v.mean()) for k, v in losses.items()})
                record["dead_fraction"] = float(self.dead_fraction().mean())
                self.history.append(record)
                if self.callback is not None:
                    self.callback(self.step, cfg.steps, record)
            if (
                cfg.checkpoint_every
                and cfg.checkpoint_dir
                and self.step % cfg.checkpoint_every == 0
                and self.step < cfg.steps
            ):
                self.save_checkpoint(Path(cfg.checkpoint_dir) / CHECKPOINT_FILE)
        self.sae.eval()
        return TrainStats(
            steps=self.step,
            rows_seen=self.step * cfg.batch_size,
            seconds=time.perf_counter() - start,
            final_losses={k: v.cpu().tolist() for k, v in self._last_losses.items()},
            dead_fraction=self.dead_fraction().cpu().tolist(),
            history=list(self.history),
        )

    def dead_fraction(self) -> Tensor:
        """[groups]: fraction of latents that have not fired within the dead window."""
        return (self.rows_since_fired >= self.cfg.dead_window).float().mean(-1)

    # ---- checkpoints ------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": "circuits-sae-checkpoint-1",
            "step": self.step,
            "sae_cfg": self.sae.cfg.to_dict(),
            "train_cfg": self._comparable_train_cfg(),
            "sae": {k: v.detach().cpu().clone() for k, v in self.sae.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rows_since_fired": self.rows_since_fired.cpu().clone(),
            "source": self._gather_source_states(),
            "world_size": self.world,
            "history": self.history,
            "initialised": self._initialised,
        }

    def _comparable_train_cfg(self) -> dict[str, Any]:
        """The settings a resumed run must share (everything but where and how often to save/log)."""
        skip = ("checkpoint_dir", "checkpoint_every", "log_every")
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.cfg.to_dict().items() if k not in skip
        }

    def _gather_source_states(self) -> Any:
        """This rank's source state, or (under DDP) every rank's, in rank order."""
        state = self.source.state_dict()
        if self.world == 1:
            return state
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def save_checkpoint(self, path: Path) -> None:
        """Write the full training state atomically. Every rank must call it (under DDP the sources'
        states are gathered); rank 0 writes."""
        state = self.checkpoint_state()
        if self.rank != 0:
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, path: Path) -> None:
        """Restore a checkpoint written by `save_checkpoint` for the same SAE config. Loading uses
        torch's weights-only unpickler (tensors and plain containers only)."""
        state = read_checkpoint(path)
        if state["sae_cfg"] != self.sae.cfg.to_dict():
            diff = sorted(
                k for k in state["sae_cfg"] if state["sae_cfg"].get(k) != self.sae.cfg.to_dict().get(k)
            )
            raise CircuitsError(f"{path}: checkpoint is for a different SAE (differs in {', '.join(diff)})")
        ours = self._comparable_train_cfg()
        diff = sorted(k for k in ours if state["train_cfg"].get(k) != ours[k])
        if diff:
            raise CircuitsError(
                f"{path}: checkpoint was made with different training settings "
                f"({', '.join(diff)}); resume with the same options"
            )
        if int(state.get("world_size", 1)) != self.world:
            raise CircuitsError(
                f"{path}: checkpoint was made with {state.get('world_size', 1)} processes, "
                f"this run has {self.world}"
            )
        source_state = state["source"][self.rank] if self.world > 1 else state["source"]
        try:
            self.sae.load_state_dict(state["sae"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.source.load_state_dict(source_state)
        except (KeyError, RuntimeError, ValueError) as err:
            raise CircuitsError(f"{path}: checkpoint does not match ({str(err).splitlines()[0]})") from None
        self.rows_since_fired = state["rows_since_fired"].to(self.device)
        self.step = int(state["step"])
        self.history = list(state["history"])
        self._initialised = bool(state["initialised"])


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint dict; a missing, corrupt or foreign file is a one-line CircuitsError."""
    path = Path(path)
    if not path.is_file():
        raise CircuitsError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, truncated file, disallowed pickle content
        raise CircuitsError(f"{path}: corrupt or unreadable checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != "circuits-sae-checkpoint-1":
        raise CircuitsError(f"{path}: not a circuits SAE checkpoint")
    return state


def train_sae(
    sae: SAE,
    x: Tensor,
    steps: int = 1000,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    callback: ProgressCallback | None = None,
    distributed: bool = True,
    **train_kwargs: Any,
) -> TrainStats:
    """Train `sae` in place on in-memory activations x [groups, n, d_in] (or [n, d_in] when groups=1).

    Minibatches of `batch_size` rows per group per step (the full batch when n <= batch_size); other
    TrainConfig fields (lr_warmup_steps, sparsity_warmup_steps, b_dec_init, normalize_inputs, ...) go
    in `train_kwargs`. distributed=False trains here alone even when a process group exists.
    """
    cfg = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seed=seed, **train_kwargs)
    rank, world = _distributed() if distributed else (0, 1)
    source = TensorSource(x.to(sae.W_enc.device), seed=seed, rank=rank, world=world)
    return Trainer(sae, source, cfg, callback, distributed=distributed).run()
