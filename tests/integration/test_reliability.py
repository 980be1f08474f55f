"""Nothing finished is lost: kill and resume, Ctrl-C, out-of-memory split-and-retry, sweep resume, safety."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnirun import rundir, secrets

from clirun import omnirun, only_run_dir

TIMING = ("ttft_ms", "tpot_ms", "e2e_ms", "token_times_ms")


def comparable(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "outputs.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def many_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "many.jsonl"
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "models",
        "run",
        "their",
        "tests",
    ]
    lines = [json.dumps({"id": f"r{i}", "prompt": " ".join(words[: 3 + i % 10])}) for i in range(300)]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_run(root: Path, model: Path, prompts: Path, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "omnirun",
        f"output.root={root}",
        f"model.name={model}",
        f"input.path={prompts}",
        "generation=greedy",
        "generation.max_new_tokens=6",
        "task.batch_size=4",
        "task.progress=false",
        *extra,
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_lines(root: Path, at_least: int, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(root.rglob("outputs.jsonl"))
        if files and files[0].read_bytes().count(b"\n") >= at_least:
            return files[0].parent
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended before it could be interrupted: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.05)
    raise AssertionError("no progress within the timeout")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path: Path, tiny_llama: Path, many_prompts: Path) -> None:
    whole = tmp_path / "whole"
    assert (
        omnirun(
            whole,
            f"model.name={tiny_llama}",
            f"input.path={many_prompts}",
            "generation=greedy",
            "generation.max_new_tokens=6",
            "task.batch_size=4",
        )
        == 0
    )
    expected = comparable(only_run_dir(whole))
    assert len(expected) == 300

    killed = tmp_path / "killed"
    proc = start_run(killed, tiny_llama, many_prompts)
    run_dir = wait_for_lines(killed, 40, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done_before = (run_dir / "outputs.jsonl").read_bytes().count(b"\n")
    assert 40 <= done_before < 300, "the kill must land mid-run"
    with (run_dir / "outputs.jsonl").open("ab") as f:  # a torn line, as a power loss mid-write leaves
        f.write(b'{"id": "r999", "output": "half wri')

    assert (
        omnirun(
            killed,
            f"model.name={tiny_llama}",
            f"input.path={many_prompts}",
            "generation=greedy",
            "generation.max_new_tokens=6",
            "task.batch_size=4",
            f"resume={run_dir}",
        )
        == 0
    )
    assert comparable(run_dir) == expected
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["resumed_records"] == done_before
    assert metrics["num_samples"] == 300 - done_before


def test_ctrl_c_keeps_finished_work_and_resume_latest_continues(
    tmp_path: Path, tiny_llama: Path, many_prompts: Path
) -> None:
    proc = start_run(tmp_path, tiny_llama, many_prompts)
    run_dir = wait_for_lines(tmp_path, 20, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "resume=" in err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    kept = (run_dir / "outputs.jsonl").read_text().count("\n")
    assert metrics["num_samples"] == kept > 0
    assert (
        omnirun(
            tmp_path,
            f"model.name={tiny_llama}",
            f"input.path={many_prompts}",
            "generation=greedy",
            "generation.max_new_tokens=6",
            "task.batch_size=4",
            "resume=latest",
        )
        == 0
    )
    rows = comparable(run_dir)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(300)]
    assert (run_dir / "metrics.attempt-1.json").exists()


def test_resume_refuses_a_different_config_unless_forced(
    tmp_path: Path, tiny_llama: Path, many_prompts: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [f"model.name={tiny_llama}", f"input.path={many_prompts}", "input.limit=4", "generation.max_new_tokens=2"]
    assert omnirun(tmp_path, *args) == 0
    run_dir = only_run_dir(tmp_path)
    assert omnirun(tmp_path, *args[:-1], "generation.max_new_tokens=3", f"resume={run_dir}") == 2
    assert "the config differs" in capsys.readouterr().err
    assert omnirun(tmp_path, *args[:-1], "generation.max_new_tokens=3", f"resume={run_dir}", "resume_force=true") == 0
    assert omnirun(tmp_path, *args, f"resume={tmp_path / 'nowhere'}") == 2


def test_resume_refuses_a_changed_input(tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert omnirun(tmp_path, f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=2") == 0
    path.write_text('{"prompt": "changed"}\n')
    run_dir = only_run_dir(tmp_path)
    code = omnirun(
        tmp_path, f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=2", f"resume={run_dir}"
    )
    assert code == 2 and "the input differs" in capsys.readouterr().err


def test_sweep_resume_skips_finished_jobs(tmp_path: Path, tiny_llama: Path, many_prompts: Path) -> None:
    later = tmp_path / "later.jsonl"
    base = [f"model.name={tiny_llama}", "generation.max_new_tokens=2", "input.limit=3"]
    assert omnirun(tmp_path / "out", "-m", *base, f"input.path={many_prompts},{later}") == 1  # job 1 failed
    (sweep,) = list((tmp_path / "out" / "sweeps").iterdir())
    first_outputs = (sweep / "0" / "outputs.jsonl").read_text()
    later.write_text('{"prompt": "now it exists"}\n')
    assert omnirun(tmp_path / "out", "-m", *base, f"input.path={many_prompts},{later}", "resume=latest") == 0
    assert list((tmp_path / "out" / "sweeps").iterdir()) == [sweep]
    assert (sweep / "0" / "outputs.jsonl").read_text() == first_outputs  # skipped, not redone
    with (sweep / "summary.csv").open() as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["completed", "completed"]


def test_hub_tokens_never_reach_output_files(tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_" + "Zx9" * 12
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setattr(sys, "argv", ["omnirun", f"model.revision={token}"])
    assert token not in rundir.command_line()
    assert secrets.redact(f"using {token} now") == "using *** now"
    assert omnirun(tmp_path, f"model.name={tiny_llama}", "generation.max_new_tokens=2") == 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path


def test_pickle_checkpoints_need_an_explicit_opt_in(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")  # the pickle-based checkpoint format
    assert omnirun(tmp_path / "a", f"model.name={folder}", "generation.max_new_tokens=2") == 1
    assert "model.allow_pickle=true" in capsys.readouterr().err
    assert (
        omnirun(tmp_path / "b", f"model.name={folder}", "model.allow_pickle=true", "generation.max_new_tokens=2") == 0
    )


def test_interactive_chat_ends_on_end_of_input(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("only one line\n"))
    assert omnirun(tmp_path, f"model.name={tiny_llama}", "task=chat", "generation.max_new_tokens=2") == 0
    assert len(json.loads((only_run_dir(tmp_path) / "conversation.json").read_text())) == 2


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "omnirun", f"output.root={tmp_path}", "model.name=/no/such/model"]
    quiet = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) == 1
    loud = subprocess.run([*args, "debug=true"], capture_output=True, text=True, env=env, check=False)
    assert loud.returncode != 0 and "Traceback" in loud.stderr
