"""The `cluster` config group and the cluster=ray driver's scheduling, without starting Ray: a fake `ray` module
finishes batches out of order and loses workers, and the driver must still write every row once, in input order."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from omnirun import rundir
from omnirun.cluster import ClusterConfig, ClusterKind
from omnirun.cluster.config import RAY_EXTRA
from omnirun.cluster.ray_run import BatchSettings, Tally, batch_records, numbered, stream, worker_error
from omnirun.cluster.worker import BatchResult
from omnirun.config import RunConfig
from omnirun.errors import ConfigError, OmnirunError
from omnirun.inputs import Record
from omnirun.results.writer import ResultWriter


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("workers", 0, "cluster.workers must be a positive integer, got 0"),
        ("cpus_per_worker", 0.0, "cluster.cpus_per_worker must be a positive number"),
        ("gpus_per_worker", -1.0, "cluster.gpus_per_worker must be 0 or a number of GPUs"),
        ("gpus_per_worker", 1.5, "cluster.gpus_per_worker above 1 must be a whole number of GPUs, got 1.5"),
        ("batch_size", "many", "cluster.batch_size must be a positive integer or 'auto', got 'many'"),
        ("max_task_retries", -1, "cluster.max_task_retries must be >= 0"),
        ("address", " ", "cluster.address must be unset (a local Ray), 'auto' or a ray://host:port address"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        replace(ClusterConfig(), **{key: value}).validate()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_fractional_gpus_and_local_default_are_valid() -> None:
    ClusterConfig(gpus_per_worker=0.25, cpus_per_worker=0.5, batch_size=10).validate()
    assert RunConfig().cluster.name == ClusterKind.local


def test_ray_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match="omnirun\\[ray\\]") as err:
        ClusterConfig(name=ClusterKind.ray).validate()
    assert str(err.value) == RAY_EXTRA
    ClusterConfig(name=ClusterKind.local).validate()  # cluster=local never needs Ray


def test_where_records_run_is_not_part_of_the_job() -> None:
    """A run started on a cluster may be resumed on one machine (and the reverse): the rows are the same."""
    local = RunConfig()
    on_ray = replace(local, cluster=ClusterConfig(name=ClusterKind.ray, workers=8, address="auto"))
    assert rundir.config_hash(on_ray) == rundir.config_hash(local)
    assert rundir.config_hash(replace(local, seed=1)) != rundir.config_hash(local)


@pytest.mark.parametrize(
    ("batch_size", "task_batch", "window", "expected"),
    [("auto", 4, 32, 32), (10, 4, 32, 32), (33, 4, 32, 64), ("auto", 1, 1, 8), (5, 1, 1, 5)],
)
def test_batches_are_whole_windows(batch_size: Any, task_batch: int, window: int, expected: int) -> None:
    assert batch_records(batch_size, task_batch, window) == expected


# ----------------------------------------------------------------------------------- the driver's loop
class Lost(Exception):
    """Stands for Ray's RayActorError: the worker of a batch died."""


@dataclass(eq=False)
class Ref:
    number: int
    records: list[Record]
    worker: int
    fail: BaseException | None = None


