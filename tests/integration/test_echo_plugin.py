"""examples/omnirun-echo, installed as a user would (pip, into a folder of its own), runs its backend and its
task through the CLI with no edit inside omnirun/: the extension seams work from outside the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "omnirun-echo"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("echo-plugin")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        timeout=300,
    )
    return target


def omnirun(plugin: Path | None, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(plugin) if plugin else ""}
    cmd = [sys.executable, "-m", "omnirun", f"output.root={root}", "task.progress=false", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def rows(root: Path) -> list[dict[str, object]]:
    (path,) = root.rglob("outputs.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_example_plugin_serves_its_backend_and_its_task(plugin_path: Path, tmp_path: Path) -> None:
    records = tmp_path / "r.jsonl"
    lines = [{"prompt": "one two three"}, {"prompt": ""}, {"id": "x", "prompt": "four  words\tare here"}]
    records.write_text("".join(json.dumps(x) + "\n" for x in lines))

    counted = omnirun(plugin_path, tmp_path / "count", "task=count_words", f"input.path={records}")
    assert counted.returncode == 0, counted.stderr
    first, empty, last = rows(tmp_path / "count")
    assert (first["words"], last["words"], last["id"]) == (3, 4, "x")
    assert empty["error"] and "prompt" in str(empty["error"])

    chat = omnirun(plugin_path, tmp_path / "chat", "hardware.backend=echo", "task=chat", f"input.path={records}")
    assert chat.returncode == 0, chat.stderr
    answered = rows(tmp_path / "chat")
    assert answered[0]["output"] == "one two three" and answered[0]["output_tokens"] == 3
    (manifest,) = (tmp_path / "chat").rglob("manifest.json")
    assert json.loads(manifest.read_text())["plan"]["backend"] == "echo"

    streamed = omnirun(
        plugin_path,
        tmp_path / "stream",
        "hardware.backend=echo",
        "task=stream",
        "generation.max_new_tokens=2",
        "input.prompt=alpha beta gamma",
    )
    assert streamed.returncode == 0, streamed.stderr
    (row,) = rows(tmp_path / "stream")
    assert row["output"] == "alpha beta" and row["finish_reason"] == "length" and row["ttft_ms"] is not None

    refused = omnirun(plugin_path, tmp_path / "embed", "hardware.backend=echo", "task=embed", "input.prompt=hi")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: hardware.backend=echo runs text generation only")


def test_without_the_plugin_its_names_are_one_line_errors(tmp_path: Path) -> None:
    backend = omnirun(None, tmp_path, "hardware.backend=echo", "input.prompt=hi")
    assert backend.returncode == 2 and "installed backend (" in backend.stderr and "got 'echo'" in backend.stderr
    task = omnirun(None, tmp_path, "task=count_words", "input.prompt=hi")
    assert task.returncode == 2 and "count_words" in task.stderr and "generate" in task.stderr
