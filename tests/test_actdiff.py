"""actdiff, the discrete-SAE method's null model: its scores, its cost, its place beside every SAE method."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import tiny_model
from typer.testing import CliRunner

from circuits.cli.main import app
from circuits.compare import CompareConfig, compare_methods, parse_methods
from circuits.discovery.config import FindConfig
from circuits.discovery.pipeline import split_prompts
from circuits.methods import activation_difference
from circuits.methods.registry import REGISTRY, MethodInput

FAST = FindConfig(n_train=10, n_score=12, steps=30, sae="per-head", hook="z")


def _direct(model, prompts, hook: str, position: str) -> torch.Tensor:
    """The same score from `run_with_cache`: [layer, head]."""
    L = model.cfg.n_layers
    means = []
    for tokens in (prompts.positive, prompts.negative):
        _, cache = model.run_with_cache(tokens)
        per_layer = []
        for layer in range(L):
            z = cache[f"blocks.{layer}.attn.hook_z"]  # [b, pos, head, d_head]
            out = torch.einsum("bphd,hdm->bphm", z, model.blocks[layer].attn.W_O) if hook == "result" else z
            if position == "mean":
                out = out.mean(1, keepdim=True)
            elif position == "last":
                out = out[:, -1:]
            per_layer.append(out.mean(0))  # [pos, head, d]
        means.append(torch.stack(per_layer))  # [layer, pos, head, d]
    return (means[0] - means[1]).pow(2).sum((1, 3)).sqrt()


@pytest.mark.parametrize("hook, position", [("result", "mean"), ("z", "mean"), ("result", "last"),
                                            ("z", "each")])
def test_scores_equal_a_direct_computation(toy_task, hook, position):
    tok = toy_task.word_tokenizer()
    model = tiny_model(tok.vocab_size)
    prompts = toy_task.prompts(tok, 7, seed=3)
    # batch_size 4 splits the 14 rows so one batch holds positives and negatives
    scores = activation_difference(model, prompts, hook, position, batch_size=4)  # type: ignore[arg-type]
    assert scores.shape == (2, 4)
    with torch.no_grad():
        expected = _direct(model, prompts, hook, position)
    torch.testing.assert_close(scores, expected.float(), rtol=1e-4, atol=1e-5)


def test_planted_heads_rank_on_top_and_the_cost_is_one_forward_each_side(planted):
    task, loaded, heads = planted
    run = REGISTRY["actdiff"].run(MethodInput(task=task, loaded=loaded, find=FAST, seed=0))
    order = run.node_scores.reshape(-1).argsort(descending=True)[:2].tolist()
    assert {divmod(i, 4) for i in order} == heads
    assert run.selected == frozenset(heads)
    assert (run.forward, run.backward) == (2.0, 0.0) and run.edge_scores is None
    assert not REGISTRY["actdiff"].stochastic and REGISTRY["actdiff"].baseline
    # the scoring prompts are the SAE method's: the score is the library function's on them
    prompts = task.prompts(loaded.tokenizer, FAST.n_train + FAST.n_score, FAST.seed)
    _, score_set = split_prompts(prompts, FAST.n_train)
    torch.testing.assert_close(run.node_scores, activation_difference(loaded.model, score_set, "z"))


def test_compare_adds_actdiff_right_after_every_sae_method(planted):
    assert parse_methods("sae") == ["sae", "actdiff"]
    assert parse_methods("eap,sae,acdc") == ["eap", "sae", "actdiff", "acdc"]
    assert parse_methods("sae-pair,eap")[:2] == ["sae-pair", "actdiff"]
    assert parse_methods("actdiff,sae") == ["actdiff", "sae"]  # named already: kept where it is
    assert parse_methods("eap,patching") == ["eap", "patching-mean", "patching-resample"]
    assert parse_methods("sae", null_model=False) == ["sae"]
    assert "actdiff" in CompareConfig().methods
    task, loaded, heads = planted
    config = CompareConfig(methods=tuple(parse_methods("sae")), seeds=2, find=FAST, mib_prompts=0,
                           selection="positive")
    report = compare_methods(task, loaded, config)
    actdiff = report["methods"]["actdiff"]
    assert list(report["methods"]) == ["sae", "actdiff"]
    assert actdiff["seeds"] == [0] and actdiff["node_roc_auc"]["mean"] == 1.0
    assert actdiff["forward_passes"]["mean"] == 2.0 and actdiff["edge_roc_auc"] is None
    assert "actdiff|sae" in report["agreement"]["spearman"]


def test_compare_command_with_sae_shows_an_actdiff_row():
    args = ["compare", "--task", "ioi", "--model", "random:attn-only-4l", "--methods", "sae", "--seeds", "1",
            "--n-score", "8", "--mib-prompts", "0"]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    methods = json.loads(res.stdout)["methods"]
    assert list(methods) == ["sae", "actdiff"]
    assert methods["actdiff"]["label"] == "activation difference (SAE's null model)"
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "activation difference" in table.output


def test_actdiff_follows_the_sae_hook_and_pooling(planted):
    task, loaded, _ = planted
    inp = MethodInput(task=task, loaded=loaded, find=replace(FAST, hook="result", position="last"), seed=0)
    run = REGISTRY["actdiff"].run(inp)
    assert run.details == {"hook": "result", "position": "last"}
    prompts = task.prompts(loaded.tokenizer, FAST.n_train + FAST.n_score, FAST.seed)
    _, score_set = split_prompts(prompts, FAST.n_train)
    direct = activation_difference(loaded.model, score_set, "result", "last")
    torch.testing.assert_close(run.node_scores, direct)
