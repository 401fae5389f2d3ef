"""MLflow tracking of training and evaluation, through the console script and the library, in a real sqlite store."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from model.cli import app as model_app
from model.errors import InputError
from model.modalities import DIRECTION_NAMES
from omniretriever.cli import app
from tests.conftest import free_port
from tests.mlflow_helpers import sqlite_uri

runner = CliRunner()


@pytest.fixture(scope="module")
def store() -> str:
    """The session's store (tests/conftest.py), where `tracked_run` was logged."""
    return os.environ["MLFLOW_TRACKING_URI"]


def train_args(data: Path, out: Path, *extra: str, steps: int = 3) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--batch-size", "8", "--steps", str(steps),
            "--checkpoint-every", str(steps), "--warmup-steps", "1", "--workers", "1", *extra]


def mlflow_client(uri: str):
    from registry.store import client

    return client(uri)


def test_training_run_records_config_loss_terms_lineage_and_model(tracked_run, store):
    run_dir, run_id = tracked_run
    run = mlflow_client(store).get_run(run_id)
    params, tags = run.data.params, run.data.tags
    assert params["objective"] == "full" and params["seed"] == "0" and params["steps"] == "3"
    assert params["encoder.embed_dim"].isdigit() and any(k.startswith("augment.") for k in params)
    assert not {"workers", "resumed_from", "cache_dir"} & set(params)
    for term in ("loss", "pairwise_loss", "distill_loss", "tuple_loss", "lr"):
        history = mlflow_client(store).get_metric_history(run_id, f"train/{term}")
        assert [m.step for m in history] == [1, 2, 3], term
    assert tags["data_version"] == "unversioned" and tags["pipeline_run_id"] == "pipe-42"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", tags["git_commit"])
    assert tags["model_uri"].startswith("models:/m-") and run.info.status == "FINISHED"
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == run_id


def test_evaluation_lands_in_the_training_run(tracked_run, store):
    run_dir, run_id = tracked_run
    results = json.loads((run_dir / "results.json").read_text())
    client = mlflow_client(store)
    metrics = client.get_run(run_id).data.metrics
    for d in DIRECTION_NAMES:
        assert metrics[f"test.{d}.R1"] == pytest.approx(results["directions"][d]["R@1"])
        assert metrics[f"test.{d}.R1_ci95_lo"] <= metrics[f"test.{d}.R1"] <= metrics[f"test.{d}.R1_ci95_hi"]
        assert f"test.{d}.NDCG10" in metrics and f"test.{d}.MdR" in metrics
    for avg in ("AVG-single", "AVG-dual", "AVG-all"):
        assert metrics[f"test.{avg}"] == pytest.approx(results[avg])
    files = {Path(f.path).name for f in client.list_artifacts(run_id, "evaluation/test")}
    assert files == {"results.json", "results.png", "directions.json"}
    assert client.get_run(run_id).data.tags["test.n_items"] == "24"


