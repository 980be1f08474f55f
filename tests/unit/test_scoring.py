"""task=score's library: every metric against its reference implementation (SQuAD v1.1's script, sacrebleu,
rouge-score, jsonschema), the seeded bootstrap, the sources (run directory, OpenAI batch output + input, a
JSONL with broken rows) and the paired comparison."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from omnirun.errors import ConfigError, InputError
from omnirun.results import formats
from omnirun.scoring import ScoredRow, ScoreOptions, SourceRow, compare_scores, open_source, score_rows
from omnirun.scoring.bootstrap import bootstrap_stderr, paired_bootstrap
from omnirun.scoring.metrics import detach_absl_stream
from omnirun.scoring.text import Normalize, f1_score, first_number, normalize_answer

detach_absl_stream()  # rouge_score imported absl above: keep it from closing the test's captured stderr


# ------------------------------------------------------- SQuAD v1.1's evaluate-v1.1.py, as published
def squad_normalize_answer(s: str) -> str:
    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text: str) -> str:
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def squad_f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = squad_normalize_answer(prediction).split()
    ground_truth_tokens = squad_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def squad_exact_match_score(prediction: str, ground_truth: str) -> bool:
    return squad_normalize_answer(prediction) == squad_normalize_answer(ground_truth)


def squad_metric_max_over_ground_truths(metric_fn: Any, prediction: str, ground_truths: list[str]) -> Any:
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def squad_evaluate(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    em = sum(
        squad_metric_max_over_ground_truths(squad_exact_match_score, p, a)
        for p, a in zip(predictions, answers, strict=True)
    )
    f1 = sum(
        squad_metric_max_over_ground_truths(squad_f1_score, p, a) for p, a in zip(predictions, answers, strict=True)
    )
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}


TRICKY = ["The Cat", "  an  apple, the end!  ", "théâtre — Ünïcode “quotes”", "", "...", "a", "The the THE"]
TRICKY += ["anthem another theory", "x-ray's 3.5%", "Ａｌｐｈａ\tbeta\ngamma"]

ROWS: list[dict[str, Any]] = [
    {"id": "q1", "output": "The Eiffel Tower", "reference": ["Eiffel Tower", "the eiffel tower in Paris"]},
    {"id": "q2", "output": "in 1889, I think", "reference": "1889"},
    {"id": "q3", "output": "Paris, France.", "reference": ["Paris"]},
    {"id": "q4", "output": '{"answer": 42}', "reference": "42"},
    {"id": "q5", "output": "a cat sat on the mat", "reference": ["the cat sat on the mat", "a cat is on a mat"]},
    {"id": "q6", "output": "", "reference": "nothing"},
]


def source_rows(rows: list[dict[str, Any]]) -> list[SourceRow]:
    return [SourceRow(str(r.get("id", i)), dict(r), line=i + 1) for i, r in enumerate(rows)]


def refs_and_streams(rows: list[dict[str, Any]]) -> tuple[list[list[str]], list[list[str | None]]]:
    """Each row's references, and sacrebleu's reference streams (None where a row has fewer references)."""
    refs = [r["reference"] if isinstance(r["reference"], list) else [r["reference"]] for r in rows]
    return refs, [[rs[k] if k < len(rs) else None for rs in refs] for k in range(max(map(len, refs)))]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("text", TRICKY)
def test_normalizer_is_squads(text: str) -> None:
    assert normalize_answer(text) == squad_normalize_answer(text)


@pytest.mark.parametrize("pred", TRICKY)
@pytest.mark.parametrize("ref", TRICKY[:5])
def test_f1_and_exact_match_are_squads(pred: str, ref: str) -> None:
    assert f1_score(pred, ref) == pytest.approx(squad_f1_score(pred, ref))
    scored, _ = score_rows(source_rows([{"output": pred, "reference": ref}]), squad_options(["exact_match", "f1"]))
    assert scored[0].scores == {
        "exact_match": float(squad_exact_match_score(pred, ref)),
        "f1": pytest.approx(f1_score(pred, ref)),
    }


def squad_options(metrics: list[str], **kw: Any) -> ScoreOptions:
    return ScoreOptions(metrics=metrics, normalize="squad", **kw)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_normalizer_and_f1_invariants(text: str, other: str) -> None:
    assert f1_score(text, other) == pytest.approx(f1_score(other, text))
    assert 0.0 <= f1_score(text, other) <= 1.0 and f1_score(text, other, Normalize.none) <= 1.0
    norm = normalize_answer(text)
    assert normalize_answer(norm) == norm  # idempotent
    assert norm == norm.strip() and "  " not in norm
    assert f1_score(text, text) == f1_score(text, norm) == (1.0 if norm else 0.0)  # SQuAD: no common token, 0


def test_done_when_figures_match_squad_and_sacrebleu(tmp_path: Path) -> None:
    """The issue's acceptance: exact_match, f1, bleu and json_valid with task.normalize=squad."""
    source = open_source(write_jsonl(tmp_path / "rows.jsonl", ROWS))
    options = squad_options(["exact_match", "f1", "bleu", "json_valid"])
    scored, summary = score_rows(source.rows(), options)
    assert [r.id for r in scored] == [r["id"] for r in ROWS] and summary.errors == 0
    refs, streams = refs_and_streams(ROWS)
    squad = squad_evaluate([r["output"] for r in ROWS], refs)
    assert 100 * (summary.scores["exact_match"].mean or 0) == pytest.approx(squad["exact_match"])
    assert 100 * (summary.scores["f1"].mean or 0) == pytest.approx(squad["f1"])
    bleu = sacrebleu.corpus_bleu([r["output"] for r in ROWS], streams)  # type: ignore[arg-type]
    assert summary.scores["bleu"].mean == pytest.approx(bleu.score)
    assert summary.scores["bleu"].aggregate == "corpus" and summary.scores["f1"].aggregate == "mean"
    for row, raw, rs in zip(scored, ROWS, refs, strict=True):
        assert row.scores["bleu"] == pytest.approx(sacrebleu.sentence_bleu(raw["output"], rs).score)
    assert summary.scores["json_valid"].mean == pytest.approx(1 / 6)
    assert all(summary.scores[m].n == 6 and summary.scores[m].stderr is not None for m in options.metrics)


