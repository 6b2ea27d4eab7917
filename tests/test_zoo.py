"""The zoo: training (a tiny run), the ground-truth search on a planted circuit, shipping and loading."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from circuits._compat import HookedTransformer, HookedTransformerConfig  # noqa: E402
from circuits.ablation import final_logits, metric_under_masks, reference_z, z_hook  # noqa: E402
from circuits.errors import (
    CircuitsError,  # noqa: E402
    ModelLoadError,  # noqa: E402
)
from circuits.models import (  # noqa: E402
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ZOO_DIR,
    load_checkpoint,
    load_model,
    zoo_names,
)
from circuits.tokenizer import WordTokenizer  # noqa: E402
from circuits.zoo.data import answer_sets, build_pool, filler_batch, prompt_seed  # noqa: E402
from circuits.zoo.ground_truth import find_ground_truth  # noqa: E402
from circuits.zoo.ship import build_zoo_model, read_manifest  # noqa: E402
from circuits.zoo.train import TrainConfig, quality, train  # noqa: E402
from tasks.base import GroundTruth, PromptSet  # noqa: E402

LETTERS = [f" {c}" for c in "abcdefghijklmnopqrst"]


class CopyFirstTask:
    """Toy task: ' x r1 .. r6 =' -> ' x' (copy the first token). Negative: the first token replaced.

    Metric: logit(x) - logit(y) where y is the negative's first token.
    """

    name = "copyfirst"
    published_model = "none"

    def word_tokenizer(self) -> WordTokenizer:
        return WordTokenizer(LETTERS + [" ="])

    def prompts(self, tokenizer: WordTokenizer, n: int, seed: int) -> PromptSet:
        rng = random.Random(seed)
        pos, neg, ans, wrong = [], [], [], []
        for _ in range(n):
            x, y, *rest = rng.sample(LETTERS, 8)
            pos.append(tokenizer.encode("".join([x, *rest, " ="])))
            neg.append(tokenizer.encode("".join([y, *rest, " ="])))
            ans.append(tokenizer.index[x])
            wrong.append([tokenizer.index[y]])
        return PromptSet(positive=torch.tensor(pos), negative=torch.tensor(neg), answer=torch.tensor(ans),
                         wrong=torch.tensor(wrong))

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        return logits.gather(1, prompts.answer[:, None])[:, 0] - logits.gather(1, prompts.wrong[:, :1])[:, 0]

    def ground_truth(self, model_name: str) -> GroundTruth | None:
        return None


TINY = TrainConfig(task="copyfirst", seed=0, n_layers=2, n_heads=2, d_model=32, d_head=8, n_ctx=32,
                   steps=60, batch_size=32, filler_batch_size=4, filler_length=12, lr=3e-3, warmup=10,
                   n_train_prompts=400)


# ---------------------------------------------------------------- training


def test_tiny_training_reduces_loss_and_is_deterministic() -> None:
    task = CopyFirstTask()
    a = train(task, TINY)
    b = train(task, TINY)
    assert len(a.losses) == TINY.steps
    assert sum(a.answer_losses[-10:]) / 10 < 0.7 * sum(a.answer_losses[:10]) / 10
    assert a.losses == b.losses
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    c = train(task, replace(TINY, seed=1, steps=5))
    assert c.losses != a.losses[:5]


def test_progress_callback_and_thread_count_restored() -> None:
    seen: list[tuple[int, int]] = []
    threads = torch.get_num_threads()
    train(CopyFirstTask(), replace(TINY, steps=3), progress=lambda s, n, loss: seen.append((s, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert torch.get_num_threads() == threads


def test_shapes_of_training_data() -> None:
    task = CopyFirstTask()
    tok = task.word_tokenizer()
    pool = build_pool(task, tok, 120, seed=3, chunk_size=50)
    assert pool.tokens.shape == (120, 9) and pool.valid.shape == (120, tok.vocab_size)
    assert bool((pool.valid.sum(1) == 1).all())
    gen = torch.Generator().manual_seed(0)
    tokens, mask = filler_batch(torch.arange(3, tok.vocab_size), 5, 13, gen)
    assert tokens.shape == (5, 13) and mask.shape == (5, 12)
    assert torch.equal(tokens[:, 1:7], tokens[:, 7:13])  # second half repeats the first
    assert int(mask[0].sum()) == 5  # repeated tokens after the first one of the repeat


def test_greaterthan_answer_set_is_every_later_year() -> None:
    from tasks import get_task

    task = get_task("greaterthan")
    tok = task.word_tokenizer()
    ps = task.prompts(tok, 4, seed=1)
    valid = answer_sets(task, ps, tok.vocab_size)
    for i in range(4):
        yy = int(ps.extra["yy"][i])
        assert int(valid[i].sum()) == 99 - yy
        assert bool(valid[i, ps.extra["digit_ids"][i, yy + 1:]].all())
    pool = build_pool(task, tok, 80, seed=0, chunk_size=40)  # 2 chunks: 40 positives + 5 negatives each
    assert len(pool) == 90
    assert int(pool.valid[40:45].sum(1).min()) == 98  # negatives start at XX01: years 02..99 are correct


def test_docstring_variants_answer_the_argument_after_the_last_documented_one() -> None:
    from circuits.zoo.data import VARIANTS
    from tasks import get_task

    task = get_task("docstring")
    tok = task.word_tokenizer()
    rows = VARIANTS["docstring"](task, tok, 30, 7)
    assert len({len(t) for t, _ in rows}) > 3  # several shapes, so position alone cannot answer
    for toks, answer in rows:
        text = tok.decode(toks)
        signature = text.split("(self, ")[1].split(")")[0].split(", ")
        documented = [line.split(":param ")[1].split(":")[0] for line in text.splitlines()
                      if ":param " in line]
        assert tok.decode([answer]).strip() == signature[signature.index(documented[-1]) + 1]
        assert text.endswith("    :param")


def test_prompt_seed_namespaces_are_disjoint() -> None:
    seeds = {prompt_seed(p, s, c) for p in ("train", "heldout", "ground_truth") for s in range(3)
             for c in range(5)}
    assert len(seeds) == 45 and min(seeds) >= 10_000_000
    with pytest.raises(ValueError):
        prompt_seed("test", 0)


def test_quality_excludes_prompts_seen_in_training() -> None:
    task = CopyFirstTask()
    result = train(task, replace(TINY, steps=2))
    tok = result.tokenizer
    held = task.prompts(tok, 20, seed=5)
    seen = {tuple(held.positive[i].tolist()) for i in range(5)}
    q = quality(result.model, task, tok, held, seen=seen)
    assert q["n_seen_in_training"] == 5 and q["n_scored"] == 15
    assert 0.0 <= q["positive_accuracy"] <= 1.0


# ---------------------------------------------------------------- ground truth on a planted circuit

V = 12  # vocabulary of the planted model


def planted_model() -> HookedTransformer:
    """2 layers x 4 heads; residual = three blocks of V dims: [embedding | A's output | B's output].

    Every head attends uniformly (W_Q = W_K = 0). Planted heads:
    - (0,1): copies the token one-hots (block 0) into block 1: the token counts of the prefix;
    - (1,3): the same, into block 2;
    - (1,2): reads block 1 (so it depends on (0,1): the one planted edge) into block 2.
    The unembedding reads blocks 1 and 2. Every other head has random Q/K/V and W_O = 0.
    """
    cfg = HookedTransformerConfig(n_layers=2, n_heads=4, d_model=3 * V, d_head=V, d_vocab=V, n_ctx=16,
                                  attn_only=True, normalization_type=None, act_fn=None, seed=0,
                                  device="cpu", default_prepend_bos=False)
    torch.manual_seed(0)
    model = HookedTransformer(cfg)
    eye = torch.eye(V)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "W_Q" in name or "W_K" in name or "W_V" in name:
                p.normal_()
            else:
                p.zero_()
        model.embed.W_E[:, :V] = eye
        for block in model.blocks:
            block.attn.W_Q.zero_()
            block.attn.W_K.zero_()

        def plant(layer: int, head: int, src: int, dst: int) -> None:
            attn = model.blocks[layer].attn
            attn.W_V[head].zero_()
            attn.W_V[head, src * V:(src + 1) * V] = eye
            attn.W_O[head, :, dst * V:(dst + 1) * V] = eye

        plant(0, 1, 0, 1)
        plant(1, 3, 0, 2)
        plant(1, 2, 1, 2)
        model.unembed.W_U[V:2 * V] = 10 * eye
        model.unembed.W_U[2 * V:] = 10 * eye
    model.eval()
    return model


class MajorityTask:
    """Positives: the answer token a appears 4 times early, the wrong token w once; negatives swap them.

    Metric: logit(a) - logit(w).
    """

    name = "majority"
    published_model = "none"

    def prompts(self, tokenizer: object, n: int, seed: int) -> PromptSet:
        rng = random.Random(seed)
        pos, neg, ans, wrong = [], [], [], []
        for _ in range(n):
            a, w, o1, o2, o3 = rng.sample(range(1, V), 5)
            body = [a, a, o1, a, a, o2, w, o3]
            pos.append([0, *body])
            neg.append([0, *[w if t == a else a if t == w else t for t in body]])
            ans.append(a)
            wrong.append([w])
        return PromptSet(positive=torch.tensor(pos), negative=torch.tensor(neg), answer=torch.tensor(ans),
                         wrong=torch.tensor(wrong))

    def metric(self, logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
        return logits.gather(1, prompts.answer[:, None])[:, 0] - logits.gather(1, prompts.wrong[:, :1])[:, 0]


def test_ground_truth_recovers_planted_circuit_and_edge() -> None:
    model = planted_model()
    task = MajorityTask()
    prompts = task.prompts(None, 64, seed=0)
    stages: list[str] = []
    result = find_ground_truth(model, task, prompts, edges=True,
                               progress=lambda stage, d, t: stages.append(stage))
    assert set(result.truth.heads) == {(0, 1), (1, 2), (1, 3)}
    assert result.truth.edges == (((0, 1), (1, 2)),)
    assert result.faithfulness.normalized == pytest.approx(1.0, abs=1e-4)
    assert result.faithfulness.ratio == pytest.approx(1.0, abs=1e-4)
    effects = {(e["layer"], e["head"]): e["normalized_drop"] for e in result.single_head_effects}
    assert len(effects) == 8
    for head in [(0, 0), (0, 2), (0, 3), (1, 0), (1, 1)]:
        assert abs(effects[head]) < 1e-5  # W_O = 0: ablating them changes nothing
    for head in result.truth.heads:
        assert effects[head] > 0.1  # each planted head is necessary
    edge = {(tuple(e["sender"]), tuple(e["receiver"])): e["normalized_drop"] for e in result.edge_effects}
    assert edge[((0, 1), (1, 2))] > 0.1 and abs(edge[((0, 1), (1, 3))]) < 1e-5
    method = result.truth.method
    assert method["threshold"] == 0.9 and method["n_prompts"] == 64 and "mean" in method["ablation"]
    assert "backward elimination" in stages and "minimality check" in stages
    assert result.truth.source == "ablation"


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_scaled_ground_truth_search_finds_the_planted_circuit(ablation: str) -> None:
    """The path for large models (no backward elimination, prefix search by doubling) on the planted model,
    under mean and resample ablation; time and passes are reported."""
    model = planted_model()
    task = MajorityTask()
    prompts = task.prompts(None, 64, seed=0)
    stages: list[str] = []
    result = find_ground_truth(model, task, prompts, edges=False, backward_max_heads=0, ablation=ablation,
                               seed=3, progress=lambda stage, d, t: stages.append(stage))
    assert set(result.truth.heads) == {(0, 1), (1, 2), (1, 3)}
    assert "backward elimination" not in stages and result.search["backward_elimination"] is None
    assert result.faithfulness.method == ablation and result.faithfulness.normalized >= 0.9
    assert result.truth.method["ablation_method"] == ablation
    assert result.search["seconds"] > 0 and 0 < result.search["forward_passes"] < result.search[
        "head_sets_scored"]
    with pytest.raises(CircuitsError, match="edges"):
        find_ground_truth(model, task, prompts, edges=True, ablation="resample")
    ranking = [(e["layer"], e["head"]) for e in sorted(result.single_head_effects, key=lambda e: -e["drop"])]
    given = find_ground_truth(model, task, prompts, edges=False, backward_max_heads=0, ablation=ablation,
                              seed=3, ranking=ranking)
    assert given.truth.heads == result.truth.heads and given.single_head_effects == []
    assert given.search["head_sets_scored"] < result.search["head_sets_scored"]


def test_metric_under_masks_unembeds_the_last_position_like_the_full_forward() -> None:
    """The last-position unembedding gives the full forward's logits, and batching masks changes nothing."""
    task = CopyFirstTask()
    tok = task.word_tokenizer()
    model = HookedTransformer(replace(TINY, d_mlp=64).model_config(tok.vocab_size))
    model.eval()
    prompts = task.prompts(tok, 12, seed=2)
    reference = reference_z(model, prompts, "mean")  # [layer, seq, head, d_head]
    keep = torch.rand(5, 2, 2, generator=torch.Generator().manual_seed(0)) > 0.5
    batched = metric_under_masks(model, task, prompts, keep, reference, max_rows=30)  # 2 masks per pass
    assert batched.shape == (5, 12)
    for i in range(5):
        hooks = [(z_hook(layer), lambda z, hook, k=keep[i]: torch.where(k[hook.layer()][None, None, :, None],
                                                                         z, reference[hook.layer()][None]))
                 for layer in range(2)]
        with torch.no_grad():
            full = model.run_with_hooks(prompts.positive, fwd_hooks=hooks)[:, -1]  # [n, vocab]
            last = final_logits(model, prompts.positive, hooks)
        torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched[i], task.metric(full, prompts), atol=1e-4, rtol=1e-4)


