"""Train -> quality gate -> ground truth by ablation -> a checkpoint directory with its manifest.

The manifest (manifest.json beside config.json, model.safetensors and tokenizer.json) records
everything a later reader needs to trust or reproduce the model: the training recipe and seed, the
held-out accuracy, the ground truth under "ground_truth" ({task: GroundTruth.to_dict()}, which
`circuits.models.load_checkpoint` reads), the single-head effects, and the prompt seeds used for
training, evaluation and the ground-truth search (so benchmarks can draw disjoint prompts).
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from circuits.errors import CircuitsError, ModelLoadError
from circuits.jsonio import read_json
from circuits.models import MANIFEST_FILE, ZOO_DIR, save_checkpoint
from circuits.tokenizer import WordTokenizer
from circuits.zoo.data import (
    CHUNKS_PER_SEED,
    NEGATIVE_ANSWER_SETS,
    NEGATIVE_EVERY,
    SEED_BASES,
    VARIANTS,
    VARIANTS_PER_PROMPT,
    prompt_seed,
)
from circuits.zoo.ground_truth import GroundTruthResult, find_ground_truth
from circuits.zoo.train import TrainConfig, TrainResult, heldout_prompts, quality, train
from tasks.base import Task

MODEL_PREFIX = "tiny-"
MANIFEST_VERSION = 1
ACCURACY_GATE = 0.95
N_HELDOUT = 1000
N_GROUND_TRUTH = 128
N_GROUND_TRUTH_BY_TASK = {"docstring": 64}  # 48-token prompts: fewer of them keep the search in minutes

Stage = Callable[[str, int, int, str], None]  # (stage, done, total, note)


def shipped_dir(task_name: str) -> Path:
    """Where the bundled model for `task_name` lives."""
    return ZOO_DIR / f"{MODEL_PREFIX}{task_name}"


def build_zoo_model(task: Task, config: TrainConfig, out_dir: Path | None = None,
                    progress: Stage | None = None, n_heldout: int | None = None,
                    n_ground_truth: int | None = None, edges: bool = True,
                    overwrite: bool = False) -> dict[str, Any]:
    """Train, evaluate and measure the ground truth; write the checkpoint when `out_dir` is given.

    Returns the manifest. The directory is written atomically: into a temporary sibling, then renamed.
    """
    def tell(stage: str, done: int, total: int, note: str = "") -> None:
        if progress is not None:
            progress(stage, done, total, note)

    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{out_dir} already exists (pass --force to replace it)")
    n_heldout = n_heldout or N_HELDOUT
    result = train(task, config, progress=lambda s, n, loss: tell("train", s, n, f"loss {loss:.3f}"))
    tell("evaluate", 0, 1)
    held = heldout_prompts(task, result.tokenizer, n_heldout, config.seed)
    figures = quality(result.model, task, result.tokenizer, held, seen=result.pool.rows())
    figures["gate"] = {"min_positive_accuracy": ACCURACY_GATE,
                       "passed": figures["positive_accuracy"] >= ACCURACY_GATE}
    tell("evaluate", 1, 1)
    if n_ground_truth is None:
        n_ground_truth = N_GROUND_TRUTH_BY_TASK.get(task.name, N_GROUND_TRUTH)
    gt_seed = prompt_seed("ground_truth", config.seed)
    gt_prompts = task.prompts(result.tokenizer, n_ground_truth, gt_seed)
    notes = {"prompt_seed": gt_seed, "prompts": f"task.prompts(tokenizer, {n_ground_truth}, {gt_seed})",
             "reference_prompts": "the negative prompts of the same set"}
    try:
        truth: GroundTruthResult | None = find_ground_truth(
            result.model, task, gt_prompts, edges=edges, method_notes=notes,
            progress=lambda stage, d, t: tell("ground truth", d, t, stage))
        error = None
    except CircuitsError as err:  # the model does not do the task: ship it, say why it has no truth
        truth, error = None, str(err)
    manifest = make_manifest(task, result, figures, truth, n_heldout)
    if error is not None:
        manifest["ground_truth_error"] = error
    if out_dir is not None:
        write_model_dir(out_dir, result, manifest)
    return manifest


def make_manifest(task: Task, result: TrainResult, figures: dict[str, Any],
                  truth: GroundTruthResult | None, n_heldout: int) -> dict[str, Any]:
    cfg = result.config
    model_cfg = result.model.cfg
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": f"{MODEL_PREFIX}{task.name}",
        "task": task.name,
        "config": {k: getattr(model_cfg, k) for k in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp",
                                                      "n_ctx", "d_vocab", "attn_only", "act_fn",
                                                      "normalization_type")},
        "n_heads_total": int(model_cfg.n_layers * model_cfg.n_heads),
        "training": {
            "seed": cfg.seed, "steps": cfg.steps, "seconds": round(result.seconds, 2),
            "final_loss": _tail_mean(result.losses), "final_answer_loss": _tail_mean(result.answer_losses),
            "recipe": cfg.to_dict(),
            "loss_every_50_steps": [round(sum(result.losses[i:i + 50]) / len(result.losses[i:i + 50]), 4)
                                    for i in range(0, len(result.losses), 50)],
            "torch": torch.__version__, "threads": cfg.threads, "machine": platform.machine(),
            "data": _data_note(task.name),
        },
        "prompt_seeds": {
            "train": f"chunks of 500 with seeds {prompt_seed('train', cfg.seed)} .. "
                     f"{prompt_seed('train', cfg.seed) + (cfg.n_train_prompts + 499) // 500 - 1}",
            "heldout": prompt_seed("heldout", cfg.seed),
            "ground_truth": prompt_seed("ground_truth", cfg.seed),
            "scheme": {"bases": SEED_BASES, "per_model_seed": CHUNKS_PER_SEED,
                       "formula": "base[purpose] + model_seed * per_model_seed + chunk"},
            "note": "benchmarks should use seeds outside these ranges (any seed < 10,000,000 is)",
        },
        "quality": {**figures, "n_requested": n_heldout},
        "ground_truth": {task.name: truth.truth.to_dict()} if truth is not None else {},
        "ground_truth_details": truth.details() if truth is not None else {},
    }


def _data_note(task_name: str) -> str:
    note = ("task positives (loss: cross-entropy to the uniform distribution over the correct answers "
            "at the answer position, plus lm_weight x next-token loss elsewhere) mixed with filler rows "
            "(random vocabulary tokens whose second half repeats the first; next-token loss inside the "
            "repeat)")
    if task_name in NEGATIVE_ANSWER_SETS:
        note += (f"; one negative prompt per {NEGATIVE_EVERY} positives with its own correct answers "
                 f"(greater-than: every year from 02 on after XX01), so the negatives are in-distribution")
    if task_name in VARIANTS:
        note += (f"; {VARIANTS_PER_PROMPT} prompt(s) in other shapes per task prompt (docstring: 0-3 prefix, "
                 f"1-3 documented, 0-2 suffix arguments), so the answer's position varies and the model "
                 f"must find it by content")
    return note


def _tail_mean(values: list[float], k: int = 50) -> float:
    tail = values[-k:]
    return float(sum(tail) / len(tail)) if tail else float("nan")


def write_model_dir(out_dir: Path, result: TrainResult, manifest: dict[str, Any]) -> None:
    """save_checkpoint into a temporary sibling, then swap it into place (old copy removed last)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        assert isinstance(result.tokenizer, WordTokenizer), "zoo models use the task's word tokenizer"
        save_checkpoint(tmp, result.model, result.tokenizer, manifest)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
        for path in tmp.iterdir():
            path.chmod(0o644)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{int(time.time() * 1000)}")
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a model directory (without loading its weights)."""
    path = Path(directory) / MANIFEST_FILE
    return read_json(path, ModelLoadError, expect_object=True,
                     missing=f"{directory}: missing {MANIFEST_FILE}")
