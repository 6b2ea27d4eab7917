"""The analyses take the k-set architectures from the SAE core (one source), Matryoshka included."""

from circuits.analysis import absorption, seeds
from circuits.analysis.seeds import ArchSetting
from circuits.sae import K_ARCHS


def test_one_source_for_k_archs() -> None:
    assert seeds.K_ARCHS is K_ARCHS and absorption.K_ARCHS is K_ARCHS
    assert "matryoshka" in K_ARCHS


def test_matryoshka_is_matched_by_k() -> None:
    setting = ArchSetting("matryoshka")
    assert setting.label == "matryoshka k=matched"
    cfg = ArchSetting("matryoshka", k=4).sae_config(d_in=8, d_sae=32, groups=2)
    assert cfg.arch == "matryoshka" and cfg.k == 4