def test_logged_model_is_from_code_with_signature_and_input_example(tracked_run, store):
    import mlflow

    from model.store import load_model

    run_dir, run_id = tracked_run
    info = mlflow.models.get_model_info(mlflow_client(store).get_run(run_id).data.tags["model_uri"])
    inputs = info.signature.inputs.to_dict()
    assert [(c["name"], c["required"]) for c in inputs] == [("text", False), ("video", False), ("audio", False)]
    assert info.signature.outputs.inputs[0].shape == (-1, load_model(run_dir).config.embed_dim)
    assert info.saved_input_example_info is not None
    pyfunc = info.flavors["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in pyfunc
    assert pyfunc["artifacts"]["model_dir"]["path"] == "artifacts/model"


def test_logged_model_confines_paths_to_media_root_when_configured(tracked_run, tiny_data, store):
    import mlflow

    from model.inference import Embedder
    from model.manifest import read_split

    run_dir, run_id = tracked_run
    mlflow_client(store)  # points mlflow at the store
    model_uri = mlflow_client(store).get_run(run_id).data.tags["model_uri"]
    confined = mlflow.pyfunc.load_model(model_uri, model_config={"media_root": str(tiny_data)})
    video = read_split(tiny_data, "test")[0].video  # relative to the data root
    got = confined.predict(pd.DataFrame({"video": [video]}))
    np.testing.assert_allclose(got, Embedder(run_dir).embed([{"video": str(tiny_data / video)}]), atol=1e-5)
    with pytest.raises(InputError, match="row 0, video: '..' components are not allowed"):
        confined.predict(pd.DataFrame({"video": [f"../{tiny_data.name}/{video}"]}))


def count_runs(uri: str) -> int:
    client = mlflow_client(uri)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


@pytest.mark.parametrize("cli,extra", [(app, ["--no-track"]), (model_app, [])], ids=["--no-track", "model-app-alone"])
def test_untracked_training_logs_nothing(tiny_data, store, tmp_path, cli, extra):
    before = count_runs(store)
    res = runner.invoke(cli, train_args(tiny_data, tmp_path / "run", "--tracking-uri", store, *extra, steps=1))
    assert res.exit_code == 0, res.output
    assert "mlflow run" not in res.output and not (tmp_path / "run" / "mlflow_run.json").exists()
    assert count_runs(store) == before


def test_evaluate_into_an_unknown_run_is_a_clear_error(tracked_run, tiny_data, store, tmp_path):
    run_dir, _ = tracked_run
    out = tmp_path / "results.json"
    res = runner.invoke(app, ["evaluate", "--model", str(run_dir), "--data", str(tiny_data), "--workers", "1",
                              "--out", str(out), "--tracking-uri", store, "--run-id", "0123456789abcdef"])
    assert res.exit_code == 2
    assert "unknown run '0123456789abcdef'" in res.output and str(out) in res.output
    assert out.is_file()  # the evaluation itself is kept


def test_evaluating_again_into_a_run_draws_no_download_progress_bars(tracked_run, tiny_data, store, tmp_path):
    """A second evaluation of a run makes mlflow download its per-direction table first: quietly."""
    run_dir, _ = tracked_run
    client = mlflow_client(store)
    run_id = client.create_run(client.get_run(tracked_run[1]).info.experiment_id).info.run_id
    args = ["evaluate", "--model", str(run_dir), "--data", str(tiny_data), "--workers", "1", "--out",
            str(tmp_path / "results.json"), "--tracking-uri", store, "--run-id", run_id]
    for _ in range(2):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and f"mlflow run: {run_id}" in res.output, res.output
        assert "Downloading artifacts" not in res.output


def test_interrupted_training_resumes_into_the_same_run(tiny_data, store, tmp_path):
    from model.train import TrainConfig, train
    from registry.tracking import MlflowTracker

    cfg = TrainConfig(data=tiny_data, out=tmp_path / "run", steps=2, batch_size=8, warmup_steps=1, checkpoint_every=1, workers=1)

    class CtrlCAfterStep1:
        def on_checkpoint(self, step, path):
            if step == 1:
                raise KeyboardInterrupt

    first = MlflowTracker(cfg, store)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[first, CtrlCAfterStep1()], progress=False)  # as `omniretriever train` calls it
    client = mlflow_client(store)
    assert client.get_run(first.run_id).info.status == "KILLED"
    second = MlflowTracker(cfg, store)
    train(cfg, resume=True, callbacks=[second], progress=False)
    assert second.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from"] == "1"
    assert [m.step for m in client.get_metric_history(first.run_id, "train/loss")] == [1, 2]


