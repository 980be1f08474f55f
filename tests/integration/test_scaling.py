"""Past one process: parallel and SLURM-style sweeps through Hydra launchers, data parallelism with
torchrun/accelerate, and MLflow tracking."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clirun import omnirun

TIMING = ("ttft_ms", "tpot_ms", "e2e_ms")


def summary(root: Path) -> list[dict[str, str]]:
    (sweep,) = list((root / "sweeps").iterdir())
    with (sweep / "summary.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["parallel", "local"])
def test_sweeps_through_hydra_launchers(tmp_path: Path, tiny_llama: Path, launcher: str) -> None:
    code = omnirun(
        tmp_path,
        "-m",
        f"hydra/launcher={launcher}",
        f"model.name={tiny_llama}",
        "hardware.num_threads=1",
        "generation.max_new_tokens=2",
        "generation.temperature=0.2,0.7",
    )
    assert code == 0
    rows = summary(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert "generation.temperature=0.7" in rows[1]["overrides"]


def rows_without_timing(run_dir: Path) -> list[dict]:
    lines = (run_dir / "outputs.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


@pytest.mark.slow
def test_two_process_data_parallel_equals_one_process(tmp_path: Path, tiny_llama: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"]
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": " ".join(words[: 2 + i % 7])}) + "\n" for i in range(21))
    )
    args = [
        f"model.name={tiny_llama}",
        f"input.path={prompts}",
        "generation=greedy",
        "generation.max_new_tokens=4",
        "task.batch_size=4",
        "task.progress=false",
    ]
    assert omnirun(tmp_path / "single", *args) == 0
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "omnirun", f"output.root={tmp_path / 'dp'}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (single,) = {p.parent for p in (tmp_path / "single").rglob("metrics.json")}
    (dp,) = {p.parent for p in (tmp_path / "dp").rglob("metrics.json")}
    assert rows_without_timing(dp) == rows_without_timing(single)
    assert not list(dp.glob("outputs.rank*.jsonl"))
    metrics = json.loads((dp / "metrics.json").read_text())
    assert metrics["num_samples"] == 21 and metrics["status"] == "completed"
    assert (dp / "omnirun.rank1.log").exists()  # both ranks worked (16 + 5 records, in whole windows)
    assert proc.stdout.count("run directory:") == 1  # only rank 0 reports


def test_mlflow_tracking_to_a_local_file_store(tmp_path: Path, tiny_llama: Path) -> None:
    pytest.importorskip("mlflow")
    assert omnirun(tmp_path, f"model.name={tiny_llama}", "tracking=mlflow", "generation.max_new_tokens=2") == 0
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow

    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    runs = mlflow.search_runs(experiment_names=["omnirun"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.generation.max_new_tokens"] == "2"
    assert run["metrics.output_tokens"] > 0 and run["tags.status"] == "completed"


def test_tracking_backend_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert omnirun(tmp_path, "tracking.backend=wandb") == 2
    assert "tracking.backend must be mlflow or null" in capsys.readouterr().err