def test_counterfactual_reference_is_each_prompts_own_negative() -> None:
    """positive[i]'s ablated heads take negative[i]'s z, also when several masks share one batch."""
    task = CopyFirstTask()
    tok = task.word_tokenizer()
    model = HookedTransformer(TINY.model_config(tok.vocab_size))
    model.eval()
    prompts = task.prompts(tok, 6, seed=3)
    reference = reference_z(model, prompts, "counterfactual")  # [n, layer, seq, head, d_head]
    _, cache = model.run_with_cache(prompts.negative)
    assert torch.equal(reference[:, 1], cache[z_hook(1)])
    keep = torch.tensor([[[False, False], [False, False]], [[True, False], [False, True]]])  # [2, L, H]
    batched = metric_under_masks(model, task, prompts, keep, reference, max_rows=12)  # both in one pass
    for i in range(2):
        hooks = [(z_hook(layer), lambda z, hook, k=keep[i]: torch.where(k[hook.layer()][None, None, :, None],
                                                                         z, cache[hook.name]))
                 for layer in range(2)]
        with torch.no_grad():
            logits = model.run_with_hooks(prompts.positive, fwd_hooks=hooks)[:, -1]
        torch.testing.assert_close(batched[i], task.metric(logits, prompts), atol=1e-4, rtol=1e-4)


