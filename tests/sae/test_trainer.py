"""Trainer: determinism, exact resume, schedules, data initialisation, dead latents, checkpoint errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.errors import CircuitsError
from circuits.sae import ARCHS, SAEConfig, TrainConfig, Trainer, make_sae, train_sae
from circuits.sae.sources import TensorSource
from circuits.sae.trainer import CHECKPOINT_FILE, geometric_median

KW = {
    "relu": {"l1_coefficient": 0.3},
    "topk": {"k": 3, "aux_k": 4},
    "batchtopk": {"k": 3, "aux_k": 4},
    "matryoshka": {"k": 3, "aux_k": 4},
    "gated": {"l1_coefficient": 0.3},
    "jumprelu": {"l0_coefficient": 0.1, "bandwidth": 0.1, "threshold_init": 0.1},
}


def _trainer(arch: str, x: torch.Tensor, ckpt_dir: Path | None = None, every: int = 0, **kw) -> Trainer:
    cfg = SAEConfig(d_in=x.shape[-1], d_sae=12, arch=arch, groups=x.shape[0], **KW[arch])
    settings = dict(
        steps=30,
        batch_size=32,
        lr=3e-3,
        seed=5,
        lr_warmup_steps=5,
        lr_decay_steps=10,
        sparsity_warmup_steps=8,
        normalize_inputs=True,
        dead_after_rows=64,
    )
    tcfg = TrainConfig(
        **{**settings, **kw}, checkpoint_every=every, checkpoint_dir=str(ckpt_dir) if ckpt_dir else None
    )
    return Trainer(make_sae(cfg, seed=2), TensorSource(x, seed=5), tcfg)


@pytest.mark.parametrize("arch", ARCHS)
def test_resume_is_bit_exact(arch: str, tmp_path: Path) -> None:
    x = torch.randn(2, 100, 6) * 2 + 1
    full = _trainer(arch, x)
    full.run()
    interrupted = _trainer(arch, x, tmp_path, every=10)
    interrupted.run(until=17)  # "crash" after step 17: the last checkpoint is step 10
    resumed = _trainer(arch, x)
    resumed.load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert resumed.step == 10
    resumed.run()
    for (name, a), b in zip(full.sae.state_dict().items(), resumed.sae.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(full.rows_since_fired, resumed.rows_since_fired)


def test_same_seed_same_sae_other_seed_differs() -> None:
    x = torch.randn(1, 80, 5)

    def run(seed: int) -> torch.Tensor:
        sae = make_sae(SAEConfig(d_in=5, d_sae=8), seed=seed)
        train_sae(sae, x, steps=20, batch_size=16, seed=seed)
        return sae.W_dec.detach()

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_schedules() -> None:
    t = _trainer("relu", torch.randn(1, 10, 4))
    lrs = [t.lr_at(s) for s in range(30)]
    assert (
        lrs[0] == pytest.approx(3e-3 / 5) and lrs[4] == pytest.approx(3e-3) and lrs[19] == pytest.approx(3e-3)
    )
    assert lrs[20] == pytest.approx(3e-3) and lrs[29] == pytest.approx(3e-3 / 10)
    assert t.sparsity_scale_at(0) == pytest.approx(1 / 8) and t.sparsity_scale_at(7) == 1.0


def test_geometric_median_matches_brute_force_and_resists_outliers() -> None:
    from scipy.optimize import minimize

    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(2, 40, 3, generator=gen, dtype=torch.float64)
    pts[1, :5] += 50.0  # outliers pull the mean, barely the median
    med = geometric_median(pts)
    for g in range(2):
        p = pts[g].numpy()
        ref = minimize(
            lambda y, p=p: ((p - y) ** 2).sum(-1).__pow__(0.5).sum(),
            p.mean(0),
            method="Nelder-Mead",
            options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000},
        ).x
        assert torch.allclose(med[g], torch.from_numpy(ref), atol=1e-4)
    assert (med[1] - pts[1, 5:].mean(0)).norm() < (pts[1].mean(0) - pts[1, 5:].mean(0)).norm() / 5


def test_data_initialisation() -> None:
    x = torch.randn(2, 500, 4) * torch.tensor([1.0, 10.0])[:, None, None] + 3.0
    t = _trainer("relu", x, b_dec_init="mean")
    t.initialise_from_data()
    scale = t.sae.input_scale
    assert torch.allclose(
        (x * scale[:, None, None]).pow(2).sum(-1).mean(-1), torch.full((2,), 4.0), rtol=1e-4
    )
    assert torch.allclose(t.sae.b_dec, (x * scale[:, None, None]).mean(1), atol=1e-5)


def test_dead_latents_tracked_and_auxk_revives() -> None:
    x = torch.randn(1, 256, 8)
    cfg = SAEConfig(d_in=8, d_sae=16, arch="topk", k=2, aux_k=4)
    sae = make_sae(cfg, seed=0)
    with torch.no_grad():
        sae.W_enc[0, :, 8:] = 0.0  # latents 8.. never win the top-2: dead
        sae.b_enc[0, 8:] = -5.0
    tcfg = TrainConfig(steps=3, batch_size=64, dead_after_rows=64, b_dec_init="zeros")
    t = Trainer(sae, TensorSource(x), tcfg)
    t.run()
    assert t.dead_fraction()[0] >= 0.5
    assert t.history[-1]["dead_fraction"] >= 0.5
    assert t._last_losses["auxk"][0] > 0  # the aux loss is active on the dead latents


def test_callback_and_library_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[int, int]] = []
    sae = make_sae(SAEConfig(d_in=4, d_sae=6))
    stats = train_sae(
        sae,
        torch.randn(40, 4),
        steps=20,
        batch_size=8,
        log_every=5,
        callback=lambda s, n, m: seen.append((s, n)),
    )
    assert seen == [(5, 20), (10, 20), (15, 20), (20, 20)]
    assert stats.steps == 20 and stats.rows_seen == 160 and len(stats.history) == 4
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_full_batch_when_rows_fit() -> None:
    x = torch.randn(3, 10, 4)
    src = TensorSource(x)
    assert torch.equal(src.next_batch(256), x)


def test_checkpoint_errors(tmp_path: Path) -> None:
    x = torch.randn(1, 50, 6)
    with pytest.raises(CircuitsError, match="no checkpoint"):
        _trainer("relu", x).load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(CircuitsError, match="corrupt or unreadable"):
        _trainer("relu", x).load_checkpoint(bad)
    t = _trainer("relu", x, tmp_path, every=5)
    t.run(until=5)
    with pytest.raises(CircuitsError, match="different SAE"):
        _trainer("topk", x).load_checkpoint(tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CircuitsError, match="different training settings"):
        _trainer("relu", x, lr_decay_steps=0).load_checkpoint(tmp_path / CHECKPOINT_FILE)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CircuitsError, match="not a circuits SAE checkpoint"):
        _trainer("relu", x).load_checkpoint(tmp_path / "other.pt")


def test_shape_mismatch_is_a_clear_error() -> None:
    sae = make_sae(SAEConfig(d_in=4, d_sae=6))
    with pytest.raises(CircuitsError, match="d_in=5"):
        train_sae(sae, torch.randn(10, 5), steps=1)
