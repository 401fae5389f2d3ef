"""The indexing steps as a Kubeflow pipeline: omniretriever-index compiled for a cluster (a ParallelFor of
shards, one GPU each, the store's token from an optional secret, retries), and the same steps run by
kfp.local into a real Milvus Lite store: the shards fill an unpublished generation, which is served only
by publish-index, and a rebuild replaces it in one swap."""

# No `from __future__ import annotations`: kfp reads the pipeline's annotations as types.

import json
from pathlib import Path

import pytest
import yaml
from kfp import dsl
from kfp.dsl import Model

from model.manifest import read_split
from model.store import weights_digest
from pipelines.compile import COMPILED_INDEX, compile_pipeline
from pipelines.index_pipeline import INDEX_PIPELINE_NAME
from pipelines.local import run_local
from pipelines.pipeline import index_tasks, local_steps
from serving.store import GalleryStore


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    out = compile_pipeline(tmp_path_factory.mktemp("compiled") / "omniretriever-index.yaml", "index")
    docs = list(yaml.safe_load_all(out.read_text()))
    return {"text": out.read_text(), "spec": docs[0], "platform": docs[1]}


def test_matches_committed_yaml(compiled):
    assert COMPILED_INDEX.read_text() == compiled["text"], (
        "pipelines/compiled/omniretriever-index.yaml is stale: run `omniretriever pipeline compile --pipeline index`")


def test_the_index_pipeline_fans_out_shards_on_gpus_and_publishes_after_them(compiled):
    spec = compiled["spec"]
    assert spec["pipelineInfo"]["name"] == INDEX_PIPELINE_NAME
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"fetch-champion", "plan-index", "for-loop-1", "publish-index"}
    loop = root["for-loop-1"]
    assert loop["parameterIterator"]["itemInput"] and "plan-index" in loop["dependentTasks"]
    assert "for-loop-1" in root["publish-index"]["dependentTasks"]  # publish waits for every shard
    shard = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]["index-shard"]
    assert shard["retryPolicy"]["maxRetryCount"] == 3
    executors = spec["deploymentSpec"]["executors"]
    resources = executors["exec-index-shard"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "cuda" in executors["exec-index-shard"]["container"]["image"]
    k8s = compiled["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-plan-index", "exec-index-shard", "exec-publish-index"):
        secret = k8s[name]["secretAsEnv"][0]
        assert secret["keyToEnv"] == [{"envVar": "OMNIRETRIEVER_MILVUS_TOKEN", "secretKey": "token"}]
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("gallery_secret")
        assert k8s[name]["pvcMount"][0]["mountPath"] == "/workspace"
    assert "nodeSelector" in k8s["exec-index-shard"] and "tolerations" in k8s["exec-index-shard"]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["model_uri"]["defaultValue"] == "models:/omniretriever@champion"
    assert "defaultValue" not in inputs["store_uri"]  # no store, no pipeline


def test_the_training_pipeline_indexes_the_promoted_model_before_deploying_it():
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        compiler.Compiler().compile(build_pipeline(), f"{tmp}/p.yaml")
        spec = next(yaml.safe_load_all(Path(f"{tmp}/p.yaml").read_text()))
    promoted = next(c["dag"]["tasks"] for n, c in spec["components"].items()
                    if "deploy-model" in c.get("dag", {}).get("tasks", {}))
    assert "publish-index" in promoted["deploy-model"]["dependentTasks"]
    assert promoted["plan-index"]["inputs"]["artifacts"]["model"]  # the newly trained model embeds the library
    assert spec["root"]["inputDefinitions"]["parameters"]["gallery_store"]["defaultValue"] == ""


def stats(uri: Path) -> list[dict]:
    """`index stats --json` in a process of its own: a process that opened a Milvus Lite store keeps it until it
    exits, and the pipeline's steps need it after this test has looked."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "omniretriever", "index", "stats", "--uri", str(uri), "--json"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _pipeline(run_dir: str):
    s = local_steps()

    @dsl.pipeline(name="index-tiny")
    def index_tiny(data: str, store_uri: str, rebuild: bool = False) -> None:
        model = dsl.importer(artifact_uri=run_dir, artifact_class=Model, reimport=False)
        index_tasks(s, model.output, data=data, split="test", manifest="", store_uri=store_uri, views=["av", "t"],
                    shards=3, rebuild=rebuild, index_type="", batch_size=8)

    return index_tiny


def test_local_shards_fill_a_generation_that_is_served_only_once_published(tiny_run, tiny_data, tmp_path):
    uri = tmp_path / "library.db"
    pipeline = _pipeline(str(tiny_run))
    run = run_local({"data": str(tiny_data), "store_uri": str(uri)}, tmp_path / "root", pipeline=pipeline)
    assert run.succeeded, (run.error, run.failed_step)
    shards = [s for s in run.steps if s.task == "index-shard"]
    assert len(shards) == 3 and all(s.status == "succeeded" for s in shards)
    n = len(read_split(tiny_data, "test"))
    collections = stats(uri)
    assert [(c["view"], c["items"], c["generation"], c["live"]) for c in collections] == [("t", n, 1, True),
                                                                                         ("av", n, 1, True)]
    assert collections[0]["weights_sha256"] == weights_digest(tiny_run)
    embedded = sorted(json.loads(p.read_text())["parameterValues"]["embedded"]
                      for p in run.root.glob("for-loop-*/index-shard/executor_output.json"))
    assert sum(embedded) == n and len(embedded) == 3 and embedded[0] > 0  # each shard took its share
    assert "generation 1 of model" in run.parameter("publish-index", "Output")
    again = run_local({"data": str(tiny_data), "store_uri": str(uri), "rebuild": True}, tmp_path / "root",
                      pipeline=pipeline)
    assert again.succeeded, (again.error, again.failed_step)
    assert [(c["generation"], c["live"]) for c in stats(uri)] == [(1, False), (1, False), (2, True), (2, True)]
    with GalleryStore.open(uri) as store:
        assert store.generation == 2 and store.count("av")[1] == n
