"""`task=export`: load the model (with the run's hardware settings, quantization included) and write it out:
safetensors (`save_pretrained`: weights, config, tokenizer or processor) or ONNX; optionally push it to the
Hugging Face Hub. The run directory records what was written (`export.json`), the manifest and metrics.

An export owns its folder: `export.path` must be new or empty (checked before the model loads, and again
before writing), so nothing already there can merge into the exported model, and `export.json` and the upload
hold exactly the files the export wrote (never, say, `~/.ssh` under `export.path=~`)."""

from __future__ import annotations

import time
from pathlib import Path

from omnirun import rundir
from omnirun.choices import ExportFormat
from omnirun.config import RunConfig
from omnirun.errors import ConfigError
from omnirun.results import timing
from omnirun.results.schema import MemoryMetrics, RunMetrics, Status
from omnirun.tasks.base import Job


def check_target(cfg: RunConfig) -> None:
    """ConfigError (exit 2) unless `export.path` is a new or an empty folder (the default, `export/` in the
    new run directory, always is)."""
    if cfg.export.path is not None:
        empty_or_new(Path(cfg.export.path).expanduser(), cfg.export.path)


def empty_or_new(target: Path, value: str) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise ConfigError(f"export.path={value!r} is a file; export writes a folder: give a new or an empty folder")
    entries = sorted(p.name for p in target.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(
            f"export.path={value!r} is a folder holding {len(entries)} {'entry' if len(entries) == 1 else 'entries'} "
            f"({shown}); export writes only into a "
            "new or an empty folder (so nothing else is exported or uploaded with the model): give a new path"
        )


def run_export(job: Job) -> RunMetrics:
    cfg, engine = job.cfg, job.engine
    with timing.PeakMemory() as peak:
        with timing.timed() as load:
            engine.load_model()
        job.write_manifest()
        target = Path(cfg.export.path).expanduser() if cfg.export.path else job.run / rundir.EXPORT_DIR
        empty_or_new(target, cfg.export.path or str(target))  # again: the model took a while to load
        with timing.timed() as write:
            saved = engine.export_onnx(target) if cfg.export.format == ExportFormat.onnx else engine.save(target)
        url = None
        if cfg.export.push_to_hub:
            from omnirun.engine.hf.export import upload_files

            url = upload_files(cfg.export.push_to_hub, saved.path, saved.files)
        footprint = engine.memory().model_footprint_mb
    params = engine.parameters()
    engine.unload_model()
    job.run.write_json(
        rundir.EXPORT_JSON,
        {"format": saved.format, "path": saved.path, "files": saved.files, "write_s": write.seconds, "hub": url},
    )
    print(f"export: {saved.path} ({saved.format}, {len(saved.files)} files)" + (f"; pushed to {url}" if url else ""))
    return RunMetrics(
        status=Status.completed,
        load_model_s=load.seconds,
        total_s=time.perf_counter() - job.started,
        generation_s=0.0,
        memory=MemoryMetrics(peak.max_rss_mb, peak.max_cuda_allocated_mb, peak.max_cuda_reserved_mb, footprint),
        num_parameters=params.total if params else None,
        trainable_parameters=params.trainable if params else None,
    )