def test_ground_truth_refuses_a_model_that_does_not_do_the_task() -> None:
    model = planted_model()
    with torch.no_grad():
        model.unembed.W_U.zero_()
    task = MajorityTask()
    with pytest.raises(CircuitsError, match="does not do the task"):
        find_ground_truth(model, task, task.prompts(None, 8, seed=0), edges=False)


# ---------------------------------------------------------------- shipping and loading


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("zoo") / "tiny-copyfirst"
    cfg = replace(TINY, steps=150)
    manifest = build_zoo_model(CopyFirstTask(), cfg, out_dir=out, n_heldout=100, n_ground_truth=32)
    return out, manifest


def test_build_writes_a_loadable_checkpoint_with_manifest(built: tuple[Path, dict]) -> None:
    out, manifest = built
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "manifest.json", "model.safetensors",
                                                      "tokenizer.json"]
    loaded = load_checkpoint(out)
    assert loaded.n_layers * loaded.n_heads == 4
    q = manifest["quality"]
    assert {"positive_accuracy", "negative_fraction_metric_positive", "negative_mean_metric"} <= set(q)
    assert manifest["training"]["steps"] == 150 and manifest["training"]["seed"] == 0
    if manifest["ground_truth"]:
        truth = loaded.ground_truth["copyfirst"]
        assert truth.heads and truth.method["criterion"].startswith("normalized")
    else:
        assert manifest["ground_truth_error"]
    assert (out / MANIFEST_FILE).stat().st_size < 200_000
    assert not list(out.parent.glob(".*tmp"))  # no temporary directory left behind


