"""How good is an SAE: sparsity, reconstruction, dead / dense latents, shrinkage, and the language-model
loss when the SAE's reconstruction replaces the activation (all per group).

Definitions (REFERENCE §8 lists where libraries differ):
- l0: mean number of non-zero latents per row.
- mse: mean squared error per element (mean over rows and d_in).
- fvu: fraction of variance unexplained, pooled: Σ‖x − x̂‖² / Σ‖x − x̄‖², with x̄ the per-dimension mean
  over the evaluated rows (sparsify's "FVU against the batch mean"; explained variance = 1 − fvu).
- dead_fraction: latents that never fire on the evaluated rows; dense_fraction: latents firing on more
  than `dense_threshold` (default 10 %) of them.
- shrinkage: the Gated paper's relative reconstruction bias γ = argmin_γ E‖x̂/γ − x‖²
  = E[x̂·x̂] / E[x̂·x]; γ < 1 means the SAE shrinks its reconstructions, γ = 1 none.
- CE loss recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean): next-token cross-entropy of the model with
  the hook's activation replaced by the SAE reconstruction (CE_sae), by zeros (CE_zero), and untouched
  (CE_clean). BOS positions keep their original activation in both replacements (SAEs are trained
  without them by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from circuits.errors import CircuitsError
from circuits.sae.base import SAE
from circuits.sae.sources import check_hook


@torch.no_grad()
def reconstruction_metrics(
    sae: SAE, x: Tensor, batch_size: int = 4096, dense_threshold: float = 0.1
) -> dict[str, list[float]]:
    """Metrics of `sae` on activations x [groups, n, d_in] (or [n, d_in]), streamed in batches.
    Returns name -> per-group list."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    g, n, d = x.shape
    if n == 0:
        raise CircuitsError("no activations to evaluate")
    if g != sae.cfg.groups or d != sae.cfg.d_in:
        raise CircuitsError(
            f"activations [groups={g}, d_in={d}] do not fit the SAE "
            f"[groups={sae.cfg.groups}, d_in={sae.cfg.d_in}]"
        )
    was_training = sae.training
    sae.eval()
    dev, dt = sae.W_enc.device, torch.float64
    sq_err = torch.zeros(g, dtype=dt, device=dev)
    sum_x = torch.zeros(g, d, dtype=dt, device=dev)
    sum_x2 = torch.zeros(g, dtype=dt, device=dev)
    rr = torch.zeros(g, dtype=dt, device=dev)  # Σ x̂·x̂
    rx = torch.zeros(g, dtype=dt, device=dev)  # Σ x̂·x
    active = torch.zeros(g, dtype=dt, device=dev)
    fires = torch.zeros(g, sae.cfg.d_sae, dtype=dt, device=dev)
    for start in range(0, n, batch_size):
        xb = x[:, start : start + batch_size].to(dev, sae.W_enc.dtype)
        f = sae.encode(xb)
        r = sae.decode(f)
        xb64, r64 = xb.to(dt), r.to(dt)
        sq_err += (r64 - xb64).pow(2).sum((1, 2))
        sum_x += xb64.sum(1)
        sum_x2 += xb64.pow(2).sum((1, 2))
        rr += r64.pow(2).sum((1, 2))
        rx += (r64 * xb64).sum((1, 2))
        on = f > 0
        active += on.sum((1, 2)).to(dt)
        fires += on.sum(1).to(dt)
    sae.train(was_training)
    total_var = sum_x2 - sum_x.pow(2).sum(-1) / n
    freq = fires / n
    out = {
        "l0": active / n,
        "mse": sq_err / (n * d),
        "fvu": sq_err / total_var.clamp_min(1e-30),
        "dead_fraction": (fires == 0).to(dt).mean(-1),
        "dense_fraction": (freq > dense_threshold).to(dt).mean(-1),
        "shrinkage": rr / rx.where(rx.abs() > 1e-30, torch.full_like(rx, float("nan"))),
    }
    return {k: [float(v) for v in t.cpu()] for k, t in out.items()}


def _replace_fn(sae: SAE | None, head_index: int | None, keep: Tensor, group: int = 0,
                max_norm: float | None = None):
    """A hook that replaces the activation by group `group`'s SAE reconstruction (or zeros when sae is
    None), except where keep [b, seq] is True or the activation's norm exceeds max_norm."""

    def hook(act: Tensor, hook: Any) -> Tensor:
        target = act[:, :, head_index] if head_index is not None else act
        flat = target.reshape(*target.shape[:2], -1)  # [b, s, d]
        keep_here = _keep(keep, flat, max_norm)
        if sae is None:
            new = torch.where(keep_here[..., None], flat, torch.zeros_like(flat))
        else:
            new = _spliced(sae, group, flat, keep_here)
        new = new.reshape(target.shape)
        if head_index is not None:
            act = act.clone()
            act[:, :, head_index] = new
            return act
        return new

    return hook


def _resid_start_layer(model: Any, hook_name: str) -> int | None:
    """The block a forward pass can start at from the activation of a residual-stream hook
    ('blocks.L.hook_resid_post' -> L + 1, 'blocks.L.hook_resid_pre' -> L), else None."""
    parts = hook_name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit():
        return None
    if parts[2] == "hook_resid_post":
        return int(parts[1]) + 1
    if parts[2] == "hook_resid_pre":
        return int(parts[1])
    return None


