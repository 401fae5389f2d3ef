"""Helpers for the tracking and registry tests: real MLflow runs in a real store, built from real models."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from model.modalities import DUAL_DIRECTIONS, SINGLE_DIRECTIONS


def sqlite_uri(directory: Path) -> str:
    return f"sqlite:///{Path(directory).resolve() / 'mlflow.db'}"


def shifted(results: dict, deltas: dict[str, float]) -> dict:
    """A copy of evaluation results with some directions' R@1 moved by `deltas` points and the averages
    recomputed the way model.evaluate computes them (to give the gate challengers of known quality)."""
    out = copy.deepcopy(results)
    for direction, delta in deltas.items():
        r1 = min(100.0, max(0.0, out["directions"][direction]["R@1"] + delta))
        out["directions"][direction]["R@1"] = r1
    single = float(np.mean([out["directions"][d]["R@1"] for d in SINGLE_DIRECTIONS]))
    dual = float(np.mean([out["directions"][d]["R@1"] for d in DUAL_DIRECTIONS]))
    out.update({"AVG-single": single, "AVG-dual": dual, "AVG-all": (single + dual) / 2})
    return out


def new_run(uri: str, model_dir: Path, results: dict | None, workdir: Path, experiment: str = "tests") -> str:
    """A run in store `uri` holding the pyfunc model of `model_dir` and, if given, an evaluation."""
    from registry.evaluation_log import log_evaluation
    from registry.logged_model import log_trained_model
    from registry.store import client as store_client, ensure_experiment

    client = store_client(uri)
    experiment_id = ensure_experiment(client, experiment)
    run_id = client.create_run(experiment_id, tags={"kind": "train"}).info.run_id
    log_trained_model(run_id, model_dir, ["a caption"], tracking_uri=uri)
    if results is not None:
        path = Path(workdir) / run_id / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(results))
        log_evaluation(results, path, run_id, tracking_uri=uri)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def registry_state(uri: str) -> dict:
    """Every registered model's aliases and versions (with tags): equal snapshots = nothing changed."""
    from registry.store import client as store_client

    client = store_client(uri)
    state = {}
    for rm in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{rm.name}'")
        state[rm.name] = {"aliases": {k: str(v) for k, v in (rm.aliases or {}).items()},
                          "versions": sorted((v.version, tuple(sorted((v.tags or {}).items()))) for v in versions)}
    return state


def logged_weights(uri: str, run_id: str) -> Path:
    """The model.safetensors file inside a run's logged model, in a local artifact store."""
    from registry.logged_model import MODEL_URI_TAG
    from registry.store import client as store_client

    client = store_client(uri)
    model_id = client.get_run(run_id).data.tags[MODEL_URI_TAG].removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location.removeprefix("file://")
    return Path(location) / "artifacts" / "model" / "model.safetensors"
