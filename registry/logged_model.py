"""The model a training run logs: an MLflow pyfunc model from code (registry/pyfunc_model.py).

Nothing is pickled: pyfunc_model.py is the model's code, the saved model directory (safetensors,
config.json, tokenizer.json; base.json for a pretrained backbone) its only artifact, with a copy of the
model/ package, pinned requirements, a signature and an input example. The run is tagged with the logged
model's URI and the weights' sha256, which `registry register` checks the downloaded artifacts against,
and with what the model needs besides its own files (`backbone_tags`): its backbone and, for a pretrained
one, the base checkpoint it was trained on, which the logged model never contains.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from registry.store import client, no_progress_bars

LOGGED_MODEL = "model"  # log_model(name=...)
MODEL_URI_TAG = "model_uri"  # run tag: the logged model's models:/m-... URI
WEIGHTS_TAG = "weights_sha256"  # run tag: sha256 of the logged model.safetensors
BACKBONE_TAG = "backbone"  # run and version tag: "tiny" or "qwen2_5_omni" (model.config.BACKBONES)
# run and version tags of a pretrained backbone's base checkpoint, from its identity in base.json
BASE_CHECKPOINT_TAG = "base_checkpoint"  # the path it lay at when the model was trained
BASE_DIGEST_TAG = "base_sha256"  # its weights' digest (model.omni.checkpoint.weights_digest)
BASE_LAYOUT_TAG = "base_layout"  # "thinker" or "omni"
BASE_TAGS = {BASE_CHECKPOINT_TAG: "path", BASE_DIGEST_TAG: "digest", BASE_LAYOUT_TAG: "layout"}  # tag -> field
# what the pyfunc's model_config accepts, with its defaults; load_model(model_config=...) overrides (MLflow
# drops keys the logged config lacks, so every key is logged, also those a backbone refuses)
MODEL_CONFIG = {"media_root": "", "max_rows": 4096, "base_checkpoint": ""}
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def model_signature(embed_dim: int):
    """Input: optional columns text (str), video and audio (a path or the file's bytes); output: (B, D) float32."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema, TensorSpec

    inputs = Schema([ColSpec(DataType.string, "text", required=False), ColSpec(AnyType(), "video", required=False),
                     ColSpec(AnyType(), "audio", required=False)])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, embed_dim))]))


def input_example(texts: Iterable[str]):
    """A portable example: captions only (media columns present but empty), so it needs no files."""
    import pandas as pd

    texts = list(texts)[:2] or ["a sound and a picture"]
    return pd.DataFrame({"text": texts, "video": [None] * len(texts), "audio": [None] * len(texts)})


def backbone_tags(loaded) -> dict[str, str]:
    """The tags naming what a loaded model (model.store.LoadedModel) needs besides its own files: its backbone
    and, for a pretrained one, the base checkpoint its base.json records (the path at training, the weights'
    digest, the layout)."""
    from model.omni.store import read_base_identity

    tags = {BACKBONE_TAG: loaded.config.backbone}
    identity = read_base_identity(loaded.path) or {}
    tags.update({tag: str(identity[field]) for tag, field in BASE_TAGS.items() if field in identity})
    return tags


def requirements(backbone: str = "tiny") -> list[str]:
    """pip requirements of the logged model: what model.inference and the pyfunc wrapper import, pinned
    (and what a pretrained backbone loads its base with)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    pretrained = ("transformers", "peft", "pillow") if backbone != "tiny" else ()
    for dist in ("mlflow", "torch", "numpy", "pandas", "av", "tokenizers", "safetensors", "tqdm", *pretrained):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def _model_code(into: Path) -> Path:
    """A copy of the model/ package (sources and configs only), logged with the model so it loads on its own."""
    import model

    src = Path(model.__file__).resolve().parent
    dest = into / "model"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def log_trained_model(run_id: str, model_dir: Path, example_texts: Iterable[str] = (), *,
                      tracking_uri: str | None = None) -> str:
    """Log RUN/model as the pyfunc model "model" of run `run_id`; returns its models:/m-... URI.

    MLflow checks the input example against the signature by loading the model and predicting it."""
    import mlflow
    from mlflow.entities import RunTag

    from model.store import load_model, model_dir as resolve_model_dir, weights_digest

    model_dir = resolve_model_dir(model_dir)
    loaded = load_model(model_dir)
    embed_dim, needs = loaded.config.embed_dim, backbone_tags(loaded)
    del loaded
    weights = weights_digest(model_dir)
    mlflow_client = client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="omniretriever-code-") as tmp, mlflow.start_run(run_id=run_id), \
            no_progress_bars():
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL, python_model=str(PYFUNC_FILE), artifacts={"model_dir": str(model_dir)},
            code_paths=[str(_model_code(Path(tmp)))], signature=model_signature(embed_dim),
            input_example=input_example(example_texts), pip_requirements=requirements(needs[BACKBONE_TAG]),
            metadata={"embed_dim": embed_dim, WEIGHTS_TAG: weights, **needs}, tags={WEIGHTS_TAG: weights, **needs},
            model_config=dict(MODEL_CONFIG))
    tags = {MODEL_URI_TAG: info.model_uri, WEIGHTS_TAG: weights, **needs}
    mlflow_client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    return info.model_uri


def download_model_dir(model_uri: str, dst: str | Path) -> Path:
    """Download a logged model (models:/m-... or models:/NAME/VERSION) into `dst`; the saved model directory
    inside it (what model.store.load_model reads)."""
    import mlflow
    from mlflow.models import Model

    with no_progress_bars():
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    flavor = Model.load(str(local / "MLmodel")).flavors["python_function"]
    return local / flavor["artifacts"]["model_dir"]["path"]