def _keep(keep: Tensor, act: Tensor, max_norm: float | None) -> Tensor:
    """keep [b, s] widened to the positions whose activation act [b, s, d] has norm above max_norm."""
    return keep if max_norm is None else keep | (act.norm(dim=-1) > max_norm)


def _spliced(sae: SAE, group: int, act: Tensor, keep: Tensor) -> Tensor:
    """act [b, s, d] with group `group`'s reconstruction everywhere keep [b, s] is False."""
    b, s, d = act.shape
    flat = act.reshape(1, b * s, d).expand(sae.cfg.groups, -1, -1).to(sae.W_enc.dtype)
    recon = sae.decode(sae.encode(flat))[group].to(act.dtype).reshape(b, s, d)
    return torch.where(keep[..., None], act, recon)


@torch.no_grad()
def spliced_ce_losses(
    model: Any,
    saes: Sequence[SAE],
    hook_name: str,
    tokens: Tensor,
    batch_size: int = 16,
    bos_token_id: int | None = None,
    head_index: int | None = None,
    max_norm: float | None = None,
) -> dict[str, Any]:
    """Next-token CE over tokens [n, seq]: clean, zero-ablated at `hook_name`, and with each group of
    each SAE spliced in there (`ce_sae`, `ce_loss_recovered`: one per-group list per SAE). Clean and
    zero-ablated passes are shared by all the SAEs. BOS positions, and positions whose activation norm
    exceeds `max_norm` (attention sinks an SAE was not trained on), keep their activation throughout.

    Why two paths: at a residual-stream hook (no head index) the blocks before it run once per batch
    and only the rest of the model runs per replacement (TransformerLens's start_at_layer), which is
    what makes sweeps of many SAEs affordable on a CPU; any other hook is spliced by a forward hook on
    full passes. Both give the same numbers (tests/sae/test_metrics.py)."""
    check_hook(model, hook_name)
    if not saes:
        raise CircuitsError("no SAE to splice in")
    modes = [sae.training for sae in saes]
    for sae in saes:
        sae.eval()
    start = _resid_start_layer(model, hook_name) if head_index is None else None
    clean, zero = 0.0, 0.0
    spliced = [torch.zeros(sae.cfg.groups, dtype=torch.float64) for sae in saes]
    rows = 0
    for first in range(0, tokens.shape[0], batch_size):
        tok = tokens[first : first + batch_size]
        keep = tok == bos_token_id if bos_token_id is not None else torch.zeros_like(tok, dtype=torch.bool)
        n = tok.shape[0]
        if start is not None:
            store: dict[str, Tensor] = {}

            def save(act: Tensor, hook: Any, store: dict[str, Tensor] = store) -> None:
                store["act"] = act.detach()

            clean += float(model.run_with_hooks(tok, return_type="loss", fwd_hooks=[(hook_name, save)])) * n
            act = store["act"]  # [b, s, d_model]
            keep = _keep(keep, act, max_norm)

            def rest(resid: Tensor, tok: Tensor = tok) -> float:
                return float(model(resid, start_at_layer=start, tokens=tok, return_type="loss"))

            zero += rest(torch.where(keep[..., None], act, torch.zeros_like(act))) * n
            for sae, out in zip(saes, spliced, strict=True):
                for g in range(sae.cfg.groups):  # a loop over SAE groups (seeds), each one suffix pass
                    out[g] += rest(_spliced(sae, g, act, keep)) * n
        else:
            clean += float(model(tok, return_type="loss")) * n
            zero += float(model.run_with_hooks(
                tok, return_type="loss",
                fwd_hooks=[(hook_name, _replace_fn(None, head_index, keep, max_norm=max_norm))])) * n
            for sae, out in zip(saes, spliced, strict=True):
                for g in range(sae.cfg.groups):
                    out[g] += float(model.run_with_hooks(
                        tok, return_type="loss",
                        fwd_hooks=[(hook_name, _replace_fn(sae, head_index, keep, g, max_norm))])) * n
        rows += n
    for sae, mode in zip(saes, modes, strict=True):
        sae.train(mode)
    ce_clean, ce_zero = clean / rows, zero / rows
    ce_sae = [(out / rows).tolist() for out in spliced]
    denom = ce_zero - ce_clean
    recovered = [[(ce_zero - c) / denom if abs(denom) > 1e-12 else float("nan") for c in per]
                 for per in ce_sae]
    return {"ce_clean": ce_clean, "ce_zero": ce_zero, "ce_sae": ce_sae, "ce_loss_recovered": recovered}


def ce_loss_recovered(
    model: Any,
    sae: SAE,
    hook_name: str,
    tokens: Tensor,
    batch_size: int = 16,
    bos_token_id: int | None = None,
    head_index: int | None = None,
) -> dict[str, float]:
    """Next-token CE of the model clean, with the SAE spliced in at `hook_name`, and with the activation
    zero-ablated, over tokens [n, seq]; and the fraction of loss recovered (a single SAE)."""
    if sae.cfg.groups != 1:
        raise CircuitsError("CE loss recovered needs a single SAE (groups == 1); "
                            "spliced_ce_losses handles groups")
    out = spliced_ce_losses(model, [sae], hook_name, tokens, batch_size, bos_token_id, head_index)
    return {"ce_clean": out["ce_clean"], "ce_sae": out["ce_sae"][0][0], "ce_zero": out["ce_zero"],
            "ce_loss_recovered": out["ce_loss_recovered"][0][0]}
