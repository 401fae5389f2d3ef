"""How experiment trackers plug into the `train` and `evaluate` commands, without model/ importing one.

model/ must not import mlflow, so the commands in model/cli.py only know these types. The console
script (omniretriever/cli.py) hands registry/'s MLflow factories to `model.cli.build_app`; the app built
without any (`model.cli.app`, `python -m model.cli`) tracks nothing.

    TrainTrackerFactory  (TrainConfig, TrackingOptions) -> a model.train.Callback
    EvaluationLogger     (results, results.json path, TrackingOptions) -> a line saying where the results went
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model.train imports torch; the console script imports this module for --help
    from model.train import Callback
    from model.train_config import TrainConfig


@dataclass(frozen=True)
class TrackingOptions:
    """What the caller says about tracking; None means "the tracker's default"."""

    tracking_uri: str | None = None  # e.g. an MLflow tracking URI
    experiment: str | None = None  # experiment name
    run_id: str | None = None  # evaluate: log into this (training) run
    pipeline_run_id: str | None = None  # lineage: the orchestrator's run id, if any
    data_version: str | None = None  # lineage: the data's version when the caller knows it (else computed)


TrainTrackerFactory = Callable[["TrainConfig", TrackingOptions], "Callback"]
EvaluationLogger = Callable[[dict, Path, TrackingOptions], str]
