"""`task=export`: load the model (with the run's hardware settings, quantization included) and write it out:
safetensors (`save_pretrained`: weights, config, tokenizer or processor) or ONNX; optionally push the folder to
the Hugging Face Hub. The run directory records what was written (`export.json`), the manifest and metrics."""

from __future__ import annotations

import time
from pathlib import Path

from omnirun import rundir
from omnirun.choices import ExportFormat
from omnirun.results import timing
from omnirun.results.schema import MemoryMetrics, RunMetrics, Status
from omnirun.tasks.base import Job

EXPORT_DIR = "export"
"""Where the export goes inside the run directory when `export.path` is not set."""


def run_export(job: Job) -> RunMetrics:
    cfg, engine = job.cfg, job.engine
    with timing.PeakMemory() as peak:
        with timing.timed() as load:
            engine.load_model()
        job.write_manifest()
        target = Path(cfg.export.path).expanduser() if cfg.export.path else job.run / EXPORT_DIR
        with timing.timed() as write:
            saved = engine.export_onnx(target) if cfg.export.format == ExportFormat.onnx else engine.save(target)
        url = engine.push_to_hub(cfg.export.push_to_hub, saved.path) if cfg.export.push_to_hub else None
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
