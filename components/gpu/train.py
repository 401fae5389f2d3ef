"""The training step, in the CUDA image: torchrun with one process per visible GPU, in-process on a CPU.

The task requests GPUs, lands on the GPU node pool and mounts the feature-cache volume; those
settings live on the task in pipelines/pipeline.py, not here.
"""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Model, Output

from components.images import CUDA_BASE_IMAGE, CUDA_TARGET_IMAGE


@dsl.component(base_image=CUDA_BASE_IMAGE, target_image=CUDA_TARGET_IMAGE)
def train_model(data: str, model: Output[Model], config: str = "tiny", objective: str = "full",
                steps: Optional[int] = None, batch_size: Optional[int] = None, seed: int = 0, data_md5: str = "",
                tracking_uri: str = "", pipeline_run_id: str = "", track: bool = True, checkpoint: str = "",
                checkpoint_sha256: str = "", token_keep: Optional[float] = None) -> NamedTuple(
        "TrainOutputs", [("run_id", str), ("world_size", int), ("final_loss", float)]):
    """Train the unified AVT encoder on data/manifests/train.jsonl into the `model` artifact (a run
    directory: model/ holds the saved model). `steps` and `batch_size` default to the budget of
    model/defaults.py (a lightweight component carries only its own source, so its defaults cannot name
    it). With `track`, the run is logged to MLflow (with the dataset's DVC version and the pipeline run
    as lineage) and its run id returned for evaluation and registration. `data_md5` is the version-data
    step's output: the data_version the run records. `checkpoint` is a pretrained backbone's base
    checkpoint directory ("" for the tiny backbone) and `checkpoint_sha256` its weights digest, both from
    the fetch-checkpoint step: the digest the trained model records (model/base.json) must equal it.
    `token_keep` unset is the backbone's: model/defaults.py's for the tiny encoder, 1 (every token) for a
    pretrained one, which refuses token dropping."""
    from collections import namedtuple
    from pathlib import Path

    from components.training import base_identity, run_training
    from model.config import load_config
    from model.defaults import BATCH_SIZE, TOKEN_KEEP, TRAIN_STEPS

    steps = TRAIN_STEPS if steps is None else steps
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    if token_keep is None:
        token_keep = TOKEN_KEEP if load_config(config).backbone == "tiny" else 1.0

    kwargs = dict(data=data, out=model.path, config=config, objective=objective, steps=steps,
                  batch_size=batch_size, seed=seed, checkpoint=checkpoint or None, token_keep=token_keep)
    result = run_training(kwargs, tracking=track, tracking_uri=tracking_uri, pipeline_run_id=pipeline_run_id,
                          data_version=data_md5)
    base = base_identity(Path(model.path), checkpoint_sha256) or {}
    final_loss = float(result.summary.get("final", {}).get("loss", float("nan")))
    model.metadata.update(config=config, objective=objective, steps=steps, world_size=result.world_size,
                          mlflow_run_id=result.run_id, data_md5=data_md5, checkpoint=base.get("path", ""),
                          checkpoint_sha256=base.get("digest", ""))
    outputs = namedtuple("TrainOutputs", ["run_id", "world_size", "final_loss"])
    return outputs(result.run_id, result.world_size, final_loss)
