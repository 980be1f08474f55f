"""The adversarial pass, kept: one test per case a careless or hostile user found. Each failed before its fix.

The rule under test: a bad record becomes its own error row and the run goes on; only a failure that is not
about a record stops a run, with one line, the finished records kept, and the documented exit status
(0 done, 1 a record-independent failure, 2 a configuration or input problem, 130 interrupted).
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from clirun import omnirun, only_run_dir
from tiny_models import CHAT_TEMPLATE, build_tiny

STRICT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    + CHAT_TEMPLATE.split("{% for message in messages %}", 1)[1].split("{% endfor %}", 1)[0]
    + "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def strict_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama whose chat template rejects two user turns in a row (as Llama-2's and Mistral's do)."""
    return build_tiny("llama", tmp_path_factory.mktemp("strict-llama"), chat_template=STRICT_TEMPLATE)


@pytest.fixture(scope="module")
def short_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2-style model with a 64-token context."""
    return build_tiny("gpt2", tmp_path_factory.mktemp("short-gpt2"), n_positions=64)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def rows_of(root: Path) -> list[dict[str, Any]]:
    text = (only_run_dir(root) / "outputs.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def metrics_of(root: Path) -> dict[str, Any]:
    return json.loads((only_run_dir(root) / "metrics.json").read_text())


def run_lines(tmp_path: Path, model: Path, lines: list[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    path = write_lines(tmp_path / "in.jsonl", lines)
    code = omnirun(tmp_path / "out", f"model.name={model}", f"input.path={path}", "generation.max_new_tokens=2", *args)
    return code, rows_of(tmp_path / "out") if code == 0 else []


def test_lone_surrogate_prompt_is_an_error_row(tmp_path: Path, tiny_llama: Path) -> None:
    code, rows = run_lines(tmp_path, tiny_llama, ['{"prompt": "ok"}', '{"prompt": "x\\ud800"}', '{"prompt": "ok"}'])
    assert code == 0
    assert [r["error"] is None for r in rows] == [True, False, True]
    assert "surrogate" in rows[1]["error"] and rows[0]["output"] is not None and rows[2]["output"] is not None


def test_lone_surrogate_prompt_fails_early_with_on_error_fail(tmp_path: Path, tiny_llama: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ['{"prompt": "x\\ud800"}'])
    assert omnirun(tmp_path / "out", f"model.name={tiny_llama}", f"input.path={path}", "input.on_error=fail") == 2


def test_lone_surrogate_id_keeps_the_window(tmp_path: Path, tiny_llama: Path) -> None:
    code, rows = run_lines(tmp_path, tiny_llama, ['{"id": "a\\ud800", "prompt": "hi"}', '{"id": "b", "prompt": "yo"}'])
    assert code == 0 and len(rows) == 2
    assert rows[0]["id"] == "a\ufffd" and rows[0]["output"] is not None and rows[1]["id"] == "b"


def test_prompt_plus_new_tokens_beyond_context_is_clipped(tmp_path: Path, short_gpt2: Path) -> None:
    long_prompt = " ".join(["the quick brown fox"] * 5)  # ~56 of the 64 positions
    lines = [json.dumps({"prompt": long_prompt, "max_new_tokens": 50}), '{"prompt": "short", "max_new_tokens": 3}']
    code, rows = run_lines(tmp_path, short_gpt2, lines, "generation=greedy")
    assert code == 0 and all(r["error"] is None for r in rows)
    assert rows[0]["input_tokens"] + rows[0]["output_tokens"] <= 64 and rows[0]["finish_reason"] == "length"
    assert rows[1]["output_tokens"] <= 3


def test_prompt_beyond_context_with_overflow_error_is_an_error_row(tmp_path: Path, short_gpt2: Path) -> None:
    long_prompt = " ".join(["the quick brown fox"] * 5)
    lines = [json.dumps({"prompt": long_prompt, "max_new_tokens": 50}), '{"prompt": "short"}']
    code, rows = run_lines(tmp_path, short_gpt2, lines, "task.overflow=error")
    assert code == 0
    assert "exceeds the model's context" in rows[0]["error"] and rows[1]["error"] is None


def test_record_the_chat_template_rejects_is_an_error_row(tmp_path: Path, strict_llama: Path) -> None:
    two_users = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    good = {"messages": [{"role": "user", "content": "hello"}]}
    code, rows = run_lines(tmp_path, strict_llama, [json.dumps(two_users), json.dumps(good)], "task=chat")
    assert code == 0
    assert "alternate" in rows[0]["error"] and rows[1]["error"] is None


def test_stream_with_a_per_record_beam_search_is_an_error_row(tmp_path: Path, tiny_llama: Path) -> None:
    code, rows = run_lines(tmp_path, tiny_llama, ['{"prompt": "a", "num_beams": 2}', '{"prompt": "b"}'], "task=stream")
    assert code == 0
    assert "beam" in rows[0]["error"] and rows[1]["output"] is not None


def test_invalid_bytes_on_the_chat_stdin_do_not_end_the_conversation(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = io.BytesIO(b"hello\n\xff\xfe broken\nsecond turn\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw, encoding="utf-8"))
    assert omnirun(tmp_path, f"model.name={tiny_llama}", "task=chat", "generation.max_new_tokens=2") == 0
    rows = rows_of(tmp_path)
    assert len(rows) == 2 and all(r["error"] is None for r in rows)


def test_ctrl_c_in_a_real_run_keeps_finished_rows_and_resume_completes_them(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omnirun.engine.hf import engine as hf_engine

    lines = [json.dumps({"prompt": f"prompt number {i}"}) for i in range(6)]
    path = write_lines(tmp_path / "in.jsonl", lines)
    args = [f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=2", "task.batch_size=2"]
    args += ["task.sort_by_length=false"]
    assert omnirun(tmp_path / "ref", *args) == 0
    expected = rows_of(tmp_path / "ref")
    original, calls = hf_engine.HfEngine.generate, [0]

    def interrupted(self: Any, *a: Any, **k: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(hf_engine.HfEngine, "generate", interrupted)
    assert omnirun(tmp_path / "out", *args) == 130
    assert [r["id"] for r in rows_of(tmp_path / "out")] == ["1", "2"]  # the first batch of the window
    assert metrics_of(tmp_path / "out")["status"] == "interrupted"
    monkeypatch.setattr(hf_engine.HfEngine, "generate", original)
    assert omnirun(tmp_path / "out", *args, f"resume={only_run_dir(tmp_path / 'out')}") == 0
    strip = [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in rows_of(tmp_path / "out")]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in expected]


SECRET = "hf_" + "Z" * 30


def test_secrets_are_never_written(tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("MY_API_KEY", "sk-verysecretvalue123")
    code = omnirun(
        tmp_path, f"model.name={tiny_llama}", f"input.prompt=token {SECRET} key sk-verysecretvalue123",
        "generation.max_new_tokens=2",
    )  # fmt: skip
    assert code == 0
    for file in only_run_dir(tmp_path).iterdir():
        text = file.read_text(errors="replace")
        assert SECRET not in text and "sk-verysecretvalue123" not in text, file.name


def test_secrets_are_redacted_from_sweep_files(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    code = omnirun(
        tmp_path, "-m", f"model.name={tiny_llama}", f"input.prompt=a,{SECRET}", "generation.max_new_tokens=2"
    )
    assert code == 0
    for file in (tmp_path / "sweeps").rglob("*"):
        if file.is_file():
            assert SECRET not in file.read_text(errors="replace"), file
    out, err = capfd.readouterr()
    assert SECRET not in out and SECRET not in err  # Hydra's "Launching jobs" lines list the overrides


def test_oc_env_of_a_secret_is_refused(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    code = omnirun(tmp_path, f"model.name={tiny_llama}", "input.prompt=${oc.env:HF_TOKEN}")
    assert code == 2 and "HF_TOKEN" in capsys.readouterr().err
    assert not list(tmp_path.rglob("config.yaml"))


@pytest.mark.parametrize(
    "line",
    [
        '{"prompt": "a", "max_new_tokens": 2.5}',
        '{"prompt": "a", "max_new_tokens": true}',
        '{"prompt": "a", "max_new_tokens": 1e999}',
        '{"prompt": "a", "do_sample": "yes"}',
        '{"prompt": "a", "temperature": NaN}',
    ],
)
def test_per_record_parameters_of_the_wrong_type_are_error_rows(tmp_path: Path, tiny_llama: Path, line: str) -> None:
    code, rows = run_lines(tmp_path, tiny_llama, [line, '{"prompt": "fine"}'])
    assert code == 0 and rows[0]["error"] is not None and rows[1]["error"] is None


def test_a_byte_order_mark_is_skipped(tmp_path: Path, tiny_llama: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "first"}\n{"prompt": "second"}\n')
    assert (
        omnirun(tmp_path / "out", f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=1") == 0
    )
    assert all(r["error"] is None for r in rows_of(tmp_path / "out"))


@pytest.mark.parametrize("bad", ["[" * 100_000 + "]" * 100_000, '{"prompt": "a", "top_k": ' + "9" * 5000 + "}"])
def test_a_deep_or_huge_line_is_one_error_row(tmp_path: Path, tiny_llama: Path, bad: str) -> None:
    code, rows = run_lines(tmp_path, tiny_llama, ['{"prompt": "a"}', bad, '{"prompt": "b"}'])
    assert code == 0 and [r["error"] is None for r in rows] == [True, False, True]


@pytest.mark.parametrize(
    "args",
    [
        ["hardware.num_threads=100000"],
        ["+hydra.callbacks.x._target_=os.makedirs", "+hydra.callbacks.x.name=/tmp/pwned"],
        ["model.trust_remote_code=on"],
        ["model.trust_remote_code=yes"],
        ["+model.num_lables=3"],
        ["+generation.temprature=0.1"],
        ["seed=-5"],
        ["output.root=/proc/omnirun"],
    ],
)
def test_config_problems_exit_2_before_anything_runs(tmp_path: Path, tiny_llama: Path, args: list[str]) -> None:
    assert omnirun(tmp_path, f"model.name={tiny_llama}", *args) == 2
    assert not Path("/tmp/pwned").exists()


def test_benchmark_prompt_longer_than_the_context_exits_2(tmp_path: Path, short_gpt2: Path) -> None:
    args = [f"model.name={short_gpt2}", "task=benchmark", "benchmark.prompt_tokens=100", "benchmark.new_tokens=2"]
    assert omnirun(tmp_path, *args) == 2


def test_a_sweep_whose_jobs_all_failed_exits_1(tmp_path: Path, tiny_llama: Path) -> None:
    missing = [str(tmp_path / f"missing{i}.jsonl") for i in range(2)]
    assert omnirun(tmp_path, "-m", f"model.name={tiny_llama}", f"input.path={','.join(missing)}") == 1
    assert list(tmp_path.rglob("summary.csv"))


def test_resume_refuses_a_folder_that_is_not_this_job(tmp_path: Path, tiny_llama: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "config.yaml").write_text("seed: 7\n")
    assert omnirun(tmp_path, f"model.name={tiny_llama}", f"resume={other}") == 2
    assert sorted(p.name for p in other.iterdir()) == ["config.yaml"]


def test_resume_refuses_a_folder_holding_only_a_matching_config(tmp_path: Path, tiny_llama: Path) -> None:
    args = [f"model.name={tiny_llama}", "generation.max_new_tokens=1"]
    assert omnirun(tmp_path / "out", *args) == 0
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.yaml").write_text((only_run_dir(tmp_path / "out") / "config.yaml").read_text())
    assert omnirun(tmp_path / "out", *args, f"resume={fake}") == 2
    assert sorted(p.name for p in fake.iterdir()) == ["config.yaml"]


def test_resuming_a_completed_run_changes_nothing(tmp_path: Path, tiny_llama: Path) -> None:
    args = [f"model.name={tiny_llama}", "generation.max_new_tokens=2"]
    assert omnirun(tmp_path, *args) == 0
    run_dir = only_run_dir(tmp_path)
    before = (run_dir / "metrics.json").read_text()
    assert omnirun(tmp_path, *args, f"resume={run_dir}") == 0
    assert (run_dir / "metrics.json").read_text() == before


def test_resume_from_a_prefix_off_the_window_boundary_gives_the_uninterrupted_outputs(
    tmp_path: Path, tiny_llama: Path
) -> None:
    lines = [json.dumps({"prompt": f"sample {i} " + "word " * (i % 5)}) for i in range(40)]
    path = write_lines(tmp_path / "in.jsonl", lines)
    args = [f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=4", "task.batch_size=2"]
    assert omnirun(tmp_path / "ref", *args) == 0  # sampling on: any change of batches or seeds shows
    expected = [r["output"] for r in rows_of(tmp_path / "ref")]
    assert omnirun(tmp_path / "out", *args) == 0
    run_dir = only_run_dir(tmp_path / "out")
    kept = (run_dir / "outputs.jsonl").read_text().splitlines()[:21]  # window is 16: 5 into the second one
    (run_dir / "outputs.jsonl").write_text("".join(x + "\n" for x in kept))
    (run_dir / "metrics.json").unlink()
    assert omnirun(tmp_path / "out", *args, f"resume={run_dir}") == 0
    assert [r["output"] for r in rows_of(tmp_path / "out")] == expected


def test_a_damaged_middle_line_stops_resume_instead_of_dropping_what_follows(tmp_path: Path, tiny_llama: Path) -> None:
    lines = [json.dumps({"prompt": f"p{i}"}) for i in range(5)]
    path = write_lines(tmp_path / "in.jsonl", lines)
    args = [f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=1"]
    assert omnirun(tmp_path, *args) == 0
    run_dir = only_run_dir(tmp_path)
    out = (run_dir / "outputs.jsonl").read_text().splitlines()
    out[1] = out[1][:10]
    (run_dir / "outputs.jsonl").write_text("".join(x + "\n" for x in out))
    (run_dir / "metrics.json").unlink()
    assert omnirun(tmp_path, *args, f"resume={run_dir}") == 2
    assert len((run_dir / "outputs.jsonl").read_text().splitlines()) == 5  # nothing dropped


def test_resume_removes_a_stale_error_file(tmp_path: Path, tiny_llama: Path) -> None:
    args = [f"model.name={tiny_llama}", "generation.max_new_tokens=1"]
    assert omnirun(tmp_path, *args) == 0
    run_dir = only_run_dir(tmp_path)
    (run_dir / "error.txt").write_text("an earlier failure")
    (run_dir / "metrics.json").unlink()
    (run_dir / "outputs.jsonl").write_text("")
    assert omnirun(tmp_path, *args, f"resume={run_dir}") == 0
    assert not (run_dir / "error.txt").exists()


def test_tilde_in_output_root_is_the_home_folder(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omnirun import cli

    monkeypatch.setenv("HOME", str(tmp_path))
    cli.main(["output.root='~/runs'", "task.progress=false", f"model.name={tiny_llama}", "generation.max_new_tokens=1"])
    assert list((tmp_path / "runs").rglob("outputs.jsonl"))
    assert not Path("~").exists()


def test_template_and_field_apply_to_jsonl(tmp_path: Path, tiny_llama: Path) -> None:
    lines = ['{"question": "why", "text": "t1"}', '{"question": "how", "text": "t2"}']
    code, rows = run_lines(tmp_path, tiny_llama, lines, "input.template='Q: {question}'")
    assert code == 0 and [r["prompt"] for r in rows] == ["Q: why", "Q: how"]
    (tmp_path / "f").mkdir()
    code, rows = run_lines(tmp_path / "f", tiny_llama, lines, "input.field=text")
    assert code == 0 and [r["prompt"] for r in rows] == ["t1", "t2"]


def test_a_template_cannot_reach_into_python_objects(tmp_path: Path, tiny_llama: Path) -> None:
    template = "input.template='{question.__class__.__mro__}'"
    code, rows = run_lines(tmp_path, tiny_llama, ['{"question": "q"}'], template)
    assert code == 0 and rows[0]["error"] is not None and "mro" not in (rows[0]["prompt"] or "")


# ------------------------------------------------------------------------------ the disk
def test_a_full_disk_mid_run_is_one_line_and_keeps_what_was_written(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from omnirun.results import writer

    original, flushes = writer.ResultWriter.flush, [0]

    class FullDisk:
        def __init__(self, real: Any) -> None:
            self.real = real

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    def flush(self: Any) -> None:
        flushes[0] += 1
        if flushes[0] == 2:
            self._file = FullDisk(self._file)
        original(self)

    monkeypatch.setattr(writer.ResultWriter, "flush", flush)
    lines = [json.dumps({"prompt": f"p{i}"}) for i in range(20)]
    code, _ = run_lines(tmp_path, tiny_llama, lines, "task.batch_size=1", "task.sort_by_length=false")
    assert code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "No space left on device" in err[0]
    run_dir = only_run_dir(tmp_path / "out")
    assert len((run_dir / "outputs.jsonl").read_text().splitlines()) == 8  # the first window, fsynced
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    assert (run_dir / "error.txt").read_text().strip()


def test_a_run_directory_deleted_mid_run_is_one_line(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from omnirun.results import writer

    original = writer.ResultWriter.flush

    def flush(self: Any) -> None:
        original(self)
        shutil.rmtree(self.path.parent, ignore_errors=True)

    monkeypatch.setattr(writer.ResultWriter, "flush", flush)
    path = write_lines(tmp_path / "in.jsonl", ['{"prompt": "a"}'])
    code = omnirun(tmp_path / "out", f"model.name={tiny_llama}", f"input.path={path}", "generation.max_new_tokens=1")
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([x for x in err.splitlines() if x.startswith("error:")]) == 1
