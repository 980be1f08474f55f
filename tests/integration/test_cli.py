"""`python -m omnirun` end to end on tiny local models: run directories, files, fields, sweeps and errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clirun import omnirun as run_cli

OUTPUT_FIELDS = {
    "id",
    "output",
    "input_tokens",
    "output_tokens",
    "finish_reason",
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "error",
}


METRIC_FIELDS = {
    "schema_version",
    "status",
    "load_model_s",
    "total_s",
    "num_samples",
    "input_tokens",
    "output_tokens",
    "output_tokens_per_s",
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "memory",
}


RUN_FILES = {"config.yaml", "overrides.yaml", "command.txt", "outputs.jsonl", "metrics.json", "manifest.json"}


def omnirun(tmp_path: Path, *args: str) -> int:
    """The CLI in-process with output.root=<tmp_path>/out; returns the exit status."""
    return run_cli(tmp_path / "out", *args)


def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "out").rglob("config.yaml"))


def read_outputs(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "outputs.jsonl").read_text().splitlines()]


@pytest.fixture()
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "a", "prompt": "the quick brown fox"},
        {"prompt": "what is the capital of france"},
        {"id": "c", "prompt": "hello world", "max_new_tokens": 3},
        {"messages": [{"role": "user", "content": "tokens are counted"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("task", ["generate", "chat", "batch", "stream"])
def test_each_task_writes_a_complete_run_dir(tmp_path: Path, tiny_llama: Path, prompts_file: Path, task: str) -> None:
    code = omnirun(
        tmp_path,
        f"model.name={tiny_llama}",
        f"task={task}",
        f"input.path={prompts_file}",
        "generation=greedy",
        "generation.max_new_tokens=6",
    )
    assert code == 0
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.parent.parent.name == task
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    rows = read_outputs(run_dir)
    assert [r["id"] for r in rows] == ["a", "2", "c", "4"]
    for row in rows:
        assert OUTPUT_FIELDS <= set(row)
        assert row["error"] is None
        assert ("prompt" in row) or ("messages" in row)
        assert row["finish_reason"] in ("stop", "length")
        assert 1 <= row["output_tokens"] <= 6
        assert row["input_tokens"] > 0 and row["e2e_ms"] > 0
        assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["e2e_ms"]
    assert rows[2]["output_tokens"] <= 3  # per-record override
    if task == "stream":
        assert all(len(r["token_times_ms"]) == r["output_tokens"] for r in rows)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_FIELDS <= set(metrics)
    assert metrics["status"] == "completed" and metrics["num_samples"] == 4
    assert metrics["output_tokens"] == sum(r["output_tokens"] for r in rows)
    assert metrics["output_tokens_per_s"] > 0
    assert set(metrics["ttft_ms"]) == {"mean", "p50", "p90", "p99"}
    assert metrics["memory"]["max_rss_mb"] > 0 and metrics["memory"]["model_footprint_mb"] > 0
    assert metrics["memory"]["max_cuda_allocated_mb"] is None
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["versions"]["torch"] and manifest["versions"]["transformers"]
    assert manifest["plan"]["reasons"]["device"]
    assert manifest["input"]["fingerprint"] == outputs_sha(prompts_file)
    assert manifest["hardware"]["cpu_cores"] >= 1
    assert len(manifest["config_sha256"]) == 64
    assert "generation.max_new_tokens=6" in (run_dir / "overrides.yaml").read_text()
    assert "omnirun" in (run_dir / "command.txt").read_text()


def outputs_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_seq2seq_and_saved_dataset(tmp_path: Path, tiny_t5: Path) -> None:
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": ["translate one two", "summary of a story"]}).save_to_disk(str(folder))
    code = omnirun(
        tmp_path,
        f"model.name={tiny_t5}",
        f"input.dataset={folder}",
        "input.field=text",
        "generation=greedy",
        "generation.max_new_tokens=4",
        "task.batch_size=2",
    )
    assert code == 0
    (run_dir,) = run_dirs(tmp_path)
    rows = read_outputs(run_dir)
    assert [r["id"] for r in rows] == ["0", "1"] and all(r["error"] is None for r in rows)
    assert json.loads((run_dir / "manifest.json").read_text())["model"]["model_type"] == "seq2seq"


def test_bad_records_become_error_lines_and_the_run_goes_on(tmp_path: Path, tiny_llama: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "hello"}\nnot json\n{"prompt": ""}\n{"prompt": "world"}\n')
    assert omnirun(tmp_path, f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=3") == 0
    rows = read_outputs(run_dirs(tmp_path)[0])
    assert [r["error"] is None for r in rows] == [True, False, False, True]
    assert "line 2" in rows[1]["error"]


def test_on_error_fail_stops_before_loading(tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "hello"}\nnot json\n')
    code = omnirun(tmp_path, f"model.name={tiny_llama}", f"input.path={path}", "input.on_error=fail")
    assert code == 2
    assert "line 2" in capsys.readouterr().err
    assert run_dirs(tmp_path) == []


def test_greedy_and_seeded_sampling_are_reproducible(tmp_path: Path, tiny_llama: Path, prompts_file: Path) -> None:
    for i, decoding in enumerate((["generation=greedy"], ["generation.do_sample=true", "seed=123"])):
        texts = []
        for attempt in range(2):
            root = tmp_path / f"decoding{i}-{attempt}"
            assert omnirun(root, f"model.name={tiny_llama}", f"input.path={prompts_file}", *decoding) == 0
            texts.append([r["output"] for r in read_outputs(run_dirs(root)[0])])
        assert texts[0] == texts[1]


def test_sweep_of_two_by_two(tmp_path: Path, tiny_llama: Path, prompts_file: Path) -> None:
    code = omnirun(
        tmp_path,
        "-m",
        f"model.name={tiny_llama}",
        f"input.path={prompts_file}",
        "generation.max_new_tokens=3",
        "generation.temperature=0.2,0.7",
        "task.batch_size=1,4",
    )
    assert code == 0
    (sweep,) = list((tmp_path / "out" / "sweeps").iterdir())
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    assert all(RUN_FILES <= {f.name for f in job.iterdir()} for job in jobs)
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows)
    assert "generation.temperature=0.2 task.batch_size=1" in rows[0]["overrides"]
    assert (sweep / "summary.md").read_text().count("\n| ") == 4


def test_a_failing_job_does_not_stop_the_sweep(tmp_path: Path, tiny_llama: Path, prompts_file: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    code = omnirun(
        tmp_path,
        "-m",
        f"model.name={tiny_llama}",
        f"input.path={prompts_file},{missing}",
        "generation.max_new_tokens=2",
    )
    assert code == 1  # every job ran and the summary is written, but a failed job makes the sweep's status 1
    (sweep,) = list((tmp_path / "out" / "sweeps").iterdir())
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "no such file" in rows[1]["error"]
    assert f"input.path={missing}" in rows[1]["overrides"]  # a job that failed early is still identifiable
    assert (sweep / "1" / "error.txt").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["generation.temprature=0.5"],
        ["model=nonexistent"],
        ["hardware.device=tpu"],
        ["generation.top_p=2"],
        ["task.batch_size=-1"],
        ["hardware.device=cuda"],
        ["input.path=/no/such/file.jsonl"],
    ],
)
def test_config_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str]) -> None:
    if args == ["hardware.device=cuda"]:
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    assert omnirun(tmp_path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert run_dirs(tmp_path) == []


def test_chat_without_template_is_a_clear_error(
    tmp_path: Path, tiny_gpt2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert omnirun(tmp_path, f"model.name={tiny_gpt2}", "task=chat", "input.prompt=hi") == 2
    assert "chat template" in capsys.readouterr().err


def test_unreachable_hub_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert omnirun(tmp_path, "model=qwen") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: model 'qwen' (Qwen/Qwen2.5-0.5B-Instruct)")
    assert "model=smollm2" in err[0]


def test_interactive_chat_keeps_history(tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello there\nwhat is the capital\n/exit\n"))
    assert omnirun(tmp_path, f"model.name={tiny_llama}", "task=chat", "generation.max_new_tokens=3") == 0
    (run_dir,) = run_dirs(tmp_path)
    conversation = json.loads((run_dir / "conversation.json").read_text())
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
    rows = read_outputs(run_dir)
    assert len(rows) == 2 and len(rows[1]["messages"]) == 3


@pytest.mark.slow
def test_python_m_omnirun_answers_with_the_bundled_model(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "omnirun",
            f"output.root={tmp_path}",
            "generation=greedy",
            "generation.max_new_tokens=20",
            "hardware.backend=transformers",  # the reference path; llama.cpp parts from it at a near-tie here
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "run directory:" in proc.stdout
    (run_dir,) = [p.parent for p in tmp_path.rglob("metrics.json")]
    assert run_dir.relative_to(tmp_path).parts[:2] == ("generate", "smollm2")
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
