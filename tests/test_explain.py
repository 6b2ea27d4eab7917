"""circuits.explain on a model built by hand: one head copies the token at a named position into the
answer, another attends a filler position and writes nothing the task reads; plus the CLI's failures."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from circuits._compat import HookedTransformer, HookedTransformerConfig
from circuits.cli.main import app
from circuits.explain.config import ExplainConfig
from circuits.explain.explain import explain_circuit
from circuits.explain.roles import KINDS
from circuits.models import LoadedModel
from circuits.tokenizer import WordTokenizer
from tasks.base import GroundTruth, PromptSet

KEYS = [" " + w for w in ("ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen")]
FILLERS = [" red", " tan", " blue", " gold"]
SEQ = 5  # BOS, key, filler, filler, end
KEY_POS, FILLER_POS = 1, 2


class CopyTask:
    """"<key> <f> <f> end" -> <key>; the corruption swaps the key: metric logit(key) - logit(key')."""

    name = "copy"
    published_model = "none"

    def __init__(self) -> None:
        self.tok = WordTokenizer.from_texts(KEYS + FILLERS + [" end"])

    def word_tokenizer(self) -> WordTokenizer:
        return self.tok

    def prompts(self, tokenizer, n: int, seed: int) -> PromptSet:
        gen = torch.Generator().manual_seed(seed)
        key = torch.randint(0, len(KEYS), (n,), generator=gen)
        other = (key + torch.randint(1, len(KEYS), (n,), generator=gen)) % len(KEYS)
        fill = torch.randint(0, len(FILLERS), (n, 2), generator=gen)

        def text(k: int, f: list[int]) -> str:
            return KEYS[k] + "".join(FILLERS[i] for i in f) + " end"

        pos = [text(k, f) for k, f in zip(key.tolist(), fill.tolist(), strict=True)]
        neg = [text(k, f) for k, f in zip(other.tolist(), fill.tolist(), strict=True)]
        positive = torch.tensor([tokenizer.encode(t) for t in pos])
        negative = torch.tensor([tokenizer.encode(t) for t in neg])
        return PromptSet(positive, negative, positive[:, KEY_POS], negative[:, KEY_POS:KEY_POS + 1], pos, neg)

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        rows = torch.arange(logits.shape[0])
        return logits[rows, prompts.answer] - logits[rows, prompts.wrong[:, 0]]

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        return None

    def positions(self, prompts: PromptSet) -> dict[str, torch.Tensor]:
        n = len(prompts)
        return {"key": torch.full((n,), KEY_POS), "filler": torch.full((n,), FILLER_POS)}


def planted_copy_model(tok: WordTokenizer) -> HookedTransformer:
    """One layer, two heads; residual = one-hot token (vocab dims) + one-hot position (SEQ dims).
    Head 0 attends the key position from everywhere and copies the key's token to its logit; head 1
    attends the first filler and copies it into the filler tokens' logits, which the metric never reads."""
    vocab, d_head = tok.vocab_size, 8
    cfg = HookedTransformerConfig(n_layers=1, n_heads=2, d_model=vocab + SEQ, d_head=d_head, n_ctx=SEQ,
                                  d_vocab=vocab, attn_only=True, normalization_type=None, act_fn="relu",
                                  device="cpu", default_prepend_bos=False, seed=0)
    model = HookedTransformer(cfg)
    model.eval()
    keys = [tok.index[k] for k in KEYS]
    fillers = [tok.index[f] for f in FILLERS]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[:] = torch.eye(vocab, vocab + SEQ)
        model.W_pos[:, vocab:] = torch.eye(SEQ)
        model.W_U[:] = torch.eye(vocab + SEQ, vocab)
        attn = model.blocks[0].attn
        for head, (where, tokens) in enumerate(((KEY_POS, keys), (FILLER_POS, fillers))):
            attn.W_Q[head, vocab:, 0] = 1.0  # every query position asks the same
            attn.W_K[head, vocab + where, 0] = 30.0  # only `where` answers
            for i, t in enumerate(tokens):
                attn.W_V[head, t, i] = 1.0
                attn.W_O[head, i, t] = 10.0
    return model


@pytest.fixture
def copy_setup():
    task = CopyTask()
    return task, LoadedModel(model=planted_copy_model(task.tok), tokenizer=task.tok, name="planted-copy")


def test_planted_copy_head_labelled_by_its_position_and_the_idle_head_by_none(copy_setup):
    task, loaded = copy_setup
    out = explain_circuit(task, loaded, [(0, 0), (0, 1)], seed=0, n_train=4,
                          config=ExplainConfig(n_prompts=24, steps=100, d_sae=8))
    mover, idle = out["heads"]
    assert out["clean_metric"] > 5  # the planted model solves the task
    assert mover["role"]["kind"] == "mover" and "moves the key token (the answer)" in mover["role"]["line"]
    assert mover["attention"]["key"] > 0.9
    assert mover["patch_drop_fraction"] > 1.5  # the copied key becomes the wrong one: the metric flips
    assert mover["direct_effect"] > 0.5 * out["clean_metric"]
    assert mover["direct_on_answer"] > 0 > mover["direct_on_wrong"]  # raises the key, lowers the others
    assert out["position_holds"]["key"] == "answer" and out["position_holds"]["filler"] is None
    assert all(c["top_position"] == "key" and c["patch"]["drop_fraction"] > 1.5 for c in mover["codes"])
    # the idle head looks hard at a named position, yet the task needs none of it
    assert idle["attention"]["filler"] > 0.9
    assert idle["role"]["kind"] == "none" and "no measurable role" in idle["role"]["line"]
    assert abs(idle["patch_drop_fraction"]) < 0.01 and abs(idle["direct_effect"]) < 0.01
    assert all(abs(c["patch"]["drop"]) < 0.01 for c in idle["codes"])
    # codes count positives and negatives; every example marks the token the head attends
    for head, words in ((mover, KEYS), (idle, FILLERS)):
        code = head["codes"][0]
        assert code["n_positive"] > 0 and code["n_negative"] >= 0
        assert sum(c["n_positive"] for c in head["codes"]) <= 24
        assert code["examples"] and all(any(f"[[{w}]]" in e for w in words) for e in code["examples"])
    assert out["direct_effect"]["exact"] is True
    for head in (mover, idle):
        listed = {c["code"]: c for c in head["codes"]}
        for u in head["positive_unique_codes"]:  # each one seen on positives only
            assert u["n_positive"] > 0 and (u["code"] not in listed or listed[u["code"]]["n_negative"] == 0)


def test_positive_unique_codes_are_the_ones_negatives_never_show():
    from circuits.explain.explain import positive_unique

    pos, neg = torch.tensor([0, 0, 1, 3, 3, 3]), torch.tensor([1, 2, 2, 2, 0, 1])
    assert positive_unique(pos, neg, n_codes=4) == [{"code": "silent", "n_positive": 3}]
    assert positive_unique(torch.tensor([2, 2, 1]), torch.tensor([0, 0, 0]), n_codes=4) == [
        {"code": 2, "n_positive": 2}, {"code": 1, "n_positive": 1}]


def test_explain_refuses_an_empty_circuit_and_missing_heads(copy_setup):
    from circuits.errors import CircuitsError

    task, loaded = copy_setup
    with pytest.raises(CircuitsError, match="empty"):
        explain_circuit(task, loaded, [], n_train=4)
    with pytest.raises(CircuitsError, match="does not exist"):
        explain_circuit(task, loaded, [(3, 0)], n_train=4)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p / "nowhere", "no such result file"),
    (lambda p: (p / "result.json").write_text("[1, 2]") and p, "expected"),
    (lambda p: (p / "result.json").write_text('{"task": "ioi"}') and p, "missing field"),
    (lambda p: (p / "result.json").write_text(json.dumps(
        {"task": "ioi", "model": "tiny-ioi", "heads": [{"layer": 0, "head": 0, "in_circuit": False}]})) and p,
     "empty"),
])
def test_explain_bad_run_dir_is_one_line(tmp_path, make, fragment):
    res = run("explain", str(make(tmp_path)))
    assert res.exit_code == 2
    assert fragment in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_explain_a_saved_eap_run_and_find_explain(tmp_path):
    out = tmp_path / "run"
    found = run("find", "--task", "ioi", "--model", "tiny-ioi", "--method", "eap", "--n-score", "20",
                "--no-check-task", "--out", str(out), "--explain", "--json")
    assert found.exit_code == 0, found.output
    block = json.loads(found.stdout)["explain"]
    saved = json.loads((out / "result.json").read_text())
    assert saved["explain"]["heads"] == block["heads"]
    assert [h["head"] for h in block["heads"]] == saved["circuit"]
    assert block["codes_from"]["kind"] == "own"  # EAP has no SAE
    res = run("explain", str(out), "--n-prompts", "16", "--json")
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)["explain"]
    assert again["n_prompts"] == 16 and [h["head"] for h in again["heads"]] == saved["circuit"]
    for h in again["heads"]:
        assert h["role"]["kind"] in KINDS
        assert {"BOS", "IO", "S1", "S2", "END", "other"} <= set(h["attention"])
        assert sum(h["attention"].values()) == pytest.approx(1.0, abs=1e-4)
    table = run("explain", str(out), "--n-prompts", "16")
    assert table.exit_code == 0 and "roles" in table.output


