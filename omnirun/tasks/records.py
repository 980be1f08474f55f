"""The shape every per-record task shares: load the model, run the records window by window into
outputs.jsonl (written as they finish), and summarize them into the run's metrics. Records are read lazily
and rows are not kept (the writer accumulates the metrics' totals), so memory does not grow with the input.

A task module supplies only `RecordsFn`: what to do with the records (generate, chat, stream, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from omnirun import distributed, rundir
from omnirun.config import EmbeddingsFormat, RunConfig
from omnirun.engine.base import Engine
from omnirun.errors import ConfigError
from omnirun.inputs import Record
from omnirun.plugins import Capability
from omnirun.results import timing
from omnirun.results.schema import MemoryMetrics, RunMetrics, Status, summarize
from omnirun.results.writer import ResultWriter, RunTotals
from omnirun.tasks.analysis import write_embeddings_npy
from omnirun.tasks.base import WINDOW_BATCHES, Job, Progress, TaskContext
from omnirun.tasks.finish import row_finish, score_summary, scoring_of
from omnirun.tasks.interactive import run_interactive_chat

RecordsFn = Callable[[Engine, Iterable[Record], TaskContext, Progress], None]


@dataclass(frozen=True)
class RecordsTask:
    """A task that turns each record into one row."""

    fn: RecordsFn
    needs_chat_template: bool = False
    windowed: bool = True
    """Records are batched in windows (resume must restart at a window's start); false: one at a time."""

    def __call__(self, job: Job) -> RunMetrics:
        cfg, engine = job.cfg, job.engine
        if self.needs_chat_template:
            require_chat_template(engine, cfg.model.name)
        writer = ResultWriter(job.run.shard(None if job.rank is None else job.rank.index))
        status = Status.completed
        loaded_here = not engine.is_loaded  # an engine loaded by the caller (a cluster worker) stays loaded
        with timing.PeakMemory() as peak:
            with timing.timed() as load:
                if loaded_here:
                    engine.load_model()
            seed_everything(cfg.seed)  # after loading: torch is imported by then if the backend uses it
            assert engine.plan is not None
            batch_size = engine.plan.batch_size if cfg.task.batch_size == "auto" else int(cfg.task.batch_size)
            echo = job.data.source == "prompt"
            window = (job.window or batch_size * WINDOW_BATCHES) if self.windowed else 1
            ctx = TaskContext(cfg.task, cfg.generation, cfg.seed, batch_size, writer, echo=echo, window=window)
            ctx.finish = row_finish(cfg.task, cfg.generation.reasoning, engine, self.needs(cfg), cfg.seed)
            first, last = distributed.shard_bounds(len(job.data.records) - job.skipped, job.rank, unit=window)
            records = job.data.records.from_position(job.skipped + first, job.skipped + last)
            if job.main:
                job.write_manifest(window)
            with timing.timed(engine.device) as gen, ProgressBar(last - first, cfg.task.progress and job.main) as bar:
                try:
                    if job.data.source == "interactive":
                        job.run.write_json(rundir.CONVERSATION, run_interactive_chat(engine, ctx))
                    else:
                        self.fn(engine, records, ctx, bar)
                except KeyboardInterrupt:
                    status = Status.interrupted
            writer.close()
            footprint = engine.memory().model_footprint_mb
        params = engine.parameters()
        if loaded_here:
            engine.unload_model()
        totals, generation_s, rss, model_s = writer.totals, gen.seconds, peak.max_rss_mb, ctx.model_s
        if job.rank is not None:
            totals, generation_s, rss, model_s = merge_ranks(job.run, job.rank, totals, generation_s, rss, model_s)
        if cfg.output.embeddings == EmbeddingsFormat.npy and job.main:
            write_embeddings_npy(job.run.path, job.run.path / rundir.OUTPUTS)
        if job.data.source == "interactive":
            generation_s = model_s = totals.e2e_s_all  # the model's time, not the person typing
        memory = MemoryMetrics(rss, peak.max_cuda_allocated_mb, peak.max_cuda_reserved_mb, footprint)
        result = summarize(
            totals,
            model_s=model_s,
            status=status,
            load_model_s=load.seconds,
            total_s=time.perf_counter() - job.started,
            generation_s=generation_s,
            memory=memory,
            resumed_records=job.skipped,
        )
        if params is not None:
            result.num_parameters, result.trainable_parameters = params.total, params.trainable
        scoring = scoring_of(cfg.task, cfg.seed)
        if scoring is not None and job.main and job.summarize_scores:
            result.scores = score_summary(job.run.path / rundir.OUTPUTS, scoring)
        return result

    @staticmethod
    def needs(cfg: RunConfig) -> Capability | None:
        from omnirun import plugins

        return plugins.task(cfg.task.name).needs


def require_chat_template(engine: Engine, model: str) -> None:
    """Load the tokenizer before the weights, so a model without a chat template fails fast."""
    engine.load_tokenizer()
    if not engine.has_chat_template():
        raise ConfigError(f"task=chat needs a chat template, and model {model!r} has none; use task=generate")


def merge_ranks(
    run: rundir.RunDir,
    rank: distributed.Rank,
    totals: RunTotals,
    generation_s: float,
    rss_mb: float,
    model_s: float,
) -> tuple[RunTotals, float, float, float]:
    """Every rank's totals merged (in rank order; a few kB each, not rows), the slowest rank's generation and
    model time and the largest RSS; rank 0 also merges the per-rank output files into outputs.jsonl."""
    shards = distributed.gather((totals, generation_s, rss_mb, model_s), rank)
    distributed.barrier(rank)
    if rank.is_main:
        distributed.merge_shards(run.path, rank.world)
    merged = RunTotals()
    for shard_totals, _, _, _ in shards:
        merged.merge(shard_totals)
    return merged, max(s[1] for s in shards), max(s[2] for s in shards), max(s[3] for s in shards)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (when loaded: a llama.cpp run never imports it) torch."""
    import random
    import sys

    random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


class ProgressBar:
    """A tqdm bar over samples, with output tokens/s in its postfix (ETA comes from tqdm)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="sample", disable=not enabled or total <= 1, dynamic_ncols=True)
        self.tokens = 0
        self.start = time.perf_counter()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def update(self, samples: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = time.perf_counter() - self.start
        if samples:
            self.bar.set_postfix(tok_s=f"{self.tokens / elapsed:.1f}" if elapsed > 0 else "-", refresh=False)
            self.bar.update(samples)
