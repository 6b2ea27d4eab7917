"""Every run's scores, kept: `circuits compare --out DIR` writes DIR/rankings.npz beside compare.json.

compare.json holds each run's verdicts (AUC, CPR, ...), not the scores behind them, so a new metric
(edge-level CPR/CMD, another ground truth) would otherwise mean rerunning every method. rankings.npz keeps
them compactly (numpy `savez_compressed`, float32):
- `node/<method>#<seed>`: [layer, head] node scores, higher = more important;
- `edge/<method>#<seed>`: [sender, receiver] edge scores on the model's `ComputeGraph` (circuits.edges.graph),
  for the runs that carry them; `signed_edge/<method>#<seed>`: the same before any absolute value;
- `meta`: one JSON string (task, model and how to load it again, graph description, method labels, the
  prompt recipe).

`score_rankings` scores saved rankings again (`circuits evaluate --rankings`): node ROC AUC against the ground
truth when there is one, and MIB's node-level CPR / CMD on the same scoring prompts compare used.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from circuits.atomic import atomic_write
from circuits.errors import CircuitsError, did_you_mean

if TYPE_CHECKING:
    from circuits._compat import HookedTransformer
    from circuits.edges.graph import ComputeGraph
    from circuits.models import LoadedModel
    from tasks.base import PromptSet, Task

RANKINGS_FILE = "rankings.npz"
FORMAT = 1
KINDS = ("node", "edge", "signed_edge")


@dataclass
class Rankings:
    """Scores of every run ("method#seed" -> array) and what they were computed on."""

    meta: dict[str, Any]  # task, model (+ model_spec), n_layers, n_heads, graph, labels, prompts, selection
    node: dict[str, np.ndarray] = field(default_factory=dict)  # [layer, head]
    edge: dict[str, np.ndarray] = field(default_factory=dict)  # [sender, receiver]
    signed_edge: dict[str, np.ndarray] = field(default_factory=dict)  # [sender, receiver]

    def add(self, key: str, node: torch.Tensor, edge: torch.Tensor | None = None,
            signed_edge: torch.Tensor | None = None) -> None:
        self.node[key] = _array(node)
        if edge is not None:
            self.edge[key] = _array(edge)
        if signed_edge is not None:
            self.signed_edge[key] = _array(signed_edge)

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz entries, meta included."""
        out: dict[str, np.ndarray] = {"meta": np.array(json.dumps({"format": FORMAT, **self.meta}))}
        for kind in KINDS:
            out.update({f"{kind}/{key}": value for key, value in getattr(self, kind).items()})
        return out

    def save(self, path: Path) -> Path:
        """Write the npz atomically (the old file stays whole until the new one is complete)."""
        path = Path(path)
        arrays = self.arrays()

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:  # a handle: savez would append ".npz" to a bare temporary name
                np.savez_compressed(handle, allow_pickle=False, **arrays)

        atomic_write(path, write)
        return path

    def resolve(self, key: str | None) -> list[str]:
        """The node rankings `key` names (None: all of them); one line naming the known keys otherwise."""
        known = list(self.node)
        if key is None:
            return known
        wanted = [k.strip() for k in key.split(",") if k.strip()]
        for k in wanted:
            if k not in self.node:
                raise CircuitsError(f"no ranking '{k}' in {self.meta.get('file', 'the rankings file')}"
                                    f"{did_you_mean(k, known)} (known: {', '.join(known)})")
        return wanted


def _array(scores: torch.Tensor) -> np.ndarray:
    return scores.detach().float().cpu().numpy().astype(np.float32)


