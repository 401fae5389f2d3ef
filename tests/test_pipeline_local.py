"""Local pipeline runs with kfp.local's SubprocessRunner: how steps, failures and outcomes are read
back and reported, and (once every step's library is present) the whole pipeline end to end."""

# No `from __future__ import annotations`: kfp reads the test components' annotations as types.

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
from kfp import dsl
from typer.testing import CliRunner

from omniretriever.cli import app
from pipelines.local import LocalRun, StepRecord, local_arguments, run_local
from pipelines.report import outcome, print_report

STEP_LIBRARIES = ("dataset.versioning", "dataset.validation", "registry.tracking", "registry.registry", "model.export",
                  "serving.repository", "serving.launcher", "serving.client")


def _missing_libraries() -> list[str]:
    missing = []
    for name in STEP_LIBRARIES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def add_one(x: int) -> int:
    print("adding one")
    return x + 1


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def refuse(x: int) -> None:
    raise ValueError(f"row {x}, video: not a media file")


@dsl.pipeline(name="two-steps")
def failing_pipeline(x: int = 1) -> None:
    refuse(x=add_one(x=x).output)


def test_a_failed_step_is_named_with_its_error(tmp_path):
    events: list[tuple[str, str]] = []
    run = run_local({"x": 2}, tmp_path / "root", pipeline=failing_pipeline,
                    on_event=lambda s: events.append((s.name, s.status)))
    assert events == [("add-one", "running"), ("add-one", "succeeded"), ("refuse", "running"), ("refuse", "failed")]
    assert not run.succeeded and run.failed_step.name == "refuse"
    assert run.failed_step.error == "ValueError: row 3, video: not a media file"
    assert run.parameter("add-one", "Output") == 3, "outputs of the steps that ran are read back"
    assert all(s.seconds is not None and s.seconds >= 0 for s in run.steps)
    assert run.log.is_file() and "adding one" in run.log.read_text(), "every step's output is kept in the log"
    result = outcome(run)
    assert result.code == 1 and result.message == "step 'refuse' failed: ValueError: row 3, video: not a media file"


