"""The training step across nodes, in the CPU image: a Kubeflow Trainer v2 TrainJob launched and watched
from the pipeline (components/trainjob.py), for `train_nodes` > 1.

The step writes the training spec into a run directory on the workspace volume (resume on: a retried step
continues from the TrainJob's last checkpoint there), submits the TrainJob (its nodes mount the same volume),
streams the nodes' logs into its own, waits with a deadline, and copies the finished run directory into its
`model` artifact, with the same outputs as train-model. A cancelled run (SIGTERM) deletes the TrainJob.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Model, Output

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def launch_training(data: str, model: Output[Model], nodes: int, gpus_per_node: int, namespace: str,
                    workspace_pvc: str, image: str, config: str = "tiny", objective: str = "full",
                    steps: int = 0, batch_size: int = 0, seed: int = 0, data_md5: str = "", tracking_uri: str = "",
                    pipeline_run_id: str = "", checkpoint: str = "", checkpoint_sha256: str = "",
                    node_selector: dict = {}, tolerations: list = [], mlflow_secret: str = "",
                    dvc_secret: str = "", workspace_mount: str = "/workspace",
                    deadline_s: int = 86400, poll_s: float = 10.0) -> NamedTuple(
        "TrainOutputs", [("run_id", str), ("world_size", int), ("final_loss", float)]):
    """Train on `nodes` nodes of `gpus_per_node` GPUs as a TrainJob in `namespace` (see the module docstring).
    `steps`/`batch_size` 0: model/defaults.py's budget; `batch_size` is per rank, as in train-model (the
    global batch is batch_size x nodes x GPUs per node)."""
    import os
    import re
    import shutil
    import signal
    import sys
    from collections import namedtuple
    from pathlib import Path

    from components.training import base_identity, finished_run, train_spec, write_spec
    from components.trainjob import TrainJobOptions, TrainJobRun, render_trainjob, validate_trainjob
    from model.config import load_config
    from model.defaults import BATCH_SIZE, TOKEN_KEEP, TRAIN_STEPS

    def _cancelled(signum, frame):  # KFP stops a cancelled run's pods with SIGTERM
        raise SystemExit(f"cancelled (signal {signum})")

    signal.signal(signal.SIGTERM, _cancelled)
    job_id = re.sub(r"[^a-z0-9-]", "-", (pipeline_run_id or "local").lower())[:40].strip("-") or "run"
    run = Path(workspace_mount) / "runs" / f"train-{job_id}"
    token_keep = TOKEN_KEEP if load_config(config).backbone == "tiny" else 1.0
    kwargs = dict(data=data, out=str(run), config=config, objective=objective, steps=steps or TRAIN_STEPS,
                  batch_size=batch_size or BATCH_SIZE, seed=seed, checkpoint=checkpoint or None, token_keep=token_keep)
    spec = write_spec(run, train_spec(kwargs, tracking=True, tracking_uri=tracking_uri,
                                      pipeline_run_id=pipeline_run_id, data_version=data_md5, resume=True))
    secrets = {s: keys for s, keys in (
        (mlflow_secret, {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                         "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}),
        (dvc_secret, {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})) if s}
    manifest = render_trainjob(TrainJobOptions(
        name=f"omniretriever-train-{job_id}"[:63].rstrip("-"), namespace=namespace, spec_path=str(spec), nodes=nodes,
        gpus_per_node=gpus_per_node, image=image, workspace_pvc=workspace_pvc, mount_path=workspace_mount,
        node_selector=node_selector, tolerations=tolerations, secret_env=secrets,
        env={"OMNIRETRIEVER_CACHE": f"{workspace_mount}/cache"}, deadline_s=deadline_s))
    validate_trainjob(manifest)

    from kubernetes import client, config as kube_config

    try:
        kube_config.load_incluster_config()  # the step's service account
    except kube_config.ConfigException:  # outside a pod: $KUBECONFIG or ~/.kube/config
        kube_config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    TrainJobRun(client.ApiClient(), manifest, poll_s=poll_s,
                log=lambda line: print(line, file=sys.stdout, flush=True)).run(deadline_s)
    world = nodes * max(1, gpus_per_node)
    result = finished_run(run, tracking=True, world_size=world)
    shutil.copytree(run, model.path, dirs_exist_ok=True)
    base = base_identity(Path(model.path), checkpoint_sha256) or {}
    final_loss = float(result.summary.get("final", {}).get("loss", float("nan")))
    model.metadata.update(config=config, objective=objective, steps=kwargs["steps"], world_size=world, nodes=nodes,
                          mlflow_run_id=result.run_id, data_md5=data_md5, checkpoint=base.get("path", ""),
                          checkpoint_sha256=base.get("digest", ""))
    return namedtuple("TrainOutputs", ["run_id", "world_size", "final_loss"])(result.run_id, world, final_loss)
