"""cluster=ray on a real Ray, on this machine: a local Ray started by the run, and a two-node cluster
(`ray.cluster_utils.Cluster`) under faults: a worker process killed mid-run, a node removed mid-run, the driver
SIGKILLed then resumed. Each run is compared row for row with the single-process run (greedy decoding), with
`python -m omnirun.compare A B --min-exact 1.0`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clirun import omnirun, only_run_dir

ray = pytest.importorskip("ray", reason="cluster=ray needs the ray extra (make setup RAY=1)")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow

RECORDS = 240
ARGS = [
    "generation=greedy",
    "generation.max_new_tokens=12",
    "task.batch_size=2",
    "task.progress=false",
]
CLUSTER_ARGS = ["cluster=ray", "cluster.workers=2", "cluster.batch_size=16"]
RUN_TIMEOUT_S = 240


def write_input(path: Path) -> Path:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"]
    lines = [json.dumps({"id": f"q{i}", "prompt": " ".join(words[: 2 + i % 7])}) for i in range(RECORDS)]
    lines[7] = json.dumps({"id": "bad"})  # one bad record: its own error row, not a failed batch
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> list[str]:
    root = tmp_path_factory.mktemp("ray-input")
    return [f"model.name={tiny_llama}", f"input.path={write_input(root / 'p.jsonl')}", *ARGS]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, job: list[str]) -> Path:
    """The single-process run every cluster run is compared with."""
    root = tmp_path_factory.mktemp("single")
    assert omnirun(root, *job) == 0
    return only_run_dir(root)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two Ray nodes on localhost: a head with room for both workers (and Ray's own actors), and a second node."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    c.add_node(num_cpus=2)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    """`python -m omnirun` in its own process (so that it can be killed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "omnirun", f"output.root={root}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(proc: subprocess.Popen[str]) -> None:
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err[-3000:]


def wait_for(condition: Callable[[], Any], proc: subprocess.Popen[str], what: str) -> Any:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def run_dir_of(root: Path) -> Path | None:
    found = [p.parent for p in root.rglob("manifest.json")]
    return found[0] if found else None


def rows_written(run: Path) -> int:
    outputs = run / "outputs.jsonl"
    return outputs.read_bytes().count(b"\n") if outputs.exists() else 0


def manifest(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "manifest.json").read_text()))


def assert_same_rows(single: Path, run: Path) -> None:
    """The same rows as the single-process run, each once, in input order; the metrics count them (a resumed
    run's count only its own, as in one process)."""
    compare = subprocess.run(
        [sys.executable, "-m", "omnirun.compare", str(single), str(run), "--min-exact", "1.0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert compare.returncode == 0, compare.stdout[-2000:] + compare.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in (run / "outputs.jsonl").read_text().splitlines()]
    assert ids == [json.loads(line)["id"] for line in (single / "outputs.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == RECORDS  # each row once, in input order
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["num_samples"] == RECORDS - metrics["resumed_records"]
    assert metrics["num_errors"] == (1 if metrics["resumed_records"] <= 7 else 0)
    bad = next(json.loads(line) for line in (run / "outputs.jsonl").read_text().splitlines() if '"bad"' in line)
    assert "missing 'prompt'" in bad["error"]


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_local_ray_equals_single_process(tmp_path: Path, job: list[str], single: Path) -> None:
    assert omnirun(tmp_path, *job, *CLUSTER_ARGS) == 0
    run = only_run_dir(tmp_path)
    assert_same_rows(single, run)
    info = manifest(run)["cluster"]
    assert info["name"] == "ray" and info["address"] == "local" and len(info["workers"]) == 2
    assert info["batch_records"] == 16 and len(info["nodes"]) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    expected = json.loads((single / "metrics.json").read_text())
    for key in ("input_tokens", "output_tokens", "num_samples", "num_errors"):
        assert metrics[key] == expected[key], key
    assert metrics["e2e_ms"]["p50"] > 0 and metrics["model_s"] > 0


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_worker_killed_mid_run(tmp_path: Path, job: list[str], single: Path, cluster: Cluster) -> None:
    proc = start(tmp_path, *job, *CLUSTER_ARGS, f"cluster.address={cluster.address}")
    run = wait_for(lambda: run_dir_of(tmp_path), proc, "the workers started")
    victim = manifest(run)["cluster"]["workers"][0]["pid"]
    wait_for(lambda: rows_written(run) > 0, proc, "the first rows")
    assert rows_written(run) < RECORDS
    os.kill(victim, signal.SIGKILL)
    finish(proc)
    assert_same_rows(single, run)


@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 60)
def test_driver_sigkilled_then_resumed(tmp_path: Path, job: list[str], single: Path, cluster: Cluster) -> None:
    args = [*job, *CLUSTER_ARGS, f"cluster.address={cluster.address}"]
    proc = start(tmp_path, *args)
    run = wait_for(lambda: run_dir_of(tmp_path), proc, "the workers started")
    wait_for(lambda: rows_written(run) >= 16, proc, "a batch written")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = rows_written(run)
    assert 16 <= done < RECORDS
    resumed = start(tmp_path, *args, f"resume={run}")
    finish(resumed)
    assert_same_rows(single, run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 16 <= metrics["resumed_records"] <= done and metrics["resumed_records"] % 16 == 0


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_node_removed_mid_run(tmp_path: Path, job: list[str], single: Path, cluster: Cluster) -> None:
    """Runs last: it takes the second node away (its worker is restarted on the head, which has room)."""
    proc = start(tmp_path, *job, *CLUSTER_ARGS, "cluster.cpus_per_worker=2", f"cluster.address={cluster.address}")
    run = wait_for(lambda: run_dir_of(tmp_path), proc, "the workers started")
    nodes = {w["node_id"] for w in manifest(run)["cluster"]["workers"]}
    (second,) = cluster.worker_nodes
    assert second.node_id in nodes  # SPREAD: one 2-CPU worker on each node
    wait_for(lambda: rows_written(run) > 0, proc, "the first rows")
    assert rows_written(run) < RECORDS
    cluster.remove_node(second, allow_graceful=False)
    finish(proc)
    assert_same_rows(single, run)
