"""`hardware.backend=openai` against real HTTP servers on 127.0.0.1: streamed answers with their timings,
retries (429 with Retry-After, a connection dropped mid-stream), a request that never answers or always fails
as that record's error row, a server that is down as one line, the API key sent but never written, resume."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from clirun import omnirun, only_run_dir

MODEL = "test-model"
SECRET = "sk-local-test-7f3a9c"


@dataclass
class Served:
    """What the fake server saw."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    key: str | None = None
    """When set, a request without `Authorization: Bearer <key>` gets 401."""


class Handler(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose answer is `echo <the prompt's words>`, streamed one word per event. A
    prompt containing RATE is refused once with 429 (Retry-After: 0), DROP loses its connection after one event
    once, HANG is never answered, FAIL always gets HTTP 500."""

    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        key = self.server.served.key
        if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
            self.reply(401, {"error": {"message": "Incorrect API key provided"}})
        elif self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self.reply(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/embeddings":
            return self.embeddings(payload)
        chat = self.path == "/v1/chat/completions"
        if not chat and self.path != "/v1/completions":
            return self.reply(404, {"error": {"message": "not found"}})
        text = payload["messages"][-1]["content"] if chat else payload["prompt"]
        served = self.server.served
        with served.lock:
            served.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": payload})
            count = served.seen[text] = served.seen.get(text, 0) + 1
            served.in_flight += 1
            served.peak = max(served.peak, served.in_flight)
        try:
            self.answer(text, payload, chat, count)
        finally:
            with served.lock:
                served.in_flight -= 1

    def answer(self, text: str, payload: dict[str, Any], chat: bool, count: int) -> None:
        if "HANG" in text:
            self.server.served.stop.wait(10)
            return
        if "FAIL" in text:
            return self.reply(500, {"error": {"message": "the model crashed"}})
        if "RATE" in text and count == 1:
            return self.reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        time.sleep(0.05)  # long enough for requests to overlap
        words = ["echo", *text.split()]
        limit = payload["max_tokens"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(words[:limit]):
            piece = word if i == 0 else " " + word
            choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            self.event({"choices": [{**choice, "finish_reason": None}]})
            if "DROP" in text and count == 1:
                self.connection.shutdown(socket.SHUT_RDWR)
                return
        finish = "length" if len(words) > limit else "stop"
        end = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
        self.event({"choices": [{**end, "finish_reason": finish}]})
        if payload.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": len(text.split()) + 3, "completion_tokens": min(limit, len(words))}
            self.event({"choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    def embeddings(self, payload: dict[str, Any]) -> None:
        """A vector (3, 4 * words) per text, listed in reverse order with its index, as a server may."""
        self.server.served.requests.append({"path": self.path, "body": payload})
        data = [{"index": i, "embedding": [3.0, 4.0 * len(t.split())]} for i, t in enumerate(payload["input"])]
        usage = {"prompt_tokens": sum(len(t.split()) for t in payload["input"])}
        self.reply(200, {"object": "list", "data": data[::-1], "usage": usage})

    def event(self, data: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()

    def reply(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    served: Served


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.served = Served()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd.served
    finally:
        httpd.served.stop.set()
        httpd.shutdown()
        httpd.server_close()


def records(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "outputs.jsonl").read_text().splitlines()]


def args(endpoint: str, *more: str) -> list[str]:
    return ["hardware.backend=openai", f"model.endpoint={endpoint}", f"model.name={MODEL}", *more]


def test_each_record_is_a_streamed_request_with_its_timings_and_retries(
    server: tuple[str, Served], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, served = server
    monkeypatch.setenv("OMNIRUN_TEST_BEARER", SECRET)
    lines: list[dict[str, Any]] = [
        {"id": "a", "prompt": "one two three"},
        {"id": "rate", "prompt": "RATE limited once"},
        {"id": "drop", "prompt": "DROP the line once"},
        {"id": "chat", "messages": [{"role": "user", "content": "hello there"}]},
        {"id": "long", "prompt": "w " * 20, "max_new_tokens": 3},
    ]
    path = records(tmp_path / "in.jsonl", lines)
    code = omnirun(
        tmp_path / "out",
        *args(endpoint, "task=batch", f"input.path={path}", "task.concurrency=4", "generation=greedy"),
        "model.api_key_env=OMNIRUN_TEST_BEARER",
    )
    assert code == 0
    run_dir = only_run_dir(tmp_path / "out")
    by_id = {r["id"]: r for r in rows(run_dir)}
    assert [r["id"] for r in rows(run_dir)] == ["a", "rate", "drop", "chat", "long"]
    assert all(r["error"] is None for r in by_id.values()), by_id
    assert by_id["a"]["output"] == "echo one two three"
    assert by_id["chat"]["output"] == "echo hello there"
    assert by_id["rate"]["output"] == "echo RATE limited once"  # 429, then answered
    assert by_id["drop"]["output"] == "echo DROP the line once"  # the cut stream is redone from the start
    assert by_id["long"]["finish_reason"] == "length" and by_id["long"]["output"] == "echo w w"
    for r in by_id.values():
        assert r["ttft_ms"] > 0 and r["e2e_ms"] >= r["ttft_ms"]
    assert by_id["a"]["output_tokens"] == 4 and by_id["a"]["input_tokens"] == 6  # the server's usage
    assert by_id["a"]["finish_reason"] == "stop" and by_id["a"]["tpot_ms"] is not None
    assert served.seen["RATE limited once"] == 2 and served.seen["DROP the line once"] == 2
    assert served.peak > 1  # requests were in flight together
    assert len({r["body"]["seed"] for r in served.requests}) == 5  # one seed per record (a retry keeps it)
    # chat_template=auto: every record goes to /chat/completions as messages; greedy is temperature 0
    assert {r["path"] for r in served.requests} == {"/v1/chat/completions"}
    body = served.requests[0]["body"]
    assert body["model"] == MODEL and body["temperature"] == 0.0 and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True} and "top_k" not in body
    # the key reaches the server and no file of the run
    assert {r["auth"] for r in served.requests} == {f"Bearer {SECRET}"}
    for file in run_dir.rglob("*"):
        if file.is_file():
            assert SECRET not in file.read_text(errors="replace"), file
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_errors"] == 0 and metrics["ttft_ms"]["p50"] > 0
    assert json.loads((run_dir / "manifest.json").read_text())["plan"]["backend"] == "openai"


def test_a_request_that_never_answers_or_always_fails_is_its_record_error_row(
    server: tuple[str, Served], tmp_path: Path
) -> None:
    endpoint, served = server
    lines = [{"id": "a", "prompt": "fine"}, {"id": "hang", "prompt": "HANG"}, {"id": "fail", "prompt": "FAIL"}]
    lines.append({"id": "b", "prompt": "also fine"})
    path = records(tmp_path / "in.jsonl", lines)
    started = time.perf_counter()
    code = omnirun(
        tmp_path / "out",
        *args(endpoint, "task=batch", f"input.path={path}", "task.timeout_s=1", "task.retries=1"),
        "task.chat_template=never",
    )
    assert code == 0
    assert time.perf_counter() - started < 15
    out = {r["id"]: r for r in rows(only_run_dir(tmp_path / "out"))}
    assert out["a"]["output"] == "echo fine" and out["b"]["output"] == "echo also fine"
    assert "task.timeout_s=1" in out["hang"]["error"] and "2 attempts" in out["hang"]["error"]
    assert out["hang"]["error"].startswith("record hang: RequestFailed: model.endpoint=")
    assert "HTTP 500: the model crashed" in out["fail"]["error"]
    # chat_template=never: plain prompts go to /completions; each failing request was sent twice, the rest once
    assert {r["path"] for r in served.requests} == {"/v1/completions"}
    assert served.seen == {"fine": 1, "also fine": 1, "HANG": 2, "FAIL": 2}


def test_stream_task_yields_pieces_and_retries_only_before_the_first(
    server: tuple[str, Served], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, served = server
    lines = [{"id": "rate", "prompt": "RATE me"}, {"id": "drop", "prompt": "DROP me"}, {"id": "c", "prompt": "x y"}]
    path = records(tmp_path / "in.jsonl", lines)
    assert omnirun(tmp_path / "out", *args(endpoint, "task=stream", f"input.path={path}")) == 0
    out = {r["id"]: r for r in rows(only_run_dir(tmp_path / "out"))}
    assert out["rate"]["output"] == "echo RATE me" and len(out["rate"]["token_times_ms"]) == 3
    assert out["c"]["output"] == "echo x y" and out["c"]["ttft_ms"] > 0
    assert "not retried" in out["drop"]["error"]  # its first piece was already printed
    assert "echo RATE me" in capsys.readouterr().out
    assert served.seen["DROP me"] == 1


def test_a_server_that_is_down_stops_the_run_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    path = records(tmp_path / "in.jsonl", [{"prompt": "hi"}] * 5)
    endpoint = f"http://127.0.0.1:{port}/v1"
    code = omnirun(tmp_path / "out", *args(endpoint, f"input.path={path}", "task.retries=0"))
    assert code == 1
    err = capsys.readouterr().err
    assert f"model.endpoint={endpoint}" in err and "connection refused" in err
    assert not (only_run_dir(tmp_path / "out") / "outputs.jsonl").read_text().strip()


def test_a_refused_api_key_stops_the_run_naming_its_variable(
    server: tuple[str, Served], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, served = server
    served.key = SECRET
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert omnirun(tmp_path / "out", *args(endpoint, "input.prompt=hi")) == 1
    err = capsys.readouterr().err
    assert (
        "HTTP 401: Incorrect API key provided" in err and "OPENAI_API_KEY (model.api_key_env), which is not set" in err
    )
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert omnirun(tmp_path / "ok", *args(endpoint, "input.prompt=hi")) == 0
    assert "echo hi" in capsys.readouterr().out


def test_every_request_failing_stops_the_run_instead_of_writing_error_rows(
    server: tuple[str, Served], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, _ = server
    path = records(tmp_path / "in.jsonl", [{"prompt": f"FAIL {i}"} for i in range(5)])
    code = omnirun(tmp_path / "out", *args(endpoint, "task=batch", f"input.path={path}", "task.retries=0"))
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: model.endpoint={endpoint}: POST /chat/completions: HTTP 500: the model crashed" in err
    assert not (only_run_dir(tmp_path / "out") / "outputs.jsonl").read_text().strip()


def test_config_problems_are_refused_before_any_request(
    server: tuple[str, Served], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, served = server
    assert omnirun(tmp_path, "hardware.backend=openai", "input.prompt=hi") == 2
    assert "needs model.endpoint=http(s)://host:port/v1" in capsys.readouterr().err
    assert omnirun(tmp_path, *args(endpoint, "input.prompt=hi", "generation.num_beams=2")) == 2
    assert "generation.num_beams=2" in capsys.readouterr().err
    assert omnirun(tmp_path, *args(endpoint, "task=benchmark")) == 2
    assert "task=batch" in capsys.readouterr().err
    assert omnirun(tmp_path, *args(endpoint, "input.prompt=hi", "hardware.quantization=int8")) == 2
    assert "hardware.quantization set explicitly, which the server decides" in capsys.readouterr().err
    assert served.requests == []


def test_resume_sends_only_the_records_not_yet_written(server: tuple[str, Served], tmp_path: Path) -> None:
    endpoint, served = server
    path = records(tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"p {i}"} for i in range(12)])
    run_args = args(endpoint, "task=generate", f"input.path={path}", "task.batch_size=1")
    assert omnirun(tmp_path / "out", *run_args) == 0
    run_dir = only_run_dir(tmp_path / "out")
    complete = (run_dir / "outputs.jsonl").read_text().splitlines()
    # as a run killed after its first window (8 records) and half a line of the next would have left it
    (run_dir / "outputs.jsonl").write_text("\n".join(complete[:8]) + "\n" + complete[8][:10])
    (run_dir / "metrics.json").unlink()
    served.requests.clear()
    assert omnirun(tmp_path / "out", *run_args, f"resume={run_dir}") == 0
    assert [r["body"]["messages"][0]["content"] for r in served.requests] == [f"p {i}" for i in range(8, 12)]
    assert (run_dir / "outputs.jsonl").read_text().splitlines()[:8] == complete[:8]
    assert [r["output"] for r in rows(run_dir)] == [f"echo p {i}" for i in range(12)]


def test_embed_goes_to_the_embeddings_endpoint_and_other_analysis_is_refused(
    server: tuple[str, Served], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, served = server
    path = records(tmp_path / "in.jsonl", [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two words"}])
    assert omnirun(tmp_path / "out", *args(endpoint, "task=embed", f"input.path={path}")) == 0
    out = {r["id"]: r for r in rows(only_run_dir(tmp_path / "out"))}
    assert out["a"]["embedding"] == [0.6, 0.8] and out["a"]["dim"] == 2  # task.normalize: unit length
    assert out["b"]["embedding"] == pytest.approx([3 / 73**0.5, 8 / 73**0.5])
    assert [r["body"]["input"] for r in served.requests] == [["one", "two words"]]  # one request per batch
    assert omnirun(tmp_path / "cls", *args(endpoint, "task=classify", f"input.path={path}")) == 2
    assert "embed (/v1/embeddings) only" in capsys.readouterr().err


def test_the_python_api_sends_prompts_as_they_are_and_conversations_as_messages(server: tuple[str, Served]) -> None:
    from omnirun.config import HardwareConfig, ModelConfig
    from omnirun.engine.openai import OpenAIEngine

    endpoint, served = server
    engine = OpenAIEngine(ModelConfig(name=MODEL, endpoint=endpoint), HardwareConfig(), concurrency=2)
    with engine:
        assert engine.plan is not None and engine.plan.batch_size == 8
        assert engine.infer(["a b", "c"], max_new_tokens=2) == ["echo a", "echo c"]
        assert engine.chat([{"role": "user", "content": "hi"}]) == "echo hi"
        assert "".join(engine.stream("x y")) == "echo x y"
    paths = [r["path"] for r in served.requests]
    assert paths == ["/v1/completions"] * 2 + ["/v1/chat/completions", "/v1/completions"]
    assert served.requests[0]["body"]["max_tokens"] == 2
    assert served.requests[2]["body"]["messages"] == [{"role": "user", "content": "hi"}]


def test_generation_settings_map_to_the_openai_body_or_are_refused() -> None:
    from omnirun.config import GenerationConfig
    from omnirun.engine.openai.body import sampling
    from omnirun.errors import ConfigError

    plain = sampling(GenerationConfig(), seed=None)
    assert plain["temperature"] == 0.7 and plain["top_p"] == 0.9 and plain["max_tokens"] == 100
    assert not {"top_k", "repetition_penalty", "min_tokens", "seed", "response_format"} & set(plain)
    fmt = {"type": "json_object"}
    tuned = GenerationConfig(top_k=20, repetition_penalty=1.1, min_new_tokens=2, response_format=fmt)
    assert sampling(tuned, seed=7) | {"stream_options": None} == {
        "max_tokens": 100,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "repetition_penalty": 1.1,
        "min_tokens": 2,
        "seed": 7,
        "response_format": fmt,
        "stream": True,
        "stream_options": None,
    }
    for bad, key in (
        (GenerationConfig(num_beams=2, do_sample=False), "generation.num_beams=2"),
        (GenerationConfig(no_repeat_ngram_size=3), "generation.no_repeat_ngram_size=3"),
        (GenerationConfig(response_format={"type": "regex", "pattern": "a+"}), "type regex"),
    ):
        with pytest.raises(ConfigError, match=key):
            sampling(bad, seed=None)


def test_an_openai_batch_file_replays_each_line_on_its_own_endpoint(server: tuple[str, Served], tmp_path: Path) -> None:
    endpoint, served = server
    lines = [
        {"custom_id": "c1", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "raw text"}},
        {
            "custom_id": "c2",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "as chat"}], "max_tokens": 2},
        },
    ]
    path = records(tmp_path / "batch.jsonl", lines)
    assert omnirun(tmp_path / "out", *args(endpoint, "task=batch", f"input.path={path}")) == 0
    sent = {r["path"]: r["body"] for r in served.requests}
    assert sent["/v1/completions"]["prompt"] == "raw text"
    assert sent["/v1/chat/completions"]["messages"] == [{"role": "user", "content": "as chat"}]
    assert sent["/v1/chat/completions"]["max_tokens"] == 2
    assert [r["output"] for r in rows(only_run_dir(tmp_path / "out"))] == ["echo raw text", "echo as"]
