"""The omniretriever pipeline: data -> validate (GX) -> version (DVC) -> base checkpoint -> train ->
evaluate -> register -> gate -> export + index the library + deploy, the last three only when the gate
promotes the challenger.

    pull-data ─► validate-data ─► [passed] version-data ──────────────────────┐
                                           [checkpoint] fetch-checkpoint ─┬─► train-model ─► evaluate-model ─► register-model ─► gate-model
                                           [none]       no-checkpoint ────┘                       [promoted] ─► export-model ────────────────────────────────────┐
                                                                                                             plan-index ─► index-shard × N ─► publish-index ─┴─► deploy-model

With `gallery_store` set (a Milvus URI), the promoted model embeds the library (DATA's `gallery_split`, or
`gallery_manifest`) into its own collections there, in `index_shards` parallel shards
(components/indexing.py); the gallery is published (its aliases swapped) only once every shard is in, and
the model is deployed after that, searching it: queries never see a half-built gallery. Without a store
the three indexing steps do nothing and the endpoint embeds only.

Data is validated before it is published: pull-data fetches the recorded version (with pull_data; a
local run uses the data in place), and only data that passed validation is versioned and pushed
(version-data), under the version the training run's lineage then records. A pretrained backbone's
base checkpoint (the `checkpoint` parameter: a directory on the workspace volume, s3://bucket/prefix or
hf://org/name[@revision]) is fetched by fetch-checkpoint, once per URI into `checkpoint_cache` on the
volume; without one (the tiny backbone), no-checkpoint stands in, and train-model takes the path and
digest from whichever ran.

One DAG, two flavours of the same components (see `Steps`):
- cluster: the containerized components (target images) plus the Kubernetes settings: training asks
  for GPUs, lands on the GPU node pool (node selector and tolerations are pipeline parameters), the data
  steps share a workspace volume (the dataset, the feature cache OMNIRETRIEVER_CACHE and the checkpoint
  cache), DVC and MLflow credentials come from Kubernetes secrets (the DVC secret's S3 keys serve
  fetch-checkpoint too), and the flaky steps (data pull, checkpoint fetch, register, deploy) retry with
  backoff. This is what `compile` writes.
- local: lightweight copies of the same functions, run by kfp.local's SubprocessRunner in this Python
  environment, without Kubernetes settings and without retries (a local failure is reported at once;
  pipelines/local.py passes the local arguments).

The parameter defaults are the cluster's; a local run overrides the ones that differ.
"""

# No `from __future__ import annotations` here: kfp reads the pipeline function's annotations as types.
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

from kfp import dsl

from model.defaults import BATCH_SIZE, TRAIN_STEPS
from registry.registry import DEFAULT_FLOOR, DEFAULT_MAX_DROP, DEFAULT_MIN_GAIN

