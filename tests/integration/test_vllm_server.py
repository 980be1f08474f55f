"""A real vLLM OpenAI-compatible server on 127.0.0.1 (started by this module once, stopped by its PID), and
`python -m omnirun` on the same chat records three ways: `hardware.backend=vllm` (vLLM offline, in-process),
`hardware.backend=openai` against the server, and plain fp32 Transformers (`hardware.optimize=false`). Greedy
rows agree: the server and vLLM offline give the same answers, with `ttft_ms` on every row, and vLLM agrees with
Transformers (`python -m omnirun.compare ... --min-exact 0.75`). Skipped where vLLM is not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (make setup VLLM=1)", allow_module_level=True)

from omnirun import compare
from omnirun.engine import source

from clirun import omnirun, only_run_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    # vLLM's own imports, not our calls, ignored by message in this module only:
    # vllm.triton_utils reads `torch.distributed.reduce_op` (a FutureWarning in torch 2.13);
    pytest.mark.filterwarnings("ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning"),
    # torch.utils.mkldnn, imported by vLLM's CPU model runner, defines `torch.jit.script_method`s (deprecated).
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]
SERVED = "smollm2"
START_TIMEOUT_S = 300
"""The server must answer GET /v1/models within this (it takes about 40 s on 2 cores)."""
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Explain photosynthesis in one sentence.",
    "Write a haiku about the sea.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(isolated_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` on the bundled model's dense copy; its base URL."""
    from omnirun.engine.onnxruntime.export import model_folder

    folder = model_folder(source.resolve(source.BUNDLED))
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", str(folder), "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port)),
        *("--dtype", "float32", "--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30)),
        *("--structured-outputs-config.backend", "guidance", "--disable-log-stats"),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(url):
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not answer in {START_TIMEOUT_S}s: {log.read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its process group: the API server and its engine core
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chats") / "chats.jsonl"
    lines = [{"id": f"q{i}", "messages": [{"role": "user", "content": q}]} for i, q in enumerate(QUESTIONS)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def rows(run_dir: Path) -> dict[str, dict[str, Any]]:
    lines = (run_dir / "outputs.jsonl").read_text().splitlines()
    return {row["id"]: row for row in map(json.loads, lines)}


def run(root: Path, records: Path, *args: str) -> Path:
    common = ("task=chat", f"input.path={records}", "generation=greedy", "generation.max_new_tokens=24")
    assert omnirun(root, *common, *args) == 0
    return only_run_dir(root)


def test_server_offline_and_transformers_agree(
    server: str, records: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = (f"model.endpoint={server}", f"model.name={SERVED}")
    served = run(tmp_path / "served", records, "hardware.backend=openai", *endpoint)
    offline = run(tmp_path / "offline", records, "hardware.backend=vllm")
    reference = run(tmp_path / "hf", records, "hardware.backend=transformers", "hardware.optimize=false")  # fp32
    by_server, by_vllm = rows(served), rows(offline)
    assert set(by_server) == set(by_vllm) == {f"q{i}" for i in range(len(QUESTIONS))}
    for key, row in by_server.items():
        assert row["error"] is None and row["output"] == by_vllm[key]["output"], key
        assert row["ttft_ms"] is not None and row["ttft_ms"] > 0
        assert by_vllm[key]["ttft_ms"] is not None and by_vllm[key]["ttft_ms"] > 0
    assert by_vllm["q0"]["output"] == "The capital of France is Paris."
    manifest = json.loads((offline / "manifest.json").read_text())
    assert "vllm" in json.dumps(manifest) and "kv_cache" in json.dumps(manifest)
    capsys.readouterr()
    assert compare.main([str(reference), str(offline), "--min-exact", "0.75"]) == 0
    assert "--min-exact 0.75 met" in capsys.readouterr().out
