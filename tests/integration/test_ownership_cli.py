"""From the command line, on tiny models: a run owns its directory (a second writer is refused with the holder's
pid), checks that its input did not change while it read it, exports only into a new or empty folder, answers
OpenAI requests by their own ids, stops on SIGTERM / SIGHUP as on Ctrl-C, redacts secrets by value without
rewriting data, and writes strict UTF-8 JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_heads import build_head

from omnirun.results.writer import ResultWriter

from clirun import omnirun, only_run_dir


def prompts(n: int) -> str:
    return "".join(json.dumps({"id": f"r{i}", "prompt": f"tell me about item {i}"}) + "\n" for i in range(n))


def rows_of(run_dir: Path) -> list[dict[str, Any]]:
    """outputs.jsonl read as strict readers read it (valid UTF-8, no NaN)."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    text = (run_dir / "outputs.jsonl").read_bytes().decode("utf-8")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def metrics_of(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "metrics.json").read_text()))


# ------------------------------------------------------------------------------------------- input changes
def test_an_input_truncated_during_the_run_stops_it_and_resume_finishes_it(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path, text = tmp_path / "in.jsonl", prompts(40)
    path.write_text(text)
    flush, truncated = ResultWriter.flush, list[bool]()

    def flush_then_truncate(self: ResultWriter) -> None:
        flush(self)
        if not truncated and self.path.stat().st_size:
            truncated.append(True)
            with path.open("r+b") as f:
                f.truncate(len(text) // 3)

    monkeypatch.setattr(ResultWriter, "flush", flush_then_truncate)
    args = (f"model.name={tiny_llama}", f"input.path={path}", "task.batch_size=1", "generation.max_new_tokens=2")
    assert omnirun(tmp_path / "out", *args) == 1
    err = capsys.readouterr().err
    run_dir = only_run_dir(tmp_path / "out")
    assert "input.path=" in err and "changed while the run was reading it" in err and f"resume={run_dir}" in err
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "failed" and "changed while the run was reading it" in metrics["error"]
    assert [r["id"] for r in rows_of(run_dir)] == [f"r{i}" for i in range(8)]  # the first window, kept
    monkeypatch.setattr(ResultWriter, "flush", flush)
    path.write_text(text)  # the input as it was
    assert omnirun(tmp_path / "out", *args, f"resume={run_dir}") == 0
    assert [r["id"] for r in rows_of(run_dir)] == [f"r{i}" for i in range(40)]
    assert metrics_of(run_dir)["status"] == "completed"


# ------------------------------------------------------------------------------ one writer; SIGTERM / SIGHUP
def start(root: Path, model: Path, path: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "omnirun", f"output.root={root}", "task.progress=false", f"model.name={model}"]
    args += [f"input.path={path}", "task.batch_size=1", "generation.max_new_tokens=8", "generation.min_new_tokens=8"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rows(root: Path, proc: subprocess.Popen[str], timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outputs = list(root.rglob("outputs.jsonl"))
        if outputs and outputs[0].stat().st_size:
            return outputs[0].parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the run wrote no rows in time")


@pytest.mark.slow  # a second process, started and stopped
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_second_writer_is_refused_and_a_stop_signal_ends_the_run_as_ctrl_c_does(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str], signum: int
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(prompts(3000))
    root = tmp_path / "out"
    proc = start(root, tiny_llama, path)
    try:
        run_dir = wait_for_rows(root, proc)
        if signum == signal.SIGTERM:  # resume= into the running run: refused, naming the writer
            args = (f"model.name={tiny_llama}", f"input.path={path}", "task.batch_size=1")
            resume = (*args, "generation.max_new_tokens=8", "generation.min_new_tokens=8", f"resume={run_dir}")
            assert omnirun(root, *resume) == 2
            err = capsys.readouterr().err
            assert f"pid {proc.pid}" in err and len(err.strip().splitlines()) == 1
            assert proc.poll() is None
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum
    assert f"interrupted by {signal.Signals(signum).name}" in err and f"resume={run_dir}" in err
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "interrupted"
    rows = rows_of(run_dir)
    assert 0 < len(rows) < 3000 and [r["id"] for r in rows] == [f"r{i}" for i in range(len(rows))]
    assert not (run_dir / ".omnirun.lock").read_text().strip()  # released


# --------------------------------------------------------------------------------------------------- export
def test_export_refuses_a_populated_folder_and_lists_only_its_files(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True)
    (folder / "chat_template.jinja").write_text("{{ 'foreign' }}")
    code = omnirun(tmp_path / "a", f"model.name={tiny_llama}", "task=export", f"export.path={folder}")
    err = capsys.readouterr().err
    assert code == 2 and "export.path=" in err and "new or an empty folder" in err
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").rglob("config.yaml"))  # before any run dir
    assert sorted(p.name for p in folder.iterdir()) == [".ssh", "chat_template.jinja"]
    target = tmp_path / "new" / "model"
    assert omnirun(tmp_path / "b", f"model.name={tiny_llama}", "task=export", f"export.path={target}") == 0
    listed = json.loads((only_run_dir(tmp_path / "b") / "export.json").read_text())["files"]
    assert listed == sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------- OpenAI batch
def test_openai_batch_output_answers_each_request_once_by_its_id(tmp_path: Path, tiny_llama: Path) -> None:
    def req(custom_id: str, body: Any) -> str:
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})

    good = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    lines = [req("2", good), req("1", "not an object"), req("3", good)[:-15], req("4", good)]
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert omnirun(tmp_path / "out", f"model.name={tiny_llama}", f"input.path={path}") == 0
    out = [json.loads(x) for x in (only_run_dir(tmp_path / "out") / "batch_output.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in out] == ["2", "1", "3", "4"]
    assert [x["response"]["status_code"] for x in out] == [200, 400, 400, 200]


def test_openai_batch_on_a_task_without_that_shape_is_refused_before_loading(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "in.jsonl"
    records.write_text('{"prompt": "a text"}\n')
    code = omnirun(
        tmp_path, "task=classify", f"model.name={tiny_llama}", f"input.path={records}", "output.openai_batch=true"
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "output.openai_batch" in err and "task=classify" in err and "embed" in err
    assert not list(tmp_path.rglob("config.yaml"))


def test_openai_batch_for_embeddings(tmp_path: Path) -> None:
    model = build_head("bert-base", tmp_path / "bert")
    records = tmp_path / "in.jsonl"
    records.write_text('{"id": "a", "prompt": "one text"}\n{"id": "b", "prompt": ""}\n')
    args = ("task=embed", f"model.name={model}", f"input.path={records}", "output.openai_batch=true")
    assert omnirun(tmp_path / "out", *args) == 0
    lines = (only_run_dir(tmp_path / "out") / "batch_output.jsonl").read_text().splitlines()
    first, second = (json.loads(x) for x in lines)
    assert first["custom_id"] == "a" and first["response"]["body"]["object"] == "list"
    assert len(first["response"]["body"]["data"][0]["embedding"]) > 0
    assert second["custom_id"] == "b" and second["response"]["status_code"] == 400


# ------------------------------------------------------------------------------------- redaction, strict JSON
def test_redaction_goes_by_value_and_keeps_files_parseable(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = 'Pa"ss\nW0rd-77'
    monkeypatch.setenv("PARTITION_KEY", "document")
    monkeypatch.setenv("TOKENIZER_DIR", str(tiny_llama))
    monkeypatch.setenv("DB_PASSWORD", secret)
    path = tmp_path / "in.jsonl"
    records = [{"id": "a", "prompt": "summarize the document"}, {"id": "b", "prompt": f"password {secret} here"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = (f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=2")
    assert omnirun(tmp_path / "out", *args) == 0
    run_dir = only_run_dir(tmp_path / "out")
    first, second = rows_of(run_dir)
    assert first["prompt"] == "summarize the document" and second["prompt"] == "password *** here"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == str(tiny_llama)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["name"] == str(tiny_llama)
    forms = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    for file in run_dir.iterdir():
        if file.is_file():
            text = file.read_text(encoding="utf-8")
            assert not any(form in text for form in forms), file.name
    assert omnirun(tmp_path / "rerun", f"rerun={run_dir}") == 0


def test_a_lone_surrogate_is_echoed_as_the_replacement_character(tmp_path: Path, tiny_llama: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "prompt": "bad \\ud800 text"}\n{"id": "b", "prompt": "fine"}\n')
    args = (f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=2", "output.openai_batch=true")
    assert omnirun(tmp_path, *args) == 0
    run_dir = only_run_dir(tmp_path)
    bad, fine = rows_of(run_dir)
    assert bad["prompt"] == "bad \ufffd text" and "lone surrogate" in bad["error"] and fine["error"] is None
    for name in ("batch_output.jsonl", "metrics.json", "manifest.json"):
        (run_dir / name).read_bytes().decode("utf-8")
    assert os.path.getsize(run_dir / "outputs.jsonl") > 0