def test_explain_reuses_the_sae_run_s_sae(tmp_path):
    out = tmp_path / "run"
    assert run("find", "--task", "ioi", "--model", "tiny-ioi", "--n-score", "20", "--no-check-task",
               "--out", str(out)).exit_code == 0
    report = tmp_path / "r.html"
    res = run("explain", str(out), "--n-prompts", "16", "--json", "--report", str(report))
    assert res.exit_code == 0, res.output
    block = json.loads(res.stdout)["explain"]
    assert block["codes_from"]["kind"] == "run" and block["codes_from"]["position"] == "mean"
    assert "What each head does" in report.read_text()
    assert run("explain", str(out), "--report", str(report)).exit_code == 2  # never overwrites unasked


@pytest.mark.parametrize("direct, up, down, drop, holds, kind, words", [
    (2.0, 1.8, -0.2, 1.0, {"IO": "answer"}, "mover", "moves the IO token (the answer)"),
    (2.0, 0.1, -1.9, 1.0, {"IO": "wrong"}, "suppressor", "suppresses the IO token (the wrong answer)"),
    (-2.0, -1.8, 0.2, -1.0, {"IO": "answer"}, "negative mover", "writes against the IO token"),
    (-2.0, 0.1, 2.1, -1.0, {"IO": "wrong"}, "wrong mover", "moves the IO token (the wrong answer)"),
    (0.01, 0.0, -0.01, 3.0, {"IO": None}, "indirect", "acts through later components, reading IO"),
    (0.01, 0.0, -0.01, 0.1, {"IO": None}, "none", "no measurable role"),
])
def test_role_line_reads_only_the_measurements(direct, up, down, drop, holds, kind, words):
    from circuits.explain.roles import role_line

    attention = {"BOS": 0.1, "IO": 0.8, "END": 0.05, "other": 0.05}
    role = role_line(attention, direct, up, down, drop, clean=10.0, target="m", holds=holds)
    assert role["kind"] == kind and words in role["line"]
    assert "attends IO 80%" in role["line"]


def test_a_norm_after_attention_makes_the_direct_effect_approximate(copy_setup):
    from gemma_tiny import tiny_gemma_tl

    task, _ = copy_setup
    gemma = LoadedModel(model=tiny_gemma_tl(task.tok.vocab_size), tokenizer=task.tok, name="tiny-gemma")
    out = explain_circuit(task, gemma, [(0, 1), (2, 3)], n_train=4,
                          config=ExplainConfig(n_prompts=8, steps=20, d_sae=4))
    assert out["direct_effect"]["exact"] is False and "approximate" in out["direct_effect"]["note"]
    for h in out["heads"]:
        assert h["role"]["kind"] in KINDS
        assert h["direct_effect"] == pytest.approx(h["direct_on_answer"] - h["direct_on_wrong"], abs=1e-5)
