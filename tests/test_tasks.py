"""Tasks: prompt sets, corruptions, answers, metrics, filtering for foreign tokenizers, ground truth."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest
import torch

from circuits.errors import CircuitsError
from circuits.tokenizer import WordTokenizer, split_pieces
from tasks import TASK_NAMES, get_task
from tasks.base import GroundTruth
from tasks.docstring import DocstringTask
from tasks.greaterthan import GreaterThanTask
from tasks.ioi import IOITask

os.environ.setdefault("HF_HUB_OFFLINE", "1")

N = 64


class SplittingTokenizer:
    """A Tokenizer-protocol stand-in for a subword tokenizer: the exact pieces in `split` become two
    tokens (as BPE splits rare words), and the consecutive piece pairs in `merge` become one token
    (as GPT-2 has single tokens for some years)."""

    def __init__(self, base: WordTokenizer, split: Iterable[str] = (),
                 merge: Iterable[tuple[str, str]] = ()):
        self.base = base
        self.split = set(split)
        self.merge = set(merge)
        self.extra_id = base.vocab_size  # one extra token: half of a split word, or a merged pair
        self.vocab_size = base.vocab_size + 1
        self.bos_token_id = base.bos_token_id

    def encode(self, text: str, prepend_bos: bool = True) -> list[int]:
        ids = [self.bos_token_id] if prepend_bos else []
        pieces = split_pieces(text)
        i = 0
        while i < len(pieces):
            if tuple(pieces[i:i + 2]) in self.merge:
                ids.append(self.extra_id)
                i += 2
                continue
            ids += self.base.encode(pieces[i], prepend_bos=False)
            if pieces[i] in self.split:
                ids.append(self.extra_id)
            i += 1
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.base.decode(i for i in ids if int(i) != self.extra_id)


def make(name: str, n: int = N, seed: int = 0):
    task = get_task(name)
    tok = task.word_tokenizer()
    return task, tok, task.prompts(tok, n, seed)


# --- lookup -----------------------------------------------------------------------------------------

def test_get_task_names_and_unknown():
    assert TASK_NAMES == ("ioi", "greaterthan", "docstring")
    assert isinstance(get_task("ioi"), IOITask)
    assert isinstance(get_task("greaterthan"), GreaterThanTask)
    assert isinstance(get_task("docstring"), DocstringTask)
    known = r"\(known: ioi, greaterthan, docstring, or a .jsonl task file\)"
    with pytest.raises(CircuitsError, match=r"unknown task 'nope' " + known):
        get_task("nope")


# --- shapes, lengths, determinism -------------------------------------------------------------------

@pytest.mark.parametrize("name,n_wrong", [("ioi", 1), ("greaterthan", 1), ("docstring", 5)])
def test_prompt_shapes(name, n_wrong):
    task, tok, p = make(name)
    assert p.positive.shape == p.negative.shape == (N, p.seq_len)
    assert p.answer.shape == (N,) and p.wrong.shape == (N, n_wrong)
    assert (p.positive[:, 0] == tok.bos_token_id).all() and (p.negative[:, 0] == tok.bos_token_id).all()
    assert len(p.positive_text) == len(p.negative_text) == N
    assert len(set(p.positive_text)) == N  # distinct prompts
    for text, row in zip(p.positive_text, p.positive, strict=True):
        assert tok.encode(text) == row.tolist()
    for value in p.extra.values():
        assert value.shape[0] == N
    assert task.name == name


@pytest.mark.parametrize("name", TASK_NAMES)
def test_deterministic_in_seed(name):
    _, _, a = make(name, seed=3)
    _, _, b = make(name, seed=3)
    _, _, c = make(name, seed=4)
    assert torch.equal(a.positive, b.positive) and torch.equal(a.negative, b.negative)
    assert torch.equal(a.answer, b.answer) and torch.equal(a.wrong, b.wrong)
    assert not torch.equal(a.positive, c.positive)
    assert a.seq_len == c.seq_len  # the length depends on the tokenizer, not the seed


@pytest.mark.parametrize("name", TASK_NAMES)
def test_bad_n(name):
    task = get_task(name)
    tok = task.word_tokenizer()
    for n in (0, -3):
        with pytest.raises(CircuitsError, match="positive integer"):
            task.prompts(tok, n, 0)
    with pytest.raises(CircuitsError, match="at most"):
        task.prompts(tok, 10**30, 0)


def test_too_few_distinct_prompts_is_a_clear_error():
    # Only two nouns and one century survive: 2 * 97 = 194 distinct prompts at most.
    task = GreaterThanTask()
    base = task.word_tokenizer()
    keep = {"war", "siege"}
    split = [" " + w for w in task.nouns if w not in keep] + [f" {x}" for x in range(11, 17)]
    tok = SplittingTokenizer(base, split)
    assert len(task.prompts(tok, 194, 0)) == 194
    with pytest.raises(CircuitsError, match="at most 194"):
        task.prompts(tok, 195, 0)


# --- positive vs negative ---------------------------------------------------------------------------

def test_ioi_corruption_changes_only_the_names():
    _, tok, p = make("ioi")
    diff = p.positive != p.negative  # [n, seq]
    rows = torch.arange(N)
    expected = torch.zeros_like(diff)
    for key in ("io_pos", "s1_pos", "s2_pos"):
        expected[rows, p.extra[key]] = True
    assert torch.equal(diff, expected)
    assert (p.extra["s1_pos"] < p.extra["s2_pos"]).all()
    assert (p.positive[rows, p.extra["io_pos"]] == p.answer).all()
    assert (p.positive[rows, p.extra["s1_pos"]] == p.wrong[:, 0]).all()
    assert (p.positive[rows, p.extra["s2_pos"]] == p.wrong[:, 0]).all()
    for i in range(N):
        new = {int(p.negative[i, p.extra[k][i]]) for k in ("io_pos", "s1_pos", "s2_pos")}
        assert len(new) == 3  # three distinct names
        assert int(p.answer[i]) not in p.negative[i].tolist()  # the IO name is gone
    # both orders occur: IO before S1 (ABBA) and S1 before IO (BABA)
    assert (p.extra["io_pos"] < p.extra["s1_pos"]).any() and (p.extra["io_pos"] > p.extra["s1_pos"]).any()


def test_ioi_answers_decode_to_names():
    task, tok, p = make("ioi")
    for i in range(N):
        io, s = tok.decode([int(p.answer[i])]), tok.decode([int(p.wrong[i, 0])])
        assert io.strip() in task.names and s.strip() in task.names and io != s
        words = p.positive_text[i].replace(",", " ").replace(".", " ").split()
        assert words.count(io.strip()) == 1 and words.count(s.strip()) == 2
        assert p.positive_text[i].endswith(" to")


def test_greaterthan_corruption_and_answers():
    _, tok, p = make("greaterthan")
    diff = p.positive != p.negative
    assert (diff.sum(1) == 1).all()  # only the YY token of the start year changes
    col = diff.float().argmax(1)
    zero_one = tok.encode("01", prepend_bos=False)[0]
    assert (p.negative[torch.arange(N), col] == zero_one).all()
    yy = p.extra["yy"]
    assert ((yy >= 2) & (yy <= 98)).all()
    for i in range(N):
        text = p.positive_text[i]
        xx = text.rsplit(" ", 1)[1]
        assert f" {xx}{int(yy[i]):02d} " in text
        assert 11 <= int(xx) <= 17
        assert tok.decode([int(p.answer[i])]) == f"{int(yy[i]) + 1:02d}"
        assert tok.decode([int(p.wrong[i, 0])]) == f"{int(yy[i]):02d}"
        assert p.negative_text[i] == text.replace(f" {xx}{int(yy[i]):02d} ", f" {xx}01 ")
    digits = [tok.encode(f"{v:02d}", prepend_bos=False)[0] for v in range(100)]
    assert (p.extra["digit_ids"] == torch.tensor(digits)).all()


def _def_args(text: str) -> list[str]:
    inside = text.split("(", 1)[1].split(")", 1)[0]
    return [a.strip() for a in inside.split(",")][1:]  # drop self


def _doc_params(text: str) -> list[str]:
    return [line.split(":param ")[1].split(":")[0] for line in text.splitlines() if ":param " in line]


def test_docstring_prompts_and_corruption():
    task, tok, p = make("docstring")
    for i in range(N):
        pos, neg = p.positive_text[i], p.negative_text[i]
        args, params = _def_args(pos), _doc_params(pos)
        assert len(args) == 6 and params == args[2:4] and pos.endswith("\n    :param")
        assert tok.decode([int(p.answer[i])]) == " " + args[4]
        assert sorted(tok.decode([int(w)]).strip() for w in p.wrong[i]) == sorted(args[:4] + args[5:])
        neg_args, neg_params = _def_args(neg), _doc_params(neg)
        fresh = neg_args + neg_params
        assert len(set(fresh)) == 8 and not set(fresh) & set(args)  # random_random: all new names
        assert int(p.answer[i]) not in p.negative[i].tolist()
        assert all(a in task.arg_names for a in args + fresh)
    # only the 8 name positions differ
    assert ((p.positive != p.negative).sum(1) == 8).all()


# --- metrics on hand-made logits --------------------------------------------------------------------

def test_ioi_metric_sign():
    task, tok, p = make("ioi", n=4)
    logits = torch.zeros(4, tok.vocab_size)
    logits[torch.arange(4), p.answer] = 3.0
    logits[torch.arange(4), p.wrong[:, 0]] = 1.0
    assert torch.allclose(task.metric(logits, p), torch.full((4,), 2.0))
    logits[torch.arange(4), p.wrong[:, 0]] = 5.0
    assert torch.allclose(task.metric(logits, p), torch.full((4,), -2.0))


def test_greaterthan_metric_sign():
    task, tok, p = make("greaterthan", n=4)
    digit_ids = p.extra["digit_ids"]
    yy = p.extra["yy"]
    big = torch.zeros(4, tok.vocab_size)
    big[torch.arange(4), digit_ids[torch.arange(4), yy + 1]] = 30.0  # all mass on YY+1
    assert torch.allclose(task.metric(big, p), torch.ones(4), atol=1e-6)
    small = torch.zeros(4, tok.vocab_size)
    small[torch.arange(4), digit_ids[torch.arange(4), yy]] = 30.0  # all mass on YY itself
    assert torch.allclose(task.metric(small, p), -torch.ones(4), atol=1e-6)
    # uniform logits: the difference of the two digit masses over the full-vocabulary softmax
    uniform = torch.zeros(4, tok.vocab_size)
    expected = ((99 - yy) - (yy + 1)).float() / tok.vocab_size
    assert torch.allclose(task.metric(uniform, p), expected, atol=1e-6)


def test_docstring_metric_uses_max_wrong():
    task, tok, p = make("docstring", n=3)
    logits = torch.zeros(3, tok.vocab_size)
    logits[torch.arange(3), p.answer] = 4.0
    logits[torch.arange(3), p.wrong[:, 2]] = 1.0
    assert torch.allclose(task.metric(logits, p), torch.full((3,), 3.0))
    logits[torch.arange(3), p.wrong[:, 4]] = 6.0
    assert torch.allclose(task.metric(logits, p), torch.full((3,), -2.0))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_metric_on_a_model_and_on_subsets(name):
    from circuits._compat import HookedTransformer, HookedTransformerConfig

    task, tok, p = make(name, n=6)
    cfg = HookedTransformerConfig(n_layers=1, n_heads=2, d_model=16, d_head=8, d_mlp=None, attn_only=True,
                                  n_ctx=64, d_vocab=tok.vocab_size, act_fn="relu", seed=0, device="cpu",
                                  default_prepend_bos=False)
    torch.manual_seed(0)
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        logits = model(p.positive)[:, -1]  # [n, vocab]
    metric = task.metric(logits, p)
    assert metric.shape == (6,) and torch.isfinite(metric).all()
    sub = p.subset([4, 1])
    assert torch.allclose(task.metric(logits[[4, 1]], sub), metric[[4, 1]])


# --- filtering for subword tokenizers ---------------------------------------------------------------

def test_ioi_filters_names_that_are_not_one_token():
    task = IOITask()
    split = {"Mary", "John", "James", "Michael", "Emma", "Alice"}
    tok = SplittingTokenizer(task.word_tokenizer(), {" " + name for name in split})
    p = task.prompts(tok, N, 0)
    assert p.seq_len == make("ioi")[2].seq_len
    for text in p.positive_text + p.negative_text:
        assert not set(text.replace(",", " ").replace(".", " ").split()) & split


def test_ioi_keeps_the_modal_length_when_a_template_tokenizes_longer():
    task = IOITask()
    tok = SplittingTokenizer(task.word_tokenizer(), {" finally"})
    p = task.prompts(tok, N, 0)
    assert len({len(tok.encode(t)) for t in p.positive_text + p.negative_text}) == 1
    assert not any("finally" in t for t in p.positive_text)


def test_greaterthan_filters_years_and_needs_two_digit_tokens():
    task = GreaterThanTask()
    base = task.word_tokenizer()
    # " 15" splits (the 15th century drops out), " 17"+"50" is one token (1750 drops out), and
    # " war" splits (the noun drops out).
    tok = SplittingTokenizer(base, split={" 15", " war"}, merge={(" 17", "50")})
    p = task.prompts(tok, 300, 0)
    texts = p.positive_text + p.negative_text
    assert not any(" 15" in t or " war " in t or " 1750 " in t for t in texts)
    assert any(" 17" in t for t in texts) and any(" 1650 " in t for t in texts)
    assert len({len(tok.encode(t)) for t in texts}) == 1
    # the metric needs all 100 two-digit tokens
    with pytest.raises(CircuitsError, match="single tokens"):
        task.prompts(SplittingTokenizer(base, split={"07"}), 10, 0)


def test_docstring_filters_argument_names():
    task = DocstringTask()
    split = set(task.arg_names[:40])
    tok = SplittingTokenizer(task.word_tokenizer(), {" " + a for a in split})
    p = task.prompts(tok, N, 0)
    for text in p.positive_text + p.negative_text:
        assert not set(_def_args(text) + _doc_params(text)) & split
    too_many = {" " + a for a in task.arg_names[:-5]}
    with pytest.raises(CircuitsError, match="argument names"):
        task.prompts(SplittingTokenizer(task.word_tokenizer(), too_many), 4, 0)


def test_foreign_word_tokenizer_is_a_clear_error():
    with pytest.raises(CircuitsError, match="only 0 names encode to a single token"):
        IOITask().prompts(DocstringTask().word_tokenizer(), 4, 0)
    names_only = WordTokenizer([" " + w for w in IOITask.names + IOITask.places + IOITask.objects])
    with pytest.raises(CircuitsError, match="cannot encode the task's prompts"):
        IOITask().prompts(names_only, 4, 0)


# --- word tokenizers --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TASK_NAMES)
def test_word_tokenizer_covers_templates_and_extra_words(name):
    task = get_task(name)
    tok = task.word_tokenizer()
    assert tok is task.word_tokenizer()  # cached
    assert len(task.extra_words) >= 50 and task.templates
    tok.encode(" ".join(task.extra_words) + ".")
    tok.encode(". ".join(w.capitalize() for w in task.extra_words))
    for word in task.extra_words:
        assert " " + word in tok and word in tok


def test_docstring_vocabulary_is_large_and_disjoint():
    task = DocstringTask()
    assert len(task.arg_names) >= 100
    assert not set(task.arg_names) & set(task.desc_words)
    assert not set(task.arg_names) & set(task.func_names)
    assert len(IOITask.names) >= 99 and len(GreaterThanTask.nouns) >= 100


# --- ground truth -----------------------------------------------------------------------------------

def test_ioi_ground_truth():
    gt = IOITask().ground_truth("gpt2-small")
    assert isinstance(gt, GroundTruth) and len(gt.heads) == 26 == len(gt.head_set())
    assert set(gt.classes["name mover"]) == {(9, 9), (10, 0), (9, 6)}
    assert set(gt.classes["negative name mover"]) == {(10, 7), (11, 10)}
    assert set(gt.classes["s2 inhibition"]) == {(7, 3), (7, 9), (8, 6), (8, 10)}
    assert set(gt.classes["induction"]) == {(5, 5), (5, 8), (5, 9), (6, 9)}
    assert set(gt.classes["duplicate token"]) == {(0, 1), (0, 10), (3, 0)}
    assert set(gt.classes["previous token"]) == {(2, 2), (4, 11)}
    assert len(gt.classes["backup name mover"]) == 8 and (11, 9) in gt.classes["backup name mover"]
    edges = set(gt.edges)
    assert ((2, 2), (5, 5)) in edges and ((0, 1), (7, 3)) in edges and ((8, 10), (11, 10)) in edges
    assert ((5, 5), (7, 9)) in edges
    assert ((2, 2), (7, 3)) not in edges  # previous token -> S2 inhibition is not a connection
    assert not any(a in gt.classes["name mover"] for a, _ in edges)  # movers only send to OUTPUT
    assert all(a[0] < b[0] and a in gt.head_set() and b in gt.head_set() for a, b in edges)
    assert len(edges) == 2 * 4 + 4 * 4 + 3 * 4 + 4 * 13
    gt.validate(12, 12)
    assert "acdc/ioi/utils.py" in gt.source
    assert GroundTruth.from_dict(gt.to_dict()) == gt
    assert IOITask().ground_truth("gpt2") == gt
    assert IOITask().ground_truth("gpt2-medium") is None


def test_greaterthan_ground_truth():
    gt = GreaterThanTask().ground_truth("gpt2-small")
    assert gt is not None and len(gt.heads) == 9
    assert gt.head_set() == {(0, 1), (0, 3), (0, 5), (5, 5), (6, 1), (6, 9), (7, 10), (8, 11), (9, 1)}
    assert set(gt.classes["AMID"]) == {(5, 5), (6, 1), (6, 9), (7, 10), (8, 11), (9, 1)}
    assert set(gt.edges) == {(a, b) for a in [(0, 3), (0, 5), (0, 1)] for b in gt.classes["AMID"]}
    assert (5, 1) not in gt.head_set() and (8, 8) not in gt.head_set()  # the EAP-IG additions
    gt.validate(12, 12)
    assert "greaterthan" in gt.source
    assert GreaterThanTask().ground_truth("attn-only-4l") is None


def test_docstring_ground_truth():
    gt = DocstringTask().ground_truth("attn-only-4l")
    assert gt is not None and gt.head_set() == {(0, 5), (1, 2), (1, 4), (2, 0), (3, 0), (3, 6)}
    expected = {((0, 5), (1, 4)), ((0, 5), (2, 0)), ((1, 4), (2, 0)), ((0, 5), (1, 2))}
    expected |= {(s, (3, h)) for h in (0, 6) for s in [(1, 4), (0, 5), (2, 0), (1, 2)]}
    assert set(gt.edges) == expected and len(gt.edges) == 12
    assert not gt.head_set() & {(0, 2), (0, 4), (1, 0), (0, 1), (2, 3)}  # auto-circuit's extras
    gt.validate(4, 8)
    assert DocstringTask().ground_truth("gpt2-small") is None
    assert DocstringTask().published_model == "attn-only-4l"
    assert IOITask().published_model == GreaterThanTask().published_model == "gpt2-small"
