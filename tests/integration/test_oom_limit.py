"""Out of memory under a real memory limit: a batch that does not fit is halved, and the retry runs after the
failed attempt's memory is released (so a size that fits in a fresh process also fits after a failure).

The limit is RLIMIT_DATA (private anonymous memory, which torch's CPU allocator uses), set in a subprocess
and calibrated there: the memory a batch of 4 and a batch of 16 need on this machine is found first, then
the run gets a limit just under what a batch of 16 needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, resource, sys
from pathlib import Path
from omnirun.config import GenerationConfig, TaskConfig
from omnirun.engine import TransformersEngine
from omnirun.inputs import Record
from omnirun.results.writer import ResultWriter
from omnirun.tasks.base import TaskContext
from omnirun.tasks.generate import run_generate

class Quiet:
    def update(self, samples, tokens):
        pass

model, out = sys.argv[1], Path(sys.argv[2])
engine = TransformersEngine(model, attn_implementation="eager").load_model()
words = "the quick brown fox jumps over a lazy dog " * 40
prompts = [words[: 700 + i] for i in range(16)]  # ~400 tokens each, under the 512-token context
params = GenerationConfig(max_new_tokens=2, do_sample=False)
engine.generate(prompts[:1], params)

def data_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmData"):
            return int(line.split()[1]) * 1024

def limit(extra):
    resource.setrlimit(resource.RLIMIT_DATA, (data_bytes() + extra, resource.RLIM_INFINITY))

def unlimited():
    resource.setrlimit(resource.RLIMIT_DATA, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

def need(batch):
    lo, hi = 0, 4 * 2**30
    while hi - lo > 8 * 2**20:
        mid = (lo + hi) // 2
        limit(mid)
        try:
            engine.generate(prompts[:batch], params)
            hi = mid
        except Exception:
            lo = mid
        finally:
            unlimited()
    return hi

need4, need16 = need(4), need(16)
report = {"need4_mb": need4 / 2**20, "need16_mb": need16 / 2**20}
# halfway between what a batch of 4 and a batch of 16 need: just under 16 measured too close to the allocator's
# noise (the calibration's cached memory let a batch of 16 fit under it in 3 attempts out of 3 on a busy machine)
below16 = (need4 + need16) // 2
if below16 - need4 < 64 * 2**20:
    report["skip"] = "a batch of 16 needs hardly more than a batch of 4 here"
else:
    writer = ResultWriter(out / "outputs.jsonl")
    ctx = TaskContext(TaskConfig(sort_by_length=False), params, 0, 16, writer)
    limit(below16)
    try:
        run_generate(engine, [Record(i, str(i), prompt=p) for i, p in enumerate(prompts)], ctx, Quiet())
    finally:
        unlimited()
    writer.close()
    rows = [json.loads(x) for x in (out / "outputs.jsonl").read_text().splitlines()]
    report.update(batch_size=ctx.batch_size, errors=[r["error"] for r in rows if r["error"]], rows=len(rows))
print(json.dumps(report))
"""


@pytest.mark.slow
def test_a_batch_that_does_not_fit_is_retried_smaller_under_a_real_memory_limit(tmp_path: Path) -> None:
    """The calibration is a measurement, so one attempt can land on the wrong side of the allocator's noise;
    up to three attempts are made. The bug this guards against (retrying while the failed attempt's memory is
    still held) fails every attempt."""
    from tiny_models import build_tiny

    model = build_tiny("llama-big", tmp_path / "model")
    reports = []
    for attempt in range(3):
        out = tmp_path / f"attempt{attempt}"
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(model), str(out)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        if "skip" in report:
            pytest.skip(f"{report['skip']}: {report}")
        if report["rows"] == 16 and report["errors"] == [] and 4 <= report["batch_size"] < 16:
            return  # 16 failed; a size that fits in a fresh process fits after the failure too
        reports.append(report)
    pytest.fail(f"no attempt recovered from the out-of-memory batch: {reports}")
