"""Where the MLflow store is, and how this project talks to it.

Where runs go (`configure`): an explicit URI (`--tracking-uri`), else $MLFLOW_TRACKING_URI, else the
embedded store: sqlite at .mlflow/mlflow.db with artifacts under .mlflow/artifacts/, in the working
directory ($OMNIRETRIEVER_MLFLOW_DIR moves it). A sqlite store keeps its artifacts beside its database,
so nothing lands in ./mlruns; a tracking server decides its own artifact root.

A store that is down or refuses a request is a TrackingError naming the store (`store_errors`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from model.errors import OmniRetrieverError

if TYPE_CHECKING:
    from mlflow import MlflowClient

EMBEDDED_DIR_ENV = "OMNIRETRIEVER_MLFLOW_DIR"
EMBEDDED_DIR = ".mlflow"
DEFAULT_EXPERIMENT = "omniretriever"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # mlflow's switch for its artifact transfer bars


class TrackingError(OmniRetrieverError, ValueError):
    """The tracking store cannot be used as asked: an unknown run, a store that refuses, ..."""


def embedded_dir() -> Path:
    """The embedded store's directory: $OMNIRETRIEVER_MLFLOW_DIR, else ./.mlflow (absolute)."""
    return Path(os.environ.get(EMBEDDED_DIR_ENV) or EMBEDDED_DIR).resolve()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def resolve_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI in force: the argument, else $MLFLOW_TRACKING_URI, else the embedded sqlite store."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{embedded_dir() / 'mlflow.db'}"
    db = sqlite_path(uri)
    return f"sqlite:///{db.resolve()}" if db is not None else uri


def configure(tracking_uri: str | None = None) -> str:
    """Point mlflow (tracking and registry) at the resolved store; create a sqlite store's directory."""
    import mlflow

    uri = resolve_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def artifact_root(uri: str) -> str | None:
    """Where a sqlite store's experiments keep artifacts (beside the database); None: the server decides."""
    db = sqlite_path(uri)
    return (db.parent / "artifacts").as_uri() if db is not None else None


def ui_command(uri: str) -> str:
    """The command that browses this store in a browser."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def client(tracking_uri: str | None = None) -> "MlflowClient":
    """An MlflowClient on the configured store (tracking and registry)."""
    from mlflow import MlflowClient

    uri = configure(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(mlflow_client: "MlflowClient", name: str) -> str:
    """The id of experiment `name`, created (with an absolute artifact location) if it does not exist."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackingError(f"experiment {name!r} is deleted in {mlflow_client.tracking_uri}: restore it or choose "
                                "another --experiment")
        return found.experiment_id
    root = artifact_root(mlflow_client.tracking_uri)
    location = f"{root}/{_safe_name(name)}" if root else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another process
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def existing_run(mlflow_client: "MlflowClient", run_id: str):
    """The run `run_id`, or a TrackingError naming the store when it is unknown or deleted."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(f"unknown run {run_id!r} in {mlflow_client.tracking_uri} ({exc.error_code})") from None
    if run.info.lifecycle_stage == "deleted":
        raise TrackingError(f"run {run_id!r} is deleted in {mlflow_client.tracking_uri}")
    return run


@contextmanager
def store_errors(uri: str, doing: str) -> Iterator[None]:
    """Turn an MlflowException (a store that is down or refuses) into a TrackingError naming the store."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise TrackingError(f"MLflow at {uri} failed while {doing}: {exc.message[:500]}") from None


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Transfer artifacts without mlflow's progress bars: it draws one per download, redrawn once per file
    (dozens of lines for one logged model), for transfers that take about a second. Setting
    $MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR yourself keeps mlflow's own choice."""
    if PROGRESS_BAR_ENV in os.environ:
        yield
        return
    os.environ[PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_BAR_ENV, None)


def send_metrics(mlflow_client: "MlflowClient", run_id: str, by_step: dict[int, dict[str, float]]) -> None:
    """{step: {name: value}} in batches of at most 1000 metrics (MLflow's limit per call)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for step, values in sorted(by_step.items()) for k, v in values.items()]
    for start in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[start:start + 1000])


def send_params(mlflow_client: "MlflowClient", run_id: str, params: dict[str, str]) -> None:
    """{name: value} in batches of at most 100 parameters (MLflow's limit per call)."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[start:start + 100])


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "experiment"
