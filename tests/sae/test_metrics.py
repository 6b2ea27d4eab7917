"""Metrics against direct computations, and CE loss recovered on a model with a spliced SAE."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.errors import CircuitsError
from circuits.models import load_model
from circuits.sae import SAEConfig, make_sae
from circuits.sae.metrics import ce_loss_recovered, reconstruction_metrics
from circuits.sae.sources import token_batches


def _identity_sae(d: int, scale: float = 1.0):
    """d_sae = 2d, latents ReLU(x), ReLU(-x): reconstructs x exactly (times `scale`)."""
    sae = make_sae(SAEConfig(d_in=d, d_sae=2 * d, arch="relu", normalize_decoder=False), seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1)[None])
        sae.W_dec.copy_(scale * torch.cat([eye, -eye], 0)[None])
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def test_metrics_match_direct_computation() -> None:
    sae = make_sae(SAEConfig(d_in=5, d_sae=9, arch="relu"), seed=3).eval()
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-1, 0.5, 9)[None])
        sae.b_enc[0, 0] = -100.0  # latent 0 never fires
        sae.b_enc[0, 1] = 100.0  # latent 1 always fires
    x = torch.randn(1, 300, 5) + 0.5
    m = reconstruction_metrics(sae, x, batch_size=64, dense_threshold=0.9)
    with torch.no_grad():
        f = sae.encode(x)[0]
        r = sae.decode(f[None])[0]
    xs = x[0]
    assert m["l0"][0] == pytest.approx(float((f > 0).sum(-1).float().mean()), rel=1e-6)
    assert m["mse"][0] == pytest.approx(float((r - xs).pow(2).mean()), rel=1e-5)
    fvu = float((r - xs).pow(2).sum() / (xs - xs.mean(0)).pow(2).sum())
    assert m["fvu"][0] == pytest.approx(fvu, rel=1e-5)
    freq = (f > 0).float().mean(0)
    assert m["dead_fraction"][0] == pytest.approx(float((freq == 0).float().mean()))
    assert m["dead_fraction"][0] >= 1 / 9 and m["dense_fraction"][0] >= 1 / 9
    assert m["dense_fraction"][0] == pytest.approx(float((freq > 0.9).float().mean()))


def test_perfect_and_shrunk_reconstructions() -> None:
    x = torch.randn(1, 200, 4)
    perfect = reconstruction_metrics(_identity_sae(4), x)
    assert perfect["fvu"][0] < 1e-10 and perfect["shrinkage"][0] == pytest.approx(1.0)
    assert perfect["l0"][0] == pytest.approx(4.0)  # one of each ±pair fires per dimension
    shrunk = reconstruction_metrics(_identity_sae(4, scale=0.5), x)
    assert shrunk["shrinkage"][0] == pytest.approx(0.5, rel=1e-6)  # γ: x̂ = 0.5 x


def test_groups_and_shape_errors() -> None:
    sae = make_sae(SAEConfig(d_in=3, d_sae=4, groups=2)).eval()
    m = reconstruction_metrics(sae, torch.randn(2, 10, 3))
    assert all(len(v) == 2 for v in m.values())
    with pytest.raises(CircuitsError, match="do not fit"):
        reconstruction_metrics(sae, torch.randn(3, 10, 3))


def test_ce_loss_recovered(tiny_model_dir: Path, corpus_txt: Path) -> None:
    lm = load_model(str(tiny_model_dir))
    tokens = token_batches(corpus_txt, lm.tokenizer, 16, 8)
    hook = "blocks.0.hook_resid_post"
    perfect = ce_loss_recovered(lm.model, _identity_sae(32), hook, tokens, batch_size=4, bos_token_id=0)
    with torch.no_grad():
        clean = float(lm.model(tokens, return_type="loss"))
    assert perfect["ce_clean"] == pytest.approx(clean, rel=1e-5)
    assert perfect["ce_sae"] == pytest.approx(clean, rel=1e-5)
    assert perfect["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert perfect["ce_zero"] != pytest.approx(clean, rel=1e-4)
    # An SAE that outputs zeros everywhere is exactly the zero-ablation baseline.
    null = _identity_sae(32, scale=0.0)
    zero = ce_loss_recovered(lm.model, null, hook, tokens, batch_size=4, bos_token_id=0)
    assert zero["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-4)


def test_spliced_ce_fast_path_matches_full_passes(tiny_model_dir: Path, corpus_txt: Path) -> None:
    """At a residual hook the suffix-only path (start_at_layer) equals full passes with a forward hook,
    group by group; and a groups=2 SAE gives each group's own number."""
    from circuits.sae.metrics import _replace_fn, spliced_ce_losses

    lm = load_model(str(tiny_model_dir))
    tokens = token_batches(corpus_txt, lm.tokenizer, 16, 6)
    sae = make_sae(SAEConfig(d_in=32, d_sae=48, arch="topk", k=6, groups=2), seed=1).eval()
    for hook in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"):
        fast = spliced_ce_losses(lm.model, [sae, sae], hook, tokens, batch_size=4, bos_token_id=0)
        assert fast["ce_sae"][0] == fast["ce_sae"][1]
        keep = tokens == 0
        with torch.no_grad():
            for g in range(2):
                slow = float(lm.model.run_with_hooks(
                    tokens, return_type="loss", fwd_hooks=[(hook, _replace_fn(sae, None, keep, group=g))]))
                assert fast["ce_sae"][0][g] == pytest.approx(slow, rel=1e-4)
            zero = float(lm.model.run_with_hooks(
                tokens, return_type="loss", fwd_hooks=[(hook, _replace_fn(None, None, keep))]))
        assert fast["ce_zero"] == pytest.approx(zero, rel=1e-4)
        assert fast["ce_sae"][0][0] != pytest.approx(fast["ce_sae"][0][1], rel=1e-6)
    with pytest.raises(CircuitsError, match="groups"):
        ce_loss_recovered(lm.model, sae, "blocks.0.hook_resid_post", tokens)


def test_spliced_ce_leaves_high_norm_positions(tiny_model_dir: Path, corpus_txt: Path) -> None:
    """max_norm: positions above it keep their activation (as BOS does), on both paths."""
    from circuits.sae.metrics import spliced_ce_losses

    lm = load_model(str(tiny_model_dir))
    tokens = token_batches(corpus_txt, lm.tokenizer, 16, 4)
    null = _identity_sae(32, scale=0.0)
    for hook in ("blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"):
        everything = spliced_ce_losses(lm.model, [null], hook, tokens, bos_token_id=0, max_norm=0.0)
        assert everything["ce_sae"][0][0] == pytest.approx(everything["ce_clean"], rel=1e-5)
        assert everything["ce_zero"] == pytest.approx(everything["ce_clean"], rel=1e-5)
        nothing = spliced_ce_losses(lm.model, [null], hook, tokens, bos_token_id=0, max_norm=1e9)
        assert nothing["ce_sae"][0][0] == pytest.approx(nothing["ce_zero"], rel=1e-5)
