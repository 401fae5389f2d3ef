"""MLflow tracking of training and evaluation: where the store is, what a run records, the logged model.

Where runs go (`configure`): an explicit URI (`--tracking-uri`), else $MLFLOW_TRACKING_URI, else the
embedded store: sqlite at .mlflow/mlflow.db with artifacts under .mlflow/artifacts/, in the working
directory ($OMNIRETRIEVER_MLFLOW_DIR moves it). A sqlite store keeps its artifacts beside its database,
so nothing lands in ./mlruns; a tracking server decides its own artifact root.

A training run records its parameters (the TrainConfig, the encoder config, the objective, the seed),
every step's loss terms as `train/<term>`, lineage tags (data_version: the DVC version of the data as
it is, given by the pipeline's version-data step or computed from the files; git_commit,
pipeline_run_id), and at the end the pyfunc model (registry/pyfunc_model.py) logged as "model". The run
id is kept in RUN/mlflow_run.json, so `train --resume` continues the same MLflow run and `evaluate`
logs into it. An evaluation records `<split>.<direction>.<metric>` (R1, R5, R10, MdR, MnR, MRR, NDCG10,
...), `<split>.AVG-single|AVG-dual|AVG-all`, results.json, the heatmap figure and a per-direction table.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from model.errors import OmniRetrieverError
from model.hooks import TrackingOptions
from model.modalities import DIRECTION_NAMES

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from model.train import TrainConfig

EMBEDDED_DIR_ENV = "OMNIRETRIEVER_MLFLOW_DIR"
EMBEDDED_DIR = ".mlflow"
DEFAULT_EXPERIMENT = "omniretriever"
MODEL_NAME = "omniretriever"
CHAMPION_URI = f"models:/{MODEL_NAME}@champion"
RUN_RECORD = "mlflow_run.json"  # in the run directory: which MLflow run holds this training run
LOGGED_MODEL = "model"  # log_model(name=...)
MODEL_URI_TAG = "model_uri"  # run tag: the logged model's models:/m-... URI
WEIGHTS_TAG = "weights_sha256"  # run tag: sha256 of the logged model.safetensors
AVERAGES = ("AVG-single", "AVG-dual", "AVG-all")
# operational settings that may differ between a run and its resumption; not parameters of the model
NOT_PARAMS = ("resumed_from", "workers", "cache_dir")
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


class TrackingError(OmniRetrieverError, ValueError):
    """The tracking store cannot be used as asked: an unknown run, a store that refuses, ..."""


# ---------------------------------------------------------------------------------------------------
# where the store is


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


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "experiment"


# ---------------------------------------------------------------------------------------------------
# lineage


def data_version(data: str | Path) -> str:
    """The DVC version ("<md5>.dir") of the data directory as it is now, when a DATA.dvc beside it
    (DATA.parent / "DATA.dvc") versions it; else "unversioned". Computed from the files, never read
    from DATA.dvc: data changed or regenerated with other bytes since it was versioned is recorded
    under its own version. A malformed .dvc file is a VersioningError naming it."""
    from dataset.versioning import dvc_file_for, file_listing, listing_version, read_version

    if read_version(dvc_file_for(data)) is None:
        return "unversioned"
    return listing_version(file_listing(data))


def git_commit(where: Path | None = None) -> str:
    """HEAD of the git checkout holding the code (or `where`), with "-dirty" if it has local changes; "unknown" outside git."""
    cwd = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty else "")


def lineage_tags(data: str | Path, pipeline_run_id: str | None, version: str | None = None) -> dict[str, str]:
    """data_version (`version` when the caller knows it, e.g. the pipeline's version-data step, else
    data_version(data)), git_commit, pipeline_run_id ("none" outside a pipeline), data_path; plus
    recorded_data_version when DATA.dvc records another version than the data has."""
    from dataset.versioning import dvc_file_for, read_version

    pipeline = pipeline_run_id or os.environ.get("OMNIRETRIEVER_PIPELINE_RUN_ID") or "none"
    version = version or data_version(data)
    tags = {"data_version": version, "git_commit": git_commit(), "pipeline_run_id": pipeline,
            "data_path": str(Path(data).resolve())}
    recorded = read_version(dvc_file_for(data))
    if recorded is not None and recorded != version:
        tags["recorded_data_version"] = recorded
    return tags


# ---------------------------------------------------------------------------------------------------
# names and values


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


def metric_name(name: str) -> str:
    """An MLflow-legal metric or tag name: "R@1" -> "R1", "NDCG@10" -> "NDCG10"."""
    return re.sub(r"[^\w.\- /:]", "", name)


def evaluation_metrics(results: dict) -> dict[str, float]:
    """results.json -> {"<split>.<direction>.<metric>": value, "<split>.AVG-all": value, ...}.

    A 95% interval [lo, hi] becomes two metrics, "..._lo" and "..._hi"; non-numeric fields are skipped."""
    split = results.get("split", "test")
    out: dict[str, float] = {}
    for direction, metrics in results["directions"].items():
        for key, value in metrics.items():
            name = f"{split}.{direction}.{metric_name(key)}"
            if isinstance(value, (list, tuple)) and len(value) == 2:
                out[f"{name}_lo"], out[f"{name}_hi"] = float(value[0]), float(value[1])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name] = float(value)
    for key in AVERAGES:
        out[f"{split}.{key}"] = float(results[key])
    return out


def _send_metrics(mlflow_client: "MlflowClient", run_id: str, by_step: dict[int, dict[str, float]]) -> None:
    """{step: {name: value}} in batches of at most 1000 metrics (MLflow's limit per call)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for step, values in sorted(by_step.items()) for k, v in values.items()]
    for start in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[start:start + 1000])