def test_the_real_pipeline_stops_at_the_first_failed_step(tmp_path):
    """A dataset path that does not exist fails the first step (pull-data: no dataset in place); nothing
    after it runs."""
    run = run_local(local_arguments(tmp_path / "no-such-dataset", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
                    tmp_path / "root")
    assert run.failed_step is not None and run.failed_step.name == "pull-data"
    assert [s.name for s in run.steps] == ["pull-data"] and "no dataset here" in run.failed_step.error
    assert outcome(run).code == 1


def _run(params: dict[str, dict], metadata: dict[tuple[str, str], dict]) -> LocalRun:
    """A finished run as read back: step parameters and artifact metadata."""
    outputs: dict[str, dict] = {}
    for step, p in params.items():
        outputs.setdefault(step, {"parameters": {}, "artifacts": {}})["parameters"] = p
    for (step, name), meta in metadata.items():
        outputs.setdefault(step, {"parameters": {}, "artifacts": {}})["artifacts"][name] = {"uri": f"/r/{step}/{name}",
                                                                                           "metadata": meta}
    return LocalRun(Path("/r"), Path("/r/pipeline.log"), {"mlflow_tracking_uri": "sqlite:///m.db"},
                    [StepRecord("validate-data", "succeeded", 0.0, 1.0)], outputs)


REJECTED = {("validate-data", "report"): {"passed": False, "total": 10, "rejected": 4,
                                          "failures": "video_decodes: 4 row(s)"}}
PASSED = {("validate-data", "report"): {"passed": True, "total": 10, "rejected": 0}}


@pytest.mark.parametrize("params, metadata, kind, code, words", [
    ({}, REJECTED, "validation-failed", 0,
     "validation failed: 4 of 10 rows rejected (video_decodes: 4 row(s)); training skipped"),
    ({"register-model": {"version": "2"}},
     {**PASSED, ("gate-model", "decision"): {"promoted": False, "reasons": "AVG-all gain 0.00 < 0.50"}},
     "not-promoted", 0, "challenger version 2 not promoted: AVG-all gain 0.00 < 0.50"),
    ({"register-model": {"version": "1"}, "deploy-model": {"detail": "smoke query answered"}},
     {**PASSED, ("gate-model", "decision"): {"promoted": True}},
     "promoted", 0, "version 1 promoted to champion and deployed (smoke query answered)"),
    ({}, PASSED, "incomplete", 1, "the run stopped before reaching an outcome although no step failed "
     "(steps run: validate-data); see the pipeline log"),
])
def test_validation_failure_and_gate_refusal_are_outcomes_not_errors(params, metadata, kind, code, words):
    result = outcome(_run(params, metadata))
    assert (result.kind, result.code, result.message) == (kind, code, words)


def test_report_prints_steps_and_locations(capsys):
    from rich.console import Console

    print_report(_run({}, REJECTED), Console(width=200, force_terminal=False))
    out = capsys.readouterr().out
    assert "validate-data" in out and "1.0 s" in out and "skipped" in out
    assert "mlflow ui --backend-store-uri sqlite:///m.db" in out and "validation failed" in out
    assert "fetch-checkpoint" in out and "base checkpoint" not in out


def test_report_names_the_base_checkpoint_a_run_fetched(capsys):
    from rich.console import Console

    run = _run({"fetch-checkpoint": {"path": "/workspace/checkpoints/" + "ab" * 32, "sha256": "ab" * 32}}, PASSED)
    print_report(run, Console(width=300, force_terminal=False))
    assert f"/workspace/checkpoints/{'ab' * 32} (sha256 {'ab' * 32})" in capsys.readouterr().out


def test_run_command_refuses_a_directory_that_is_not_a_dataset(tmp_path):
    result = CliRunner().invoke(app, ["pipeline", "run", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "no manifests/ directory" in result.output


@pytest.mark.parametrize("args, message", [
    (["--param", "batch_size=16"], "error: --param batch_size=16: use --batch-size"),
    (["--param", "mlflow_tracking_uri=sqlite:///x.db"], "error: --param mlflow_tracking_uri=sqlite:///x.db: use --tracking-uri"),
    (["--param", "max_rejected=0.1", "--param", "nonsense=1"],
     "error: --param nonsense=1: the pipeline has no parameter 'nonsense'; --param sets any of pull_data, max_rejected, "
     "allow_partial, checkpoint, checkpoint_cache, s3_endpoint_url, objective, eval_split, benchmarks,"),
    (["--train-steps", "0"], "error: invalid training option(s): --steps=0 (must be >= 1)"),
    (["--batch-size", "1"], "error: invalid training option(s): --batch-size=1 (must be >= 2)"),
], ids=["option-parameter", "tracking-uri", "unknown-parameter", "train-steps", "batch-size"])
def test_run_command_refuses_bad_parameters_before_any_step_runs(tmp_path, args, message):
    (tmp_path / "data" / "manifests").mkdir(parents=True)
    root = tmp_path / "root"
    result = CliRunner().invoke(app, ["pipeline", "run", "--data", str(tmp_path / "data"), "--root", str(root), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, "one line, no traceback"
    assert not root.exists(), "nothing ran"


def test_param_values_take_the_pipeline_parameter_types():
    """A String parameter takes VALUE as it is, a Float one an integer too (kfp refuses an int for a float)."""
    from pipelines.cli import _overrides
    from pipelines.pipeline import build_pipeline, local_steps

    types = {k: v.type for k, v in build_pipeline(local_steps(), cluster=False).component_spec.inputs.items()}
    params = _overrides(["floor=101", "model_name=2024", "checkpoint=/ckpt/qwen", "canary_percent=5", "pull_data=true"],
                        types)
    assert params == {"floor": 101.0, "model_name": "2024", "checkpoint": "/ckpt/qwen", "canary_percent": 5,
                      "pull_data": True}
    assert isinstance(params["floor"], float)


@pytest.mark.parametrize("args, message", [
    (["--param", "checkpoint=/ckpt"], "error: --param checkpoint=/ckpt: --config tiny is the tiny encoder, trained from "
     "scratch; a base checkpoint is for a pretrained backbone"),
    (["--config", "qwen2_5_omni"], "error: --config qwen2_5_omni is the qwen2_5_omni backbone: give its base checkpoint "
     "with --param checkpoint=DIR"),
    (["--config", "qwen2_5_omni", "--param", "checkpoint=gs://bucket/qwen"],
     "error: gs://bucket/qwen: unsupported scheme 'gs://'"),
    (["--config", "qwen2_5_omni", "--param", "checkpoint=NOWHERE"], "NOWHERE: checkpoint directory not found"),
    (["--config", "qwen2_5_omni", "--param", "checkpoint=it's"], "a local run cannot pass quotes or backslashes"),
], ids=["tiny-with-checkpoint", "omni-without", "bad-scheme", "missing-directory", "quote"])
def test_run_command_refuses_a_checkpoint_that_does_not_fit_before_any_step_runs(tmp_path, args, message):
    (tmp_path / "data" / "manifests").mkdir(parents=True)
    root = tmp_path / "root"
    args = [a.replace("NOWHERE", str(tmp_path / "nowhere")) for a in args]
    result = CliRunner().invoke(app, ["pipeline", "run", "--data", str(tmp_path / "data"), "--root", str(root), *args])
    assert result.exit_code == 2 and message.replace("NOWHERE", str(tmp_path / "nowhere")) in result.output, result.output
    assert not root.exists(), "nothing ran"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh git + DVC project as the working directory: the embedded MLflow store, the DVC remote
    and the pipeline root land here."""
    import subprocess

    from dataset.versioning import init_project

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OMNIRETRIEVER_MLFLOW_DIR", raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    init_project(tmp_path)
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(bool(_missing_libraries()), reason="the end-to-end run needs every step's library; missing: "
                    + ", ".join(_missing_libraries()) + " (the data, registry and serving work)")
def test_end_to_end_twice_then_a_validation_failure(tiny_data: Path, workdir: Path):
    """validate -> train -> evaluate -> register -> gate -> export + deploy on the tiny dataset; a second
    run trains a new challenger that the gate decides on; a corrupted copy fails validation cleanly."""
    data = workdir / "data"
    shutil.copytree(tiny_data, data)
    args = ["pipeline", "run", "--data", str(data), "--train-steps", "4", "--batch-size", "8", "--root", "runs/pipeline"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    for direction in ("t2v", "a2tv", "at2v"):
        assert direction in first.output
    assert "gate:" in first.output and "omniretriever v1" in first.output and "mlflow ui" in first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "omniretriever v2" in second.output and "gate:" in second.output

    from dataset.versioning import read_version

    published = read_version(workdir / "data.dvc")
    manifest = data / "manifests" / "test.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0]["video"] = rows[0]["audio"] = "videos/missing.mp4"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    third = CliRunner().invoke(app, args)
    assert third.exit_code == 0, third.output
    assert "validation failed" in third.output and "train-model" in third.output and "skipped" in third.output
    assert re.search(r"version-data\s*│\s*skipped", third.output), third.output
    assert read_version(workdir / "data.dvc") == published, "data that failed validation is not versioned or pushed"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(bool(_missing_libraries()), reason="the end-to-end run needs every step's library; missing: "
                    + ", ".join(_missing_libraries()))
def test_a_pretrained_backbone_trains_on_the_checkpoint_the_pipeline_was_given(tiny_data: Path, workdir: Path,
                                                                               omni_config: Path, thinker_dir: Path):
    """`pipeline run --config <qwen2_5_omni, CPU-sized> --param checkpoint=DIR`: fetch-checkpoint validates
    and digests the directory and hands it on unchanged, train-model trains the tiny random thinker on it
    (every token kept), and the run's model records that base in base.json; evaluate, register and the
    gate follow (floor 0: a first champion), then export builds the python-backend repository and deploy
    serves it on loopback (tritonserver running the PyTorch model, the transformer) and embeds a caption."""
    from model.omni.checkpoint import find_checkpoint
    from pipelines.local import read_outputs

    data = workdir / "data"
    shutil.copytree(tiny_data, data)
    result = CliRunner().invoke(app, ["pipeline", "run", "--data", str(data), "--config", str(omni_config),
                                      "--train-steps", "2", "--batch-size", "4", "--root", "runs/pipeline",
                                      "--param", f"checkpoint={thinker_dir}", "--param", "floor=0"])
    assert result.exit_code == 0, result.output
    assert "promoted" in result.output and "base checkpoint" in result.output
    (run_dir,) = [p for p in (workdir / "runs" / "pipeline").iterdir() if p.is_dir() and p.name != "gallery.db"]
    outputs = read_outputs(run_dir)
    digest = find_checkpoint(thinker_dir).digest
    assert outputs["fetch-checkpoint"]["parameters"] == {"path": str(thinker_dir), "sha256": digest}
    assert "no-checkpoint" not in outputs, "the else branch did not run"
    model = outputs["train-model"]["artifacts"]["model"]
    assert model["metadata"]["checkpoint"] == str(thinker_dir.resolve())
    assert model["metadata"]["checkpoint_sha256"] == digest
    base = json.loads((Path(model["uri"]) / "model" / "base.json").read_text())
    assert base["digest"] == digest and base["path"] == str(thinker_dir.resolve())
    assert outputs["register-model"]["parameters"]["version"] == "1"
    assert outputs["gate-model"]["parameters"]["Output"] is True
    repository = json.loads((Path(outputs["export-model"]["artifacts"]["repository"]["uri"]) / "repository.json").read_text())
    assert repository["backbone"] == "qwen2_5_omni" and repository["base"]["digest"] == digest
    detail = outputs["deploy-model"]["parameters"]["detail"]
    assert "through the av gallery of" in detail and "search page:" in detail, detail  # the test split, indexed