def test_a_diverged_training_run_is_marked_failed_without_a_model(tiny_data, tmp_path):
    """`omniretriever train` with a learning rate that turns the loss NaN: exit 1, the MLflow run FAILED,
    its steps up to the divergence logged, no model logged."""
    uri = sqlite_uri(tmp_path)
    res = runner.invoke(app, train_args(tiny_data, tmp_path / "run", "--lr", "1e6", "--tracking-uri", uri, steps=6))
    assert res.exit_code == 1 and "training diverged at step" in res.output, res.output
    run_id = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())["run_id"]
    client = mlflow_client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "model_uri" not in run.data.tags and not client.search_logged_models([run.info.experiment_id])
    diverged = int(re.search(r"diverged at step (\d+)", res.output).group(1))
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(1, diverged))


def test_a_failure_inside_the_pipeline_training_step_marks_its_run_failed(tiny_data, tmp_path, monkeypatch):
    """components.training (the pipeline's route, in this process) gets the same abort handling as the
    command line, from the trainer itself: a training step that raises leaves its MLflow run FAILED,
    not RUNNING."""
    from components import training
    from model.errors import TrainingDiverged

    monkeypatch.setattr(training, "visible_gpus", lambda: 0)  # the in-process route, also on a GPU machine
    uri, out = sqlite_uri(tmp_path), tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="training diverged at step"):
        training.run_training(dict(data=tiny_data, out=out, steps=4, batch_size=8, warmup_steps=1, lr=1e6, workers=1),
                              nproc=1, tracking=True, tracking_uri=uri)
    run = mlflow_client(uri).get_run(json.loads((out / "mlflow_run.json").read_text())["run_id"])
    assert run.info.status == "FAILED" and "model_uri" not in run.data.tags
    assert not (out / "model").exists() and not (out / "train_summary.json").exists()


# ---------------------------------------------------------------------------------------------------
# where the store is, lineage, names


def test_store_resolution_and_nothing_in_mlruns(monkeypatch, tmp_path):
    from registry import store

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OMNIRETRIEVER_MLFLOW_DIR", str(tmp_path / "embedded"))
    embedded = store.configure()
    assert embedded == f"sqlite:///{tmp_path / 'embedded' / 'mlflow.db'}"
    assert store.resolve_uri("http://127.0.0.1:1") == "http://127.0.0.1:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///relative/x.db")
    assert store.resolve_uri() == f"sqlite:///{tmp_path / 'relative' / 'x.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    client = store.client()
    run = client.create_run(store.ensure_experiment(client, "where"))
    (tmp_path / "note.txt").write_text("x")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    assert not (tmp_path / "mlruns").exists()
    assert list((tmp_path / "embedded" / "artifacts").rglob("note.txt"))
    assert store.ui_command(embedded) == f"mlflow ui --backend-store-uri {embedded}"


@pytest.mark.parametrize("content,expected", [
    (None, "unversioned"),
    ("outs:\n- md5: 3f2a9c.dir\n  size: 10\n  nfiles: 2\n  path: data\n", "computed"),
    ("outs: []\n", "data.dvc: expected exactly one entry under 'outs'"),
    ("{not: yaml: at all", "data.dvc: not a valid .dvc file"),
])
def test_data_version_is_the_version_of_the_files_when_a_dvc_file_versions_them(tmp_path, content, expected):
    from model.errors import VersioningError
    from dataset.versioning import dir_hash
    from registry.lineage import data_version, lineage_tags

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a\n")
    if content is not None:
        (tmp_path / "data.dvc").write_text(content)
    if expected.startswith("data.dvc"):
        with pytest.raises(VersioningError, match=re.escape(expected)):
            data_version(tmp_path / "data")
    elif expected == "computed":  # data.dvc records 3f2a9c.dir, the files are another version: theirs is recorded
        assert data_version(tmp_path / "data") == dir_hash(tmp_path / "data")
        tags = lineage_tags(tmp_path / "data", None)
        assert tags["data_version"] == dir_hash(tmp_path / "data") and tags["recorded_data_version"] == "3f2a9c.dir"
        assert lineage_tags(tmp_path / "data", None, "given.dir")["data_version"] == "given.dir"
    else:
        assert data_version(tmp_path / "data") == expected
        assert "recorded_data_version" not in lineage_tags(tmp_path / "data", None)