def test_chrf_and_rouge_l_match_their_libraries() -> None:
    rows = [r for r in ROWS if r["output"]]
    (refs, streams), outputs = refs_and_streams(rows), [r["output"] for r in rows]
    scored, summary = score_rows(source_rows(rows), ScoreOptions(metrics=["chrf", "rouge_l"]))
    chrf = sacrebleu.corpus_chrf(outputs, streams)  # type: ignore[arg-type]
    assert summary.scores["chrf"].mean == pytest.approx(chrf.score)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = [
        max(scorer.score(ref, out)["rougeL"].fmeasure for ref in rs) for out, rs in zip(outputs, refs, strict=True)
    ]
    assert [r.scores["rouge_l"] for r in scored] == pytest.approx(expected)
    assert summary.scores["rouge_l"].mean == pytest.approx(float(np.mean(expected)))


def test_contains_regex_json_and_numeric() -> None:
    rows = [
        {"id": 1, "output": "The answer is $1,234.50 today", "reference": "1234.5"},
        {"id": 2, "output": "about -3 degrees", "reference": ["+3", "-3"]},
        {"id": 3, "output": "no digits", "reference": 7},
        {"id": 4, "output": '{"name": "x", "age": 3}', "reference": "1e3"},
        {"id": 5, "output": "NaN", "reference": "1000.2"},
    ]
    schema = {"type": "object", "required": ["name"], "properties": {"age": {"type": "integer"}}}
    metrics = ["contains", "regex_match", "json_valid", "json_schema", "numeric"]
    options = ScoreOptions(metrics=metrics, pattern=r"\d", schema=schema, tolerance=0.5)
    scored, _ = score_rows(source_rows(rows), options)
    table = {r.id: r.scores for r in scored}
    assert [table[k]["numeric"] for k in "12345"] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert [table[k]["regex_match"] for k in "12345"] == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert [table[k]["json_valid"] for k in "12345"] == [0.0, 0.0, 0.0, 1.0, 0.0]  # NaN is not strict JSON
    assert [table[k]["json_schema"] for k in "12345"] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert [table[k]["contains"] for k in "12345"] == [0.0, 1.0, 0.0, 0.0, 0.0]
    numbers = [first_number(t) for t in ("-1,234,567.5e1 and 2", "x .5", "none")]
    assert numbers == [-12345675.0, 0.5, None]


