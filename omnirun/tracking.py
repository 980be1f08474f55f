"""Optional experiment tracking: each finished run's config and metrics logged to MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omnirun import rundir
from omnirun.config import TrackingConfig


def log_run(tracking: TrackingConfig, output_root: str, run_dir: Path, config: dict[str, Any]) -> str | None:
    """Log params (the resolved config), metrics (numeric fields of metrics.json) and the run's JSON files.
    Returns the MLflow run id, or None when tracking is off."""
    if tracking.backend != "mlflow":
        return None
    from omnirun.reporting.load import flatten  # the one nested-dict -> dotted-keys helper

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the offline file store is what we want here
    import mlflow

    uri = tracking.uri or (Path(output_root).resolve() / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(tracking.experiment)
    metrics = json.loads((run_dir / rundir.METRICS).read_text())
    numbers = {
        k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    params = {k: str(v)[:500] for k, v in flatten(config).items()}
    with mlflow.start_run(run_name=run_dir.name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(numbers)
        mlflow.set_tags({"run_dir": str(run_dir), "status": str(metrics.get("status"))})
        for name in rundir.ARTIFACTS:
            if (run_dir / name).exists():
                mlflow.log_artifact(str(run_dir / name))
    return run.info.run_id
