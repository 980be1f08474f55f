"""The GPU check's dry run (`benchmarks/gpu_check.sh --dry-run`): the same stages as on a card (the `gpu` tests,
the benchmark, the CLI runs, the report) on the CPU with a tiny model and a handful of prompts, so the script
cannot rot while no GPU is at hand."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_report  # noqa: E402  (benchmarks/ is not a package)

CARD = "cpu-dry-run"


def gpu_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "OUT"}  # the lent machine's result folder, never here
    return subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--python", sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**clean, **(env or {})},
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    before = sorted(RESULTS.iterdir())
    base = tmp_path_factory.mktemp("gpu-check")
    done = gpu_check("--dry-run", "--out", str(base / "out"), env={"GPU_CHECK_WORK": str(base / "work")})
    assert sorted(RESULTS.iterdir()) == before, "a dry run wrote into benchmarks/results"
    return base / "out", done


@pytest.fixture(scope="module")
def report(dry_run: tuple[Path, subprocess.CompletedProcess[str]]) -> tuple[dict[str, Any], str]:
    out, done = dry_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((out / f"gpu-{CARD}.json").read_text()), (out / f"gpu-{CARD}.md").read_text()


@pytest.mark.slow
def test_every_target_has_a_measured_figure(report: tuple[dict[str, Any], str]) -> None:
    data, markdown = report
    assert gpu_report.problems(data, markdown) == []
    assert set(data["targets"]) == set(gpu_report.TARGETS)
    for key, target in data["targets"].items():
        assert isinstance(target["measured"], float), key
        assert f"| {key} | " in markdown
    assert data["card"] == CARD and data["dry_run"] is True


@pytest.mark.slow
def test_the_benchmark_ran_every_contender(report: tuple[dict[str, Any], str]) -> None:
    bench = report[0]["bench"]
    settings = bench["settings"]
    assert bench["bandwidth"]["gb_s"] > 0 and bench["weight_bytes"] > 0 and bench["limit_tok_s"] > 0
    assert bench["decode"]["plain"]["ratio_to_plain"] == pytest.approx(1.0)
    assert bench["throughput"]["plain-padded"]["ratio_to_plain"] == pytest.approx(1.0)
    for workload, name in [("decode", "omnirun"), ("throughput", "omnirun")]:
        row = bench[workload][name]
        assert row["tok_s"] > 0
        assert row["vs_limit"] == pytest.approx(row["tok_s"] / bench["limit_tok_s"])
    forced = settings["prompts"] * settings["batch_tokens"]  # output lengths are forced
    assert bench["samples"]["plain"]["batch_output_tokens"] == forced
    assert bench["samples"]["omnirun"]["batch_output_tokens"] == forced
    lo, hi = settings["prompt_tokens"]
    lengths = bench["samples"]["plain"]["prompt_tokens"]
    assert lo <= lengths["min"] < lengths["max"] <= hi + 8  # mixed lengths (a prompt may overshoot by a few words)
    continuous = bench["throughput"]["continuous"]
    assert continuous.get("tok_s", 0) > 0 or continuous["skipped"]
    assert bench["samples"]["omnirun"]["plan"]["backend"] == "transformers"


@pytest.mark.slow
def test_every_cli_setting_ran_and_was_honoured(report: tuple[dict[str, Any], str]) -> None:
    runs = report[0]["cli"]["runs"]
    assert set(runs) == {"auto", "int8", "int4", "spill"}
    for name, run in runs.items():
        assert (run["exit_code"], run["status"], run["num_errors"]) == (0, "completed", 0), (name, run.get("error"))
        assert run["output_tokens"] == 3 * 4, name  # 3 prompts x 4 forced tokens
        assert run["independent_peak_mb"] > 0 and run["max_rss_mb"] > 0
    assert runs["int8"]["plan"]["quantization"] == "int8"
    assert runs["int4"]["plan"]["quantization"] == "int4"
    assert runs["auto"]["plan"]["quantization"] is None
    assert runs["spill"]["plan"]["device_map"] == "auto"
    assert runs["spill"]["placed_on"] == ["cpu"]
    assert runs["auto"]["placed_on"] == runs["int8"]["placed_on"] == ["cpu"]


@pytest.mark.slow
def test_the_gpu_tests_were_collected_and_skip_on_the_cpu(report: tuple[dict[str, Any], str]) -> None:
    tests = report[0]["tests"]
    assert tests["skipped"] >= 2 and tests["passed"] == tests["failed"] == tests["errors"] == 0
    assert report[0]["targets"]["gpu_tests"] == {**report[0]["targets"]["gpu_tests"], "measured": 0.0, "met": False}


@pytest.mark.slow
def test_the_shape_check_names_what_is_missing(report: tuple[dict[str, Any], str]) -> None:
    data, markdown = report
    broken = copy.deepcopy(data)
    broken["targets"]["offline_tok_s"]["measured"] = None
    del broken["bench"]["throughput"]["omnirun"]
    broken["bench"]["decode"]["plain"]["vs_limit"] = "fast"
    broken["cli"]["runs"]["spill"].pop("exit_code")
    rows = "\n".join(line for line in markdown.splitlines() if not line.startswith("| plain-padded |"))
    assert gpu_report.problems(broken, rows) == [
        "target offline_tok_s: measured is None, not a number",
        "bench.decode.plain: " + repr(broken["bench"]["decode"]["plain"]) + " lacks tok_s, ratio_to_plain and vs_limit",
        "the .md table 'Offline throughput' has no row for plain-padded",
        "bench.throughput.omnirun: {} lacks tok_s, ratio_to_plain and vs_limit",
        "cli run spill: no exit code",
    ]


def test_a_dry_run_never_writes_into_the_committed_results() -> None:
    done = gpu_check("--dry-run", "--out", "benchmarks/results")
    assert done.returncode == 2
    assert "a dry run never writes into benchmarks/results/" in done.stderr
    assert not list(RESULTS.glob(f"gpu-{CARD}.*"))


def test_usage_errors_name_the_option() -> None:
    done = gpu_check("--python-tag", "3.11", "--dry-run")
    assert done.returncode == 2
    assert "--python-tag=3.11: use CPython's tag without dots, e.g. 311" in done.stderr
    assert "unknown option --fast" in gpu_check("--fast").stderr


def test_without_a_gpu_only_the_dry_run_runs(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the check itself runs here")
    done = gpu_check("--wheels", str(tmp_path / "no-wheels"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "no-wheels/requirements.txt not found (run --download on a machine with PyPI)" in done.stderr
    assert "no CUDA device here; --dry-run rehearses the check on the CPU" in done.stderr
    assert not list((tmp_path / "out").glob("gpu-*"))
