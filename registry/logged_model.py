"""The model a training run logs: an MLflow pyfunc model from code (registry/pyfunc_model.py).

Nothing is pickled: pyfunc_model.py is the model's code, the saved model directory (safetensors,
config.json, tokenizer.json) its only artifact, with a copy of the model/ package, pinned requirements,
a signature and an input example. The run is tagged with the logged model's URI and the weights'
sha256, which `registry register` checks the downloaded artifacts against.
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


def requirements() -> list[str]:
    """pip requirements of the logged model: what model.inference and the pyfunc wrapper import, pinned."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "av", "tokenizers", "safetensors", "tqdm"):
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

    from model.store import load_model, model_dir as resolve_model_dir, weights_digest

    model_dir = resolve_model_dir(model_dir)
    embed_dim = load_model(model_dir).config.embed_dim
    weights = weights_digest(model_dir)
    mlflow_client = client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="omniretriever-code-") as tmp, mlflow.start_run(run_id=run_id), \
            no_progress_bars():
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL, python_model=str(PYFUNC_FILE), artifacts={"model_dir": str(model_dir)},
            code_paths=[str(_model_code(Path(tmp)))], signature=model_signature(embed_dim),
            input_example=input_example(example_texts), pip_requirements=requirements(),
            metadata={"embed_dim": embed_dim, WEIGHTS_TAG: weights}, tags={WEIGHTS_TAG: weights},
            model_config={"media_root": "", "max_rows": 4096})  # defaults; load_model(model_config=...) overrides
    mlflow_client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    mlflow_client.set_tag(run_id, WEIGHTS_TAG, weights)
    return info.model_uri
