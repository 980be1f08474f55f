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
