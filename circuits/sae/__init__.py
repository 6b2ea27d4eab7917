"""Feature-SAE core: batched architectures (relu, topk, batchtopk, gated, jumprelu, matryoshka), trainer,
metrics, activation sources and SAELens-layout files. See circuits/sae/base.py for the shared interface."""

from circuits.sae.base import ARCHS, K_ARCHS, SAE, SAEConfig, SAEOutput, default_matryoshka_widths
from circuits.sae.gated import GatedSAE
from circuits.sae.jumprelu import JumpReLUSAE
from circuits.sae.matryoshka import MatryoshkaSAE
from circuits.sae.relu import ReLUSAE
from circuits.sae.topk import BatchTopKSAE, TopKSAE
from circuits.sae.trainer import TrainConfig, Trainer, TrainStats, train_sae

SAE_CLASSES: dict[str, type[SAE]] = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "gated": GatedSAE,
    "jumprelu": JumpReLUSAE,
    "matryoshka": MatryoshkaSAE,
}


def make_sae(cfg: SAEConfig, seed: int = 0) -> SAE:
    """A fresh SAE of `cfg.arch`, initialised from `seed` (independent of the global RNG)."""
    return SAE_CLASSES[cfg.arch](cfg, seed=seed)


__all__ = [
    "ARCHS",
    "K_ARCHS",
    "SAE",
    "SAEConfig",
    "SAEOutput",
    "ReLUSAE",
    "TopKSAE",
    "BatchTopKSAE",
    "GatedSAE",
    "JumpReLUSAE",
    "MatryoshkaSAE",
    "default_matryoshka_widths",
    "Trainer",
    "TrainConfig",
    "TrainStats",
    "train_sae",
    "make_sae",
    "SAE_CLASSES",
]
