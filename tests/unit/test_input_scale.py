"""Memory that does not grow with the input: lazy records, rows not kept, streaming resume, bounded metrics."""

from __future__ import annotations

import itertools
import json
import random
import tracemalloc
from pathlib import Path

import pytest

from omnirun import distributed, inputs, rundir
from omnirun.config import InputConfig
from omnirun.errors import ConfigError
from omnirun.inputs.records import MAX_PROBLEMS, Record, Records
from omnirun.results.schema import ResultRow, Stats, summarize
from omnirun.results.writer import MAX_DISTINCT, Distribution, ResultWriter, RunTotals


def write_lines(path: Path, n: int, bad_every: int = 0) -> Path:
    with path.open("w") as f:
        for i in range(n):
            bad = bad_every and i % bad_every == 0
            f.write("{not json\n" if bad else json.dumps({"id": f"r{i}", "prompt": f"prompt {i}"}) + "\n")
    return path


def test_records_are_read_lazily_and_again_on_each_iteration(tmp_path: Path) -> None:
    data = inputs.read(InputConfig(path=str(write_lines(tmp_path / "in.jsonl", 1000, bad_every=7))))
    assert isinstance(data.records, Records) and len(data.records) == 1000
    first, second = list(data.records), list(data.records)
    assert [r.id for r in first] == [r.id for r in second] and [r.index for r in first] == list(range(1000))
    assert data.num_problems == 143 and len(data.problems) == MAX_PROBLEMS  # the first 100 kept, all counted
    assert data.problems[0] == "line 1: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    assert data.records[-1].id == "r999" and [r.id for r in data.records[2:4]] == ["r2", "r3"]
    assert [r.id for r in data.records.from_position(998)] == ["r998", "r999"]
    assert len(inputs.read(InputConfig(path=str(tmp_path / "in.jsonl"), limit=5)).records) == 5


def test_reading_a_large_input_holds_one_record_at_a_time(tmp_path: Path) -> None:
    data = inputs.read(InputConfig(path=str(write_lines(tmp_path / "big.jsonl", 20_000))))
    tracemalloc.start()
    try:
        n = sum(1 for _ in data.records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 20_000
    assert peak < 2**20, f"iterating 20,000 records peaked at {peak / 2**20:.1f} MiB"  # a list: ~12 MiB


def test_an_empty_or_non_jsonl_file_still_fails_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "array.jsonl").write_text("1\n2\n")
    with pytest.raises(Exception, match="is empty"):
        inputs.read(InputConfig(path=str(tmp_path / "empty.jsonl")))
    with pytest.raises(Exception, match="is not JSONL"):
        inputs.read(InputConfig(path=str(tmp_path / "array.jsonl")))


@pytest.mark.parametrize("values", [[1.5], [3.0, 1.0, 2.0, 2.0], [float(i % 37) * 0.1 for i in range(5000)]])
def test_an_exact_distribution_gives_the_stats_of_the_values(values: list[float]) -> None:
    dist = Distribution()
    for v in values:
        dist.add(v)
    assert dist.stats() == Stats.of(values)


def test_past_max_distinct_values_percentiles_stay_within_a_tenth_of_a_percent() -> None:
    rng = random.Random(0)
    values = [rng.lognormvariate(3, 1) for _ in range(MAX_DISTINCT * 2)]
    dist = Distribution()
    for v in values:
        dist.add(v)
    assert dist.binned and len(dist.counts) < MAX_DISTINCT
    got, exact = dist.stats(), Stats.of(values)
    assert got is not None and exact is not None
    for name in ("mean", "p50", "p90", "p99"):
        assert getattr(got, name) == pytest.approx(getattr(exact, name), rel=1e-3)