def load_rankings(path: Path) -> Rankings:
    """Read a rankings.npz; one-line CircuitsError for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CircuitsError(f"{path}: no such rankings file (`circuits compare --out DIR` writes "
                            f"DIR/{RANKINGS_FILE})")
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CircuitsError(f"{path}: not a rankings file ({type(err).__name__})") from None
    if "meta" not in entries:
        raise CircuitsError(f"{path}: not a rankings file (no 'meta' entry)")
    try:
        meta = json.loads(str(entries.pop("meta")))
    except json.JSONDecodeError:
        raise CircuitsError(f"{path}: not a rankings file (its 'meta' is not JSON)") from None
    if not isinstance(meta, dict) or not {"task", "model"} <= set(meta):
        raise CircuitsError(f"{path}: not a rankings file (its 'meta' names no task and model)")
    rankings = Rankings(meta={**meta, "file": str(path)})
    for name, value in entries.items():
        kind, _, key = name.partition("/")
        if kind in KINDS and key:
            getattr(rankings, kind)[key] = value
    if not rankings.node:
        raise CircuitsError(f"{path}: holds no node rankings")
    return rankings


def check_shapes(rankings: Rankings, keys: list[str], model: HookedTransformer) -> None:
    """One line when a ranking does not fit `model` (its heads, or its ComputeGraph for edges)."""
    from circuits.edges.graph import ComputeGraph

    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    graph = ComputeGraph.of(model)
    for key in keys:
        if tuple(rankings.node[key].shape) != (L, H):
            raise CircuitsError(f"ranking '{key}' has shape {tuple(rankings.node[key].shape)}, the model has "
                                f"{L}x{H} heads (pass the --model it was computed on)")
        for kind in ("edge", "signed_edge"):
            edge = getattr(rankings, kind).get(key)
            if edge is not None and tuple(edge.shape) != (graph.n_senders, graph.n_receivers):
                raise CircuitsError(f"{kind} ranking '{key}' has shape {tuple(edge.shape)}, the model's "
                                    f"graph has {graph.n_senders}x{graph.n_receivers} senders x receivers")


def edge_level(model: HookedTransformer, task: Task, prompts: PromptSet, graph: ComputeGraph,
               rankings: Rankings, keys: list[str], n_random: int = 3, seed: int = 0
               ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Edge-level CPR / CMD (MIB's circuit track, `circuits.evaluation.edge_mib`) of saved runs: their own
    [sender, receiver] scores (signed ones for CPR where kept), else edges derived from their node scores
    -> ({key: {"source", "cpr_<intervention>", "cmd_<intervention>", "faithfulness_<intervention>"}},
    {"random": floor per intervention, "definition", "n_edges"})."""
    from circuits.evaluation.edge_mib import edge_mib_scores, run_edge_ranking
    from circuits.evaluation.mib import INTERVENTIONS, random_floor, scores_by_ranking

    def tensor(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(array).float()

    chosen = {key: run_edge_ranking(graph, torch.from_numpy(rankings.node[key]).float(),
                                    tensor(rankings.edge.get(key)), tensor(rankings.signed_edge.get(key)))
              for key in keys}
    mib = edge_mib_scores(model, task, prompts, {k: c[0] for k, c in chosen.items()},
                          {k: c[1] for k, c in chosen.items() if c[1] is not None}, INTERVENTIONS,
                          n_random=n_random, seed=seed)
    out = scores_by_ranking(mib, keys)
    for key in keys:
        out[key]["source"] = chosen[key][2]
    return out, {"random": random_floor(mib), "definition": mib["definition"], "n_edges": mib["n_edges"]}


def score_rankings(task: Task, loaded: LoadedModel, rankings: Rankings, keys: list[str], n_prompts: int,
                   n_random: int = 3, seed: int | None = None) -> dict[str, Any]:
    """Score saved rankings on `loaded`: node ROC AUC (and precision / recall of the saved selection rule)
    against the ground truth when there is one; MIB's node CPR / CMD on the first `n_prompts` scoring
    prompts of the saved prompt draw (those compare's CPR / CMD used; `seed` draws others); edge-level
    CPR / CMD through `edge_level`."""
    from circuits.discovery.pipeline import split_prompts
    from circuits.edges.graph import ComputeGraph
    from circuits.evaluation.metrics import evaluate_heads
    from circuits.evaluation.mib import INTERVENTIONS, mib_scores, random_floor, scores_by_ranking
    from circuits.methods.base import DEFAULT_SELECTION, selected_heads
    from circuits.truths import alternative_truths, ground_truth_for

    if n_prompts < 1:
        raise CircuitsError(f"--n-prompts must be positive, got {n_prompts}")
    check_shapes(rankings, keys, loaded.model)
    truth, note = ground_truth_for(task, loaded)
    if truth is not None:
        truth.validate(loaded.n_layers, loaded.n_heads)
    others = alternative_truths(task, loaded) if truth is not None else {}
    recipe = rankings.meta.get("prompts") or {}
    n_train, n_score = int(recipe.get("n_train", 10)), int(recipe.get("n_score", n_prompts))
    selection = str(rankings.meta.get("selection", DEFAULT_SELECTION))
    graph = ComputeGraph.of(loaded.model)
    scores = {key: torch.from_numpy(rankings.node[key]).float() for key in keys}
    results: dict[str, dict[str, Any]] = {}
    for key in keys:
        entry: dict[str, Any] = {"method": key.rsplit("#", 1)[0],
                                 "label": (rankings.meta.get("labels") or {}).get(key.rsplit("#", 1)[0])}
        if truth is not None:
            ev = evaluate_heads(scores[key], selected_heads(scores[key], selection), truth)
            entry.update({k: ev[k] for k in ("roc_auc", "precision", "recall", "f1", "n_selected")})
            entry["node_roc_auc"] = entry.pop("roc_auc")
            for name, other in others.items():
                entry[f"node_roc_auc_{name}"] = evaluate_heads(scores[key], frozenset(), other)["roc_auc"]
        results[key] = entry
    prompt_seed = int(recipe.get("seed", 0)) if seed is None else seed
    prompts = task.prompts(loaded.tokenizer, n_train + n_score, prompt_seed)
    _, score_set = split_prompts(prompts, n_train)
    score_set = score_set.subset(slice(0, min(len(score_set), n_prompts)))
    mib = mib_scores(loaded.model, task, score_set, scores, INTERVENTIONS, n_random=n_random,
                     seed=prompt_seed)
    for key, scored in scores_by_ranking(mib, keys).items():
        results[key].update(scored)
    edges, edge_meta = edge_level(loaded.model, task, score_set, graph, rankings, keys, n_random, prompt_seed)
    for key in keys:
        results[key]["has_edge_scores"] = key in rankings.edge
        results[key]["edge"] = edges[key]
    return {"task": task.name, "model": loaded.name, "rankings": rankings.meta.get("file"),
            "seed": prompt_seed, "n_prompts": len(score_set), "n_random": n_random, "selection": selection,
            "ground_truth": None if truth is None else {"source": truth.source, "n_heads": len(truth.heads)},
            "ground_truth_note": note, "results": results, "random": random_floor(mib),
            "graph": graph.describe(),
            "grid": mib["grid"], "definition": mib["definition"], "edge_random": edge_meta["random"],
            "edge_note": f"edge level ({edge_meta['n_edges']} edges): {edge_meta['definition']}; a run "
                         "without edge scores is ranked by edges derived from its head scores"}
