"""RUN/mlflow_run.json: which MLflow run holds a training run, written when tracking starts.

It holds {"tracking_uri", "run_id", "experiment_id"}. `train --resume` continues the run it names,
`evaluate --model RUN` logs into it, `registry register RUN` registers it, and the pipeline's train
step reads its run id from it after torchrun.
"""

from __future__ import annotations

import json
from pathlib import Path

RUN_RECORD = "mlflow_run.json"  # in the run directory


def read_record(run_dir: Path) -> dict | None:
    """RUN/mlflow_run.json ({"tracking_uri", "run_id", "experiment_id"}) or None."""
    path = Path(run_dir) / RUN_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"tracking_uri", "run_id"} <= set(record) else None


def write_record(run_dir: Path, record: dict) -> None:
    """Write RUN/mlflow_run.json atomically."""
    path = Path(run_dir) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def recorded_run_id(run_dir: Path, uri: str) -> str | None:
    """The MLflow run that trained RUN, if it was tracked in this store."""
    record = read_record(run_dir)
    return record["run_id"] if record and record["tracking_uri"] == uri else None
