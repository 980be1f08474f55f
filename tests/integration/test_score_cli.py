"""task=score through the CLI: the issue's command gives SQuAD's and sacrebleu's figures, a generation run is
scored from its run directory (references joined from its own input), and bad rows are error rows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from clirun import omnirun, only_run_dir

ROWS: list[dict[str, Any]] = [
    {"id": "1", "output": "The Eiffel Tower", "reference": "Eiffel Tower", "category": "a"},
    {"id": "2", "output": "Paris, France.", "reference": ["paris", "Paris France"], "category": "b"},
    {"id": "3", "output": '{"a": 1}', "reference": '{"a": 1}', "category": "a"},
    {"id": "4", "reference": "no output here", "category": "b"},
    {"id": "5", "output": "the cat sat on the mat", "reference": "a dog sat on a mat", "category": "a"},
]


def write(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_issues_command_gives_squads_and_sacrebleus_figures(tmp_path: Path) -> None:
    import sacrebleu

    from omnirun.scoring.text import exact_match_score, f1_score

    rows = write(tmp_path / "rows.jsonl", ROWS)
    metrics_arg = "task.metrics=[exact_match,f1,bleu,json_valid]"
    code = omnirun(
        tmp_path / "o",
        "task=score",
        f"input.path={rows}",
        "task.reference_field=reference",
        metrics_arg,
        "task.normalize=squad",
        "task.group_by=[category]",
    )
    assert code == 0
    run = only_run_dir(tmp_path / "o")
    out = [json.loads(line) for line in (run / "outputs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["1", "2", "3", "4", "5"]
    assert out[3]["error"] and "output" in out[3]["error"] and "scores" not in out[3]
    metrics = json.loads((run / "metrics.json").read_text())
    scores = metrics["scores"]["scores"]
    good = [r for r in ROWS if "output" in r]
    refs = [[r["reference"]] if isinstance(r["reference"], str) else r["reference"] for r in good]
    em = [max(exact_match_score(str(r["output"]), ref) for ref in rs) for r, rs in zip(good, refs, strict=True)]
    f1 = [max(f1_score(str(r["output"]), ref) for ref in rs) for r, rs in zip(good, refs, strict=True)]
    assert scores["exact_match"]["mean"] == pytest.approx(sum(em) / len(em))
    assert scores["f1"]["mean"] == pytest.approx(sum(f1) / len(f1))
    width = max(len(rs) for rs in refs)
    streams = [[rs[i] if i < len(rs) else None for rs in refs] for i in range(width)]
    # sacrebleu takes None for a missing reference (a variable number per segment); its annotation says str
    expected = sacrebleu.corpus_bleu([str(r["output"]) for r in good], streams).score  # type: ignore[arg-type]
    assert scores["bleu"]["mean"] == pytest.approx(expected) and scores["bleu"]["n"] == 4
    assert scores["json_valid"]["mean"] == pytest.approx(0.25) and scores["json_valid"]["stderr"] is not None
    assert set(metrics["scores"]["by_group"]["category"]) == {"a", "b"}
    assert metrics["num_samples"] == 5 and metrics["num_errors"] == 1


def test_a_generation_run_is_scored_from_its_run_directory(tmp_path: Path, tiny_llama: Path) -> None:
    records = write(
        tmp_path / "in.jsonl",
        [{"id": "q1", "prompt": "Say hi", "reference": "hi"}, {"id": "q2", "prompt": "Say yo", "reference": "yo"}],
    )
    gen = omnirun(
        tmp_path / "gen",
        f"model.name={tiny_llama}",
        "task=batch",
        f"input.path={records}",
        "generation=greedy",
        "generation.max_new_tokens=3",
    )
    assert gen == 0
    run = only_run_dir(tmp_path / "gen")
    assert omnirun(tmp_path / "s", "task=score", f"input.path={run}", "task.metrics=[exact_match,contains]") == 0
    scored = only_run_dir(tmp_path / "s")
    out = [json.loads(line) for line in (scored / "outputs.jsonl").read_text().splitlines()]
    assert [r["references"] for r in out] == [["hi"], ["yo"]] and all(r["error"] is None for r in out)
    assert json.loads((scored / "metrics.json").read_text())["scores"]["scores"]["exact_match"]["n"] == 2


def test_score_options_are_checked_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = write(tmp_path / "rows.jsonl", ROWS)
    assert omnirun(tmp_path / "o", "task=score", f"input.path={rows}", "task.metrics=[exact_match,nope]") == 2
    assert "nope" in capsys.readouterr().err
    assert omnirun(tmp_path / "o", "task=score", f"input.path={rows}", "task.extract=no_group") == 2
    assert "task.extract" in capsys.readouterr().err
    assert omnirun(tmp_path / "o", "task=generate", "task.metrics=[f1]") == 2
    assert "task.metrics is an option of task=score" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("outputs.jsonl"))


def test_compare_gates_a_score_drop_beyond_noise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m omnirun.compare A B --max-score-drop X`: a paired bootstrap interval per score, exit 1 when a
    score fell by more than X beyond it; the same rows compare clean."""
    from omnirun.reporting.cli import compare_main

    refs = [{"id": str(i), "reference": f"answer {i}"} for i in range(60)]
    good = [{**r, "output": r["reference"]} for r in refs]
    worse = [{**r, "output": r["reference"] if i % 3 else "something else"} for i, r in enumerate(refs)]
    runs = []
    for name, rows in (("good", good), ("worse", worse)):
        assert omnirun(tmp_path / name, "task=score", f"input.path={write(tmp_path / f'{name}.jsonl', rows)}") == 0
        runs.append(only_run_dir(tmp_path / name))
    capsys.readouterr()
    assert compare_main([str(runs[0]), str(runs[0]), "--max-score-drop", "0.05"]) == 0
    assert compare_main([str(runs[0]), str(runs[1]), "--max-score-drop", "0.05"]) == 1
    table = capsys.readouterr().out
    assert "| exact_match | 1 | 0.6667 | -0.3333 |" in table and "| yes |" in table
    assert compare_main([str(runs[0]), str(runs[1]), "--max-score-drop", "0.9"]) == 0


