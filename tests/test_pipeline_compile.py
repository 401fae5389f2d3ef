"""The compiled pipeline: golden file, and the cluster settings the IR YAML must carry."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE, CUDA_BASE_IMAGE, CUDA_TARGET_IMAGE
from pipelines.compile import COMPILED, compile_pipeline

ROOT = Path(__file__).resolve().parents[1]
CPU_STEPS = ("pull-data", "validate-data", "version-data", "fetch-checkpoint", "no-checkpoint", "evaluate-model",
             "register-model", "gate-model", "export-model", "deploy-model")
ALL_STEPS = CPU_STEPS + ("train-model",)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, dict]:
    """(text, pipeline spec, kubernetes platform spec) of a fresh compilation."""
    path = compile_pipeline(tmp_path_factory.mktemp("compiled") / "omniretriever.yaml")
    text = path.read_text()
    pipeline_spec, platform_spec = list(yaml.safe_load_all(text))
    return text, pipeline_spec, platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_matches_committed_yaml(compiled):
    text, _, _ = compiled
    assert COMPILED.read_text() == text, (
        "pipelines/compiled/omniretriever.yaml is stale: run `omniretriever pipeline compile` and commit it")


def test_compile_command_writes_the_yaml(tmp_path):
    from typer.testing import CliRunner

    from omniretriever.cli import app

    out = tmp_path / "p.yaml"
    result = CliRunner().invoke(app, ["pipeline", "compile", "--out", str(out)])
    assert result.exit_code == 0 and str(out) in result.output
    assert yaml.safe_load_all(out.read_text())


def _executor(spec: dict, step: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{step}"]["container"]


def test_training_requests_gpus_on_the_gpu_pool(compiled):
    _, spec, k8s = compiled
    train = _executor(spec, "train-model")
    assert train["image"] == CUDA_TARGET_IMAGE
    accel = train["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu" and "pipelinechannel--gpus" in accel["resourceCount"]
    assert k8s["exec-train-model"]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == "pipelinechannel--gpu_node_selector"
    (toleration,) = k8s["exec-train-model"]["tolerations"]
    assert toleration["tolerationJson"]["componentInputParameter"] == "pipelinechannel--gpu_tolerations"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gpu_node_selector"]["defaultValue"] == {"cloud.google.com/gke-nodepool": "gpu-pool"}
    assert params["gpu_tolerations"]["defaultValue"][0]["key"] == "nvidia.com/gpu"
    assert params["gpus"]["defaultValue"] == 1.0


@pytest.mark.parametrize("step", CPU_STEPS)
def test_glue_steps_run_in_the_cpu_image_without_gpus(compiled, step):
    _, spec, k8s = compiled
    container = _executor(spec, step)
    assert container["image"] == CPU_TARGET_IMAGE and "accelerator" not in container.get("resources", {})
    assert "nodeSelector" not in k8s.get(f"exec-{step}", {})
    assert container["command"] == ["python3", "-m", "kfp.dsl.executor_main"], "containerized: code comes from the image"


@pytest.mark.parametrize("step", ["pull-data", "validate-data", "version-data", "fetch-checkpoint", "train-model",
                                  "evaluate-model", "register-model", "export-model"])
def test_data_steps_mount_the_workspace_volume_with_the_feature_cache(compiled, step):
    _, spec, k8s = compiled
    (mount,) = k8s[f"exec-{step}"]["pvcMount"]
    assert mount["mountPath"] == "/workspace" and mount["pvcNameParameter"]["componentInputParameter"].endswith("workspace_pvc")
    assert {"name": "OMNIRETRIEVER_CACHE", "value": "/workspace/cache"} in _executor(spec, step)["env"]


@pytest.mark.parametrize("step, secret, env", [
    ("pull-data", "dvc_secret", {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}),
    ("version-data", "dvc_secret", {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}),
    ("fetch-checkpoint", "dvc_secret", {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}),
    ("train-model", "mlflow_secret", {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}),
    ("evaluate-model", "mlflow_secret", {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}),
    ("register-model", "mlflow_secret", {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}),
    ("gate-model", "mlflow_secret", {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}),
])
def test_credentials_come_from_kubernetes_secrets(compiled, step, secret, env):
    _, _, k8s = compiled
    (entry,) = k8s[f"exec-{step}"]["secretAsEnv"]
    assert entry["secretNameParameter"]["componentInputParameter"].endswith(secret)
    assert {kv["envVar"] for kv in entry["keyToEnv"]} == env


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task of the DAG, nested condition groups included."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def _branches(spec: dict) -> dict[str, str]:
    """The step each condition's sub-DAG runs -> its condition."""
    branches = {}
    for task in _tasks(spec).values():
        if "triggerPolicy" in task:
            sub = spec["components"][task["componentRef"]["name"]].get("dag", {}).get("tasks", {})
            branches.update({name: task["triggerPolicy"]["condition"] for name in sub})
    return branches


