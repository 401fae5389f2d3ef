"""The MLflow training tracker: a model.train.Callback that records a training run.

A training run records its parameters (the TrainConfig, the encoder config, the objective, the seed),
every step's loss terms as `train/<term>`, lineage tags (registry/lineage.py), and at the end the pyfunc
model (registry/logged_model.py) logged as "model", with tags naming its backbone and, for a pretrained
one, the base checkpoint it was trained on (backbone, base_checkpoint, base_sha256, base_layout: what the
model needs besides its own files). Its run id is kept in RUN/mlflow_run.json
(registry/run_record.py), so `train --resume` continues the same MLflow run and `evaluate` logs into it.
`train_tracker` builds the tracker for `omniretriever train` and for the pipeline's train step alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from model.errors import OmniRetrieverError
from model.hooks import TrackingOptions
from registry.lineage import lineage_tags
from registry.logged_model import log_trained_model
from registry.run_record import recorded_run_id, write_record
from registry.store import (DEFAULT_EXPERIMENT, TrackingError, client, configure, ensure_experiment, existing_run,
                            send_metrics, send_params, store_errors, ui_command)

if TYPE_CHECKING:
    from model.train_config import TrainConfig

# operational settings that may differ between a run and its resumption; not parameters of the model
NOT_PARAMS = ("resumed_from", "workers", "cache_dir")


def train_tracker(cfg: "TrainConfig", options: TrackingOptions) -> "MlflowTracker":
    """The MLflow tracker of a training run, as `omniretriever train` and the pipeline's train step use it."""
    return MlflowTracker(cfg, options.tracking_uri, options.experiment, options.pipeline_run_id,
                         data_version=options.data_version)


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} with values as MLflow params (strings of at most 6000 chars)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return {k: v[:6000] for k, v in out.items()}


class MlflowTracker:
    """A model.train.Callback that records a training run in MLflow (see the module docstring).

    Step metrics are buffered and sent every `flush_every` steps, at each checkpoint and at the end, so
    a remote store is not called once per step. A resumed run (RUN/mlflow_run.json names a live run in
    the same store) continues the same MLflow run; parameters it already has are not logged again, and
    any that changed are listed in the tag "resume_changes"."""

    def __init__(self, cfg: "TrainConfig", tracking_uri: str | None = None, experiment: str | None = None,
                 pipeline_run_id: str | None = None, flush_every: int = 10, data_version: str | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        self.uri = configure(tracking_uri)
        self.experiment = experiment or DEFAULT_EXPERIMENT
        self.pipeline_run_id = pipeline_run_id
        self.flush_every = flush_every
        self.run_id: str | None = None
        self.model_uri: str | None = None
        self._pending: dict[int, dict[str, float]] = {}
        self._client = client(self.uri)
        # now: a bad data.dvc fails before training; `data_version` is the pipeline's version-data output
        self._lineage = lineage_tags(cfg.data, pipeline_run_id, data_version)

    def on_train_start(self, params: dict) -> None:
        with store_errors(self.uri, "starting the training run"):
            self._start(params)

    def _start(self, params: dict) -> None:
        previous = recorded_run_id(self.run_dir, self.uri)
        reuse = previous is not None and self._alive(previous)
        self.run_id = previous if reuse else self._create_run()
        if reuse:
            self._client.update_run(self.run_id, status="RUNNING")
        write_record(self.run_dir, {"tracking_uri": self.uri, "run_id": self.run_id,
                                    "experiment_id": self._client.get_run(self.run_id).info.experiment_id})
        self._log_params(params)
        self._client.set_tag(self.run_id, "resumed_from", str(params.get("resumed_from", 0)))

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._pending[step] = {f"train/{k}": float(v) for k, v in metrics.items()}
        if len(self._pending) >= self.flush_every:
            self.flush()

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.flush()
        with store_errors(self.uri, f"tagging the checkpoint of step {step}"):
            self._client.set_tag(self.run_id, "last_checkpoint", f"step {step}: {path}")

    def on_train_end(self, summary: dict) -> None:
        self.flush()
        with store_errors(self.uri, "logging the trained model"):
            send_metrics(self._client, self.run_id, {summary["steps"]: {"train/samples_per_s": summary["samples_per_s"],
                                                                        "train/seconds": summary["seconds"]}})
            self.model_uri = log_trained_model(self.run_id, Path(summary["model"]), self._example_texts(),
                                               tracking_uri=self.uri)
            self._client.set_terminated(self.run_id, "FINISHED")

    def on_train_abort(self, exc: BaseException) -> None:
        """Ctrl-C marks the run KILLED, an error FAILED; `train --resume` sets it running again. Best effort:
        training is already failing, and a store that is down must not hide why."""
        if self.run_id is None:
            return
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            self.flush()
            self._client.set_terminated(self.run_id, status)
        except Exception:  # noqa: BLE001 - reported by the original error
            pass

    def flush(self) -> None:
        """Send the buffered step metrics."""
        if self._pending and self.run_id is not None:
            with store_errors(self.uri, "logging step metrics"):
                send_metrics(self._client, self.run_id, self._pending)
            self._pending.clear()

    def describe(self) -> str:
        """One line for the console: the run id and how to browse it."""
        run_id = self.run_id or recorded_run_id(self.run_dir, self.uri)
        if run_id is None:
            return f"mlflow: nothing logged (store {self.uri})"
        model = f", model {self.model_uri}" if self.model_uri else ""
        return f"mlflow run: {run_id} (experiment {self.experiment}{model}); browse: {ui_command(self.uri)}"

    def _alive(self, run_id: str) -> bool:
        try:
            existing_run(self._client, run_id)
        except TrackingError:
            return False
        return True

    def _create_run(self) -> str:
        experiment_id = ensure_experiment(self._client, self.experiment)
        tags = {**self._lineage, "kind": "train", "run_dir": str(self.run_dir.resolve())}
        return self._client.create_run(experiment_id, run_name=self.run_dir.name, tags=tags).info.run_id

    def _log_params(self, params: dict) -> None:
        wanted = flatten({k: v for k, v in params.items() if k not in NOT_PARAMS})
        have = self._client.get_run(self.run_id).data.params
        changed = {k: [have[k], v] for k, v in wanted.items() if k in have and have[k] != v}
        send_params(self._client, self.run_id, {k: v for k, v in wanted.items() if k not in have})
        if changed:
            self._client.set_tag(self.run_id, "resume_changes", json.dumps(changed)[:8000])

    def _example_texts(self) -> list[str]:
        from model.manifest import read_split

        try:
            return [r.text for r in read_split(self.cfg.data, "train")[:2]]
        except (OmniRetrieverError, OSError):
            return []
