"""Every architecture against its reference formula, the batched-groups contract, and the constraints."""

from __future__ import annotations

import pytest
import torch

from circuits.errors import CircuitsError
from circuits.sae import ARCHS, SAEConfig, make_sae, train_sae
from circuits.sae.jumprelu import jumprelu, jumprelu_with_l0, step

KW = {
    "relu": {"l1_coefficient": 0.3},
    "topk": {"k": 3},
    "batchtopk": {"k": 3},
    "matryoshka": {"k": 3},
    "gated": {"l1_coefficient": 0.3},
    "jumprelu": {"l0_coefficient": 0.1, "bandwidth": 0.1, "threshold_init": 0.1},
}


def _perturbed(arch: str, groups: int = 2, d_in: int = 6, d_sae: int = 10, seed: int = 0, **kw):
    """An SAE with non-trivial biases (so formulas are tested away from the zero init)."""
    sae = make_sae(
        SAEConfig(d_in=d_in, d_sae=d_sae, arch=arch, groups=groups, **{**KW[arch], **kw}), seed=seed
    )
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in sae.parameters():
            if p.dim() < 3:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return sae


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_interface(arch: str) -> None:
    sae = _perturbed(arch, groups=3)
    x = torch.randn(3, 5, 6)
    out = sae(x)
    assert out.recon.shape == (3, 5, 6) and out.latents.shape == (3, 5, 10)
    assert set(out.losses) >= {"loss", "mse"} and all(v.shape == (3,) for v in out.losses.values())
    assert torch.allclose(out.loss, out.losses["loss"].sum())
    sae.eval()
    f = sae.encode(x)
    assert f.shape == (3, 5, 10) and sae.decode(f).shape == (3, 5, 6)
    assert (f >= 0).all()
    single = _perturbed(arch, groups=1)
    single.eval()
    assert single.encode(torch.randn(5, 6)).shape == (5, 10)
    assert single(torch.randn(5, 6)).recon.shape == (5, 6)
    with pytest.raises(CircuitsError, match="groups"):
        sae.encode(torch.randn(5, 6))


def test_relu_loss_matches_formula() -> None:
    sae = _perturbed("relu", normalize_decoder=False)
    x = torch.randn(2, 7, 6)
    out = sae(x, sparsity_scale=0.5)
    f = torch.relu(torch.einsum("gbd,gdf->gbf", x - sae.b_dec[:, None], sae.W_enc) + sae.b_enc[:, None])
    recon = torch.einsum("gbf,gfd->gbd", f, sae.W_dec) + sae.b_dec[:, None]
    mse = (recon - x).pow(2).sum(-1).mean(-1)
    l1 = (f * sae.W_dec.norm(dim=-1)[:, None]).sum(-1).mean(-1)
    assert torch.allclose(out.latents, f, atol=1e-6)
    assert torch.allclose(out.losses["loss"], mse + 0.3 * 0.5 * l1, atol=1e-5)


def test_topk_keeps_k_and_auxk_formula() -> None:
    sae = _perturbed("topk", d_sae=12, aux_k=2)
    x = torch.randn(2, 9, 6)
    pre = sae.pre_acts(x)
    dead = torch.zeros(2, 12, dtype=torch.bool)
    dead[0, [1, 4, 7]] = True  # group 1 has no dead latent: its aux term must be 0
    out = sae(x, dead_mask=dead)
    assert ((out.latents > 0).sum(-1) <= 3).all()
    top = pre.topk(3, dim=-1).values.relu()
    assert torch.allclose(
        out.latents.sort(-1, descending=True).values[..., :3], top.sort(-1, descending=True).values
    )
    e = (x - out.recon).detach()[0]
    z = pre[0][:, [1, 4, 7]]
    vals, idx = z.topk(2, dim=-1)
    f_aux = torch.zeros(9, 12)
    f_aux.scatter_(-1, torch.tensor([1, 4, 7])[idx], vals.relu())
    ref = (f_aux @ sae.W_dec[0] - e).pow(2).sum(-1).mean()
    assert torch.allclose(out.losses["auxk"][0], ref, atol=1e-5)
    assert out.losses["auxk"][1] == 0
    assert torch.allclose(out.losses["loss"], out.losses["mse"] + out.losses["auxk"] / 32)


