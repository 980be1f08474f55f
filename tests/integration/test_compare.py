"""python -m omnirun.compare on output runs (record by record) and sweeps (job by job), and overrides as typed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from omnirun import compare, report
from omnirun.reporting.outputs import tokens

from clirun import omnirun, only_run_dir, only_sweep_dir

GREEDY = ["generation=greedy", "generation.max_new_tokens=8"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = ["the quick brown fox", "what is the capital of france", "hello world", "Über den Wolken"]
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": p}) + "\n" for i, p in enumerate(rows)))
    return path


@pytest.fixture(scope="module")
def output_runs(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, prompts: Path) -> dict[str, Path]:
    """Two greedy runs of the same input, one with shorter outputs, one sampled."""
    root = tmp_path_factory.mktemp("outputs")
    args = [f"model.name={tiny_llama}", f"input.path={prompts}"]
    runs = {
        "greedy": [*GREEDY],
        "again": [*GREEDY],
        "shorter": ["generation=greedy", "generation.max_new_tokens=3"],
        "sampled": ["generation.do_sample=true", "generation.temperature=1.5", "generation.max_new_tokens=8"],
    }
    for name, extra in runs.items():
        assert omnirun(root / name, *args, *extra) == 0
    return {name: only_run_dir(root / name) for name in runs}


def test_greedy_twice_is_all_exact_and_passes_min_exact(
    output_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp.json"
    args = [str(output_runs["greedy"]), str(output_runs["again"]), "--min-exact", "1.0", "--json", str(out)]
    assert compare.main(args) == 0
    text = capsys.readouterr().out
    assert "| run | 4 | 4 | 100.0% | 100.0% | 100.0% | 0 / 0 / 0 | 0 / 0 |" in text
    assert "verdict: 4 of 4 output(s) identical (100.0%); --min-exact 1 met" in text
    assert "Tokens: word tokens" in text  # the definition goes with the numbers
    result = json.loads(out.read_text())
    (outputs,) = result["outputs"]
    assert (outputs["compared"], outputs["exact_rate"], outputs["agreement"]) == (4, 1.0, 1.0)
    assert {r["id"] for r in outputs["records"]} == {"r0", "r1", "r2", "r3"}
    assert all(r["first_difference"] is None for r in outputs["records"])
    assert result["failed"] is False and "agreement" in result["definitions"]["outputs"]
    assert {m["metric"] for m in result["metrics"]} >= {"output_tokens_per_s", "e2e_ms_p50"}


def test_the_entry_modules_run_as_commands(output_runs: dict[str, Path], tmp_path: Path) -> None:
    a, b = str(output_runs["greedy"]), str(output_runs["shorter"])
    for argv, code in (
        (["omnirun.compare", a, a, "--min-exact", "1"], 0),
        (["omnirun.compare", a, b, "--min-exact", "1"], 1),
        (["omnirun.report", a, b, "--out", str(tmp_path), "--no-plots"], 0),
    ):
        done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
        assert done.returncode == code, done.stderr[-2000:]
    assert "## Outputs" in (tmp_path / "compare.md").read_text()


def test_shorter_outputs_part_where_the_shorter_one_ends(
    output_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare.main([str(output_runs["greedy"]), str(output_runs["shorter"]), "--min-exact", "1.0"]) == 1
    assert "EXACT MATCH BELOW --min-exact 1" in capsys.readouterr().out
    (outputs,) = compare.compare(output_runs["greedy"], output_runs["shorter"]).outputs
    assert outputs.exact_rate is not None and outputs.exact_rate < 1
    rows = {r.id: r for r in report.read_run(output_runs["shorter"]).rows()}
    for r in outputs.records:
        if not r.exact:  # greedy: the 3-token output is where the 8-token one starts (its last word may be cut)
            shorter = len(tokens(rows[r.id].output or ""))
            assert r.prefix < 1 and r.first_difference is not None and shorter - 1 <= r.first_difference <= shorter
    assert compare.main([str(output_runs["greedy"]), str(output_runs["shorter"])]) == 0  # no minimum: informative


def test_sampled_outputs_agree_less_and_the_worst_records_are_shown(
    output_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare.main([str(output_runs["greedy"]), str(output_runs["sampled"]), "--min-exact", "0.5"]) == 1
    text = capsys.readouterr().out
    assert "Records that differ most" in text and "| first difference (token) |" in text
    (outputs,) = compare.compare(output_runs["greedy"], output_runs["sampled"]).outputs
    assert outputs.agreement is not None and outputs.agreement < 1
    worst = outputs.worst(2)
    assert len(worst) == 2 and worst[0].agreement <= worst[1].agreement


def test_errors_and_unmatched_ids_are_counted_apart(output_runs: dict[str, Path], tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(output_runs["greedy"], edited)
    rows = [json.loads(line) for line in (edited / "outputs.jsonl").read_text().splitlines()]
    rows[0].update(output=None, error="RecordError: too long")  # r0 fails in the candidate
    rows[1]["id"] = "new"  # r1 is missing, `new` appears
    (edited / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (outputs,) = compare.compare(output_runs["greedy"], edited).outputs
    assert (outputs.errors_candidate, outputs.errors_baseline, outputs.errors_both) == (["r0"], [], [])
    assert (outputs.only_baseline, outputs.only_candidate) == (["r1"], ["new"])
    assert len(outputs.records) == 2 and outputs.exact_rate == 1.0  # the rates are over the rest


def test_sweeps_are_compared_job_by_job_matched_by_what_they_swept(
    tmp_path: Path, tiny_llama: Path, prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [f"model.name={tiny_llama}", f"input.path={prompts}", "generation=greedy"]
    assert omnirun(tmp_path / "a", "-m", *args, "generation.max_new_tokens=2,4") == 0
    assert omnirun(tmp_path / "b", "-m", *args, "seed=7", "generation.max_new_tokens=4,2") == 0  # order differs
    a, b = only_sweep_dir(tmp_path / "a"), only_sweep_dir(tmp_path / "b")
    result = compare.compare(a, b)
    assert result.matching.keys == ["generation.max_new_tokens"]  # seed=7 is the change, not a key
    by_job = {o.job: o for o in result.outputs}
    assert set(by_job) == {"generation.max_new_tokens=2", "generation.max_new_tokens=4"}
    assert all(o.exact_rate == 1.0 for o in by_job.values())  # greedy: the seed changes nothing
    assert compare.main([str(a), str(b), "--min-exact", "1"]) == 0
    assert "matched by: `generation.max_new_tokens`; 2 configuration(s) on both sides" in capsys.readouterr().out
    shutil.rmtree(b / "1")  # the candidate lost a job: reported, the rest still compared
    result = compare.compare(a, b)
    assert [p.label for p in result.matching.one_sided] == ["generation.max_new_tokens=2"]
    assert [o.job for o in result.outputs] == ["generation.max_new_tokens=4"]
    comparison = report.compare_runs(a, b, tmp_path / "report", plots=False)  # the report uses the same tool
    assert "## Outputs" in comparison.markdown and "| generation.max_new_tokens=4 | 4 | 4 | 100.0% |" in (
        comparison.markdown
    )


def test_non_ascii_overrides_read_as_typed_in_the_report_and_the_sweep_summary(
    tmp_path: Path, tiny_llama: Path
) -> None:
    args = [f"model.name={tiny_llama}", "generation.max_new_tokens=2", 'input.prompt="Über","Ärger x"']
    assert omnirun(tmp_path, "-m", *args) == 0
    sweep = only_sweep_dir(tmp_path)
    summary = (sweep / "summary.md").read_text(encoding="utf-8")
    assert "Über" in summary and "Ärger x" in summary
    assert "\\u00dc" not in summary and '\\"' not in summary
    result = report.build_report(sweep, tmp_path / "r", plots=False)
    assert list(result.runs["input.prompt"]) == ["Über", "Ärger x"]
    assert "`input.prompt` = Über, Ärger x." in result.markdown
    assert "input.prompt=Über" in result.runs["overrides"][0]
    assert "\\u00dc" not in (tmp_path / "r" / "report.csv").read_text(encoding="utf-8")
