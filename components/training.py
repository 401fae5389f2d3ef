"""How the train component runs training: in this process on a CPU, under torchrun with one process
per GPU when GPUs are visible. Either way the work is `model.train.train`; under torchrun each rank
runs `python -m components.training SPEC` (this module's `main`), and rank 0 reports to MLflow.

The spec is a small JSON file: {"train": TrainConfig keyword arguments (paths as strings; "checkpoint"
is a pretrained backbone's base checkpoint directory, or null), "tracking": bool,
"tracking_uri": str, "pipeline_run_id": str, "data_version": str (the lineage tag; "": computed from
the data)}. The MLflow tracker (registry.tracking.train_tracker, as `omniretriever train` builds it)
records its run id in RUN/mlflow_run.json, which is how the launching process learns it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.run_record import RUN_RECORD

SPEC_FILE = "train_spec.json"
FAILURE_FILE = "train_failure.json"  # written by torchrun's rank 0 when its training raised: {"error": "Type: message"}


@dataclass
class TrainResult:
    summary: dict
    run_id: str  # MLflow run id ("" without tracking)
    world_size: int


def visible_gpus() -> int:
    """How many CUDA devices this process can use (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torchrun_command(nproc: int, spec: Path) -> list[str]:
    """torchrun on one node with `nproc` ranks, each running this module's main(SPEC)."""
    launcher = shutil.which("torchrun")
    head = [launcher] if launcher else [sys.executable, "-m", "torch.distributed.run"]
    return [*head, "--standalone", f"--nproc_per_node={nproc}", "-m", "components.training", str(spec)]


def run_training(train_kwargs: dict[str, Any], *, nproc: int | None = None, tracking: bool = True,
                 tracking_uri: str = "", pipeline_run_id: str = "", data_version: str = "") -> TrainResult:
    """Train into train_kwargs["out"]: torchrun with `nproc` ranks when nproc > 1 or GPUs are visible
    (nproc defaults to their number), in this process otherwise. Raises RuntimeError naming the exit
    status when a rank fails."""
    nproc = visible_gpus() if nproc is None else nproc
    spec = {"train": {k: str(v) if isinstance(v, Path) else v for k, v in train_kwargs.items()},
            "tracking": tracking, "tracking_uri": tracking_uri, "pipeline_run_id": pipeline_run_id,
            "data_version": data_version}
    run = Path(train_kwargs["out"])
    if nproc >= 1 and (nproc > 1 or visible_gpus() > 0):
        run.mkdir(parents=True, exist_ok=True)
        spec_path = run / SPEC_FILE
        spec_path.write_text(json.dumps(spec, indent=2) + "\n")
        (run / FAILURE_FILE).unlink(missing_ok=True)
        proc = subprocess.run(torchrun_command(nproc, spec_path), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun with {nproc} process(es) failed with exit status {proc.returncode}"
                               f"{_failure(run)}")
        summary = json.loads((run / "train_summary.json").read_text())
        run_id = json.loads((run / RUN_RECORD).read_text())["run_id"] if tracking else ""
        return TrainResult(summary, run_id, nproc)
    summary, run_id = _train(spec)
    return TrainResult(summary, run_id, 1)


def base_identity(run: Path, sha256: str = "") -> dict | None:
    """The base checkpoint's identity the trained model records (RUN/model/base.json: path, digest, layout),
    None for a model without a base. With `sha256` (the fetch step's digest), a recorded digest that differs
    is an error: the weights trained on are not the ones that were fetched."""
    from model.omni.store import BASE_FILE, read_base_identity

    path = run / "model" / BASE_FILE
    identity = read_base_identity(run / "model")
    if identity is None:
        if sha256:
            raise RuntimeError(f"{path} is missing: the run was given a base checkpoint (sha256 {sha256}) but its "
                               f"model records none")
        return None
    if sha256 and identity.get("digest") != sha256:
        raise RuntimeError(f"{path}: the run trained on weights with digest {identity.get('digest')} at "
                           f"{identity.get('path')}, but the fetched checkpoint's digest is {sha256}: the copy "
                           f"changed after it was fetched")
    return identity


def _train(spec: dict) -> tuple[dict, str]:
    """Run model.train.train from a spec, with an MLflow tracker on rank 0 when spec["tracking"]. A run
    that fails (an error, divergence, Ctrl-C) reaches the tracker's on_train_abort from the trainer
    itself, so its MLflow run ends FAILED or KILLED as on the command line."""
    from model.train import TrainConfig, train

    kwargs = dict(spec["train"])
    checkpoint = kwargs.get("checkpoint")
    cfg = TrainConfig(**{**kwargs, "data": Path(kwargs["data"]), "out": Path(kwargs["out"]),
                         "checkpoint": Path(checkpoint) if checkpoint else None})
    rank = int(os.environ.get("RANK", "0"))
    tracker = _mlflow_tracker(cfg, spec) if spec["tracking"] and rank == 0 else None
    summary = train(cfg, callbacks=[tracker] if tracker else [], progress=rank == 0)
    return summary, _run_id(tracker) if tracker else ""


def _mlflow_tracker(cfg: Any, spec: dict) -> Any:
    """The MLflow tracker `omniretriever train` gets too, on `tracking_uri` (the default store when empty)."""
    from model.hooks import TrackingOptions
    from registry.tracking import train_tracker

    return train_tracker(cfg, TrackingOptions(tracking_uri=spec.get("tracking_uri") or None,
                                              pipeline_run_id=spec.get("pipeline_run_id") or None,
                                              data_version=spec.get("data_version") or None))


def _run_id(tracker: Any) -> str:
    run_id = getattr(tracker, "run_id", None)
    if not run_id:
        raise RuntimeError("the MLflow tracker finished without a run id")
    return str(run_id)


def _failure(run: Path) -> str:
    """": <error>" from the failure rank 0 recorded, "" when there is none."""
    try:
        return f": {json.loads((run / FAILURE_FILE).read_text())['error']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def main(argv: Sequence[str] | None = None) -> None:
    """torchrun worker: python -m components.training SPEC.json. Rank 0 records why its training raised
    in RUN/train_failure.json, so the launching process can say it (a divergence names its step)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m components.training SPEC.json")
    spec = json.loads(Path(args[0]).read_text())
    try:
        _train(spec)
    except BaseException as exc:
        if int(os.environ.get("RANK", "0")) == 0:
            path = Path(spec["train"]["out"]) / FAILURE_FILE
            path.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        raise


if __name__ == "__main__":
    main()