PIPELINE_NAME = "omniretriever"
WORKSPACE_MOUNT = "/workspace"  # the workspace volume: dataset, feature cache, base checkpoints
FEATURE_CACHE = f"{WORKSPACE_MOUNT}/cache"  # OMNIRETRIEVER_CACHE of the tasks that decode media
CHECKPOINT_CACHE = f"{WORKSPACE_MOUNT}/checkpoints"  # where fetch-checkpoint keeps downloaded base checkpoints
GPU_RESOURCE = "nvidia.com/gpu"
DVC_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
MLFLOW_SECRET_KEYS = {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                      "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}
DEFAULT_NODE_SELECTOR = {"cloud.google.com/gke-nodepool": "gpu-pool"}
DEFAULT_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
# the Kubernetes secret holding the Milvus token (key "token"; empty for an unauthenticated Milvus), used when
# gallery_store is set, like the DVC and MLflow secrets
GALLERY_SECRET = "omniretriever-milvus"
GALLERY_VIEWS = ("av", "t")  # the gallery views a library is embedded in by default


@dataclass(frozen=True)
class Steps:
    """The pipeline's components, one per step."""

    pull_data: Any
    validate_data: Any
    version_data: Any
    fetch_checkpoint: Any
    no_checkpoint: Any
    train_model: Any
    evaluate_model: Any
    evaluate_benchmarks: Any
    register_model: Any
    gate_model: Any
    export_model: Any
    deploy_model: Any
    launch_training: Any
    fetch_champion: Any
    plan_index: Any
    index_shard: Any
    publish_index: Any


def containerized_steps() -> Steps:
    """The components as declared in components/ (base and target images set): for a cluster."""
    from components.checkpoints import fetch_checkpoint, no_checkpoint
    from components.data import pull_data, validate_data, version_data
    from components.evaluation import evaluate_benchmarks, evaluate_model
    from components.gpu.train import train_model
    from components.registry_steps import gate_model, register_model
    from components.indexing import fetch_champion, index_shard, plan_index, publish_index
    from components.launch_training import launch_training
    from components.serving_steps import deploy_model, export_model

    return Steps(pull_data, validate_data, version_data, fetch_checkpoint, no_checkpoint, train_model, evaluate_model,
                 evaluate_benchmarks, register_model, gate_model, export_model, deploy_model, launch_training,
                 fetch_champion, plan_index, index_shard, publish_index)


def local_steps() -> Steps:
    """Lightweight copies of the same functions: kfp.local's SubprocessRunner runs only lightweight
    components, in this Python environment (nothing is installed: install_kfp_package=False)."""
    from components.images import CPU_BASE_IMAGE

    steps = containerized_steps()
    return replace(steps, **{f.name: dsl.component(getattr(steps, f.name).python_func, base_image=CPU_BASE_IMAGE,
                                                   install_kfp_package=False) for f in fields(Steps)})


def _retry(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Steps that talk to a remote (DVC remote, S3 or the hub, MLflow, the Kubernetes API) retry with backoff."""
    return task.set_retry(3, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="600s")


def _on_workspace(task: dsl.PipelineTask, pvc: Any) -> None:
    from kfp import kubernetes

    kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=WORKSPACE_MOUNT)
    task.set_env_variable("OMNIRETRIEVER_CACHE", FEATURE_CACHE)


def _with_secret(task: dsl.PipelineTask, secret: Any, keys: dict[str, str]) -> None:
    from kfp import kubernetes

    kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys)


def _on_gpu_pool(task: dsl.PipelineTask, gpus: Any, node_selector: Any, tolerations: Any) -> None:
    from kfp import kubernetes

    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
    kubernetes.add_node_selector_json(task, node_selector_json=node_selector)
    kubernetes.add_toleration_json(task, toleration_json=tolerations)


@dataclass(frozen=True)
class IndexTasks:
    plan: Any
    shard: Any  # the shard task inside the ParallelFor
    publish: Any

    def all(self) -> list:
        return [self.plan, self.shard, self.publish]


def index_tasks(s: Steps, model: Any, *, data: Any, split: Any, manifest: Any, store_uri: Any, views: Any,
                shards: Any, rebuild: Any, index_type: Any, batch_size: Any) -> IndexTasks:
    """plan-index ─► ParallelFor shard: index-shard ─► publish-index, embedding a library with `model` (see
    components/indexing.py). Called inside a pipeline function."""
    plan = s.plan_index(model=model, store_uri=store_uri, views=views, shards=shards, rebuild=rebuild,
                        index_type=index_type)
    with dsl.ParallelFor(plan.output, name="index-shards") as shard_plan:
        shard = s.index_shard(model=model, data=data, store_uri=store_uri, views=views, plan=shard_plan, split=split,
                              manifest=manifest, batch_size=batch_size)
    publish = s.publish_index(model=model, store_uri=store_uri, plan=plan.output).after(shard)
    return IndexTasks(plan, shard, publish)


def index_on_cluster(tasks: IndexTasks, *, pvc: Any, secret: Any, gpus: Any, node_selector: Any,
                     tolerations: Any) -> None:
    """The indexing steps' Kubernetes settings: the library on the workspace volume, the store's token from
    `secret` (key "token"; an empty one for an unauthenticated Milvus), one GPU per shard on the GPU pool,
    retries."""
    from kfp import kubernetes

    from serving.store import TOKEN_ENV

    for task in tasks.all():
        _on_workspace(task, pvc)
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={"token": TOKEN_ENV})
        _retry(task)
    _on_gpu_pool(tasks.shard, gpus, node_selector, tolerations)


def build_pipeline(steps: Optional[Steps] = None, cluster: bool = True) -> Any:
    """The pipeline over `steps` (containerized by default); `cluster` adds the Kubernetes settings."""
    from components.images import CPU_TARGET_IMAGE, CUDA_TARGET_IMAGE, TRITON_TARGET_IMAGE

    s = steps or containerized_steps()

    @dsl.pipeline(name=PIPELINE_NAME, description="OmniRetriever: version, validate, train, evaluate on 12 "
                  "directions, register, gate, and deploy the promoted model.")
    def omniretriever(
        data: str = f"{WORKSPACE_MOUNT}/data",
        dvc_remote: str = "",
        pull_data: bool = True,
        max_rejected: float = 0.0,
        allow_partial: bool = False,
        config: str = "tiny",
        checkpoint: str = "",
        checkpoint_cache: str = CHECKPOINT_CACHE,
        s3_endpoint_url: str = "",
        objective: str = "full",
        train_steps: int = TRAIN_STEPS,
        batch_size: int = BATCH_SIZE,
        seed: int = 0,
        eval_split: str = "test",
        benchmarks: list = [],
        mlflow_tracking_uri: str = "http://mlflow.mlflow.svc.cluster.local:5000",
        model_name: str = "omniretriever",
        min_gain: float = DEFAULT_MIN_GAIN,
        max_drop: float = DEFAULT_MAX_DROP,
        floor: float = DEFAULT_FLOOR,
        gate_rules: list = [],
        deploy_target: str = "kserve",
        namespace: str = "kubeflow-user",
        storage_uri: str = "",
        transformer_image: str = CPU_TARGET_IMAGE,
        predictor_image: str = TRITON_TARGET_IMAGE,
        canary_percent: int = 10,
        serving_gpus: int = 1,
        gpus: int = 1,
        gpu_node_selector: dict = DEFAULT_NODE_SELECTOR,
        gpu_tolerations: list = DEFAULT_TOLERATIONS,
        workspace_pvc: str = "omniretriever-workspace",
        dvc_secret: str = "omniretriever-dvc",
        mlflow_secret: str = "omniretriever-mlflow",
        train_nodes: int = 1,
        train_image: str = CUDA_TARGET_IMAGE,
        train_deadline_s: int = 86400,
        gallery_store: str = "",
        gallery_secret: str = GALLERY_SECRET,
        gallery_split: str = "test",
        gallery_manifest: str = "",
        gallery_views: list = list(GALLERY_VIEWS),
        index_shards: int = 4,
        index_type: str = "",
        index_batch_size: int = 64,
    ) -> None:
        fetch = s.pull_data(data=data, remote=dvc_remote, pull=pull_data)
        check = s.validate_data(data=data, max_rejected=max_rejected, allow_partial=allow_partial).after(fetch)
        tasks = [fetch, check]
        # Conditions test the steps' single return value ("Output"): kfp.local resolves only those in a
        # condition (a NamedTuple field there silently reads as unset and skips the branch).
        with dsl.If(check.outputs["Output"] == True, name="validation-passed"):  # noqa: E712 (a pipeline condition)
            version = s.version_data(data=data, remote=dvc_remote)
            # a pipeline parameter in a condition resolves locally too; dsl.OneOf takes the branch that ran
            with dsl.If(checkpoint != "", name="checkpoint-given"):
                base = s.fetch_checkpoint(checkpoint=checkpoint, cache=checkpoint_cache, endpoint_url=s3_endpoint_url)
            with dsl.Else(name="no-checkpoint"):
                no_base = s.no_checkpoint()
            base_path = dsl.OneOf(base.outputs["path"], no_base.outputs["path"])
            base_sha256 = dsl.OneOf(base.outputs["sha256"], no_base.outputs["sha256"])
            launched = None
            if cluster:  # kfp.local runs no TrainJob, and resolves no dsl.OneOf of artifacts
                with dsl.If(train_nodes == 1, name="one-node"):
                    train = s.train_model(data=data, config=config, objective=objective, steps=train_steps,
                                          batch_size=batch_size, seed=seed, data_md5=version.outputs["md5"],
                                          tracking_uri=mlflow_tracking_uri,
                                          pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, checkpoint=base_path,
                                          checkpoint_sha256=base_sha256)
                with dsl.Else(name="several-nodes"):
                    launched = s.launch_training(
                        data=data, nodes=train_nodes, gpus_per_node=gpus, namespace=namespace,
                        workspace_pvc=workspace_pvc, image=train_image, config=config, objective=objective,
                        steps=train_steps, batch_size=batch_size, seed=seed, data_md5=version.outputs["md5"],
                        tracking_uri=mlflow_tracking_uri, pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                        checkpoint=base_path, checkpoint_sha256=base_sha256, node_selector=gpu_node_selector,
                        tolerations=gpu_tolerations, mlflow_secret=mlflow_secret, dvc_secret=dvc_secret,
                        workspace_mount=WORKSPACE_MOUNT, deadline_s=train_deadline_s)
                trained = dsl.OneOf(train.outputs["model"], launched.outputs["model"])
                run_id = dsl.OneOf(train.outputs["run_id"], launched.outputs["run_id"])
            else:
                train = s.train_model(data=data, config=config, objective=objective, steps=train_steps,
                                      batch_size=batch_size, seed=seed, data_md5=version.outputs["md5"],
                                      tracking_uri=mlflow_tracking_uri, pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                      checkpoint=base_path, checkpoint_sha256=base_sha256)
                trained, run_id = train.outputs["model"], train.outputs["run_id"]
            evaluation = s.evaluate_model(model=trained, data=data, split=eval_split,
                                          run_id=run_id, tracking_uri=mlflow_tracking_uri)
            public = s.evaluate_benchmarks(model=trained, benchmarks=benchmarks,
                                           run_id=run_id, tracking_uri=mlflow_tracking_uri)
            register = s.register_model(run_id=run_id, name=model_name,
                                        tracking_uri=mlflow_tracking_uri).after(evaluation, public)
            gate = s.gate_model(name=model_name, min_gain=min_gain, max_drop=max_drop, floor=floor, rules=gate_rules,
                                tracking_uri=mlflow_tracking_uri).after(register)
            tasks += [version, base, no_base, train, *([launched] if launched else []), evaluation, public, register,
                      gate]
            with dsl.If(gate.outputs["Output"] == True, name="promoted"):  # noqa: E712
                export = s.export_model(model=trained)
                # the new champion's gallery of the library, served (published) before the model is deployed
                gallery = index_tasks(s, trained, data=data, split=gallery_split,
                                      manifest=gallery_manifest, store_uri=gallery_store, views=gallery_views,
                                      shards=index_shards, rebuild=False, index_type=index_type,
                                      batch_size=index_batch_size)
                deploy = s.deploy_model(repository=export.outputs["repository"], target=deploy_target,
                                        name=model_name, namespace=namespace, storage_uri=storage_uri,
                                        transformer_image=transformer_image, canary_percent=canary_percent,
                                        gpus=serving_gpus, predictor_image=predictor_image,
                                        workspace_pvc=workspace_pvc, gallery_store=gallery_store,
                                        gallery_secret=gallery_secret, media_root=data,
                                        gallery_views=gallery_views).after(gallery.publish)
                tasks += [export, *gallery.all(), deploy]
        for task in tasks:
            task.set_caching_options(False)  # every step has side effects (DVC, MLflow, deployments)
        if cluster:
            for task in (fetch, base, version, register, deploy):
                _retry(task)
            # register and export load a pretrained backbone over its base, which lies on the volume
            for task in (fetch, check, version, base, train, evaluation, public, register, export):
                _on_workspace(task, workspace_pvc)
            for task in (fetch, version, base):
                _with_secret(task, dvc_secret, DVC_SECRET_KEYS)
            for task in (train, evaluation, public, register, gate):
                _with_secret(task, mlflow_secret, MLFLOW_SECRET_KEYS)
            _on_gpu_pool(train, gpus, gpu_node_selector, gpu_tolerations)
            _retry(launched)  # a retried launcher follows its TrainJob, which resumes from its checkpoints
            _on_workspace(launched, workspace_pvc)
            index_on_cluster(gallery, pvc=workspace_pvc, secret=gallery_secret, gpus=gpus,
                             node_selector=gpu_node_selector, tolerations=gpu_tolerations)

    return omniretriever
