"""A run owns its files and checks what it read; redaction goes by value and keeps every file parseable; every
JSON file is strict (no NaN, no lone surrogate): the pieces, without a model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from omnirun import rundir, runlock, secrets
from omnirun.config import InputConfig, RunConfig
from omnirun.errors import ConfigError
from omnirun.inputs.guard import InputChanged
from omnirun.inputs.jsonl import read_jsonl
from omnirun.results import formats
from omnirun.results.schema import ResultRow, RunMetrics, Status
from omnirun.results.writer import ResultWriter
from omnirun.tasks import export


def strict_load(text: str) -> Any:
    """json.loads as strict readers (jq, serde, Go) read: no NaN / Infinity, no lone surrogate."""

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    value = json.loads(text, parse_constant=refuse)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate fails here
    return value


def strict_lines(path: Path) -> list[Any]:
    return [strict_load(line) for line in path.read_bytes().decode("utf-8").splitlines()]


# ------------------------------------------------------------------------------------------------ redaction
def test_ordinary_words_and_paths_in_secret_named_variables_are_not_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARTITION_KEY", "document")
    monkeypatch.setenv("TOKENIZER_DIR", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setenv("SORT_KEY", "Created-At")
    assert secrets.redact(f"a document in {tmp_path} Created-At") == f"a document in {tmp_path} Created-At"
    assert not secrets.is_secret_variable("TOKENIZER_DIR")
    assert secrets.is_secret_variable("MY_API_KEY") and secrets.is_secret_variable("AWS_SECRET_ACCESS_KEY")


def test_secret_values_are_redacted_in_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    value = 'p4ss"wörd\nline2'
    monkeypatch.setenv("DB_PASSWORD", value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc123DEF456")
    for form in (value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]):
        assert secrets.redact(f"<{form}>") == "<***>", form
    assert secrets.redact("key sk-abc123DEF456.") == "key ***."


def test_a_redacted_config_yaml_stays_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-V4lue-42"
    monkeypatch.setenv("MY_API_KEY", secret)
    run = rundir.RunDir(tmp_path)
    run.write_start(f"model:\n  name: {secret}\n  revision: main\ninput:\n  prompt: say {secret} twice\n", [])
    saved = yaml.safe_load(run.config.read_text())
    assert saved == {"model": {"name": "***", "revision": "main"}, "input": {"prompt": "say *** twice"}}
    unchanged = "model:\n  name: /a/model\n"
    run.write_start(unchanged, [])
    assert run.config.read_text() == unchanged  # no secret: written as it came


def test_json_files_are_redacted_structurally_manifest_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", '12345678"x\n')
    monkeypatch.setenv("NUMERIC_SECRET", "1234567890")
    run = rundir.RunDir(tmp_path)
    run.write_manifest({"model": {"name": 'tok 12345678"x\n here'}, "count": 1234567890, "n": 12345678901})
    manifest = strict_load(run.manifest.read_text())
    assert manifest["model"]["name"] == "tok *** here"
    assert manifest["count"] == 1234567890 and manifest["n"] == 12345678901  # numbers are never rewritten
    writer = ResultWriter(tmp_path / "outputs.jsonl")
    writer.write(ResultRow(id="1", prompt='say 12345678"x\n and 1234567890', output="ok"))
    writer.close()
    (row,) = strict_lines(tmp_path / "outputs.jsonl")
    assert row["prompt"] == "say *** and ***"


def test_command_line_quotes_a_redacted_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_" + "Ab1" * 10)
    monkeypatch.setattr(sys, "argv", ["omnirun", "model.revision=hf_" + "Ab1" * 10])
    assert rundir.command_line().endswith(" 'model.revision=***'")


# ----------------------------------------------------------------------------------------------- strict JSON
def test_rows_and_json_files_are_strict_utf8_json(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "outputs.jsonl")
    writer.write(ResultRow(id="\ud800x", prompt="a \ud800 b", error="record: text holds a lone surrogate"))
    writer.write(ResultRow(id="2", prompt="p", output="o", ttft_ms=float("nan"), e2e_ms=float("inf")))
    writer.close()
    first, second = strict_lines(tmp_path / "outputs.jsonl")
    assert first["prompt"] == "a \ufffd b" and first["id"] == "\ufffdx"
    assert second["ttft_ms"] is None and second["e2e_ms"] is None
    rundir.write_json(tmp_path / "m.json", {"x": float("nan"), "s": "\udcff", "ok": 1.5})
    assert strict_load((tmp_path / "m.json").read_text()) == {"x": None, "s": "\ufffd", "ok": 1.5}


def test_error_txt_is_valid_utf8(tmp_path: Path) -> None:
    run = rundir.RunDir(tmp_path)
    run.record_failure(ValueError("bad \ud800 text"), "bad")
    assert "bad \ufffd text" in run.error.read_bytes().decode("utf-8")
    assert strict_load(run.metrics.read_text())["status"] == "failed"


# ----------------------------------------------------------------------------------------------------- lock
HOLD = """
import sys, time
from pathlib import Path
from omnirun.runlock import RunLock
RunLock(Path(sys.argv[1])).acquire("test")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_run_directory_has_one_writer_and_a_killed_one_leaves_no_lock(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        assert runlock.holder(tmp_path) == child.pid
        with pytest.raises(ConfigError, match=rf"another omnirun process \(pid {child.pid}\)"):
            rundir.RunDir(tmp_path).lock("cannot resume")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert runlock.holder(tmp_path) is None  # the OS released it: a stale lock never blocks a resume
    lock = rundir.RunDir(tmp_path).lock("resume")
    assert (tmp_path / rundir.LOCK).read_text().strip() == str(os.getpid())
    lock.release()
    assert runlock.holder(tmp_path) is None


# ------------------------------------------------------------------------------------------ re-reading input
def lines(n: int) -> str:
    return "".join(json.dumps({"id": f"r{i}", "prompt": f"prompt number {i}"}) + "\n" for i in range(n))


def test_a_file_truncated_after_the_first_read_stops_the_next(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(lines(300))
    records, _ = read_jsonl(path, InputConfig(path=str(path)))
    assert len(records) == 300
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 3)
    with pytest.raises(InputChanged, match=r"input.path=.*changed while the run was reading it"):
        list(records)


def test_a_file_edited_in_place_with_the_same_size_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(lines(20))
    records, _ = read_jsonl(path, InputConfig(path=str(path)))
    it = iter(records)
    assert next(it).id == "r0"
    path.write_text(lines(20).replace("number 7", "NUMBER 7"))
    with pytest.raises(InputChanged, match="modified during the run"):
        list(it)


def test_a_touched_file_reads_on_and_an_unchanged_one_reads_again(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(lines(10))
    records, _ = read_jsonl(path, InputConfig(path=str(path)))
    assert [r.id for r in records] == [f"r{i}" for i in range(10)]
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert [r.id for r in records] == [f"r{i}" for i in range(10)]
    assert records[3].id == "r3" and [r.id for r in records.from_position(8)] == ["r8", "r9"]


# ---------------------------------------------------------------------------------------------------- CSV
@pytest.mark.parametrize(
    "body",
    [
        'id,prompt\na,"hello\nb,world\nc,three\n',  # the quote never closes
        'id,prompt\na,"hello\nb,world\nc,"three"\n',  # a later quote closes it, then text follows
        'id,prompt\na,"hel"lo\nb,world\nc,three\n',  # text after a closing quote
    ],
)
def test_a_broken_csv_quote_costs_its_row_only(tmp_path: Path, body: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(body)
    records = list(read_jsonl(path, InputConfig(path=str(path)))[0])
    assert records[0].error is not None and records[0].error.startswith("line 2: not readable CSV")
    assert [(r.id, r.prompt) for r in records[1:]] == [("b", "world"), ("c", "three")]


def test_a_quoted_value_may_still_span_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,prompt\na,"two\nlines, and ""quotes"""\nb,x\n')
    records = list(read_jsonl(path, InputConfig(path=str(path)))[0])
    assert [(r.id, r.prompt, r.error) for r in records] == [("a", 'two\nlines, and "quotes"', None), ("b", "x", None)]


# -------------------------------------------------------------------------------------- OpenAI batch error rows
def request(custom_id: str, content: str = "hi") -> str:
    body = {"messages": [{"role": "user", "content": content}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def test_openai_error_rows_carry_the_request_id(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    torn = request("3")[:-20]
    bad_body = json.dumps({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": "oops"})
    path.write_text("\n".join([request("2"), bad_body, torn, '{"custom_id": 7, "body": [}', "not json"]) + "\n")
    records = list(read_jsonl(path, InputConfig(path=str(path)))[0])
    assert [r.id for r in records] == ["2", "1", "3", "7", "5"]
    assert [r.error is None for r in records] == [True, False, False, False, False]
    assert "'body' as an object" in (records[1].error or "")
    rows: list[dict[str, Any]] = [{"id": r.id, "messages": [], "output": "o", "error": r.error} for r in records]
    answers = [formats.to_openai_response(row, "m", 0) for row in rows]
    assert [a["custom_id"] for a in answers] == ["2", "1", "3", "7", "5"]


# ---------------------------------------------------------------------------------------- output.openai_batch
def test_openai_batch_is_refused_for_tasks_without_an_openai_shape() -> None:
    with pytest.raises(ConfigError) as info:
        formats.check_openai_batch(True, "classify")
    message = str(info.value)
    assert "output.openai_batch" in message and "task=classify" in message and "embed" in message
    formats.check_openai_batch(True, "embed")
    formats.check_openai_batch(None, "classify")


def test_task_rows_answer_in_their_tasks_shape(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "a", "prompt": "x", "embedding": [0.5, 1.0], "input_tokens": 3, "error": None},
        {"id": "b", "prompt": "y", "embedding": None, "input_tokens": None, "error": "record b: empty"},
    ]
    (tmp_path / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = formats.write_openai_batch(tmp_path, "m", "embed")
    first, second = strict_lines(path)
    assert first["response"]["body"]["data"][0]["embedding"] == [0.5, 1.0] and first["custom_id"] == "a"
    assert second["response"]["status_code"] == 400


# --------------------------------------------------------------------------------------------------- export
def test_export_writes_only_into_a_new_or_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / ".ssh").mkdir()
    (tmp_path / "file").write_text("x")
    for fine in ("new", "empty"):
        export.check_target(RunConfig(export=export_cfg(tmp_path / fine)))
    for bad, rule in (
        ("full", "holding 1 entry (.ssh); export writes only into a new or an empty"),
        ("file", "is a file"),
    ):
        with pytest.raises(ConfigError, match=rf"export.path=.*{re.escape(rule)}"):
            export.check_target(RunConfig(export=export_cfg(tmp_path / bad)))


def export_cfg(path: Path) -> Any:
    from omnirun.config import ExportConfig

    return ExportConfig(path=str(path))


def test_exported_files_are_those_written_and_only_they_are_uploaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omnirun.engine.hf import export as hf_export

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "chat_template.jinja").write_text("foreign")
    before = hf_export.snapshot(folder)
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "sub").mkdir()
    (folder / "sub" / "config.json").write_text("{}")
    (folder / ".secret").write_text("x")
    assert hf_export.files_of(folder, before) == (".secret", "model.safetensors", "sub/config.json")
    uploads: list[list[str]] = []

    class FakeApi:
        def create_repo(self, *args: Any, **kwargs: Any) -> None:
            return None

        def create_commit(self, *, repo_id: str, operations: list[Any], commit_message: str) -> str:
            uploads.append(sorted(op.path_in_repo for op in operations))
            return f"https://hub/{repo_id}"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert hf_export.upload_files("me/m", folder, ["model.safetensors"]) == "https://hub/me/m"
    hf_export.push_to_hub("me/m", folder, None)
    assert uploads == [["model.safetensors"], ["chat_template.jinja", "model.safetensors", "sub/config.json"]]


def test_metrics_of_an_interrupted_run_are_strict(tmp_path: Path) -> None:
    run = rundir.RunDir(tmp_path)
    run.write_metrics(RunMetrics(status=Status.interrupted, output_tokens_per_s=float("nan")))
    assert strict_load(run.metrics.read_text())["output_tokens_per_s"] is None


def test_resume_matches_ids_as_they_were_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", "zz-Secret-99")
    writer = ResultWriter(tmp_path / "outputs.jsonl")
    for rid in ("a\ud800", "id zz-Secret-99", "c"):
        writer.write(ResultRow(id=rid, prompt="p", output="o"))
    writer.close()
    expected = ["a\ud800", "id zz-Secret-99", "c", "d"]
    assert rundir.finished_prefix(rundir.RunDir(tmp_path), expected) == 3


def test_the_variable_model_api_key_env_names_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that names a variable as its API key's holder makes it secret, whatever the name says."""
    from omnirun.config import ModelConfig
    from omnirun.secrets import redact

    monkeypatch.setenv("OMNIRUN_SERVER_BEARER", "sk-live-4f9a8b7c6d5e")
    assert redact("key sk-live-4f9a8b7c6d5e") == "key sk-live-4f9a8b7c6d5e"  # BEARER is no secret part
    ModelConfig(api_key_env="OMNIRUN_SERVER_BEARER").validate()
    assert redact("key sk-live-4f9a8b7c6d5e") == "key ***"