def test_batchtopk_batch_budget_and_threshold() -> None:
    sae = _perturbed("batchtopk", d_sae=12)
    x = torch.randn(2, 16, 6)
    out = sae(x)  # training mode: k × batch active over the whole batch (when that many are positive)
    active = (out.latents > 0).sum((1, 2))
    positive = (sae.pre_acts(x) > 0).sum((1, 2))
    assert torch.equal(active, torch.minimum(positive, torch.tensor(3 * 16)))
    kept_min = torch.where(out.latents > 0, out.latents, torch.tensor(float("inf"))).amin((1, 2))
    assert torch.allclose(sae.threshold, kept_min)  # first estimate = smallest kept activation
    sae.eval()
    f = sae.encode(x)
    pre = sae.pre_acts(x)
    assert torch.equal(f, pre * (pre > sae.threshold[:, None, None]))


def test_gated_loss_and_frozen_decoder_in_aux() -> None:
    sae = _perturbed("gated")
    x = torch.randn(2, 8, 6)
    xc = x - sae.b_dec[:, None]
    pi_gate = torch.einsum("gbd,gdf->gbf", xc, sae.W_enc) + sae.b_enc[:, None]
    pi_mag = torch.einsum("gbd,gdf->gbf", xc, sae.W_enc * sae.r_mag.exp()[:, None]) + sae.b_mag[:, None]
    f = (pi_gate > 0).float() * pi_mag.relu()
    out = sae(x)
    assert torch.allclose(out.latents, f, atol=1e-6)
    recon_aux = torch.einsum("gbf,gfd->gbd", pi_gate.relu(), sae.W_dec) + sae.b_dec[:, None]
    aux = (recon_aux - x).pow(2).sum(-1).mean(-1)
    l1 = pi_gate.relu().sum(-1).mean(-1)
    assert torch.allclose(out.losses["loss"], out.losses["mse"] + 0.3 * l1 + aux, atol=1e-5)
    # The auxiliary term reaches the encoder but not the decoder (stop-gradient).
    out.losses["aux"].sum().backward()
    assert sae.W_dec.grad is None or sae.W_dec.grad.abs().max() == 0
    assert sae.W_enc.grad.abs().max() > 0


def test_jumprelu_straight_through_gradients() -> None:
    z = torch.tensor([[[0.05, 0.12, 0.31, -0.2]]], requires_grad=True)
    theta = torch.tensor([[0.1, 0.1, 0.3, 0.1]], requires_grad=True)
    eps = 0.04
    out = jumprelu(z, theta, eps)
    assert torch.allclose(out, torch.tensor([[[0.0, 0.12, 0.31, 0.0]]]))
    out.sum().backward()
    # dJumpReLU/dz = H(z - θ); dJumpReLU/dθ = -(θ/ε) K((z - θ)/ε), K = 1[|u| < 1/2]
    assert torch.allclose(z.grad, torch.tensor([[[0.0, 1.0, 1.0, 0.0]]]))
    k = ((z.detach() - theta.detach()).abs() / eps < 0.5).float()[0]
    assert torch.allclose(theta.grad, -(theta.detach() / eps) * k)
    z.grad, theta.grad = None, None
    step(z, theta, eps).sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert torch.allclose(theta.grad, -(1.0 / eps) * k)


def test_jumprelu_loss_is_l0() -> None:
    sae = _perturbed("jumprelu")
    x = torch.randn(2, 8, 6)
    out = sae(x)
    assert torch.allclose(out.losses["l0_penalty"], (out.latents > 0).float().sum(-1).mean(-1))


@pytest.mark.parametrize("arch", ["relu", "topk", "gated"])
def test_groups_train_independently(arch: str) -> None:
    """Group g of a batched SAE ends exactly where an SAE trained alone on group g's data ends."""
    x = torch.randn(3, 64, 6)
    batched = _perturbed(arch, groups=3)
    alone = _perturbed(arch, groups=1)
    with torch.no_grad():
        for name, p in alone.named_parameters():
            p.copy_(getattr(batched, name)[1:2])
    train_sae(batched, x, steps=15, batch_size=16, seed=4)
    train_sae(alone, x[1:2], steps=15, batch_size=16, seed=4)
    for name, p in alone.named_parameters():
        assert torch.allclose(p, getattr(batched, name)[1:2], atol=1e-6), name


