"""The components' Python functions, called directly (`.python_func`) with artifact fixtures, on the
tiny dataset: the same code the pipeline runs in each step, without the orchestrator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from kfp import dsl

from components.deploying import storage_uri_for
from components.evaluation import evaluate_model
from components.gpu.train import train_model
from components.reports import failures_line, gate_markdown, validation_html
from model.modalities import DIRECTION_NAMES


def artifact(cls: type, root: Path, name: str) -> dsl.Artifact:
    """An output artifact as the executor makes one: a local URI under the step's directory."""
    return cls(name=name, uri=str(root / name), metadata={})


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dsl.Model, tuple]:
    step = tmp_path_factory.mktemp("train-model")
    model = artifact(dsl.Model, step, "model")
    outputs = train_model.python_func(data=str(tiny_data), model=model, steps=3, batch_size=8, seed=0,
                                      data_md5="d41d8cd98f00b204e9800998ecf8427e.dir", track=False)
    return model, outputs


def test_train_writes_a_loadable_run_into_the_model_artifact(trained):
    from model.store import load_model

    model, outputs = trained
    run_id, world_size, final_loss = outputs
    assert run_id == "" and world_size == 1 and final_loss > 0
    loaded = load_model(model.path)
    assert loaded.path == Path(model.path) / "model"
    summary = json.loads((Path(model.path) / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["world_size"] == 1
    assert model.metadata["data_md5"].endswith(".dir") and model.metadata["steps"] == 3


def test_evaluate_scores_twelve_directions_into_metrics_and_results(trained, tiny_data, tmp_path):
    model, _ = trained
    metrics, results = artifact(dsl.Metrics, tmp_path, "metrics"), artifact(dsl.Artifact, tmp_path, "results")
    avg_all, avg_single, avg_dual = evaluate_model.python_func(model=model, data=str(tiny_data), metrics=metrics,
                                                               results=results, split="test")
    scores = json.loads((Path(results.path) / "results.json").read_text())
    assert set(scores["directions"]) == set(DIRECTION_NAMES) and scores["n_items"] == 24
    assert (Path(results.path) / "results.png").is_file()
    assert avg_all == pytest.approx(scores["AVG-all"]) == pytest.approx((avg_single + avg_dual) / 2)
    assert set(metrics.metadata) == {f"{d}_R@1" for d in DIRECTION_NAMES} | {"AVG-single", "AVG-dual", "AVG-all"}
    assert metrics.metadata["t2v_R@1"] == pytest.approx(scores["directions"]["t2v"]["R@1"])
    assert results.metadata["n_items"] == 24


def test_a_tracked_training_step_records_the_version_data_md5_as_its_data_version(tiny_data, tmp_path):
    """The pipeline's lineage is version-data's output, not what a .dvc file beside the data says."""
    from registry.store import client
    from tests.mlflow_helpers import sqlite_uri

    uri = sqlite_uri(tmp_path)
    model = artifact(dsl.Model, tmp_path / "train-model", "model")
    run_id, _, _ = train_model.python_func(data=str(tiny_data), model=model, steps=1, batch_size=8, seed=0,
                                           data_md5="0123456789abcdef0123456789abcdef.dir", tracking_uri=uri,
                                           pipeline_run_id="pipe-7")
    tags = client(uri).get_run(run_id).data.tags
    assert tags["data_version"] == "0123456789abcdef0123456789abcdef.dir" and tags["pipeline_run_id"] == "pipe-7"


def test_train_on_a_missing_dataset_fails_naming_it(tmp_path):
    model = artifact(dsl.Model, tmp_path, "model")
    with pytest.raises(Exception, match="nowhere"):
        train_model.python_func(data=str(tmp_path / "nowhere"), model=model, steps=1, batch_size=2, track=False)


VALIDATION = {"passed": False, "total": 10, "validated": 7, "rejected": 3, "rejected_fraction": 0.3,
              "failed_expectations": {
                  "caption_present": {"expectation": "expect_column_values_to_not_be_null", "reason": "empty caption",
                                      "count": 1, "ids": ["train:4"]},
                  "video_decodes": {"expectation": "expect_column_values_to_be_in_set", "reason": "<script>",
                                    "count": 4, "ids": ["test:1", "test:2", "test:3", "test:9"]}},
              "summary": "report/summary.json", "validated_manifest": "report/validated.jsonl",
              "rejected_manifest": "report/rejected.jsonl", "data_docs": "report/data_docs/index.html"}


def test_validation_report_names_the_verdict_and_the_failures():
    page = validation_html(VALIDATION, "data")
    assert "Validation FAILED" in page and "caption_present" in page and "train:4" in page
    assert "report/data_docs/index.html" in page
    assert "<script>" not in page and "&lt;script&gt;" in page, "report text is escaped"


def test_failures_line_names_checks_counts_and_first_rows():
    assert failures_line(VALIDATION) == ("caption_present: 1 row(s) (train:4); "
                                         "video_decodes: 4 row(s) (test:1, test:2, test:3, ...)")
    assert failures_line({"failed_expectations": {}}) == "no failed expectations"


@dataclass
class Row:
    metric: str
    challenger: float
    champion: float


@pytest.mark.parametrize("row", [{"metric": "t2v", "challenger": 10.5, "champion": 10.0}, Row("t2v", 10.5, 10.0)])
def test_gate_note_lists_reasons_and_rows(row):
    note = gate_markdown({"promoted": False, "challenger": "3", "champion_before": "2",
                          "reasons": ["AVG-all gain 0.10 < min_gain 0.50"], "rows": [row]})
    assert note.startswith("# Gate: not promoted") and "- AVG-all gain 0.10 < min_gain 0.50" in note
    assert "| metric | challenger | champion |" in note and "| t2v | 10.50 | 10.00 |" in note


@pytest.mark.parametrize("uri, expected", [
    ("minio://mlpipeline/v2/artifacts/omniretriever/x/export-model/repository",
     "s3://mlpipeline/v2/artifacts/omniretriever/x/export-model/repository"),
    ("gs://bucket/repo", "gs://bucket/repo"),
    ("s3://bucket/repo", "s3://bucket/repo"),
])
def test_storage_uri_for_pipeline_artifacts(uri, expected):
    assert storage_uri_for(uri) == expected


def test_storage_uri_refuses_local_paths():
    with pytest.raises(ValueError, match="object-store URI"):
        storage_uri_for("/tmp/repository")


def test_deploy_refuses_an_unknown_target(tmp_path):
    from components.serving_steps import deploy_model

    repo = artifact(dsl.Model, tmp_path, "repository")
    with pytest.raises(ValueError, match="'local' or 'kserve'"):
        deploy_model.python_func(repository=repo, target="staging")


def _fake_training(monkeypatch: pytest.MonkeyPatch, digest: str | None) -> dict:
    """run_training replaced by one that records its arguments and writes RUN/model/base.json with `digest`
    (none when None), as a trained pretrained backbone's run holds it."""
    from components import training

    given: dict = {}

    def run_training(kwargs, **_):
        given.update(kwargs)
        if digest is not None:
            (Path(kwargs["out"]) / "model").mkdir(parents=True)
            (Path(kwargs["out"]) / "model" / "base.json").write_text(json.dumps(
                {"path": kwargs["checkpoint"], "digest": digest, "layout": "thinker"}))
        return training.TrainResult({"final": {"loss": 1.0}}, "", 1)

    monkeypatch.setattr(training, "run_training", run_training)
    return given


def test_train_passes_the_checkpoint_on_and_records_the_base_it_trained_on(tmp_path, monkeypatch):
    given = _fake_training(monkeypatch, "ab" * 32)
    model = artifact(dsl.Model, tmp_path, "model")
    train_model.python_func(data="data", model=model, config="qwen2_5_omni", track=False, checkpoint="/ckpt/qwen",
                            checkpoint_sha256="ab" * 32)
    assert given["checkpoint"] == "/ckpt/qwen" and given["config"] == "qwen2_5_omni"
    assert given["token_keep"] == 1.0, "a pretrained backbone trains on every token"
    assert (model.metadata["checkpoint"], model.metadata["checkpoint_sha256"]) == ("/ckpt/qwen", "ab" * 32)


def test_train_refuses_a_run_whose_base_is_not_the_fetched_one(tmp_path, monkeypatch):
    _fake_training(monkeypatch, "cd" * 32)
    model = artifact(dsl.Model, tmp_path, "model")
    with pytest.raises(RuntimeError, match=f"digest {'cd' * 32} at /ckpt/qwen, but the fetched checkpoint's digest is "
                                           f"{'ab' * 32}: the copy changed after it was fetched"):
        train_model.python_func(data="data", model=model, config="qwen2_5_omni", track=False, checkpoint="/ckpt/qwen",
                                checkpoint_sha256="ab" * 32)


def test_train_without_a_checkpoint_gives_none_to_the_trainer(tmp_path, monkeypatch):
    given = _fake_training(monkeypatch, None)
    model = artifact(dsl.Model, tmp_path, "model")
    train_model.python_func(data="data", model=model, track=False, checkpoint="", checkpoint_sha256="")
    from model.defaults import TOKEN_KEEP

    assert given["checkpoint"] is None and model.metadata["checkpoint"] == ""
    assert given["token_keep"] == TOKEN_KEEP


def test_evaluate_benchmarks_scores_each_by_its_protocol_and_checks_every_entry_first(trained, tiny_data, tmp_path):
    from components.evaluation import evaluate_benchmarks

    model, _ = trained
    results = artifact(dsl.Artifact, tmp_path, "results")
    assert evaluate_benchmarks.python_func(model=model, benchmarks=[], results=results) == 0
    assert evaluate_benchmarks.python_func(model=model, benchmarks=[f"msrvtt={tiny_data}"], results=results) == 1
    scored = json.loads((Path(results.path) / "results-msrvtt.json").read_text())
    assert scored["protocol"]["benchmark"] == "msrvtt" and scored["reference"]["R@1"] == {"t2v": 47.9}
    assert set(results.metadata["benchmarks"]) == {"msrvtt"}
    for bad, message in [([f"msrvtt={tiny_data}", "nope=/x"], "unknown benchmark 'nope'"),
                         (["clotho"], "expected NAME=DATA_DIR")]:
        with pytest.raises(ValueError, match=message):
            evaluate_benchmarks.python_func(model=model, benchmarks=bad, results=artifact(dsl.Artifact, tmp_path, "r2"))