def _send_params(mlflow_client: "MlflowClient", run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[start:start + 100])



# ---------------------------------------------------------------------------------------------------
# the run record in RUN/


def read_record(run_dir: Path) -> dict | None:
    """RUN/mlflow_run.json ({"tracking_uri", "run_id", "experiment_id"}) or None."""
    path = Path(run_dir) / RUN_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"tracking_uri", "run_id"} <= set(record) else None


def write_record(run_dir: Path, record: dict) -> None:
    path = Path(run_dir) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def recorded_run_id(run_dir: Path, uri: str) -> str | None:
    """The MLflow run that trained RUN, if it was tracked in this store."""
    record = read_record(run_dir)
    return record["run_id"] if record and record["tracking_uri"] == uri else None


# ---------------------------------------------------------------------------------------------------
# the logged model


def model_signature(embed_dim: int):
    """Input: optional columns text (str), video and audio (a path or the file's bytes); output: (B, D) float32."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema, TensorSpec

    inputs = Schema([ColSpec(DataType.string, "text", required=False), ColSpec(AnyType(), "video", required=False),
                     ColSpec(AnyType(), "audio", required=False)])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, embed_dim))]))


def input_example(texts: Iterable[str]):
    """A portable example: captions only (media columns present but empty), so it needs no files."""
    import pandas as pd

    texts = list(texts)[:2] or ["a sound and a picture"]
    return pd.DataFrame({"text": texts, "video": [None] * len(texts), "audio": [None] * len(texts)})


def requirements() -> list[str]:
    """pip requirements of the logged model: what model.inference and the pyfunc wrapper import, pinned."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "av", "tokenizers", "safetensors", "tqdm"):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def _model_code(into: Path) -> Path:
    """A copy of the model/ package (sources and configs only), logged with the model so it loads on its own."""
    import model

    src = Path(model.__file__).resolve().parent
    dest = into / "model"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def log_trained_model(run_id: str, model_dir: Path, example_texts: Iterable[str] = (), *,
                      tracking_uri: str | None = None) -> str:
    """Log RUN/model as the pyfunc model "model" of run `run_id`; returns its models:/m-... URI.

    Models-from-code: registry/pyfunc_model.py is the model's code, the saved model directory
    (safetensors, config.json, tokenizer.json) its only artifact; nothing is pickled. MLflow checks the
    input example against the signature by loading the model and predicting it."""
    import mlflow

    from model.store import load_model, model_dir as resolve_model_dir, weights_digest

    model_dir = resolve_model_dir(model_dir)
    embed_dim = load_model(model_dir).config.embed_dim
    weights = weights_digest(model_dir)
    mlflow_client = client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="omniretriever-code-") as tmp, mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL, python_model=str(PYFUNC_FILE), artifacts={"model_dir": str(model_dir)},
            code_paths=[str(_model_code(Path(tmp)))], signature=model_signature(embed_dim),
            input_example=input_example(example_texts), pip_requirements=requirements(),
            metadata={"embed_dim": embed_dim, WEIGHTS_TAG: weights}, tags={WEIGHTS_TAG: weights},
            model_config={"media_root": "", "max_rows": 4096})  # defaults; load_model(model_config=...) overrides
    mlflow_client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    mlflow_client.set_tag(run_id, WEIGHTS_TAG, weights)
    return info.model_uri


def latest_model_uri(name: str = MODEL_NAME, alias: str = "champion") -> str:
    """The registry URI of a model alias, e.g. models:/omniretriever@champion (what serving loads)."""
    return f"models:/{name}@{alias}"