@pytest.mark.parametrize("arch", ARCHS)
def test_unit_norm_decoder_kept(arch: str) -> None:
    sae = _perturbed(arch)
    train_sae(sae, torch.randn(2, 50, 6) * 3, steps=10, batch_size=25, lr=1e-2)
    norms = sae.W_dec.norm(dim=-1)
    if sae.cfg.unit_decoder:
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    else:
        assert arch == "relu" and not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)


def test_gradient_projection_is_tangent() -> None:
    sae = _perturbed("topk")
    sae.set_decoder_unit_norm()
    sae(torch.randn(2, 8, 6)).loss.backward()
    sae.remove_parallel_decoder_grad()
    radial = (sae.W_dec.grad * sae.W_dec).sum(-1)
    assert radial.abs().max() < 1e-6


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_input_scale_preserves_function(arch: str) -> None:
    sae = _perturbed(arch)
    with torch.no_grad():
        sae.input_scale.copy_(torch.tensor([0.3, 2.5]))
    sae.eval()
    x = torch.randn(2, 7, 6)
    before = sae(x).recon
    sae.fold_input_scale()
    assert torch.equal(sae.input_scale, torch.ones(2))
    assert torch.allclose(sae(x).recon, before, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("b_dec_on_input", [True, False])
def test_encode_projected_equals_encode(arch: str, b_dec_on_input: bool) -> None:
    """encode(z @ M) == encode_projected(z @ (M @ input_projection())): what find's folded codes rely on."""
    sae = _perturbed(arch, apply_b_dec_to_input=b_dec_on_input)
    with torch.no_grad():
        sae.input_scale.copy_(torch.tensor([0.3, 2.5]))
    sae.eval()
    z = torch.randn(2, 40, 3)  # [g, b, d_small]
    m = torch.randn(2, 3, 6)  # [g, d_small, d_in]
    expected = sae.encode(torch.bmm(z, m))
    folded = torch.bmm(m, sae.input_projection())  # [g, d_small, d_sae]
    got = sae.encode_projected(torch.bmm(z, folded))
    assert expected.abs().sum() > 0  # something fired, so the comparison has content
    assert torch.allclose(got, expected, atol=1e-5)


def test_config_validation() -> None:
    with pytest.raises(CircuitsError, match="k must be"):
        SAEConfig(d_in=4, d_sae=8, arch="topk", k=9)
    with pytest.raises(CircuitsError, match="unknown SAE architecture"):
        SAEConfig(d_in=4, d_sae=8, arch="nope")
    with pytest.raises(CircuitsError, match="d_sae"):
        SAEConfig(d_in=4, d_sae=0)


def test_init_is_seeded_and_ignores_global_rng() -> None:
    cfg = SAEConfig(d_in=5, d_sae=7, arch="relu")
    torch.manual_seed(1)
    a = make_sae(cfg, seed=3)
    torch.manual_seed(2)
    b = make_sae(cfg, seed=3)
    c = make_sae(cfg, seed=4)
    assert torch.equal(a.W_dec, b.W_dec) and not torch.equal(a.W_dec, c.W_dec)
    assert torch.allclose(a.W_enc, a.W_dec.transpose(1, 2))


def test_fused_jumprelu_matches_separate_functions() -> None:
    gen = torch.Generator().manual_seed(0)
    z = (torch.rand(2, 50, 7, generator=gen) * 0.4).requires_grad_()
    theta = torch.full((2, 7), 0.2).requires_grad_()
    f, l0 = jumprelu_with_l0(z, theta, 0.05)
    (f.pow(2).sum() + 3.0 * l0.sum()).backward()
    gz, gt = z.grad.clone(), theta.grad.clone()
    z.grad, theta.grad = None, None
    f2 = jumprelu(z, theta, 0.05)
    l02 = step(z, theta, 0.05).sum(-1).mean(-1)
    (f2.pow(2).sum() + 3.0 * l02.sum()).backward()
    assert torch.equal(f, f2) and torch.allclose(l0, l02)
    assert torch.allclose(gz, z.grad) and torch.allclose(gt, theta.grad, atol=1e-5)
    assert gt.abs().sum() > 0
