"""Where experiment trackers plug into the `train` and `evaluate` commands, without model/ importing one.

model/ must not import mlflow, so the commands in model/cli.py only know these protocols. The console
script (omniretriever/cli.py) puts a `Trackers` on the root command's context; `model.cli.app` used on
its own has none, and then training and evaluation track nothing.

    Trackers.train       factories (TrainConfig, TrackingOptions) -> a model.train.Callback
    Trackers.evaluation  loggers (results, results.json path, TrackingOptions) -> where the results went
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # model.train imports torch; the console script imports this module for --help
    from model.train import Callback, TrainConfig


@dataclass(frozen=True)
class TrackingOptions:
    """What the command line says about tracking; None means "the tracker's default"."""

    tracking_uri: str | None = None  # e.g. an MLflow tracking URI
    experiment: str | None = None  # experiment name
    run_id: str | None = None  # evaluate: log into this (training) run
    pipeline_run_id: str | None = None  # lineage: the orchestrator's run id, if any


TrainTrackerFactory = Callable[["TrainConfig", TrackingOptions], "Callback"]
EvaluationLogger = Callable[[dict, Path, TrackingOptions], str]


@dataclass
class Trackers:
    """The trackers the console script enables; each entry is called once per command."""

    train: list[TrainTrackerFactory] = field(default_factory=list)
    evaluation: list[EvaluationLogger] = field(default_factory=list)


def current_trackers(ctx: Any) -> Trackers:
    """The Trackers on a command's root context (a typer.Context), or an empty one (no tracking)."""
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Trackers) else Trackers()