# ---------------------------------------------------------------------------------------------------
# training


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
            _send_metrics(self._client, self.run_id, {summary["steps"]: {"train/samples_per_s": summary["samples_per_s"],
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
                _send_metrics(self._client, self.run_id, self._pending)
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
        _send_params(self._client, self.run_id, {k: v for k, v in wanted.items() if k not in have})
        if changed:
            self._client.set_tag(self.run_id, "resume_changes", json.dumps(changed)[:8000])

    def _example_texts(self) -> list[str]:
        from model.manifest import read_split

        try:
            return [r.text for r in read_split(self.cfg.data, "train")[:2]]
        except (OmniRetrieverError, OSError):
            return []


def train_tracker(cfg: "TrainConfig", options: TrackingOptions) -> MlflowTracker:
    """The train-tracker factory the console script installs (model.hooks.Trackers.train)."""
    return MlflowTracker(cfg, options.tracking_uri, options.experiment, options.pipeline_run_id)


# ---------------------------------------------------------------------------------------------------
# evaluation


def log_evaluation(results: dict, results_path: Path, run_id: str | None = None, *, tracking_uri: str | None = None,
                   experiment: str | None = None, pipeline_run_id: str | None = None) -> str:
    """Log an evaluation (metrics, results.json, the heatmap figure, a per-direction table) into run
    `run_id`, or into a new evaluation run when None. Returns the run id."""
    _check_results(results)
    mlflow_client = client(tracking_uri)
    with store_errors(mlflow_client.tracking_uri, "logging the evaluation"):
        return _log_evaluation(mlflow_client, results, Path(results_path), run_id, experiment, pipeline_run_id)


def _log_evaluation(mlflow_client: "MlflowClient", results: dict, results_path: Path, run_id: str | None,
                    experiment: str | None, pipeline_run_id: str | None) -> str:
    split = results.get("split", "test")
    created = run_id is None
    if created:
        experiment_id = ensure_experiment(mlflow_client, experiment or DEFAULT_EXPERIMENT)
        tags = {**lineage_tags(results.get("data", "data"), pipeline_run_id), "kind": "evaluation",
                "evaluated_model": str(results.get("model", ""))}
        run_id = mlflow_client.create_run(experiment_id, run_name=f"evaluate-{split}", tags=tags).info.run_id
    else:
        existing_run(mlflow_client, run_id)
    _send_metrics(mlflow_client, run_id, {0: evaluation_metrics(results)})
    for key, value in _evaluation_tags(results, pipeline_run_id).items():
        mlflow_client.set_tag(run_id, key, value)
    _log_evaluation_files(mlflow_client, run_id, results, results_path, split)
    if created:
        mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


def _check_results(results: dict) -> None:
    if not isinstance(results, dict) or not isinstance(results.get("directions"), dict):
        raise TrackingError("evaluation results have no 'directions' mapping: not an evaluate() result")
    missing = [d for d in DIRECTION_NAMES if d not in results["directions"]] + [k for k in AVERAGES if k not in results]
    if missing:
        raise TrackingError(f"evaluation results lack {', '.join(missing)}: refusing to log a partial evaluation")
    bad = [k for k in AVERAGES if not isinstance(results[k], (int, float)) or not math.isfinite(results[k])]
    if bad:
        raise TrackingError(f"evaluation results have non-numeric {', '.join(bad)}")


def _evaluation_tags(results: dict, pipeline_run_id: str | None) -> dict[str, str]:
    split = results.get("split", "test")
    tags = {f"{split}.n_items": str(results.get("n_items", "")), f"{split}.evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if results.get("data"):
        tags[f"{split}.data_version"] = data_version(results["data"])
        tags[f"{split}.data_path"] = str(Path(results["data"]).resolve())
    if pipeline_run_id:
        tags[f"{split}.pipeline_run_id"] = pipeline_run_id
    return tags


def _log_evaluation_files(mlflow_client: "MlflowClient", run_id: str, results: dict, results_path: Path, split: str) -> None:
    import pandas as pd

    where = f"evaluation/{split}"
    if results_path.is_file():
        mlflow_client.log_artifact(run_id, str(results_path), artifact_path=where)
    figure = Path(results.get("plot") or results_path.with_suffix(".png"))
    if figure.is_file():
        mlflow_client.log_artifact(run_id, str(figure), artifact_path=where)
    rows = [{"direction": d, **{metric_name(k): v for k, v in m.items() if isinstance(v, (int, float))}}
            for d, m in results["directions"].items()]
    mlflow_client.log_table(run_id, data=pd.DataFrame(rows), artifact_file=f"{where}/directions.json")


def evaluation_logger(results: dict, results_path: Path, options: TrackingOptions) -> str:
    """The evaluation logger the console script installs: into --run-id, else into the run that trained the
    evaluated model (RUN/mlflow_run.json), else a new evaluation run. Returns a line for the console."""
    uri = resolve_uri(options.tracking_uri)
    run_dir = Path(results.get("model", ".")).parent
    run_id = options.run_id or recorded_run_id(run_dir, uri)
    run_id = log_evaluation(results, results_path, run_id, tracking_uri=uri, experiment=options.experiment,
                            pipeline_run_id=options.pipeline_run_id)
    split = results.get("split", "test")
    return (f"mlflow run: {run_id} ({split}.AVG-all {results['AVG-all']:.2f}); register it with "
            f"`omniretriever registry register {run_id}`; browse: {ui_command(uri)}")