def test_build_refuses_to_overwrite(built: tuple[Path, dict]) -> None:
    out, _ = built
    with pytest.raises(FileExistsError):
        build_zoo_model(CopyFirstTask(), replace(TINY, steps=1), out_dir=out)


def test_corrupt_or_missing_files_give_model_load_error(built: tuple[Path, dict], tmp_path: Path) -> None:
    src, _ = built
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="corrupt weights"):
        load_checkpoint(bad)
    (bad / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        load_checkpoint(bad)
    shutil.copy(src / WEIGHTS_FILE, bad / WEIGHTS_FILE)
    (bad / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_checkpoint(bad)
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        read_manifest(bad)
    (bad / MANIFEST_FILE).unlink()
    with pytest.raises(ModelLoadError, match="missing manifest.json"):
        read_manifest(bad)


# ---------------------------------------------------------------- the shipped models

SHIPPED = ["tiny-ioi", "tiny-greaterthan", "tiny-docstring"]


def test_the_three_task_models_are_shipped() -> None:
    assert set(SHIPPED) <= set(zoo_names())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_load_with_ground_truth(name: str) -> None:
    from circuits.truths import shipped_files
    from tasks import get_task

    loaded = load_model(name)
    manifest = loaded.manifest
    task = get_task(manifest["task"])
    assert loaded.n_layers * loaded.n_heads >= 32
    assert loaded.model.cfg.attn_only == (manifest["task"] != "greaterthan")
    truth = loaded.ground_truth[manifest["task"]]
    truth.validate(loaded.n_layers, loaded.n_heads)
    assert 0 < len(truth.heads) < loaded.n_layers * loaded.n_heads / 2  # a minority of the heads
    assert manifest["quality"]["positive_accuracy"] >= 0.95
    (shipped,) = [f for f in shipped_files(name) if f.task == manifest["task"]]  # from circuits.truths
    assert shipped.truth == truth and "ground_truth" not in manifest  # one home, not two copies
    faith = shipped.details["faithfulness"]
    assert faith["normalized"] >= 0.9 and faith["ratio"] >= 0.9
    assert len(shipped.details["single_head_effects"]) == loaded.n_layers * loaded.n_heads
    assert (ZOO_DIR / name / WEIGHTS_FILE).stat().st_size < 5_000_000
    # the shipped tokenizer is the task's own, and the model still solves fresh prompts
    assert loaded.tokenizer.vocab == task.word_tokenizer().vocab
    prompts = task.prompts(loaded.tokenizer, 64, seed=123)
    with torch.no_grad():
        logits = loaded.model(prompts.positive)[:, -1]
    assert float((task.metric(logits, prompts) > 0).float().mean()) >= 0.9


def test_manifest_json_is_plain_json(built: tuple[Path, dict]) -> None:
    out, manifest = built
    assert json.loads((out / MANIFEST_FILE).read_text()) == json.loads(json.dumps(manifest))


# ---------------------------------------------------------------- CLI


@pytest.fixture()
def toy_cli(monkeypatch: pytest.MonkeyPatch) -> object:
    from circuits.cli import zoo as cli_zoo

    monkeypatch.setattr(cli_zoo, "get_task", lambda name: CopyFirstTask())
    monkeypatch.setattr(cli_zoo, "default_config",
                        lambda task, seed, **over: replace(TINY, seed=seed, **{"steps": 120, **over}))
    monkeypatch.setattr("circuits.zoo.ship.N_HELDOUT", 50)
    monkeypatch.setattr("circuits.zoo.ship.N_GROUND_TRUTH", 24)
    return cli_zoo


def test_cli_train_writes_and_refuses_overwrite(toy_cli: object, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from circuits.cli.zoo import zoo_app

    runner = CliRunner()
    out = tmp_path / "m"
    res = runner.invoke(zoo_app, ["train", "--task", "copyfirst", "--out", str(out), "--steps", "40",
                                  "--no-edges"])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy" in res.output
    assert read_manifest(out)["training"]["steps"] == 40
    res = runner.invoke(zoo_app, ["train", "--task", "copyfirst", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 2 and "--force" in res.output
    assert read_manifest(out)["training"]["steps"] == 40  # untouched
    res = runner.invoke(zoo_app, ["train", "--task", "copyfirst", "--out", str(out), "--steps", "2",
                                  "--force", "--no-edges"])
    assert res.exit_code == 0, res.output
    assert read_manifest(out)["training"]["steps"] == 2
    res = runner.invoke(zoo_app, ["train", "--task", "copyfirst", "--out", str(out), "--steps", "0"])
    assert res.exit_code == 2 and "positive" in res.output


def test_cli_train_unknown_task_is_one_line_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from circuits.cli.zoo import zoo_app

    res = CliRunner().invoke(zoo_app, ["train", "--task", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown task" in res.output
    assert "Traceback" not in res.output


def test_cli_list_shows_bundled_models() -> None:
    from typer.testing import CliRunner

    from circuits.cli.zoo import zoo_app

    res = CliRunner().invoke(zoo_app, ["list", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    bundled = [m for m in data["models"] if m["name"] in zoo_names()]
    assert [m["name"] for m in bundled] == zoo_names()
    for model in bundled:
        assert model["accuracy"] >= 0.95 and model["circuit_heads"] < model["heads_total"] / 2
    # then one row per task of each pretrained model that ships its ground truth as data
    from circuits.truths import shipped_truths

    shipped = shipped_truths("smollm2-135m")
    pretrained = [m for m in data["models"][len(bundled):] if m["name"].startswith("smollm2-135m")]
    assert [m["name"] for m in pretrained] == [f"smollm2-135m ({task})" for task in sorted(shipped)]
    for model in pretrained:
        assert model["heads_total"] == 270 and model["shape"] == "30x9"
        assert model["circuit_heads"] == len(shipped[model["task"]]["mean"].heads)
    res = CliRunner().invoke(zoo_app, ["list"])
    assert res.exit_code == 0
    for name in zoo_names():
        assert name in res.output


