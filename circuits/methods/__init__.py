"""Circuit-discovery methods behind one registry (`registry.REGISTRY`): the discrete-SAE method and the
baselines, each `run(MethodInput) -> MethodRun`; `run_baseline(name, ...)` runs a baseline directly.

Baselines (all our own code: auto-circuit does not import with transformer-lens 3.x):
- "patching-mean", "patching-resample": activation patching per head (patching.py);
- "eap": Edge Attribution Patching, node, head->head and residual-stream-graph edge scores (eap.py);
- "eap-ig": EAP-IG (MIB's EAP-IG-inputs, m = 5 interpolation steps), the same scores (eap_ig.py);
- "acdc": ACDC with a threshold sweep on the residual-stream graph, node and edge scores (acdc.py); bounded to
  EAP's top `acdc_edges` edges (default ACDC_EDGES) on larger graphs, optionally by a time budget;
- "edge-prune": learned hard-concrete edge masks warm-started from EAP-IG, on a training split drawn with
  another seed (edge_prune.py); "ensemble": mean normalised rank of EAP-IG, edge-prune and EAP (ensemble.py);
- "actdiff": the discrete-SAE method's null model, each head's mean-output distance between positives and
  negatives at the SAE's hook and pooling (actdiff.py); `compare` adds it beside every SAE method.

Variants of the discrete-SAE method (`circuits find` options; group "sae-variants"): "sae-effect" (codes of
each head's effect, output x metric gradient), "sae-pair" (pair score), "sae-effect-pair" (both),
"sae-verify" (the top 24 heads re-ranked by single-head mean ablation on 10 prompts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from circuits._compat import HookedTransformer
from circuits.errors import CircuitsError
from circuits.methods.acdc import ACDC_EDGES, acdc
from circuits.methods.actdiff import activation_difference, run_actdiff
from circuits.methods.base import DEFAULT_SELECTION, SELECTION_NOTE, BaselineResult
from circuits.methods.eap import edge_attribution_patching
from circuits.methods.eap_ig import eap_ig
from circuits.methods.edge_prune import run_edge_prune
from circuits.methods.ensemble import run_ensemble
from circuits.methods.patching import activation_patching
from circuits.methods.registry import Method, MethodInput, MethodRun, register, register_group
from circuits.methods.sae import run_sae, sae_variant
from tasks.base import PromptSet, Task

BASELINES = ("patching-mean", "patching-resample", "eap", "eap-ig", "acdc")

__all__ = ["BASELINES", "BaselineResult", "DEFAULT_SELECTION", "SELECTION_NOTE", "acdc",
           "activation_difference", "activation_patching", "eap_ig", "edge_attribution_patching",
           "run_baseline", "run_registered_baseline"]


def run_baseline(name: str, model: HookedTransformer, task: Task, prompts: PromptSet, seed: int = 0,
                 selection: str = DEFAULT_SELECTION, **options: Any) -> BaselineResult:
    """Run baseline `name` on `prompts` (positives vs their negatives); `options` go to the method."""
    if name == "patching-mean":
        return activation_patching(model, task, prompts, "mean", seed, selection, **options)
    if name == "patching-resample":
        return activation_patching(model, task, prompts, "resample", seed, selection, **options)
    if name == "eap":
        return edge_attribution_patching(model, task, prompts, selection=selection, **options)
    if name == "eap-ig":
        return eap_ig(model, task, prompts, selection=selection, **options)
    if name == "acdc":
        return acdc(model, task, prompts, selection=selection, **options)
    raise CircuitsError(f"unknown baseline '{name}' (known: {', '.join(BASELINES)})")


def run_registered_baseline(name: str, inp: MethodInput) -> MethodRun:
    """A baseline on the scoring prompts of `inp.find` (the prompts the SAE method scores with)."""
    from circuits.discovery.pipeline import split_prompts

    find = inp.find
    prompts = inp.task.prompts(inp.loaded.tokenizer, find.n_train + find.n_score, find.seed)
    _, score_set = split_prompts(prompts, find.n_train)
    options = dict(inp.options)
    # ACDC runs on the first acdc_prompts scoring prompts (it is the slowest method); patching on the first
    # patching_prompts (0: all) when asked, since it costs one pass per head.
    first = int(options.get("acdc_prompts", 0)) if name == "acdc" else (
        int(options.get("patching_prompts", 0)) if name.startswith("patching") else 0)
    if first:
        score_set = score_set.subset(slice(0, min(len(score_set), first)))
    if name == "acdc":
        acdc_options = {"distance": options["distance"]} if "distance" in options else {}
        acdc_options["candidates"] = int(options.get("acdc_edges", ACDC_EDGES))
        if options.get("acdc_budget") is not None:
            acdc_options["time_budget"] = float(options["acdc_budget"])
        options = acdc_options
    elif name == "eap-ig":
        options = {"ig_steps": int(options["ig_steps"])} if "ig_steps" in options else {}
    else:
        options = {}
    result = run_baseline(name, inp.loaded.model, inp.task, score_set, seed=inp.seed,
                          selection=find.selection, **options)
    unit = len(score_set) / find.n_score  # passes over this method's prompts -> passes over n_score prompts
    details = {k: v for k, v in result.details.items() if not k.startswith("signed")}
    return MethodRun(node_scores=result.node_scores, selected=result.selected, edge_scores=result.edge_scores,
                     seconds=result.seconds, forward=result.n_forward * unit,
                     backward=result.n_backward * unit, details=details,
                     graph_edge_scores=getattr(result, "graph_edge_scores", None),
                     signed_graph_edge_scores=getattr(result, "signed_graph_edge_scores", None))


def _baseline(key: str) -> Callable[[MethodInput], MethodRun]:
    return lambda inp: run_registered_baseline(key, inp)


register(Method("sae", "discrete SAE", run_sae, stochastic=True, baseline=False))
register(Method("actdiff", "activation difference (SAE's null model)", run_actdiff, stochastic=False,
                baseline=True))
register(Method("patching-mean", "patching (mean)", _baseline("patching-mean"), stochastic=False))
register(Method("patching-resample", "patching (resample)", _baseline("patching-resample"), stochastic=True))
register(Method("eap", "EAP", _baseline("eap"), stochastic=False))
register(Method("eap-ig", "EAP-IG (inputs, m=5)", _baseline("eap-ig"), stochastic=False))
register(Method("acdc", "ACDC", _baseline("acdc"), stochastic=False))
register(Method("edge-prune", "edge pruning (EAP-IG warm start)", run_edge_prune, stochastic=True))
register(Method("ensemble", "rank ensemble (EAP-IG, edge-prune, EAP)", run_ensemble, stochastic=True))
register_group("patching", ("patching-mean", "patching-resample"))
register(Method("sae-effect", "discrete SAE (effect codes)", sae_variant(signal="effect"), stochastic=True,
                baseline=False))
register(Method("sae-pair", "discrete SAE (pair score)", sae_variant(score="pair"), stochastic=True,
                baseline=False))
register(Method("sae-effect-pair", "discrete SAE (effect codes, pair score)",
                sae_variant(signal="effect", score="pair"), stochastic=True, baseline=False))
register(Method("sae-verify", "discrete SAE (verified top 24)", sae_variant(verify=24, verify_prompts=10),
                stochastic=True, baseline=False))
register_group("sae-variants", ("sae-effect", "sae-pair", "sae-effect-pair", "sae-verify"))
