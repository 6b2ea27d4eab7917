"""SAELens-layout files: round trips, the layout itself, and clear refusals of bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from circuits.errors import CircuitsError
from circuits.sae import ARCHS, SAEConfig, make_sae, train_sae
from circuits.sae.io import CFG_FILE, WEIGHTS_FILE, load_sae, save_sae

KW = {
    "relu": {"l1_coefficient": 0.3},
    "topk": {"k": 3},
    "batchtopk": {"k": 3},
    "matryoshka": {"k": 3},
    "gated": {"l1_coefficient": 0.3},
    "jumprelu": {"l0_coefficient": 0.1, "bandwidth": 0.1, "threshold_init": 0.1},
}
SAELENS_ARCH = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "gated": "gated",
    "jumprelu": "jumprelu",
    "matryoshka": "jumprelu",
}


def _trained(arch: str, groups: int = 1):
    sae = make_sae(
        SAEConfig(
            d_in=6, d_sae=10, arch=arch, groups=groups, hook_name="blocks.0.hook_resid_post", **KW[arch]
        ),
        seed=1,
    )
    x = torch.randn(groups, 64, 6) * 3 + 1
    train_sae(sae, x, steps=8, batch_size=32, lr=1e-2, normalize_inputs=True)  # input_scale != 1
    sae.eval()
    return sae, x


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip(arch: str, groups: int, tmp_path: Path) -> None:
    sae, x = _trained(arch, groups)
    assert not torch.allclose(sae.input_scale, torch.ones(groups))
    save_sae(sae, tmp_path / "sae")
    back = load_sae(tmp_path / "sae")
    assert type(back) is type(sae) and back.cfg.arch == arch and back.cfg.groups == groups
    with torch.no_grad():
        assert torch.allclose(back.encode(x), sae.encode(x), atol=1e-4)
        assert torch.allclose(back(x).recon, sae(x).recon, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_saelens_layout(arch: str, tmp_path: Path) -> None:
    sae, _ = _trained(arch)
    save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    assert cfg["architecture"] == SAELENS_ARCH[arch]
    assert (cfg["d_in"], cfg["d_sae"], cfg["normalize_activations"]) == (6, 10, "none")
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    assert (
        tensors["W_enc"].shape == (6, 10)
        and tensors["W_dec"].shape == (10, 6)
        and tensors["b_dec"].shape == (6,)
    )
    bias = "b_gate" if arch == "gated" else "b_enc"
    assert tensors[bias].shape == (10,)
    if arch in ("jumprelu", "batchtopk", "matryoshka"):
        assert tensors["threshold"].shape == (10,) and (tensors["threshold"] > 0).all()
    if arch == "topk":
        assert cfg["k"] == 3


def test_reference_saelens_formula_on_saved_tensors(tmp_path: Path) -> None:
    """A reader that knows only the SAELens formula reproduces our encoding from the files."""
    sae, x = _trained("jumprelu")
    save_sae(sae, tmp_path)
    t = load_file(str(tmp_path / WEIGHTS_FILE))
    pre = (x[0] - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    f = torch.relu(pre) * (pre > t["threshold"])
    with torch.no_grad():
        assert torch.allclose(f, sae.encode(x)[0], atol=1e-4)
        assert torch.allclose(f @ t["W_dec"] + t["b_dec"], sae(x).recon[0], atol=1e-4)


def test_loads_a_plain_saelens_directory(tmp_path: Path) -> None:
    """A cfg.json with no 'circuits' block (as SAELens writes it) loads by its SAELens architecture."""
    cfg = {
        "architecture": "topk",
        "d_in": 4,
        "d_sae": 8,
        "k": 2,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.1.hook_resid_pre", "model_name": "m"},
    }
    (tmp_path / CFG_FILE).write_text(json.dumps(cfg))
    save_file(
        {
            "W_enc": torch.randn(4, 8),
            "W_dec": torch.randn(8, 4),
            "b_enc": torch.zeros(8),
            "b_dec": torch.zeros(4),
        },
        str(tmp_path / WEIGHTS_FILE),
    )
    sae = load_sae(tmp_path)
    assert sae.cfg.arch == "topk" and sae.cfg.k == 2 and sae.cfg.hook_name == "blocks.1.hook_resid_pre"
    assert ((sae.encode(torch.randn(5, 4)) > 0).sum(-1) <= 2).all()


def test_refusals(tmp_path: Path) -> None:
    sae, _ = _trained("relu")
    good = tmp_path / "good"
    save_sae(sae, good)
    with pytest.raises(CircuitsError, match="does not exist"):
        load_sae(tmp_path / "nothing")
    with pytest.raises(CircuitsError, match="architecture is 'relu', expected 'topk'"):
        load_sae(good, arch="topk")
    with pytest.raises(CircuitsError, match="d_in=6"):
        load_sae(good, d_in=7)
    # Shapes that do not match the config.
    shapes = tmp_path / "shapes"
    save_sae(sae, shapes)
    t = load_file(str(shapes / WEIGHTS_FILE))
    t["W_enc"] = torch.randn(6, 11)
    save_file(t, str(shapes / WEIGHTS_FILE))
    with pytest.raises(CircuitsError, match=r"'W_enc' has shape \(6, 11\), config implies \(6, 10\)"):
        load_sae(shapes)
    # Tensors of another architecture.
    other = tmp_path / "other"
    save_sae(sae, other)
    cfg = json.loads((other / CFG_FILE).read_text())
    cfg["circuits"]["config"]["arch"] = "gated"
    (other / CFG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(CircuitsError, match="do not match a gated SAE"):
        load_sae(other)
    # Corrupt files.
    corrupt = tmp_path / "corrupt"
    save_sae(sae, corrupt)
    (corrupt / WEIGHTS_FILE).write_bytes(b"\x10\x00\x00garbage")
    with pytest.raises(CircuitsError, match="corrupt weights file"):
        load_sae(corrupt)
    (corrupt / CFG_FILE).write_text("{not json")
    with pytest.raises(CircuitsError, match="not valid JSON"):
        load_sae(corrupt)
    (corrupt / CFG_FILE).unlink()
    with pytest.raises(CircuitsError, match="missing cfg.json"):
        load_sae(corrupt)
    unsupported = tmp_path / "unsupported"
    unsupported.mkdir()
    (unsupported / CFG_FILE).write_text(
        json.dumps({"architecture": "matching_pursuit", "d_in": 4, "d_sae": 8})
    )
    with pytest.raises(CircuitsError, match="unsupported SAE architecture 'matching_pursuit'"):
        load_sae(unsupported)


@pytest.mark.parametrize("arch", ARCHS)
def test_files_load_in_saelens(arch: str, tmp_path: Path) -> None:
    """Optional: only where sae-lens is installed (it is not a dependency of this project)."""
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens not installed (optional interop check)")
    sae, x = _trained(arch)
    save_sae(sae, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path))
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x[0]), sae.encode(x)[0], atol=1e-4)
        assert torch.allclose(theirs.decode(theirs.encode(x[0])), sae(x).recon[0], atol=1e-4)
