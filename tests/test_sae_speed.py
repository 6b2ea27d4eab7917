"""The fast training paths (closed-form backward, fused Adam, adaptive edge chunks) equal the plain ones
up to float rounding."""

from __future__ import annotations

import copy

import pytest
import torch

from circuits.discovery.scoring import edge_chunk, edge_scores, layered_pairs
from circuits.sae import ARCHS, SAE, SAEConfig, TrainConfig, Trainer, make_sae
from circuits.sae.sources import TensorSource


def _autograd(sae: SAE) -> SAE:
    """The same SAE, forced onto the autograd reference step."""
    ref = copy.deepcopy(sae)
    ref._forward_backward_n = SAE._forward_backward_n.__get__(ref)  # type: ignore[method-assign]
    return ref


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    scale = max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= rel * scale, float((a - b).abs().max()) / scale


CASES = [
    {"groups": 1},
    {"groups": 3},
    {"groups": 2, "normalize_decoder": True},
    {"groups": 2, "apply_b_dec_to_input": False, "l1_coefficient": 3.0},
]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_forward_backward_matches_autograd(arch: str, case: int) -> None:
    torch.manual_seed(case)
    cfg = SAEConfig(d_in=12, d_sae=40, arch=arch, k=4, **CASES[case])
    sae = make_sae(cfg, seed=case)
    with torch.no_grad():  # non-trivial biases, scale and decoder norms
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
        sae.W_dec.mul_(torch.rand(cfg.groups, cfg.d_sae, 1) + 0.5)
        sae.input_scale.uniform_(0.5, 2.0)
    x = torch.randn(cfg.groups, 64, cfg.d_in)
    dead = torch.rand(cfg.groups, cfg.d_sae) < 0.5
    ref = _autograd(sae)
    sae.train()
    ref.train()
    out = sae.forward_backward(x, sparsity_scale=0.7, dead_mask=dead)
    want = ref.forward_backward(x, sparsity_scale=0.7, dead_mask=dead)
    _close(out.recon, want.recon)
    _close(out.latents, want.latents)
    for name in want.losses:
        _close(out.losses[name], want.losses[name])
    for (name, p), q in zip(sae.named_parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, name
        _close(p.grad, q.grad)


@pytest.mark.parametrize("arch", ARCHS)
def test_trainer_steps_match_autograd(arch: str) -> None:
    cfg = SAEConfig(d_in=16, d_sae=48, arch=arch, k=4, groups=2)
    x = torch.randn(2, 256, 16) + 0.3
    sae = make_sae(cfg, seed=1)
    ref = _autograd(sae)
    tcfg = TrainConfig(steps=3, batch_size=64, b_dec_init="mean", normalize_inputs=True, log_every=1)
    fast = Trainer(sae, TensorSource(x, seed=0), tcfg)
    slow = Trainer(ref, TensorSource(x, seed=0), tcfg)  # the reference: autograd and the per-tensor Adam
    slow.optimizer = torch.optim.Adam(ref.parameters(), lr=tcfg.lr, betas=tcfg.adam_betas, eps=tcfg.adam_eps)
    fast.run()
    slow.run()
    for p, q in zip(sae.state_dict().values(), ref.state_dict().values(), strict=True):
        _close(p, q, 1e-4)  # three Adam steps: rounding in the gradients may grow through 1/sqrt(v)


def test_fused_adam_with_autograd_layouts() -> None:
    """autograd hands W_enc a transposed-layout gradient; the trainer's fused Adam must still be exact."""
    cfg = SAEConfig(d_in=16, d_sae=48, arch="gated", groups=2)
    x = torch.randn(2, 128, 16)
    sae = make_sae(cfg, seed=2)
    ref = copy.deepcopy(sae)
    tcfg = TrainConfig(steps=1, batch_size=128, b_dec_init="zeros", log_every=1)
    fast = Trainer(sae, TensorSource(x, seed=0), tcfg)
    slow = Trainer(ref, TensorSource(x, seed=0), tcfg)
    slow.optimizer = torch.optim.Adam(ref.parameters(), lr=tcfg.lr)
    fast.run()
    slow.run()
    for p, q in zip(sae.parameters(), ref.parameters(), strict=True):
        _close(p.detach(), q.detach(), 1e-5)


def test_edge_chunk_is_bounded_and_scores_unchanged() -> None:
    assert edge_chunk(100) == 4096
    assert edge_chunk(8000) * 8000 <= 2**20
    assert edge_chunk(10**9) == 1
    gen = torch.Generator().manual_seed(0)
    pairs = layered_pairs(3, 4)
    pos = torch.randint(0, 5, (300, 12), generator=gen)
    neg = torch.randint(0, 5, (280, 12), generator=gen)
    for kind in ("count", "mass"):
        want = edge_scores(pos, neg, 5, pairs, kind, chunk=10**6)
        assert torch.equal(edge_scores(pos, neg, 5, pairs, kind), want)
        assert torch.equal(edge_scores(pos, neg, 5, pairs, kind, chunk=7), want)


def test_normalised_input_is_reused_only_while_x_and_scale_are_unchanged() -> None:
    sae = make_sae(SAEConfig(d_in=8, d_sae=16, arch="relu"), seed=0)
    with torch.no_grad():
        sae.input_scale.fill_(2.0)
    x = torch.randn(1, 32, 8)
    first = sae._normalised_input(x)
    assert sae._normalised_input(x) is first  # same tensor, same version: reused
    x.mul_(3.0)  # in place: the version moves on
    assert torch.equal(sae._normalised_input(x), x * 2.0)
    with torch.no_grad():
        sae.input_scale.fill_(0.5)
    assert torch.equal(sae._normalised_input(x), x * 0.5)
    assert torch.equal(sae._normalised_input(x.clone()), x * 0.5)  # another tensor: computed afresh


def test_lazy_recon_refuses_to_read_an_overwritten_step() -> None:
    sae = make_sae(SAEConfig(d_in=8, d_sae=16, arch="relu"), seed=0)
    x = torch.randn(1, 32, 8)
    out = sae.forward_backward(x)
    want = sae.forward(x).recon.detach()
    _close(out.recon, want)  # read before the next step: the reconstruction
    old = sae.forward_backward(x)
    sae.forward_backward(x)  # reuses old's buffer
    with pytest.raises(RuntimeError, match="before the next"):
        _ = old.recon