def test_a_generation_run_scores_its_rows_as_it_writes_them(tmp_path: Path, tiny_llama: Path) -> None:
    """`task.score` on a generation run: the record's other fields travel into its row (`fields`), each row gets
    `scores`, metrics.json the same summary a later task=score over the run directory gives, and a sweep's
    summary a column per score."""
    prompts = [f"Tell me about item {i}" for i in range(6)]
    first = write(tmp_path / "first.jsonl", [{"id": str(i), "prompt": p} for i, p in enumerate(prompts)])
    greedy = [f"model.name={tiny_llama}", "task=batch", "generation=greedy", "generation.max_new_tokens=4"]
    assert omnirun(tmp_path / "first", *greedy, f"input.path={first}") == 0
    answers = [json.loads(line)["output"] for line in (only_run_dir(tmp_path / "first") / "outputs.jsonl").open()]
    # half the references are what greedy decoding answers, half are not: exact_match is 0.5 exactly
    records = [
        {"id": str(i), "prompt": p, "reference": answers[i] if i % 2 else "no such answer", "topic": f"t{i % 3}"}
        for i, p in enumerate(prompts)
    ]
    scored_in = write(tmp_path / "in.jsonl", records)
    args = [*greedy, f"input.path={scored_in}", "task.score=[exact_match,f1]", "task.group_by=[topic]"]
    assert omnirun(tmp_path / "gen", *args) == 0
    run = only_run_dir(tmp_path / "gen")
    out = [json.loads(line) for line in (run / "outputs.jsonl").read_text().splitlines()]
    assert [r["fields"] for r in out] == [{"reference": r["reference"], "topic": r["topic"]} for r in records]
    assert [r["scores"]["exact_match"] for r in out] == [float(i % 2) for i in range(6)]
    live = json.loads((run / "metrics.json").read_text())["scores"]
    assert live["scores"]["exact_match"]["mean"] == 0.5 and live["scores"]["exact_match"]["n"] == 6
    assert set(live["by_group"]["topic"]) == {"t0", "t1", "t2"}
    later = "task.metrics=[exact_match,f1]", "task.group_by=[topic]"
    assert omnirun(tmp_path / "later", "task=score", f"input.path={run}", *later) == 0
    again = json.loads((only_run_dir(tmp_path / "later") / "metrics.json").read_text())["scores"]
    assert again["scores"] == live["scores"] and again["by_group"] == live["by_group"]

    assert omnirun(tmp_path / "sweep", "-m", *args, "generation.max_new_tokens=4,1") == 0
    (sweep,) = list((tmp_path / "sweep" / "sweeps").iterdir())
    summary = (sweep / "summary.md").read_text()
    assert "score_exact_match" in summary.splitlines()[0] and "score_f1_stderr" in summary.splitlines()[0]
    import csv

    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["score_exact_match"]) == 0.5


def test_a_judge_model_scores_and_its_judgments_are_cached(tmp_path: Path, tiny_llama: Path) -> None:
    """`task.metrics=[judge]` on a tiny model (its answer held to `Score: <digit>` by a response_format, so the
    pattern always finds one): every row judged; a rescore hits the cache for every row and loads no model."""
    from omnirun.scoring import judge

    rows = write(tmp_path / "rows.jsonl", [r for r in ROWS if "output" in r])
    cache = tmp_path / "judge.sqlite"
    args = [
        "task=score",
        f"input.path={rows}",
        "task.metrics=[judge,exact_match]",
        f"task.judge.model={tiny_llama}",
        "task.judge.response_format={type: regex, pattern: 'Score: [0-9]'}",
        f"task.judge.cache={cache}",
        "task.judge.max_new_tokens=8",
    ]
    made: list[judge.Judge] = []
    original = judge.Judge.__init__

    def spy(self: judge.Judge, options: Any) -> None:
        original(self, options)
        made.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(judge.Judge, "__init__", spy)
        assert omnirun(tmp_path / "first", *args) == 0
        assert omnirun(tmp_path / "again", *args) == 0
    first, again = (json.loads((only_run_dir(tmp_path / d) / "metrics.json").read_text()) for d in ("first", "again"))
    assert first["scores"]["scores"]["judge"]["n"] == 4 and 0 <= first["scores"]["scores"]["judge"]["mean"] <= 9
    assert again["scores"] == first["scores"]
    assert [j.generated for j in made] == [4, 0] and made[1].engine is None  # all cache hits: no model loaded
    out = [json.loads(line) for line in (only_run_dir(tmp_path / "first") / "outputs.jsonl").read_text().splitlines()]
    assert all(isinstance(r["scores"]["judge"], float) for r in out)


def test_judge_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = write(tmp_path / "rows.jsonl", ROWS)
    assert omnirun(tmp_path / "o", "task=score", f"input.path={rows}", "task.metrics=[judge]") == 2
    assert "task.judge.model" in capsys.readouterr().err
    bad = ["task.metrics=[judge]", "task.judge.model=x", "task.judge.pattern=no_group"]
    assert omnirun(tmp_path / "o", "task=score", f"input.path={rows}", *bad) == 2
    assert "task.judge.pattern" in capsys.readouterr().err
    assert omnirun(tmp_path / "o", "task=generate", "task.score=[judge]") == 2
    assert "task=score" in capsys.readouterr().err