def _source(spec: dict, task_name: str, param: str) -> dict:
    """Where the input `param` of task `task_name` comes from, followed up through the condition groups that
    hand it down (componentInputParameter) to the task output or pipeline parameter it starts at."""
    dags = {"root": spec["root"]["dag"], **{n: c["dag"] for n, c in spec["components"].items() if "dag" in c}}
    owner = next(n for n, d in dags.items() if task_name in d["tasks"])
    source = dags[owner]["tasks"][task_name]["inputs"]["parameters"][param]
    while "componentInputParameter" in source and owner != "root":  # up to the group task that hands it down
        owner, parent = next((n, d["tasks"][t]) for n, d in dags.items() for t in d["tasks"]
                             if d["tasks"][t]["componentRef"]["name"] == owner)
        source = parent["inputs"]["parameters"][source["componentInputParameter"]]
    return source


def test_flaky_steps_retry_and_nothing_is_cached(compiled):
    _, spec, _ = compiled
    tasks = _tasks(spec)
    retried = {name for name, t in tasks.items() if "retryPolicy" in t}
    assert retried == {"pull-data", "version-data", "fetch-checkpoint", "register-model", "deploy-model", "plan-index",
                       "index-shard", "publish-index", "launch-training"}
    assert all(tasks[s]["retryPolicy"]["maxRetryCount"] == 3 for s in retried)
    assert all(not tasks[s].get("cachingOptions", {}).get("enableCache", False) for s in ALL_STEPS)


def test_training_runs_only_after_validation_passes_and_deploy_only_when_promoted(compiled):
    _, spec, _ = compiled
    tasks = _tasks(spec)
    conditions = {name: t["triggerPolicy"]["condition"] for name, t in tasks.items() if "triggerPolicy" in t}
    # each branch tests its step's single return value: kfp.local resolves only "Output" in conditions
    assert any("validate-data-Output" in c for c in conditions.values())
    assert any("gate-model-Output" in c for c in conditions.values())
    assert set(tasks) >= set(ALL_STEPS)


def test_data_is_validated_before_it_is_versioned_and_pushed(compiled):
    """pull-data -> validate-data -> [passed] version-data -> train-model: nothing unvalidated is published."""
    _, spec, _ = compiled
    tasks = _tasks(spec)
    assert tasks["validate-data"]["dependentTasks"] == ["pull-data"]
    passed = next(comp for comp in spec["components"].values() if "version-data" in comp.get("dag", {}).get("tasks", {}))
    def runs(comp: str, step: str) -> bool:  # whether component `comp`'s DAG runs `step`, at any depth
        sub = spec["components"][comp].get("dag", {}).get("tasks", {})
        return step in sub or any(runs(s["componentRef"]["name"], step) for s in sub.values())

    (group,) = [g for g in passed["dag"]["tasks"].values() if runs(g["componentRef"]["name"], "train-model")]
    assert runs(group["componentRef"]["name"], "launch-training"), "both routes of training in one group"
    assert "version-data" in group["dependentTasks"], "training sits in the validation-passed branch, after version"
    for step in ("train-model", "launch-training"):  # one node, or a TrainJob across several
        md5 = _source(spec, step, "data_md5")["taskOutputParameter"]
        assert md5 == {"outputParameterKey": "md5", "producerTask": "version-data"}, step