def test_totals_merged_across_ranks_equal_the_totals_of_all_rows() -> None:
    rows = [
        ResultRow(id=str(i), output="x", input_tokens=3, output_tokens=i % 4 + 1, ttft_ms=i / 7, e2e_ms=i / 3)
        if i % 5
        else ResultRow(id=str(i), error="bad")
        for i in range(200)
    ]
    parts = [RunTotals(), RunTotals()]
    for i, row in enumerate(rows):
        parts[i // 120].add(row)
    parts[0].merge(parts[1])
    kw = {"status": "completed", "load_model_s": 1.0, "total_s": 2.0, "generation_s": 1.0, "memory": None}
    merged, whole = summarize(parts[0], **kw), summarize(rows, **kw)  # type: ignore[arg-type]
    assert merged.num_samples == whole.num_samples == 200 and merged.num_errors == 40
    assert merged.output_tokens == whole.output_tokens and merged.e2e_ms == whole.e2e_ms
    assert merged.ttft_ms == whole.ttft_ms == Stats.of([r.ttft_ms for r in rows if r.ok and r.ttft_ms is not None])


def test_the_writer_keeps_no_rows(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "outputs.jsonl")
    for i in range(10):
        writer.write(ResultRow(id=str(i), prompt="p", output="o", output_tokens=2, e2e_ms=1.0))
    writer.close()
    assert not hasattr(writer, "rows") and writer.totals.num_samples == 10 and writer.totals.output_tokens == 20
    assert len((tmp_path / "outputs.jsonl").read_text().splitlines()) == 10


def test_shard_bounds_cover_the_input_in_whole_windows() -> None:
    for n in (0, 1, 63, 64, 1000, 1001):
        spans = [distributed.shard_bounds(n, distributed.Rank(r, 3, r, None), unit=64) for r in range(3)]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert all(first % 64 == 0 for first, _ in spans)
        items = list(range(n))
        assert [distributed.shard(items, distributed.Rank(r, 3, r, None), 64) for r in range(3)] == [
            items[a:b] for a, b in spans
        ]


def reference_prefix(ids: list[str], expected: list[str], window: int) -> int:
    """The earlier, in-memory finished_prefix (the ids already read), for comparison."""
    matched = next((i for i, (a, b) in enumerate(zip(ids, expected, strict=False)) if a != b), len(ids))
    matched = min(matched, len(expected))
    keep = matched - matched % window if window > 1 else matched
    tail = ids[matched:]
    window_ids = set(expected[keep : keep + window]) if window > 1 else set()
    if tail and not set(tail) <= window_ids:
        raise ConfigError("mismatch")
    return keep


def test_streaming_resume_matches_the_in_memory_rule(tmp_path: Path) -> None:
    rng = random.Random(1)
    for case in range(300):
        expected = [f"id{i}" for i in range(rng.randint(0, 40))]
        window = rng.choice([1, 2, 4, 8])
        done = expected[: rng.randint(0, len(expected))]
        if done and rng.random() < 0.4:  # the last window written out of order (batched by length)
            k = len(done) - len(done) % window
            tail = done[k:]
            rng.shuffle(tail)
            done = done[:k] + tail
        if rng.random() < 0.15:
            done = [*done, rng.choice(["zz", *expected[:3]])]
        run = rundir.RunDir(tmp_path / f"run{case}")
        run.path.mkdir()
        text = "".join(json.dumps({"id": i}) + "\n" for i in done)
        run.outputs.write_text(text + ('{"id": "torn' if rng.random() < 0.3 else ""))
        try:
            want: int | str = reference_prefix(done, expected, window)
        except ConfigError:
            want = "error"
        try:
            got: int | str = rundir.finished_prefix(run, iter(expected), window)
        except ConfigError:
            got = "error"
        assert got == want, (case, done, expected, window)
        if isinstance(got, int):
            assert [json.loads(x)["id"] for x in run.outputs.read_text().splitlines()] == done[:got]


def test_a_damaged_line_with_lines_after_it_still_stops_the_resume(tmp_path: Path) -> None:
    run = rundir.RunDir(tmp_path)
    run.outputs.write_text('{"id": "a"}\n{"id": \n{"id": "c"}\n{"id": "d"}\n')
    with pytest.raises(ConfigError, match="line 2 is damaged and 2 lines follow it"):
        rundir.finished_prefix(run, ["a", "b", "c", "d"], 1)


def test_inputs_made_from_a_list_still_work() -> None:
    data = inputs.Inputs([Record(0, "a", prompt="x"), Record(1, "b", error="bad")], "jsonl", None)  # type: ignore[arg-type]
    assert len(data.records) == 2 and data.problems == ["bad"] and data.records[1].id == "b"
