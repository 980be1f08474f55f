"""omnirun.tasks on a fake engine: batching windows, out-of-memory split-and-retry, per-record isolation,
Ctrl-C. Nothing finished is lost, and one bad record never costs the others."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path
from typing import Any

import pytest

from omnirun.config import GenerationConfig, TaskConfig
from omnirun.inputs import Record
from omnirun.results.writer import ResultWriter
from omnirun.tasks import batching
from omnirun.tasks.base import UNEXPLAINED_LIMIT, TaskContext
from omnirun.tasks.generate import run_generate

from unit.conftest import FakeEngine


def oom() -> RuntimeError:
    return RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def context(tmp_path: Path, batch_size: int, **task: Any) -> TaskContext:
    writer = ResultWriter(tmp_path / "outputs.jsonl")
    return TaskContext(TaskConfig(**{"sort_by_length": False, **task}), GenerationConfig(), 0, batch_size, writer)


def rows(tmp_path: Path, ctx: TaskContext) -> list[dict[str, Any]]:
    ctx.writer.close()
    return [json.loads(x) for x in (tmp_path / "outputs.jsonl").read_text().splitlines()]


def test_out_of_memory_splits_batches_and_remembers_the_size(tmp_path: Path, progress: Any) -> None:
    def fail(texts: list[str]) -> None:
        if len(texts) > 2 or any("huge" in t for t in texts):
            raise oom()

    records = [Record(i, str(i), prompt=f"p{i}" if i != 5 else "huge prompt") for i in range(20)]
    engine = FakeEngine(fail)
    ctx = context(tmp_path, 8)
    run_generate(engine, records, ctx, progress)  # type: ignore[arg-type]
    out = rows(tmp_path, ctx)
    assert [r["id"] for r in out] == [str(i) for i in range(20)]
    assert [r["output"] for r in out if r["error"] is None] == [f"P{i}" for i in range(20) if i != 5]
    assert "out of memory even alone" in out[5]["error"]
    assert ctx.batch_size == 2
    assert engine.calls[:3] == [8, 4, 2]  # 8 fails, 4 fails, 2 works
    assert max(engine.calls[-4:]) <= 2  # later windows start at the size that worked


def test_out_of_memory_retry_runs_after_the_failed_attempt_is_released(tmp_path: Path, progress: Any) -> None:
    """What the failed call held (its frames, through the exception's traceback) is gone before the retry."""
    held: list[weakref.ref[Any]] = []

    class Activations:
        pass

    def fail(texts: list[str]) -> None:
        if held:
            gc.collect()
            assert held[-1]() is None, "the failed attempt's memory is still referenced during the retry"
        if len(texts) > 1:
            activations = Activations()  # what a real forward pass would hold when it runs out of memory
            held.append(weakref.ref(activations))
            raise oom()

    ctx = context(tmp_path, 2)
    run_generate(FakeEngine(fail), [Record(i, str(i), prompt=f"p{i}") for i in range(2)], ctx, progress)  # type: ignore[arg-type]
    assert all(r["error"] is None for r in rows(tmp_path, ctx))


def test_a_record_that_breaks_its_batch_becomes_its_own_error_row(tmp_path: Path, progress: Any) -> None:
    def fail(texts: list[str]) -> None:
        if any("poison" in t for t in texts):
            raise ValueError("this prompt cannot be generated")

    records = [Record(i, str(i), prompt="poison" if i == 2 else f"p{i}") for i in range(6)]
    ctx = context(tmp_path, 4)
    run_generate(FakeEngine(fail), records, ctx, progress)  # type: ignore[arg-type]
    out = rows(tmp_path, ctx)
    assert [r["error"] is None for r in out] == [True, True, False, True, True, True]
    assert out[2]["error"] == "record 2: ValueError: this prompt cannot be generated"


def test_a_failure_no_record_escapes_stops_the_run(tmp_path: Path, progress: Any) -> None:
    """Three different records failing alone before any success, for no reason their inputs give: a broken
    model, so the run stops (rather than writing an error row for every record)."""

    def fail(texts: list[str]) -> None:
        raise RuntimeError("shape mismatch")

    ctx = context(tmp_path, 2)
    records = [Record(i, str(i), prompt=f"p{i}") for i in range(6)]
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_generate(FakeEngine(fail), records, ctx, progress)  # type: ignore[arg-type]
    assert ctx.unexplained == UNEXPLAINED_LIMIT


@pytest.mark.parametrize("position", [0, 3, 5])
def test_a_records_failure_is_its_own_wherever_it_sorts(tmp_path: Path, progress: Any, position: int) -> None:
    """A record that fails alone is that record's error row whether it comes first, in the middle or last: the
    cause decides, not the order (a failure before any success used to stop the run)."""

    def fail(texts: list[str]) -> None:
        if any(t == "poison" for t in texts):
            raise ValueError("this prompt cannot be generated")

    records = [Record(i, str(i), prompt="poison" if i == position else f"p{i}") for i in range(6)]
    ctx = context(tmp_path, 1)
    run_generate(FakeEngine(fail), records, ctx, progress)  # type: ignore[arg-type]
    out = rows(tmp_path, ctx)
    assert [r["error"] is not None for r in out] == [i == position for i in range(6)]


def test_two_failing_records_of_a_tiny_input_are_error_rows(tmp_path: Path, progress: Any) -> None:
    """Fewer than UNEXPLAINED_LIMIT records, all failing: nothing shows the model is broken, so they are rows."""

    def fail(texts: list[str]) -> None:
        raise ValueError("bad prompt")

    ctx = context(tmp_path, 1)
    run_generate(FakeEngine(fail), [Record(0, "0", prompt="x"), Record(1, "1", prompt="y")], ctx, progress)  # type: ignore[arg-type]
    assert [r["error"] for r in rows(tmp_path, ctx)] == [
        "record 0: ValueError: bad prompt",
        "record 1: ValueError: bad prompt",
    ]


def test_ctrl_c_writes_the_finished_records_of_the_current_window(tmp_path: Path, progress: Any) -> None:
    engine = FakeEngine()
    engine.fail = lambda texts: _interrupt_on_second_call(engine)
    ctx = context(tmp_path, 2)  # one window of 16
    with pytest.raises(KeyboardInterrupt):
        run_generate(engine, [Record(i, str(i), prompt="p" * (i + 1)) for i in range(6)], ctx, progress)  # type: ignore[arg-type]
    assert [r["id"] for r in rows(tmp_path, ctx)] == ["0", "1"]  # the first batch finished before Ctrl-C


def _interrupt_on_second_call(engine: FakeEngine) -> None:
    if len(engine.calls) == 2:
        raise KeyboardInterrupt


def test_windows_are_aligned_to_input_positions(tmp_path: Path, progress: Any) -> None:
    engine = FakeEngine()
    ctx = context(tmp_path, 2, sort_by_length=True)
    assert ctx.window == 16
    run_generate(engine, [Record(i, str(i), prompt="x" * (40 - i)) for i in range(40)], ctx, progress)  # type: ignore[arg-type]
    assert sum(engine.calls) == 40 and len(engine.calls) == 8 + 8 + 4  # 16 + 16 + 8 records, batches of 2


def test_oom_detection() -> None:
    assert batching.is_out_of_memory(MemoryError())
    assert batching.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert not batching.is_out_of_memory(RuntimeError("index out of range"))