def test_a_given_checkpoint_is_fetched_before_training_and_feeds_it(compiled):
    """[checkpoint != ""] fetch-checkpoint, else no-checkpoint; train-model takes path and sha256 from the one
    that ran (dsl.OneOf); the cache on the volume and the S3 endpoint are parameters."""
    _, spec, _ = compiled
    branches = _branches(spec)
    given = "inputs.parameter_values['pipelinechannel--checkpoint'] != ''"
    assert branches["fetch-checkpoint"] == given and branches["no-checkpoint"] == f"!({given})"
    tasks = _tasks(spec)
    fetch = tasks["fetch-checkpoint"]["inputs"]["parameters"]
    assert {k: v["componentInputParameter"] for k, v in fetch.items()} == {
        "checkpoint": "pipelinechannel--checkpoint", "cache": "pipelinechannel--checkpoint_cache",
        "endpoint_url": "pipelinechannel--s3_endpoint_url"}
    oneofs = {key: value["valueFromOneof"] for comp in spec["components"].values()
              for key, value in comp.get("dag", {}).get("outputs", {}).get("parameters", {}).items()
              if "valueFromOneof" in value}
    for (name, output), step in itertools.product((("checkpoint", "path"), ("checkpoint_sha256", "sha256")),
                                                  ("train-model", "launch-training")):
        selectors = oneofs[_source(spec, step, name)["taskOutputParameter"]["outputParameterKey"]]["parameterSelectors"]
        assert {s["outputParameterKey"] for s in selectors} == {f"pipelinechannel--fetch-checkpoint-{output}",
                                                                f"pipelinechannel--no-checkpoint-{output}"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["checkpoint_cache"]["defaultValue"] == "/workspace/checkpoints"
    assert params["checkpoint"].get("defaultValue", "") == "" and params["s3_endpoint_url"].get("defaultValue", "") == ""


def test_local_flavour_is_lightweight_and_has_no_cluster_settings(tmp_path):
    from kfp import compiler

    from pipelines.pipeline import build_pipeline, local_steps

    out = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_pipeline(local_steps(), cluster=False), str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 1, "no Kubernetes platform spec in the local flavour"
    for step in ALL_STEPS:
        command = _executor(docs[0], step)["command"]
        assert "ephemeral_component.py" in " ".join(command) and "pip install" not in " ".join(command)
    assert not any("retryPolicy" in t for t in _tasks(docs[0]).values())


@pytest.mark.parametrize("dockerfile, base", [("components/Dockerfile", CPU_BASE_IMAGE),
                                              ("components/gpu/Dockerfile", CUDA_BASE_IMAGE)])
def test_dockerfiles_start_from_the_pinned_base_images(dockerfile, base):
    text = (ROOT / dockerfile).read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms == [base]
    assert re.search(r":\d+\.\d+\.\d+", base) and "latest" not in base, "base images are pinned to exact releases"
    assert "torch==2.13.0" in text and "constraints.txt" in text


@pytest.mark.parametrize("dockerfile, modules", [
    ("components/Dockerfile", ("boto3", "huggingface_hub", "tokenizers")),
    ("components/gpu/Dockerfile", ("transformers", "peft", "accelerate", "boto3", "huggingface_hub")),
])
def test_images_carry_the_pretrained_backbone_and_the_checkpoint_stores(dockerfile, modules):
    """Both images install the wheel, whose dependencies carry the omni backbone and fetch-checkpoint's
    clients; each image's build imports the ones its steps need."""
    import tomllib

    declared = {re.split(r"[<>=!\[ ]", d, maxsplit=1)[0].lower()
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert {"transformers", "peft", "accelerate", "boto3", "tokenizers"} <= declared
    checks = re.findall(r'^RUN python -c "import ([\w, ]+)"$', (ROOT / dockerfile).read_text(), flags=re.M)
    assert checks and set(modules) <= {m.strip() for m in checks[0].split(",")}


def test_every_entry_point_trains_on_the_same_default_budget(tmp_path, monkeypatch):
    """model/defaults.py is the one budget: the pipeline's parameters, the local run's arguments, TrainConfig,
    and the training component, whose unset steps and batch size become it (a lightweight component
    carries only its own source, so its signature cannot name the constants)."""
    import inspect

    from kfp import dsl

    from components import training
    from components.gpu.train import train_model
    from model import defaults
    from model.train import TrainConfig
    from pipelines.local import local_arguments
    from pipelines.pipeline import build_pipeline

    params = inspect.signature(train_model.python_func).parameters
    assert (params["steps"].default, params["batch_size"].default) == (None, None)
    given = {}

    def run_training(kwargs, **_):
        given.update(kwargs)
        return training.TrainResult({"final": {"loss": 1.0}}, "", 1)

    monkeypatch.setattr(training, "run_training", run_training)
    model = dsl.Model(name="model", uri=str(tmp_path / "model"), metadata={})
    train_model.python_func(data="data", model=model, track=False)
    assert (given["steps"], given["batch_size"]) == (defaults.TRAIN_STEPS, defaults.BATCH_SIZE)
    assert model.metadata["steps"] == defaults.TRAIN_STEPS
    cfg = TrainConfig(data=Path("."), out=Path("."))
    assert (cfg.steps, cfg.batch_size, cfg.token_keep, cfg.unmasked_steps) == (
        defaults.TRAIN_STEPS, defaults.BATCH_SIZE, defaults.TOKEN_KEEP, defaults.UNMASKED_STEPS)
    args = local_arguments("data")
    assert (args["train_steps"], args["batch_size"]) == (defaults.TRAIN_STEPS, defaults.BATCH_SIZE)
    inputs = build_pipeline().component_spec.inputs
    assert (inputs["train_steps"].default, inputs["batch_size"].default) == (defaults.TRAIN_STEPS, defaults.BATCH_SIZE)


def test_every_entry_point_gates_with_the_same_thresholds(tmp_path, monkeypatch):
    """registry.registry's DEFAULT_* are the gate's thresholds for `registry promote`, the pipeline's
    parameters and the gate component, whose unset thresholds become them."""
    import typer.main
    from kfp import dsl

    import registry.registry
    from components.registry_steps import gate_model
    from omniretriever.cli import app
    from pipelines.pipeline import build_pipeline
    from registry.registry import DEFAULT_FLOOR, DEFAULT_MAX_DROP, DEFAULT_MIN_GAIN, GateDecision

    expected = {"min_gain": DEFAULT_MIN_GAIN, "max_drop": DEFAULT_MAX_DROP, "floor": DEFAULT_FLOOR}
    promote = typer.main.get_command(app).commands["registry"].commands["promote"]
    assert {p.name: p.default for p in promote.params if p.name in expected} == expected
    inputs = build_pipeline().component_spec.inputs
    assert {k: inputs[k].default for k in expected} == expected
    given = {}

    def fake_promote(name, min_gain, max_drop, floor, **_):
        given.update(min_gain=min_gain, max_drop=max_drop, floor=floor)
        return GateDecision(False, "1", None, ["a reason"], [])

    monkeypatch.setattr(registry.registry, "promote", fake_promote)
    gate_model.python_func(decision=dsl.Markdown(name="decision", uri=str(tmp_path / "decision.md"), metadata={}))
    assert given == expected


def test_several_train_nodes_launch_a_trainjob_instead_of_the_training_pod(compiled):
    """train_nodes == 1: train-model in its pod (GPUs, node pool); else launch-training (CPU image) submits the
    TrainJob with the same data, budget and base, and its outputs feed evaluation and registration (dsl.OneOf)."""
    _, spec, k8s = compiled
    branches = _branches(spec)
    one = "int(inputs.parameter_values['pipelinechannel--train_nodes']) == 1"
    assert branches["train-model"] == one and branches["launch-training"] == f"!({one})"
    for param, pipeline_param in (("nodes", "train_nodes"), ("gpus_per_node", "gpus"), ("image", "train_image"),
                                  ("namespace", "namespace"), ("deadline_s", "train_deadline_s")):
        assert _source(spec, "launch-training", param) == {"componentInputParameter": pipeline_param}
    image = spec["deploymentSpec"]["executors"]["exec-launch-training"]["container"]["image"]
    assert "omniretriever-cpu" in image and "resources" not in spec["deploymentSpec"]["executors"]["exec-launch-training"]["container"]
    assert k8s["exec-launch-training"]["pvcMount"][0]["mountPath"] == "/workspace"  # the spec and checkpoints
    evaluate = _tasks(spec)["evaluate-model"]["inputs"]["artifacts"]["model"]
    assert "taskOutputArtifact" in evaluate or "componentInputArtifact" in evaluate
    assert spec["root"]["inputDefinitions"]["parameters"]["train_nodes"]["defaultValue"] == 1.0
