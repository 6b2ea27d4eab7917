"""Tasks from a file (tasks/custom.py): both field styles, the metric, drops, ground truth, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from circuits.cli.main import app
from tasks import get_task
from tasks.custom import TaskFileError, load_task_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
runner = CliRunner()

PAIRS = [  # (positive, negative, answer, wrong)
    ("When Mary and John went to the store, John gave a drink to",
     "When Mary and John went to the store, Mary gave a drink to", " Mary", " John"),
    ("When Tom and Sarah went to the park, Sarah gave a book to",
     "When Tom and Sarah went to the park, Tom gave a book to", " Tom", " Sarah"),
    ("When Emma and Bob went to the school, Bob gave a ring to",
     "When Emma and Bob went to the school, Emma gave a ring to", " Emma", " Bob"),
]


def ours(pos: str, neg: str, ans: str, wrong: str) -> dict:
    return {"positive": pos, "negative": neg, "answer": ans, "wrong_answers": [wrong]}


def auto_circuit(pos: str, neg: str, ans: str, wrong: str) -> dict:
    return {"clean": pos, "corrupt": neg, "answers": [ans], "wrong_answers": [wrong]}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_our_fields_and_auto_circuit_fields_give_the_same_prompts(tmp_path):
    a = load_task_file(write_jsonl(tmp_path / "a.jsonl", [ours(*p) for p in PAIRS]))
    b = load_task_file(write_jsonl(tmp_path / "b.jsonl", [auto_circuit(*p) for p in PAIRS]))
    (tmp_path / "c.json").write_text(json.dumps({"prompts": [auto_circuit(*p) for p in PAIRS]}))
    c = load_task_file(tmp_path / "c.json")
    tok = a.word_tokenizer()
    assert b.word_tokenizer().vocab == tok.vocab == c.word_tokenizer().vocab
    sets = [t.prompts(tok, 3, seed=1) for t in (a, b, c)]
    for other in sets[1:]:
        for field in ("positive", "negative", "answer", "wrong"):
            assert torch.equal(getattr(sets[0], field), getattr(other, field))
    ps = sets[0]
    assert ps.positive.shape == ps.negative.shape == (3, len(tok.encode(PAIRS[0][0])))
    assert sorted(tok.decode(ps.answer[i:i + 1]) for i in range(3)) == [" Emma", " Mary", " Tom"]
    assert a.name == "a" and a.dropped == {} and a.n_usable == 3


def test_metric_max_and_mean_of_wrong_answers_and_corrupted_answer_fallback(tmp_path):
    records = [
        {"positive": "x a", "negative": "x b", "answers": [" a", " e"], "wrong_answers": [" b", " c"]},
        {"positive": "x c", "negative": "x d", "answer": " c", "negative_answer": " d"},
    ]
    task = load_task_file(write_jsonl(tmp_path / "m.jsonl", records))
    tok = task.word_tokenizer()
    ps = task.prompts(tok, 2, seed=0)
    order = [task.pairs.index(next(p for p in task.pairs if p.positive == t)) for t in ps.positive_text]
    logits = torch.zeros(2, tok.vocab_size)
    ids = {w: tok.encode(w, prepend_bos=False)[0] for w in (" a", " b", " c", " d", " e")}
    values = [{" a": 5.0, " e": 3.0, " b": 1.0, " c": 2.0}, {" c": 4.0, " d": 6.0}]
    for row, pair_index in enumerate(order):
        for word, value in values[pair_index].items():
            logits[row, ids[word]] = value
    got = dict(zip(order, task.metric(logits, ps).tolist(), strict=True))
    assert got[0] == pytest.approx((5 + 3) / 2 - 2)  # mean answers - max wrong
    assert got[1] == pytest.approx(4 - 6)  # vs the corrupted prompt's answer
    mean_task = load_task_file(write_jsonl(tmp_path / "mean.jsonl",
                                           [{"task": {"wrong": "mean"}}, *records]))
    got_mean = dict(zip(order, mean_task.metric(logits, ps).tolist(), strict=True))
    assert got_mean[0] == pytest.approx(4 - 1.5)
    assert got_mean[1] == pytest.approx(-2)


def test_unusable_pairs_are_dropped_with_counts_and_the_most_common_length_kept(tmp_path):
    good = [ours(*p) for p in PAIRS]
    longer = ours("When Mary and John went to the big store, John gave a drink to",
                  "When Mary and John went to the big store, Mary gave a drink to", " Mary", " John")
    mismatched = ours(PAIRS[0][0], "When Mary and John went to the big store, Mary gave a drink to",
                      " Mary", " John")
    two_tokens = ours(PAIRS[0][0], PAIRS[0][1], " Mary Ann", " John")
    untokenizable = ours(PAIRS[0][0] + "\t", PAIRS[0][1] + "\t", " Mary", " John")  # a tab: no piece
    task = load_task_file(write_jsonl(tmp_path / "d.jsonl",
                                      [*good, longer, mismatched, two_tokens, untokenizable]))
    ps = task.prompts(task.word_tokenizer(), 3, seed=0)
    assert len(ps) == 3 and set(ps.positive_text) == {p[0] for p in PAIRS}
    assert task.dropped == {"other_length": 1, "different_lengths": 1, "answer_not_one_token": 1,
                            "untokenizable": 1}
    summary = task.summary()
    assert summary["pairs_in_file"] == 7 and summary["usable_pairs"] == 3 and summary["dropped_total"] == 4
    with pytest.raises(TaskFileError, match="only 3 are usable"):
        task.prompts(task.word_tokenizer(), 4, seed=0)


def test_prompts_are_a_seeded_shuffle(tmp_path):
    names = ["Mary", "John", "Tom", "Sarah", "Emma", "Bob"]
    records = [ours(f"When {a} and {b} met, {b} waved to", f"When {a} and {b} met, {a} waved to", f" {a}",
                    f" {b}") for a in names for b in names if a != b]
    task = load_task_file(write_jsonl(tmp_path / "s.jsonl", records))
    tok = task.word_tokenizer()
    first, again, other = (task.prompts(tok, 10, seed) for seed in (0, 0, 1))
    assert first.positive_text == again.positive_text
    assert first.positive_text != other.positive_text


def test_ground_truth_in_the_file_or_beside_it(tmp_path):
    truth = {"heads": [[0, 1], [1, 2]], "edges": [[[0, 1], [1, 2]]], "source": "my ablation"}
    inline = load_task_file(write_jsonl(tmp_path / "inline.jsonl",
                                        [ours(*PAIRS[0]), {"ground_truth": truth}]))
    assert inline.ground_truth("any-model") == inline.ground_truth("other")
    assert inline.truth.heads == ((0, 1), (1, 2)) and inline.truth.edges == (((0, 1), (1, 2)),)
    assert inline.truth.location.endswith("inline.jsonl:line 2")

    write_jsonl(tmp_path / "side.jsonl", [ours(*PAIRS[0])])
    (tmp_path / "side.truth.json").write_text(json.dumps(truth))
    side = load_task_file(tmp_path / "side.jsonl")
    assert side.truth.head_set() == inline.truth.head_set()
    side.truth.validate(2, 4)
    with pytest.raises(TaskFileError, match=r"side\.truth\.json: ground-truth head \(1,2\) does not exist"):
        side.truth.validate(1, 4)

    write_jsonl(tmp_path / "both.jsonl", [ours(*PAIRS[0]), {"ground_truth": truth}])
    (tmp_path / "both.truth.json").write_text(json.dumps(truth))
    with pytest.raises(TaskFileError, match="given twice"):
        load_task_file(tmp_path / "both.jsonl")
    assert load_task_file(write_jsonl(tmp_path / "none.jsonl", [ours(*PAIRS[0])])).ground_truth("m") is None


@pytest.mark.parametrize("records, fragment", [
    ([ours(*PAIRS[0]), '{"positive": "a", "negative": '], "line 2: malformed JSON"),
    ([{"positive": "a b", "answer": " b", "wrong_answers": [" a"]}], "line 1: missing field 'negative'"),
    ([{"clean": "a b", "corrupt": "a c"}], "missing field 'answer' or 'answers'"),
    ([{"positive": "a b", "negative": "a c", "answer": " b"}], "'wrong_answers' or 'negative_answer'"),
    ([{"positive": "a b", "negative": "a c", "answer": 3, "wrong_answers": [" a"]}], "must be a string"),
    (["[1, 2]"], "expected a JSON object"),
    ([ours(*PAIRS[0]), {"ground_truth": {"heads": [[0, "x"]]}}], "[layer, head]"),
    ([ours(*PAIRS[0]), {"ground_truth": {"heads": [[1, 0]], "edges": [[[1, 0], [0, 2]]]}}], "earlier layer"),
    ([ours(*PAIRS[0]), {"ground_truth": {"heads": []}}], "non-empty list"),
    ([{"ground_truth": {"heads": [[0, 0]]}}], "no prompt pair"),
    ([{"task": {"wrong": "median"}}, ours(*PAIRS[0])], "'wrong' must be one of"),
])
def test_bad_files_are_one_line_errors_with_the_line(tmp_path, records, fragment):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_a_file_with_no_usable_pair_is_an_error(tmp_path):
    task = load_task_file(write_jsonl(tmp_path / "u.jsonl", [ours("a b", "a b c", " b", " c")]))
    with pytest.raises(TaskFileError, match="no usable prompt pair out of 1 .*different lengths"):
        task.prompts(task.word_tokenizer(), 1, seed=0)


def test_get_task_resolves_paths_and_never_shadows_a_builtin(tmp_path):
    path = write_jsonl(tmp_path / "ioi.jsonl", [ours(*p) for p in PAIRS])
    task = get_task(str(path))
    assert task.name == "custom-ioi"
    (tmp_path / "x.json").write_text(json.dumps([ours(*p) for p in PAIRS]))
    assert get_task(str(tmp_path / "x.json")).name == "x"
    with pytest.raises(TaskFileError, match="does not exist"):
        get_task(str(tmp_path / "missing.jsonl"))


def test_the_example_file_is_current_and_reports_its_two_drops(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_custom_task", EXAMPLES / "make_custom_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path / "regenerated.jsonl")
    assert (tmp_path / "regenerated.jsonl").read_text() == (EXAMPLES / "custom_task.jsonl").read_text()
    task = load_task_file(EXAMPLES / "custom_task.jsonl")
    task.prompts(task.word_tokenizer(), 260, seed=0)
    assert task.n_usable == 300
    assert task.dropped == {"answer_not_one_token": 1, "different_lengths": 1}


def test_cli_reports_dropped_pairs_and_refuses_bad_files(tmp_path):
    path = write_jsonl(tmp_path / "cli.jsonl", [ours(*p) for p in PAIRS] * 4
                       + [ours(PAIRS[0][0], PAIRS[0][0] + " too", " Mary", " John")])
    result = runner.invoke(app, ["find", "--task", str(path), "--model", "random:attn-only-4l", "--json",
                                 "--n-train", "4", "--n-score", "8", "--steps", "20"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["task"] == "cli" and len(payload["heads"]) == 32
    assert payload["task_file"]["dropped"] == {"different_lengths": 1}
    assert payload["task_file"]["usable_pairs"] == 12

    bad = write_jsonl(tmp_path / "bad.jsonl", [ours(*PAIRS[0]), "{not json"])
    for args, fragment in [(["--task", str(bad), "--model", "random:attn-only-4l"], "line 2: malformed JSON"),
                           (["--task", str(path)], "needs --model"),
                           (["--task", str(path), "--model", "random:attn-only-4l"], "only 12 are usable")]:
        result = runner.invoke(app, ["find", *args])
        assert result.exit_code == 2, result.output
        assert fragment in result.output and "Traceback" not in result.output