def test_extract_scores_the_first_group_of_outputs_and_references() -> None:
    rows = [
        {"id": "a", "output": "so 4 + 4 = 8\n#### 8", "reference": "Natalia sold 4 and 4 #### 8"},
        {"id": "b", "output": "I think 7", "reference": "7"},
    ]
    options = ScoreOptions(metrics=["exact_match", "numeric"], extract=r"####\s*(\S+)")
    scored, summary = score_rows(source_rows(rows), options)
    assert scored[0].extracted == "8" and scored[0].scores == {"exact_match": 1.0, "numeric": 1.0}
    assert scored[1].extracted is None and scored[1].scores == {"exact_match": 0.0, "numeric": 0.0}
    assert summary.scores["exact_match"].mean == 0.5
    # a reference with no number cannot be scored by numeric: an error row
    scored, summary = score_rows(
        source_rows([{"output": "3", "reference": "three"}]), ScoreOptions(metrics=["numeric"])
    )
    assert scored[0].scores == {} and "has no number" in (scored[0].error or "")
    assert summary.errors == 1 and summary.scores["numeric"].n == 0 and summary.scores["numeric"].mean is None


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (ScoreOptions(metrics=["blue"]), ["task.metrics", "'blue'", "exact_match, f1"]),
        (ScoreOptions(metrics=[]), ["task.metrics", "non-empty"]),
        (ScoreOptions(metrics=["f1", "f1"]), ["twice"]),
        (ScoreOptions(extract=r"#### \d+"), ["task.extract", "capture group", "parentheses"]),
        (ScoreOptions(extract="(unclosed"), ["task.extract", "not a valid regex"]),
        (ScoreOptions(normalize="lower"), ["task.normalize", "none | squad", "'lower'"]),
        (ScoreOptions(metrics=["regex_match"]), ["task.pattern", "regex_match"]),
        (ScoreOptions(metrics=["json_schema"]), ["task.schema", "json_schema"]),
        (ScoreOptions(metrics=["json_schema"], schema={"type": 3}), ["task.schema", "not a valid JSON Schema"]),
        (ScoreOptions(tolerance=-1), ["task.tolerance", ">= 0"]),
        (ScoreOptions(group_by=["a", "a"]), ["task.group_by", "distinct"]),
        (ScoreOptions(bootstrap_iters=-5), ["task.bootstrap_iters"]),
    ],
)
def test_options_are_checked_up_front(options: ScoreOptions, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        options.validate()
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sacrebleu" else real(name, *a))
    with pytest.raises(ConfigError, match=r"metric 'bleu' needs the 'sacrebleu' package.*omnirun\[score\]"):
        ScoreOptions(metrics=["f1", "bleu"]).validate()
    ScoreOptions(metrics=["f1", "json_valid"]).validate()  # no library needed


def test_bootstrap_is_reproducible_and_close_to_the_analytic_stderr() -> None:
    rng = np.random.default_rng(1)
    values = (rng.random(4000) < 0.3).astype(float)
    first = bootstrap_stderr(values, iters=1000, seed=7)
    assert first == bootstrap_stderr(values, iters=1000, seed=7)
    assert first != bootstrap_stderr(values, iters=1000, seed=8)
    p = values.mean()
    assert first == pytest.approx(math.sqrt(p * (1 - p) / len(values)), rel=0.1)
    assert bootstrap_stderr([1.0]) is None and bootstrap_stderr([]) is None
    # the summary's stderr follows task.seed and task.bootstrap_iters
    rows = source_rows([{"output": "a" if i % 3 else "b", "reference": "a"} for i in range(50)])
    one = score_rows(rows, ScoreOptions(metrics=["exact_match"], seed=3))[1].scores["exact_match"]
    two = score_rows(rows, ScoreOptions(metrics=["exact_match"], seed=3))[1].scores["exact_match"]
    other = score_rows(rows, ScoreOptions(metrics=["exact_match"], seed=4))[1].scores["exact_match"]
    none = score_rows(rows, ScoreOptions(metrics=["exact_match"], bootstrap_iters=0))[1].scores["exact_match"]
    assert one == two and one.stderr != other.stderr and none.stderr is None and one.mean == pytest.approx(33 / 50)


def test_paired_bootstrap_of_identical_and_worse_runs() -> None:
    a = np.array([1.0, 0.0, 1.0, 1.0] * 50)
    same = paired_bootstrap(a, a, seed=0)
    assert (same.diff, same.low, same.high, same.n) == (0.0, 0.0, 0.0, 200)
    b = a.copy()
    b[:100] = 0.0  # B loses 75 correct answers out of 150
    worse = paired_bootstrap(a, b, seed=0)
    assert worse.diff == pytest.approx(-75 / 200) and worse.low <= worse.diff <= worse.high < 0


def test_a_run_directory_takes_references_from_its_input_file(tmp_path: Path) -> None:
    inputs = [
        {"qid": "a", "prompt": "Capital of France?", "reference": "Paris", "topic": "geo"},
        {"qid": "b", "prompt": "2+2?", "reference": ["4", "four"], "topic": "math"},
        "",
        {"prompt": "3+3?", "reference": "6", "topic": "math"},  # no id: its line number, as omnirun numbers it
        {"qid": "c", "prompt": "Who?", "topic": "geo"},
    ]
    outputs = [
        {"id": i, "prompt": "?", "output": o, "error": None}
        for i, o in zip("ab4c", ["Paris.", "Four", "7", "me"], strict=True)
    ]
    outputs.append({"id": "d", "prompt": "x", "output": None, "error": "line 6: 'prompt' is empty"})
    run = tmp_path / "outputs" / "batch" / "model" / "2025-01-01_00-00-00"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"input:\n  path: {write_jsonl(tmp_path / 'questions.jsonl', inputs)}\n  id_field: qid\n"
    )
    write_jsonl(run / "outputs.jsonl", outputs)
    for path in (run, run / "outputs.jsonl"):
        source = open_source(path)
        assert source.kind == "run_dir" and source.references == tmp_path / "questions.jsonl"
        options = ScoreOptions(metrics=["exact_match"], normalize="squad", group_by=["topic"])
        scored, summary = score_rows(source.rows(keep=["reference", "topic"]), options)
        assert [r.id for r in scored] == ["a", "b", "4", "c", "d"]
        assert [r.scores.get("exact_match") for r in scored] == [1.0, 1.0, 0.0, None, None]
        assert "reference field 'reference' is missing" in (scored[3].error or "")
        assert "the run could not answer" in (scored[4].error or "")
        assert (summary.rows, summary.errors, summary.scores["exact_match"].n) == (5, 2, 3)
        geo, math_ = summary.by_group["topic"]["geo"], summary.by_group["topic"]["math"]
        assert (geo["exact_match"].mean, geo["exact_match"].n) == (1.0, 1)
        assert (math_["exact_match"].mean, math_["exact_match"].n) == (0.5, 2)
        assert summary.by_group["topic"]["<missing>"]["exact_match"].n == 0  # the failed record
        json.dumps(summary.to_json())


