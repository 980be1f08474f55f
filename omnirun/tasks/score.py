"""`task=score`: score outputs against references with no model (`omnirun.scoring`). `input.path` is a run
directory, its outputs.jsonl, an OpenAI batch_output.jsonl (`task.references=<its input file>`) or any JSONL
with `task.output_field` and `task.reference_field`. Each row is written as it is scored (`scores`, or an error
naming the missing field); `metrics.json` gets `scores: {metric: {mean, stderr, n}}` and `by_group`.

The input is read by the scoring sources, not `inputs.read` (`TaskSpec.reads_input=False`): a run directory is
not a file of prompts. Scoring is fast, so a score run is not resumed; a rerun scores everything again.
"""

from __future__ import annotations

import time

from omnirun.errors import ConfigError
from omnirun.results import timing
from omnirun.results.schema import MemoryMetrics, ResultRow, RunMetrics, Status, summarize
from omnirun.results.writer import ResultWriter
from omnirun.scoring import ScoredRow, Scorer, open_source
from omnirun.task_config import ScoreConfig, options_as
from omnirun.tasks.base import Job

FLUSH_EVERY = 256
"""Rows written (and fsynced) together."""


def run_score(job: Job) -> RunMetrics:
    cfg = job.cfg
    task = options_as(cfg.task, ScoreConfig)
    if cfg.input.path is None:
        raise ConfigError("task=score reads input.path: a run directory, an outputs.jsonl or a JSONL of rows")
    options = task.scoring(seed=cfg.seed)
    source = open_source(
        cfg.input.path, references=task.references, output_field=options.output_field, id_field=cfg.input.id_field
    )
    scorer = Scorer(options)
    writer = ResultWriter(job.run.shard(None))
    job.write_manifest()
    scored: list[ScoredRow] = []
    status = Status.completed
    with timing.PeakMemory() as peak, timing.timed() as work:
        try:
            for chunk in scorer.chunks(source.rows(keep=[options.reference_field, *options.group_by])):
                start = time.perf_counter()
                done = scorer.score_many(chunk)
                each_ms = (time.perf_counter() - start) * 1000 / len(chunk)
                for one in done:
                    scored.append(one)
                    writer.write(result_row(one, each_ms))
                    if len(scored) % FLUSH_EVERY == 0:
                        writer.flush()
        except KeyboardInterrupt:
            status = Status.interrupted
        finally:
            scorer.close()
        writer.close()
    summary = scorer.summarize(scored)
    metrics = summarize(
        writer.totals,
        status=status,
        load_model_s=None,
        total_s=time.perf_counter() - job.started,
        generation_s=work.seconds,
        memory=MemoryMetrics(peak.max_rss_mb, None, None, None),
        model_s=work.seconds,
    )
    metrics.scores = summary.to_json()
    return metrics


def result_row(scored: ScoredRow, e2e_ms: float) -> ResultRow:
    """A scored row as an outputs.jsonl line (`ScoredRow.from_json` reads it back)."""
    obj = scored.to_json()
    inputs = {k: v for k, v in obj.items() if k not in ("id", "scores", "corpus_stats", "error")}
    result: dict[str, object] = {k: obj[k] for k in ("scores", "corpus_stats") if k in obj}
    if scored.error is not None:
        return ResultRow(id=scored.id, inputs=inputs, error=scored.error)
    return ResultRow(id=scored.id, inputs=inputs, result=result, e2e_ms=e2e_ms)
