"""The sparse training decode of TopK / BatchTopK equals the dense one: same loss, same gradients."""

from __future__ import annotations

import pytest
import torch

from circuits.sae import SAEConfig, make_sae


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_training_step_equals_dense(arch: str) -> None:
    cfg = SAEConfig(d_in=12, d_sae=40, arch=arch, groups=3, k=4)
    x = torch.randn(3, 16, 12, generator=torch.Generator().manual_seed(0))
    sparse, dense = make_sae(cfg, seed=1), make_sae(cfg, seed=1)
    sparse.train()
    dense.train()
    dead = torch.rand(3, 40, generator=torch.Generator().manual_seed(2)) < 0.3
    out = sparse(x, dead_mask=dead)
    # the dense reference: the same activation, decoded with f @ W_dec
    pre = dense.pre_acts(dense._normalise(x))
    f = dense._train_activate(pre)
    recon = dense._decode_n(f)
    ref = dense.mse(x, recon) + cfg.aux_k_coefficient * dense.auxk(pre, (x - recon).detach(), dead)
    assert torch.allclose(out.losses["loss"], ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.latents, f.detach())
    out.loss.backward()
    ref.sum().backward()
    for name, p in sparse.named_parameters():
        assert torch.allclose(p.grad, dict(dense.named_parameters())[name].grad, rtol=1e-4, atol=1e-6), name
    if arch == "batchtopk":
        assert torch.equal(sparse.threshold, dense.threshold)
