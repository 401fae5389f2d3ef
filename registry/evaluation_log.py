"""An evaluation in MLflow: `<prefix>.<direction>.<metric>` (R1, R5, R10, MdR, MnR, MRR, NDCG10, R1_ci95_lo/_hi;
MLflow names cannot hold "@"), `<prefix>.AVG-single|AVG-dual|AVG-all`, tags naming the gallery size, data
version and time, and under evaluation/<prefix>/ results.json, the heatmap figure and a per-direction
table. The prefix is the split ("test"), or the benchmark's name for `evaluate --benchmark` ("clotho"), so
each benchmark of a run keeps its own metrics. A benchmark scores only the directions its items hold
(Clotho has no video): the others are listed in results["unscored"] and logged as nothing, never zero.
`evaluation_logger` is what `omniretriever evaluate` and the pipeline's evaluate step log through.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from model.hooks import TrackingOptions
from model.modalities import DIRECTION_NAMES
from registry.lineage import data_version, lineage_tags
from registry.run_record import recorded_run_id
from registry.store import (DEFAULT_EXPERIMENT, TrackingError, client, ensure_experiment, existing_run, no_progress_bars,
                            resolve_uri, send_metrics, store_errors, ui_command)

if TYPE_CHECKING:
    from mlflow import MlflowClient

AVERAGES = ("AVG-single", "AVG-dual", "AVG-all")


def evaluation_logger(results: dict, results_path: Path, options: TrackingOptions) -> str:
    """Log an evaluate() result into options.run_id, else into the run that trained the evaluated model
    (RUN/mlflow_run.json), else into a new evaluation run. Returns a line for the console."""
    uri = resolve_uri(options.tracking_uri)
    run_dir = Path(results.get("model", ".")).parent
    run_id = options.run_id or recorded_run_id(run_dir, uri)
    run_id = log_evaluation(results, results_path, run_id, tracking_uri=uri, experiment=options.experiment,
                            pipeline_run_id=options.pipeline_run_id)
    split = evaluation_prefix(results)
    return (f"mlflow run: {run_id} ({split}.AVG-all {results['AVG-all']:.2f}); register it with "
            f"`omniretriever registry register {run_id}`; browse: {ui_command(uri)}")


def log_evaluation(results: dict, results_path: Path, run_id: str | None = None, *, tracking_uri: str | None = None,
                   experiment: str | None = None, pipeline_run_id: str | None = None) -> str:
    """Log an evaluation (metrics, results.json, the heatmap figure, a per-direction table) into run
    `run_id`, or into a new evaluation run when None. Returns the run id."""
    _check_results(results)
    mlflow_client = client(tracking_uri)
    with store_errors(mlflow_client.tracking_uri, "logging the evaluation"), no_progress_bars():
        return _log_evaluation(mlflow_client, results, Path(results_path), run_id, experiment, pipeline_run_id)


def evaluation_prefix(results: dict) -> str:
    """Where an evaluation's metrics go: its benchmark's name, else its split."""
    return (results.get("protocol") or {}).get("benchmark") or results.get("split", "test")


def metric_name(name: str) -> str:
    """An MLflow-legal metric or tag name: "R@1" -> "R1", "NDCG@10" -> "NDCG10"."""
    return re.sub(r"[^\w.\- /:]", "", name)


def evaluation_metrics(results: dict) -> dict[str, float]:
    """results.json -> {"<prefix>.<direction>.<metric>": value, "<prefix>.AVG-all": value, ...}.

    A 95% interval [lo, hi] becomes two metrics, "..._lo" and "..._hi"; non-numeric fields (and an average
    no direction was scored for) are skipped."""
    split = evaluation_prefix(results)
    out: dict[str, float] = {}
    for direction, metrics in results["directions"].items():
        for key, value in metrics.items():
            name = f"{split}.{direction}.{metric_name(key)}"
            if isinstance(value, (list, tuple)) and len(value) == 2:
                out[f"{name}_lo"], out[f"{name}_hi"] = float(value[0]), float(value[1])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name] = float(value)
    for key in AVERAGES:
        if results.get(key) is not None:
            out[f"{split}.{key}"] = float(results[key])
    return out


def _log_evaluation(mlflow_client: "MlflowClient", results: dict, results_path: Path, run_id: str | None,
                    experiment: str | None, pipeline_run_id: str | None) -> str:
    split = evaluation_prefix(results)
    created = run_id is None
    if created:
        experiment_id = ensure_experiment(mlflow_client, experiment or DEFAULT_EXPERIMENT)
        tags = {**lineage_tags(results.get("data", "data"), pipeline_run_id), "kind": "evaluation",
                "evaluated_model": str(results.get("model", ""))}
        run_id = mlflow_client.create_run(experiment_id, run_name=f"evaluate-{split}", tags=tags).info.run_id
    else:
        existing_run(mlflow_client, run_id)
    send_metrics(mlflow_client, run_id, {0: evaluation_metrics(results)})
    for key, value in _evaluation_tags(results, pipeline_run_id).items():
        mlflow_client.set_tag(run_id, key, value)
    _log_evaluation_files(mlflow_client, run_id, results, results_path, split)
    if created:
        mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


def _check_results(results: dict) -> None:
    if not isinstance(results, dict) or not isinstance(results.get("directions"), dict):
        raise TrackingError("evaluation results have no 'directions' mapping: not an evaluate() result")
    unscored = set(results.get("unscored") or [])
    missing = [d for d in DIRECTION_NAMES if d not in results["directions"] and d not in unscored]
    missing += [k for k in AVERAGES if k not in results]
    if missing:
        raise TrackingError(f"evaluation results lack {', '.join(missing)}: refusing to log a partial evaluation")
    if results.get("AVG-all") is None:
        raise TrackingError("evaluation results have no AVG-all: no direction was scored")
    bad = [k for k in AVERAGES if results[k] is not None and (not isinstance(results[k], (int, float))
                                                              or not math.isfinite(results[k]))]
    if bad:
        raise TrackingError(f"evaluation results have non-numeric {', '.join(bad)}")


def _evaluation_tags(results: dict, pipeline_run_id: str | None) -> dict[str, str]:
    split = evaluation_prefix(results)
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
