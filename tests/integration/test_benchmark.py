"""task=benchmark: phases and fields, both repetition minimums, warm-up excluded, rerun, sweeps, compare."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from omnirun import compare
from omnirun.results.benchmark import PHASES

from clirun import omnirun

FAST = ["task=benchmark", "benchmark.min_iterations=3", "benchmark.min_duration_s=0", "benchmark.warmup_runs=1"]


STAT_FIELDS = {"count", "mean", "p50", "p90", "p95", "p99", "stdev", "stdev_pct"}


def bench_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("benchmark.json"))


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    root = tmp_path_factory.mktemp("bench")
    args = [f"model.name={tiny_llama}", *FAST, "benchmark.batch_size=2", "benchmark.prompt_tokens=12"]
    assert omnirun(root, *args, "benchmark.new_tokens=5") == 0
    (run_dir,) = bench_dirs(root)
    return run_dir


def test_benchmark_json_has_every_phase_and_field(bench_run: Path) -> None:
    report = json.loads((bench_run / "benchmark.json").read_text())
    assert set(report["phases"]) == set(PHASES)
    for name, stats in report["phases"].items():
        assert stats.keys() >= STAT_FIELDS, name
    phases = report["phases"]
    assert phases["load_model"]["count"] == 1 and phases["first_generate"]["count"] == 1
    assert phases["generate"]["count"] == phases["prefill"]["count"] == phases["decode"]["count"] == 3
    assert phases["per_token"]["count"] == 3 * 4  # 5 tokens per call: 4 intervals
    assert phases["prefill"]["prefill_tokens_per_s"] > 0 and phases["decode"]["decode_tokens_per_s"] > 0
    assert phases["generate"]["tokens_per_s"] > 0 and phases["generate"]["samples_per_s"] > 0
    assert phases["prefill"]["mean"] < phases["generate"]["mean"]
    w = report["workload"]
    assert (w["source"], w["batch_size"], w["new_tokens"]) == ("synthetic", 2, 5)
    assert w["input_tokens_per_call"] == 2 * 12  # exact synthetic prompt length
    assert w["output_tokens_per_call"] == 2 * 5  # forced output length, actually counted
    assert w["warmup_calls_excluded"] == 1
    for phase in ("load_model", "first_generate", "generate"):
        assert report["memory"][phase]["max_rss_mb"] > 0
    assert report["memory"]["model_footprint_mb"] > 0
    assert {"loadavg_before", "loadavg_after", "unstable", "reasons"} <= set(report["stability"])
    assert "prefill" in report["definitions"]
    assert "| generate |" in (bench_run / "benchmark.md").read_text()
    metrics = json.loads((bench_run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["benchmark"]["decode_tokens_per_s"] > 0
    assert (bench_run / "config.yaml").exists() and (bench_run / "manifest.json").exists()


def test_rerun_repeats_from_the_run_directory_alone(bench_run: Path, tmp_path: Path) -> None:
    assert omnirun(tmp_path, f"rerun={bench_run}", f"output.root={tmp_path}") == 0
    (again,) = bench_dirs(tmp_path)
    first = json.loads((bench_run / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert second["config_sha256"] == first["config_sha256"]  # the same config, output.root aside
    report = json.loads((again / "benchmark.json").read_text())
    assert report["workload"]["new_tokens"] == 5 and report["workload"]["batch_size"] == 2


def test_rerun_of_a_missing_dir_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert omnirun(tmp_path, f"rerun={tmp_path / 'nope'}") == 2
    assert "not a run directory" in capsys.readouterr().err


def test_benchmark_on_real_inputs(tmp_path: Path, tiny_llama: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "the quick brown fox"}\n{"prompt": "hello"}\n')
    assert omnirun(tmp_path / "out", f"model.name={tiny_llama}", *FAST, f"input.path={path}") == 0
    (run_dir,) = bench_dirs(tmp_path / "out")
    assert json.loads((run_dir / "benchmark.json").read_text())["workload"]["source"] == "inputs"


def test_sweep_gives_one_summary_row_per_job(tmp_path: Path, tiny_llama: Path) -> None:
    code = omnirun(
        tmp_path, "-m", f"model.name={tiny_llama}", *FAST, "benchmark.new_tokens=3", "benchmark.batch_size=1,2"
    )
    assert code == 0
    (sweep,) = list((tmp_path / "sweeps").iterdir())
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert all(float(r["decode_tokens_per_s"]) > 0 for r in rows)
    assert "benchmark.batch_size=2" in rows[1]["overrides"]


def slowed(report: dict, factor: float) -> dict:
    out = copy.deepcopy(report)
    for stats in out["phases"].values():
        for key in ("mean", "p50", "p90", "p95", "p99", "stdev"):
            stats[key] *= factor
        for key in [k for k in stats if k.endswith("_per_s")]:
            if stats[key]:
                stats[key] /= factor
    return out


def test_compare_flags_a_planted_2x_slowdown(
    bench_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = tmp_path / "slow"
    slow.mkdir()
    report = json.loads((bench_run / "benchmark.json").read_text())
    (slow / "benchmark.json").write_text(json.dumps(slowed(report, 2.0)))
    assert compare.main([str(bench_run), str(slow)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out
    rows = compare.compare(bench_run, slow).benchmark
    assert {r.metric for r in rows if r.verdict == "worse"} >= {"generate.mean_s", "decode_tokens_per_s"}
    assert compare.main([str(slow), str(bench_run)]) == 0  # the reverse is an improvement


def test_compare_calls_a_repeat_of_the_same_run_no_change(bench_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main([str(bench_run), str(bench_run)]) == 0
    assert "verdict: no change" in capsys.readouterr().out