def test_an_openai_batch_output_joins_its_input_by_custom_id(tmp_path: Path) -> None:
    requests = [
        {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "reference": "blue",
         "body": {"model": "m", "messages": [{"role": "user", "content": "Sky colour?"}]}},
        {"custom_id": "r2", "method": "POST", "url": "/v1/completions",
         "body": {"model": "m", "prompt": "1+1=", "metadata": {"reference": "2"}}},
        {"custom_id": "r3", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "x"}},
    ]  # fmt: skip
    rows: list[dict[str, Any]] = [
        {"id": "r1", "messages": [{"role": "user", "content": "Sky colour?"}], "output": "Blue!",
         "input_tokens": 3, "output_tokens": 2, "finish_reason": "stop"},
        {"id": "r2", "prompt": "1+1=", "output": "2", "input_tokens": 3, "output_tokens": 1, "finish_reason": "stop"},
        {"id": "r3", "error": "line 3: something broke"},
    ]  # fmt: skip
    lines = [formats.to_openai_response(r, "m", 0) for r in rows]
    out = write_jsonl(tmp_path / "batch_output.jsonl", lines)
    source = open_source(out, references=write_jsonl(tmp_path / "batch_input.jsonl", requests))
    assert source.kind == "openai_batch"
    scored, summary = score_rows(source.rows(keep=["reference"]), squad_options(["exact_match"]))
    assert [(r.id, r.output, r.references, r.scores) for r in scored[:2]] == [
        ("r1", "Blue!", ["blue"], {"exact_match": 1.0}),
        ("r2", "2", ["2"], {"exact_match": 1.0}),
    ]
    assert scored[2].error == "the batch request failed (status 400): line 3: something broke" and summary.errors == 1
    # without its input file, the references are missing: error rows that say how to join them
    alone, _ = score_rows(open_source(out).rows(keep=["reference"]), squad_options(["exact_match"]))
    assert all(r.error and "task.references" in r.error for r in alone[:2])