def test_metric_names_are_legal_and_partial_results_are_refused(tmp_path):
    from registry.evaluation_log import evaluation_metrics, log_evaluation
    from registry.store import TrackingError

    direction = {"R@1": 12.5, "R@5": 50.0, "R@1_ci95": [5.0, 20.0], "MdR": 3.0, "NDCG@10": 0.4}
    results = {"split": "val", "directions": {d: dict(direction) for d in DIRECTION_NAMES},
               "AVG-single": 12.5, "AVG-dual": 12.5, "AVG-all": 12.5}
    names = evaluation_metrics(results)
    assert names["val.t2v.R1"] == 12.5 and names["val.t2v.NDCG10"] == 0.4
    assert (names["val.t2v.R1_ci95_lo"], names["val.t2v.R1_ci95_hi"]) == (5.0, 20.0)
    assert all(re.fullmatch(r"[\w.\- /:]+", k) for k in names)
    del results["directions"]["a2v"]
    with pytest.raises(TrackingError, match="lack a2v"):
        log_evaluation(results, tmp_path / "results.json", None, tracking_uri=sqlite_uri(tmp_path))


# ---------------------------------------------------------------------------------------------------
# the pyfunc model's input handling


@pytest.mark.parametrize("frame,expected", [
    (pd.DataFrame({"text": ["a", None], "video": [None, b"\x00"]}), [{"text": "a"}, {"video": b"\x00"}]),
    (pd.DataFrame({"text": ["a", np.nan], "audio": [np.nan, "clip.mp4"]}), [{"text": "a"}, {"audio": "clip.mp4"}]),
    (pd.DataFrame({"video": [pd.NA]}), [{}]),
])
def test_dataframe_rows_drop_absent_cells(frame, expected):
    from registry.pyfunc_model import dataframe_rows

    assert dataframe_rows(frame) == expected


@pytest.mark.parametrize("frame,kwargs,message", [
    ([{"text": "a"}], {}, "expected a pandas DataFrame"),
    (pd.DataFrame({"text": ["a"] * 3}), {"max_rows": 2}, "3 rows, over the limit of 2"),
    (pd.DataFrame({"video": ["../secret.mp4"]}), {"media_root": "MEDIA"}, "row 0, video: '..' components are not allowed"),
    (pd.DataFrame({"video": ["/etc/passwd"]}), {"media_root": "MEDIA"}, "row 0, video: absolute paths are not allowed"),
])
def test_dataframe_rows_refuse_bad_input(tmp_path, frame, kwargs, message):
    from registry.pyfunc_model import dataframe_rows

    if kwargs.get("media_root"):
        kwargs["media_root"] = tmp_path
    with pytest.raises(InputError, match=re.escape(message)):
        dataframe_rows(frame, **kwargs)


def test_media_root_confines_paths(tmp_path):
    from registry.pyfunc_model import dataframe_rows

    (tmp_path / "clips").mkdir()
    rows = dataframe_rows(pd.DataFrame({"video": ["clips/a.mp4"], "audio": [b"raw"]}), media_root=tmp_path)
    assert rows == [{"video": str(tmp_path.resolve() / "clips" / "a.mp4"), "audio": b"raw"}]


def test_an_unreachable_tracking_server_is_a_clear_error(tiny_data, tmp_path, monkeypatch):
    port = free_port()  # a port nothing listens on
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    res = runner.invoke(app, train_args(tiny_data, tmp_path / "run", "--tracking-uri", f"http://127.0.0.1:{port}", steps=1))
    assert res.exit_code == 2, res.output
    assert f"error: MLflow at http://127.0.0.1:{port} failed while starting the training run" in res.output
    assert not (tmp_path / "run" / "mlflow_run.json").exists()