@dataclass
class FakeRay:
    """`ray.wait` returns the newest batch first (out of input order); `losses` batches lose their worker once."""

    losses: set[int] = field(default_factory=set)
    always_lost: bool = False
    broken: set[int] = field(default_factory=set)
    sent: list[tuple[int, int]] = field(default_factory=list)
    exceptions: Any = field(
        default_factory=lambda: SimpleNamespace(
            RayActorError=Lost, WorkerCrashedError=Lost, NodeDiedError=Lost, ObjectLostError=Lost
        )
    )

    def actor(self, worker: int) -> Any:
        def remote(number: int, records: list[Record], batch_size: int, window: int) -> Ref:
            self.sent.append((number, worker))
            fail: BaseException | None = None
            if number in self.broken:
                fail = RuntimeError("the model is broken")
            elif self.always_lost or number in self.losses:
                self.losses.discard(number)
                fail = Lost(f"worker {worker} died")
            return Ref(number, records, worker, fail)

        return SimpleNamespace(run_batch=SimpleNamespace(remote=remote))

    def wait(self, refs: list[Ref], num_returns: int, timeout: float) -> tuple[list[Ref], list[Ref]]:
        return [refs[-1]], refs[:-1]

    def get(self, ref: Ref) -> BatchResult:
        if ref.fail is not None:
            raise ref.fail
        lines = [json.dumps({"id": r.id, "output": "x", "output_tokens": 2}).encode() + b"\n" for r in ref.records]
        return BatchResult(ref.number, lines, 0.01, 0.02, 100.0, worker=f"w{ref.worker}")


def records(n: int) -> list[Record]:
    return [Record(i, f"r{i}", prompt="p") for i in range(n)]


def drive(fake: FakeRay, tmp_path: Path, n: int = 50, size: int = 4, retries: int = 3) -> tuple[list[str], Tally]:
    tally = Tally()
    bar = SimpleNamespace(update=lambda samples, tokens: None)
    with ResultWriter(tmp_path / "outputs.jsonl") as out:
        actors = [fake.actor(w) for w in range(3)]
        stream(fake, actors, numbered(records(n), size), BatchSettings(2, size, retries), out, tally, bar)
    lines = (tmp_path / "outputs.jsonl").read_text().splitlines()
    return [json.loads(line)["id"] for line in lines], tally


def test_batches_finishing_out_of_order_are_written_in_input_order(tmp_path: Path) -> None:
    ids, tally = drive(FakeRay(), tmp_path)
    assert ids == [f"r{i}" for i in range(50)]
    assert tally.totals.num_samples == 50 and tally.totals.output_tokens == 100 and tally.batches == 13
    assert tally.workers_seen == {"w0", "w1", "w2"}


def test_a_lost_worker_s_batch_is_sent_again_to_another_and_written_once(tmp_path: Path) -> None:
    fake = FakeRay(losses={0, 5})
    ids, tally = drive(fake, tmp_path)
    assert ids == [f"r{i}" for i in range(50)]  # every row once
    assert tally.totals.num_samples == 50
    tries = [(number, worker) for number, worker in fake.sent if number in (0, 5)]
    assert len(tries) == 4 and tries[0][1] != tries[1][1]  # sent again, to another worker


def test_a_batch_lost_too_often_fails_the_run_keeping_the_rows_before(tmp_path: Path) -> None:
    fake = FakeRay(always_lost=True)
    with pytest.raises(OmnirunError, match=r"cluster\.max_task_retries") as err:
        drive(fake, tmp_path, retries=0)
    assert "input position" in str(err.value) and "resume=<run dir>" in str(err.value)


def test_a_batch_whose_task_raises_fails_the_run_with_its_error(tmp_path: Path) -> None:
    with pytest.raises(OmnirunError, match="the model is broken"):
        drive(FakeRay(broken={3}), tmp_path)
    ids = [json.loads(line)["id"] for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(len(ids))] and len(ids) % 4 == 0  # whole batches, in order, kept


class TaskFailed(Exception):
    """Stands for Ray's RayTaskError: it carries the worker's own exception as `cause`."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"ray::Worker.describe() (pid=1)\n  ...\n{cause}")
        self.cause = cause


def test_a_worker_s_own_error_reaches_the_user_as_it_is() -> None:
    own = ConfigError("model.name='/nowhere' is not a model folder; check the path")
    assert worker_error(TaskFailed(own), "a worker could not start") is own  # exit status 2 kept
    other = worker_error(TaskFailed(RuntimeError("CUDA error: device-side assert")), "the batch from 0 failed")
    assert str(other) == "cluster: the batch from 0 failed: CUDA error: device-side assert"
