"""omnirun.report on real sweeps of the tiny Llama: the runs table, report.md/.csv, plots, failures, comparisons."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from omnirun import compare, report

from clirun import omnirun, only_sweep_dir
from samples import assert_png

BENCH = ["task=benchmark", "benchmark.min_iterations=2", "benchmark.min_duration_s=0", "benchmark.warmup_runs=0"]


METRIC_COLUMNS = {"output_tokens_per_s", "ttft_ms_p50", "tpot_ms_p50", "e2e_ms_p50", "max_rss_mb", "load_model_s"}


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = ["the quick brown fox", "what is the capital of france", "hello world"]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows))
    return path


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def gen_sweep(runs_root: Path, tiny_llama: Path, prompts: Path) -> Path:
    """A 2x2 sweep: temperature x batch size."""
    args = [f"model.name={tiny_llama}", f"input.path={prompts}", "generation.max_new_tokens=3"]
    assert omnirun(runs_root / "gen", "-m", *args, "generation.temperature=0.2,0.7", "task.batch_size=1,2") == 0
    return only_sweep_dir(runs_root / "gen")


@pytest.fixture(scope="module")
def bench_sweep(runs_root: Path, tiny_llama: Path) -> Path:
    args = [f"model.name={tiny_llama}", *BENCH, "benchmark.new_tokens=3", "benchmark.prompt_tokens=8"]
    assert omnirun(runs_root / "bench", "-m", *args, "benchmark.batch_size=1,2") == 0
    return only_sweep_dir(runs_root / "bench")


@pytest.fixture(scope="module")
def failing_sweep(runs_root: Path, tiny_llama: Path, prompts: Path) -> Path:
    """Jobs 2 and 3 fail before writing their run files (their input file is missing)."""
    missing = prompts.parent / "missing.jsonl"
    args = [f"model.name={tiny_llama}", f"input.path={prompts},{missing}", "generation.max_new_tokens=2"]
    assert omnirun(runs_root / "fail", "-m", *args, "task.batch_size=1,2") == 1  # a failed job: the sweep exits 1
    return only_sweep_dir(runs_root / "fail")


def test_load_runs_gives_one_row_per_job_with_the_swept_parameters(gen_sweep: Path) -> None:
    runs = report.load_runs(gen_sweep)
    assert list(runs["run"]) == ["0", "1", "2", "3"]
    assert runs.attrs["swept"] == ["task.batch_size", "generation.temperature"]  # the x-axis candidate first
    assert list(runs["task.batch_size"]) == [1, 2, 1, 2]
    assert list(runs["generation.temperature"]) == [0.2, 0.2, 0.7, 0.7]
    assert METRIC_COLUMNS <= set(runs.columns)
    assert not {"decode_tokens_per_s", "output.root", "model.name"} & set(runs.columns)  # constant or absent
    assert (runs["status"] == "completed").all() and (runs["output_tokens_per_s"] > 0).all()
    assert (runs["e2e_ms_p50"] >= runs["ttft_ms_p50"]).all()
    assert set(runs["task"]) == {"generate"} and runs["device"].str.startswith("cpu").all()


def test_report_writes_markdown_csv_and_slide_sized_plots(gen_sweep: Path, tmp_path: Path) -> None:
    result = report.build_report(gen_sweep, tmp_path / "r")
    assert (result.x, result.series) == ("task.batch_size", ["generation.temperature"])
    assert set(result.files) == {"report.md", "report.csv", "throughput.png", "latency.png"}
    for name in ("throughput.png", "latency.png"):
        assert_png(tmp_path / "r" / name)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| run | status | task.batch_size | generation.temperature | output tok/s |" in md
    assert "Varied: `task.batch_size` = 1, 2; `generation.temperature` = 0.2, 0.7." in md
    best = result.runs.loc[result.runs["output_tokens_per_s"].idxmax()]
    assert (
        f"with task.batch_size={best['task.batch_size']}, generation.temperature={best['generation.temperature']:g}"
        in md
    )
    assert md.count("\n| ") == 1 + 4 and "![throughput](throughput.png)" in md
    with (tmp_path / "r" / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["task.batch_size"] for r in rows] == ["1", "2", "1", "2"]
    assert float(rows[3]["output_tokens_per_s"]) == pytest.approx(result.runs["output_tokens_per_s"][3])


def test_a_benchmark_sweep_adds_the_benchmark_throughputs(bench_sweep: Path, tmp_path: Path) -> None:
    result = report.build_report(bench_sweep, tmp_path)
    runs = result.runs
    assert result.swept == ["benchmark.batch_size"] and (result.x, result.series) == ("benchmark.batch_size", [])
    assert list(runs["benchmark.batch_size"]) == [1, 2]
    bench = json.loads((bench_sweep / "1" / "benchmark.json").read_text())["phases"]
    assert runs["decode_tokens_per_s"][1] == pytest.approx(bench["decode"]["decode_tokens_per_s"])
    assert runs["prefill_tokens_per_s"][1] == pytest.approx(bench["prefill"]["prefill_tokens_per_s"])
    assert runs["samples_per_s"][1] == pytest.approx(bench["generate"]["samples_per_s"])
    assert "Best decode rate" in result.markdown and "| decode tok/s |" in result.markdown
    assert_png(result.files["throughput.png"])


def test_benchmark_sweeps_are_compared_job_by_job_with_a_verdict(
    bench_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result = compare.compare(bench_sweep, bench_sweep)
    assert result.matching.keys == ["benchmark.batch_size"]
    assert {r.job for r in result.benchmark} == {"benchmark.batch_size=1", "benchmark.batch_size=2"}
    assert all(r.verdict == "no change" for r in result.benchmark) and not result.failed
    assert compare.main([str(bench_sweep), str(bench_sweep)]) == 0
    assert "verdict: no change" in capsys.readouterr().out
    comparison = report.compare_runs(bench_sweep, bench_sweep, tmp_path, plots=False)  # the same verdict
    assert "Benchmark verdict (noise-aware, as `python -m omnirun.compare`): no change" in comparison.markdown


def test_failed_jobs_are_listed_and_not_plotted(failing_sweep: Path, tmp_path: Path) -> None:
    result = report.build_report(failing_sweep, tmp_path)
    runs = result.runs
    assert list(runs["status"]) == ["completed", "completed", "failed", "failed"]
    # the failed jobs wrote no overrides.yaml: their parameters are rebuilt from the sweep's multirun.yaml
    assert [Path(p).name for p in runs["input.path"]] == ["prompts.jsonl"] * 2 + ["missing.jsonl"] * 2
    assert list(runs["task.batch_size"]) == [1, 2, 1, 2]
    assert runs["output_tokens_per_s"][2:].isna().all()
    assert result.x == "task.batch_size" and result.series == []  # input.path varies among failed runs only
    section = result.markdown.split("## Runs that did not complete", 1)[1]
    assert "`2`" in section and "`3`" in section and "no such file" in section
    assert "0 not completed" not in result.markdown and "2 not completed" in result.markdown
    assert_png(result.files["throughput.png"])


def test_a_folder_tree_and_a_single_run(gen_sweep: Path, failing_sweep: Path, runs_root: Path, tmp_path: Path) -> None:
    both = report.load_runs(runs_root)  # any folder: finds every run below it
    assert len(both) >= 8 and both["run"].str.contains("/").all()
    one = report.build_report(gen_sweep / "3", tmp_path)
    assert list(one.runs["run"]) == ["3"] and one.swept == [] and one.x is None
    assert "Nothing varied" in one.markdown
    assert_png(one.files["throughput.png"], min_kb=10)  # one bar per run


def test_comparing_a_sweep_with_itself_gives_ratios_of_one(gen_sweep: Path, tmp_path: Path) -> None:
    comparison = report.compare_runs(gen_sweep, gen_sweep, tmp_path)
    table = comparison.table
    assert comparison.matched_by == ["task.batch_size", "generation.temperature"]
    assert table["match"].nunique() == 4 and METRIC_COLUMNS <= set(table["metric"])
    assert (table["baseline_run"] == table["candidate_run"]).all()
    assert table["ratio"].to_numpy() == pytest.approx(1.0)
    assert "(1.00×)" in comparison.markdown and "**1.00×**" in comparison.markdown
    assert set(comparison.files) == {"compare.md", "compare.csv", "compare.png"}
    assert len(pd.read_csv(comparison.files["compare.csv"])) == len(table)
    assert_png(comparison.files["compare.png"])


def test_two_single_runs_pair_up_and_give_candidate_over_baseline(gen_sweep: Path, tmp_path: Path) -> None:
    baseline, candidate = gen_sweep / "0", gen_sweep / "1"
    table = report.compare_runs(baseline, candidate, tmp_path, plots=False).table
    row = table[table["metric"] == "output_tokens_per_s"].iloc[0]
    metrics = [json.loads((d / "metrics.json").read_text())["output_tokens_per_s"] for d in (baseline, candidate)]
    assert (row["baseline"], row["candidate"]) == pytest.approx(tuple(metrics))
    assert row["ratio"] == pytest.approx(metrics[1] / metrics[0])
    assert not (tmp_path / "compare.png").exists()


def test_comparison_matches_by_overrides_and_reports_unmatched_jobs(gen_sweep: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    for job in ("3", "1"):  # the candidate only has the batch_size=2 jobs, renumbered
        shutil.copytree(gen_sweep / job, partial / str(int(job) // 2))
    comparison = report.compare_runs(gen_sweep, partial, tmp_path / "out")
    table = comparison.table.set_index(["match", "metric"])
    matched = table.loc[("task.batch_size=2 generation.temperature=0.7", "output_tokens_per_s")]
    assert matched["ratio"] == pytest.approx(1.0) and matched["candidate_run"] == "1"
    unmatched = table.loc[("task.batch_size=1 generation.temperature=0.2", "output_tokens_per_s")]
    assert unmatched["candidate_status"] == "absent" and pd.isna(unmatched["ratio"])
    assert "Present on one side only" in comparison.markdown


def test_the_cli_writes_the_report_and_fails_with_one_line_on_no_runs(
    gen_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report.main([str(gen_sweep), "--out", str(tmp_path / "cli"), "--no-plots"])
    out = capsys.readouterr().out
    assert "| run | status |" in out and f"report: {tmp_path / 'cli' / 'report.md'}" in out
    assert not (tmp_path / "cli" / "throughput.png").exists()
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "nope"):
        with pytest.raises(SystemExit) as exc:
            report.main([str(path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1
    with pytest.raises(report.ReportError, match="holds no runs"):
        report.load_runs(tmp_path / "empty")
