"""Issue 17's variants of the discrete-SAE method (`--signal effect`, `--score pair`, `--verify K`), each
against an independent computation: hand-made codes and brute-force loops, plain autograd, and single-head
ablations written out with hooks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import typer
from conftest import ToyTask, tiny_model
from typer.testing import CliRunner

from circuits.ablation import final_logits, z_hook
from circuits.cli.find import find
from circuits.discovery.activations import head_activations
from circuits.discovery.codes import encode_codes, n_codes
from circuits.discovery.config import FindConfig
from circuits.discovery.effect import effect_activations
from circuits.discovery.pipeline import find_circuit, split_prompts
from circuits.discovery.scoring import edge_scores, layered_pairs, node_scores
from circuits.discovery.verify import rerank, top_heads
from circuits.errors import CircuitsError
from circuits.methods.registry import REGISTRY, MethodInput, expand
from circuits.models import LoadedModel, load_model
from tasks import get_task
from tasks.base import PromptSet

FAST = FindConfig(n_train=10, n_score=24, steps=30, sae="per-head", hook="z", edges=False)


@pytest.fixture(scope="module")
def tiny_ioi() -> tuple[object, LoadedModel]:
    task = get_task("ioi")
    return task, load_model("tiny-ioi", task, 0)


# --- the default is the paper's method, unchanged ---------------------------------------------------------

def test_default_config_is_the_paper_pipeline_written_out(planted):
    """find_circuit's default node scores equal the unstreamed pipeline written out by hand, and passing the
    new knobs at their defaults changes nothing."""
    task, loaded, _ = planted
    config = replace(FindConfig(), n_score=40, steps=40, edges=True)
    result = find_circuit(task, loaded, config)
    explicit = find_circuit(task, loaded, replace(config, signal="output", score="count", verify=0,
                                                  verify_prompts=3))
    assert torch.equal(result.node_scores, explicit.node_scores)
    assert result.edge_scores == explicit.edge_scores
    assert "verify" not in result.to_json()

    torch.manual_seed(config.seed)
    prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
    train_tokens, score_set = split_prompts(prompts, config.n_train)
    model = loaded.model
    acts_train = head_activations(model, train_tokens, config.hook, config.position)
    acts_score = head_activations(model, torch.cat([score_set.positive, score_set.negative]), config.hook,
                                  config.position)
    codes = encode_codes(acts_train, acts_score, config)
    by_hand = node_scores(codes[:40], codes[40:], n_codes(config.resolved_d_sae()), "count")
    assert torch.equal(result.node_scores.reshape(-1), by_hand)


# --- score "pair" -------------------------------------------------------------------------------------------

def test_pair_scores_equal_a_brute_force_loop():
    gen = torch.Generator().manual_seed(3)
    n, heads = 37, 12
    codes_pos = torch.randint(0, 4, (n, heads), generator=gen)
    codes_neg = torch.where(torch.rand(n, heads, generator=gen) < 0.6, codes_pos,
                            torch.randint(0, 4, (n, heads), generator=gen))
    codes_neg[:, 0] = codes_pos[:, 0]  # never differs
    codes_neg[:, 1] = (codes_pos[:, 1] + 1) % 4  # always differs
    nodes = node_scores(codes_pos, codes_neg, 4, "pair")
    brute = [sum(int(codes_pos[i, h]) != int(codes_neg[i, h]) for i in range(n)) / n for h in range(heads)]
    assert nodes.tolist() == pytest.approx(brute)
    assert nodes[0] == 0 and nodes[1] == 1
    pairs = layered_pairs(3, 4)
    edges = edge_scores(codes_pos, codes_neg, 4, pairs, "pair", chunk=5)  # several chunks
    brute_edges = [sum(bool(codes_pos[i, a] != codes_neg[i, a]) and bool(codes_pos[i, b] != codes_neg[i, b])
                       for i in range(n)) / n for a, b in pairs.tolist()]
    assert edges.tolist() == pytest.approx(brute_edges)
    # a shuffled negative side is a different score: the rows are read as pairs
    assert not torch.equal(node_scores(codes_pos, codes_neg.flip(0), 4, "pair"), nodes)
    with pytest.raises(CircuitsError, match="aligned"):
        node_scores(codes_pos, codes_neg[:-1], 4, "pair")


class SelfPairTask(ToyTask):
    """Every negative is its positive: with aligned rows no code ever differs within a pair."""

    name = "self-pair"

    def prompts(self, tokenizer, n: int, seed: int) -> PromptSet:
        p = super().prompts(tokenizer, n, seed)
        # answers that vary by row, so a negative scored with another row's metric has another effect
        return PromptSet(p.positive, p.positive.clone(), p.positive[:, 2], p.positive[:, 3:4],
                         p.positive_text, p.positive_text)


@pytest.mark.parametrize("position", ["mean", "each"])
@pytest.mark.parametrize("signal", ["output", "effect"])
def test_pipeline_keeps_pairs_aligned(planted, position, signal):
    """Identical prompt and corruption: every pair score is 0 (rows misaligned by one would not be),
    while the prompts themselves differ (the other score kinds see codes)."""
    _, loaded, _ = planted
    task = SelfPairTask()
    config = replace(FAST, score="pair", position=position, signal=signal, edges=True, batch_size=7)
    result = find_circuit(task, loaded, config)
    assert float(result.node_scores.abs().max()) == 0.0
    assert max(result.edge_scores.values()) == 0.0
    other = find_circuit(ToyTask(), loaded, config)
    assert float(other.node_scores.max()) > 0


# --- signal "effect" ----------------------------------------------------------------------------------------

def _brute_effect(model, task, tokens, metric_rows, hook, position, layer, head):
    """Per prompt, one backward of its own metric: z (or hook_result) times its gradient, for one head."""
    out = []
    model.set_use_attn_result(hook == "result")
    try:
        for i in range(tokens.shape[0]):
            store = {}
            name = f"blocks.{layer}.attn.hook_{'z' if hook == 'z' else 'result'}"

            def keep(x, hook, store=store):
                x.retain_grad()
                store["x"] = x

            logits = model.run_with_hooks(tokens[i:i + 1], fwd_hooks=[(name, keep)])[:, -1]
            m = task.metric(logits, metric_rows.subset([i]))
            m.sum().backward()
            x = store["x"]
            e = (x * x.grad)[0, :, head]  # [seq, d]
            model.zero_grad(set_to_none=True)
            out.append(e.mean(0, keepdim=True) if position == "mean" else
                       e[-1:] if position == "last" else e)
    finally:
        model.set_use_attn_result(False)
    return torch.cat(out).detach()


@pytest.mark.parametrize("hook", ["z", "result"])
@pytest.mark.parametrize("position", ["mean", "last", "each"])
def test_effect_activations_equal_autograd(toy_task, hook, position):
    tok = toy_task.word_tokenizer()
    model = tiny_model(tok.vocab_size, attn_only=False, seed=2)  # LayerNorm and MLPs on the path
    prompts = toy_task.prompts(tok, 2, 0)
    tokens = torch.cat([prompts.positive, prompts.negative])  # negatives scored with their positive's row
    metric_rows = prompts.subset([0, 1, 0, 1])
    got = effect_activations(model, toy_task, tokens, metric_rows, hook, position, batch_size=3)
    n_heads = model.cfg.n_heads
    for layer, head in ((0, 2), (1, 1)):
        want = _brute_effect(model, toy_task, tokens, metric_rows, hook, position, layer, head)
        assert got[:, layer * n_heads + head].shape == want.shape
        torch.testing.assert_close(got[:, layer * n_heads + head], want, rtol=1e-4, atol=1e-6)
    assert float(got.abs().max()) > 0


def test_a_head_that_changes_but_does_not_matter_has_zero_effect(toy_task):
    tok = toy_task.word_tokenizer()
    model = tiny_model(tok.vocab_size, seed=1)
    with torch.no_grad():
        model.blocks[0].attn.W_O[3] = 0  # its z still varies; nothing downstream reads it
    prompts = toy_task.prompts(tok, 6, 0)
    z = head_activations(model, prompts.positive, "z", "mean")
    effect = effect_activations(model, toy_task, prompts.positive, prompts, "z", "mean")
    assert float(z[:, 3].abs().max()) > 1e-3
    assert float(effect[:, 3].abs().max()) == 0.0
    assert float(effect[:, 2].abs().max()) > 0


def test_effect_rows_read_their_own_metric(toy_task):
    """Row i's effect is the gradient of metric row i: swapping answer and wrong token of row 2 alone
    negates row 2's metric, so row 2's effect (and no other row's) changes sign."""
    tok = toy_task.word_tokenizer()
    model = tiny_model(tok.vocab_size, seed=1)
    prompts = toy_task.prompts(tok, 4, 0)
    answer, wrong = prompts.answer.clone(), prompts.wrong.clone()
    answer[2], wrong[2, 0] = prompts.wrong[2, 0], prompts.answer[2]
    flipped = replace(prompts, answer=answer, wrong=wrong)
    a = effect_activations(model, toy_task, prompts.negative, prompts, "z", "last", batch_size=3)
    b = effect_activations(model, toy_task, prompts.negative, flipped, "z", "last", batch_size=3)
    assert float(a[2].abs().max()) > 0
    torch.testing.assert_close(b[2], -a[2])
    torch.testing.assert_close(b[[0, 1, 3]], a[[0, 1, 3]])
    with pytest.raises(CircuitsError, match="metric rows"):
        effect_activations(model, toy_task, prompts.negative, prompts.subset([0, 1]), "z", "last")


# --- verify -------------------------------------------------------------------------------------------------

def _ablated_metric(model, task, prompts, reference, layer, head):
    def patch(z, hook):
        z = z.clone()
        z[:, :, head] = reference[:, head]
        return z

    hooks = [] if layer is None else [(z_hook(layer), patch)]
    with torch.no_grad():
        return float(task.metric(final_logits(model, prompts.positive, hooks), prompts).mean())


def test_verify_reranks_the_top_k_by_single_head_ablation(tiny_ioi):
    task, loaded = tiny_ioi
    model = loaded.model
    config = replace(FAST, n_score=16, hook="result", sae="shared", steps=20)
    k, vp = 6, 5
    base = find_circuit(task, loaded, config)
    result = find_circuit(task, loaded, replace(config, verify=k, verify_prompts=vp))
    L, H = loaded.n_layers, loaded.n_heads
    flat = base.node_scores.reshape(-1).tolist()
    top = sorted(range(L * H), key=lambda i: (-flat[i], i))[:k]  # ties: head order

    # brute force: each proposed head mean-ablated (mean z over the first vp negatives) by its own hook
    prompts = task.prompts(loaded.tokenizer, config.n_train + config.n_score, config.seed)
    _, score_set = split_prompts(prompts, config.n_train)
    sub = score_set.subset(slice(0, vp))
    store = {}

    def keep(z, hook):
        store[hook.layer()] = z.mean(0)

    model.run_with_hooks(sub.negative, fwd_hooks=[(z_hook(layer), keep) for layer in range(L)])
    intact = _ablated_metric(model, task, sub, None, None, None)
    effect = {i: abs(_ablated_metric(model, task, sub, store[i // H], i // H, i % H) - intact) for i in top}

    new = result.node_scores.reshape(-1)
    assert {i for i in range(L * H) if new[i] >= 1} == set(top)
    largest = max(effect.values())
    for i in top:
        assert float(new[i]) == pytest.approx(1 + effect[i] / largest, rel=1e-4, abs=1e-5)
    assert sorted(top, key=lambda i: -effect[i]) == sorted(top, key=lambda i: -float(new[i]))
    rest = [i for i in range(L * H) if i not in top]
    for a in rest:  # the others keep their order (ties included), below every verified head
        assert 0 <= float(new[a]) < 1
        for b in rest:
            assert (flat[a] < flat[b]) == (float(new[a]) < float(new[b]))
    record = result.to_json()["verify"]
    assert record["prompts"] == vp
    assert record["forward_passes"] == pytest.approx(((1 + k) * vp + vp) / config.n_score)
    assert [tuple(h) for h in record["proposed"]] == [divmod(i, H) for i in top]
    assert result.edge_scores == base.edge_scores


def test_rerank_and_top_heads_by_hand():
    scores = torch.tensor([[3.0, 1.0, 3.0], [0.0, 5.0, 1.0]])
    assert top_heads(scores, 3) == [4, 0, 2]  # 5, then the tie 3 = 3 in head order
    new = rerank(scores, [4, 0, 2], torch.tensor([0.0, 2.0, 1.0]))
    assert new.reshape(-1).tolist() == pytest.approx([2.0, 0.5, 1.5, 0.0, 1.0, 0.5])
    assert rerank(scores, [4], torch.tensor([0.0])).reshape(-1)[4] == 1.0


# --- validation, CLI, registry ------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (dict(signal="gradient"), "unknown signal 'gradient'"),
    (dict(score="pairs"), "unknown score 'pairs'.*did you mean 'pair'"),
    (dict(verify=-1), "--verify must be zero"),
    (dict(verify_prompts=0), "--verify-prompts must be positive"),
])
def test_bad_variant_values_are_one_line_errors(change, message):
    with pytest.raises(CircuitsError, match=message) as err:
        replace(FindConfig(), **change).validate()
    assert "\n" not in str(err.value)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(find)
    app.command("other")(lambda: None)
    return app


def test_find_cli_options_reach_the_json_config():
    res = CliRunner().invoke(_app(), ["find", "--task", "ioi", "--n-score", "12", "--steps", "10",
                                      "--signal", "effect", "--score", "pair", "--verify", "3",
                                      "--verify-prompts", "4", "--no-check-task", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert {k: payload["config"][k] for k in ("signal", "score", "verify", "verify_prompts")} == {
        "signal": "effect", "score": "pair", "verify": 3, "verify_prompts": 4}
    assert len(payload["verify"]["heads"]) == 3
    bad = CliRunner().invoke(_app(), ["find", "--task", "ioi", "--signal", "effekt"])
    assert bad.exit_code != 0 and "unknown signal 'effekt'" in bad.output


def test_sae_variants_group_and_their_costs(planted):
    assert expand("sae-variants") == ["sae-effect", "sae-pair", "sae-effect-pair", "sae-verify"]
    assert expand("sae,sae-variants")[0] == "sae"
    from circuits.compare import parse_methods

    assert parse_methods("sae-variants", null_model=False) == expand("sae-variants")
    task, loaded, _ = planted
    inp = MethodInput(task=task, loaded=loaded, find=replace(FAST, verify=0), seed=1)
    plain = REGISTRY["sae"].run(inp)
    effect = REGISTRY["sae-effect"].run(inp)
    verify = REGISTRY["sae-verify"].run(inp)
    passes = (FAST.n_train + 2 * FAST.n_score) / FAST.n_score
    assert (plain.forward, plain.backward) == (passes, 0.0)
    assert (effect.forward, effect.backward) == (passes, passes)
    assert verify.backward == 0.0
    assert verify.forward == pytest.approx(passes + ((1 + 8) * 10 + 10) / FAST.n_score)  # 8 heads: all
    assert all(REGISTRY[k].stochastic for k in expand("sae-variants"))
    assert REGISTRY["sae-effect"].label == "discrete SAE (effect codes)"