def test_a_jsonl_with_missing_fields_gives_error_rows(tmp_path: Path) -> None:
    lines = [
        {"id": "ok", "answer": "yes", "gold": "yes"},
        {"id": "no-output", "gold": "yes"},
        {"id": "number-output", "answer": 3, "gold": "3"},
        {"id": "no-reference", "answer": "yes"},
        {"id": "empty-list", "answer": "yes", "gold": []},
        {"id": "dict-reference", "answer": "yes", "gold": {"a": 1}},
        "not json",
        "[1, 2]",
        {"answer": "{}", "gold": "x"},
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", lines)
    options = ScoreOptions(metrics=["exact_match", "json_valid"], output_field="answer", reference_field="gold")
    scored, summary = score_rows(open_source(path).rows(), options)
    errors = {r.id: r.error for r in scored}
    assert list(errors) == [
        "ok",
        "no-output",
        "number-output",
        "no-reference",
        "empty-list",
        "dict-reference",
        "7",
        "8",
        "9",
    ]
    assert errors["ok"] is None and errors["9"] is None
    assert errors["no-output"] == "output field 'answer' must be a string; it is missing (task.output_field)"
    assert errors["number-output"] == "output field 'answer' must be a string; got int (task.output_field)"
    assert "reference field 'gold' is missing" in (errors["no-reference"] or "")
    assert "'gold' is an empty list" in (errors["empty-list"] or "")
    assert "must be a string, a number or a list of them, got dict" in (errors["dict-reference"] or "")
    assert (errors["7"] or "").startswith("line 7: not valid JSON")
    assert errors["8"] == "line 8: expected a JSON object, got list"
    assert (summary.rows, summary.errors, summary.scores["json_valid"].n) == (9, 7, 2)
    # a metric that needs no reference scores rows without one
    _, alone = score_rows(open_source(path).rows(), ScoreOptions(metrics=["json_valid"], output_field="answer"))
    assert alone.scores["json_valid"].n == 5
    # what cannot be read at all stops at once
    with pytest.raises(InputError, match="no such file"):
        open_source(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="is empty"):
        open_source(write_jsonl(tmp_path / "blank.jsonl", ["", "  "]))
    with pytest.raises(InputError, match="folder without outputs.jsonl"):
        open_source(tmp_path)


def test_compare_runs_with_a_drop_beyond_noise(tmp_path: Path) -> None:
    refs = [f"the answer number {i} is here" for i in range(120)]
    a_rows = [{"id": i, "output": r, "reference": r} for i, r in enumerate(refs)]
    b_rows = [
        {"id": i, "output": r if i % 3 else "something else entirely", "reference": r} for i, r in enumerate(refs)
    ]
    options = ScoreOptions(metrics=["exact_match", "bleu"])
    a, _ = score_rows(source_rows(a_rows), options)
    b, summary_b = score_rows(source_rows(b_rows), options)
    a = [ScoredRow.from_json(json.loads(json.dumps(r.to_json()))) for r in a]  # as read back from outputs.jsonl
    result = compare_scores(a, b, max_drop=0.1)
    diffs = {d.metric: d for d in result.diffs}
    em = diffs["exact_match"]
    assert (em.interval.a, em.interval.b, em.interval.n) == (1.0, pytest.approx(80 / 120), 120)
    assert em.dropped and em.interval.high < -0.1 and result.failed
    bleu = diffs["bleu"]
    assert bleu.interval.a == pytest.approx(100.0) and bleu.interval.b == pytest.approx(summary_b.scores["bleu"].mean)
    assert compare_scores(a, a, max_drop=0.0).failed is False
    assert bleu.dropped and bleu.allowed == pytest.approx(10.0)  # 0.1 of bleu's 0-100 scale
    lenient = compare_scores(a, b, max_drop=0.5)
    assert not lenient.failed and json.dumps(lenient.to_json())
    own_units = {d.metric: d for d in compare_scores(a, b, max_drop={"bleu": 50.0}).diffs}
    assert not own_units["bleu"].dropped and own_units["exact_match"].allowed is None


def test_compare_pairs_rows_by_id_and_skips_error_rows() -> None:
    a = [ScoredRow("1", scores={"f1": 1.0}), ScoredRow("2", scores={"f1": 0.0}), ScoredRow("3", error="x")]
    b = [ScoredRow("2", scores={"f1": 0.5}), ScoredRow("1", scores={"f1": 1.0}), ScoredRow("4", scores={"f1": 1.0})]
    result = compare_scores(a, b)
    (diff,) = result.diffs
    assert (diff.interval.n, diff.interval.diff, result.only_a, result.only_b) == (2, 0.25, 0, 1)
    with pytest.raises(InputError, match="twice"):
        compare_scores(a + a, b)
