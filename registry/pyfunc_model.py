"""The MLflow pyfunc model, logged from code: this file is the model's code, nothing is pickled.

MLflow stores a copy of this file with the logged model and runs it when the model is loaded; the
last line (`set_model`) tells MLflow which object is the model. Its one artifact, "model_dir", is a
saved model directory (model.safetensors, config.json, tokenizer.json) loaded by model.inference,
the preprocessing and forward pass that training, evaluation and serving share. A pretrained backbone's
directory (Qwen2.5-Omni) holds its LoRA and head and base.json, the identity of the base checkpoint it
was trained on, never the base's weights: the base is read from a local directory when the model loads.

Input: a pandas DataFrame with any of the columns text, video, audio. A cell is a caption (text) or a
media file given as a path or as its bytes (video, audio; the audio may be the same mp4). None or NaN
means the modality is absent; each row needs at least one. Output: float32 (rows, embed_dim),
L2-normalised, one embedding per row in the row order. A bad row raises InputError naming the row,
the column and the reason.

model_config (mlflow.pyfunc.load_model(uri, model_config={...})):
    media_root   paths must be relative to this directory and stay inside it (set it when the model
                 serves requests from others; bytes are always accepted). Default: paths as given.
    max_rows     refuse larger inputs (default 4096).
    base_checkpoint
                 a pretrained backbone's base checkpoint directory (the base has moved since training, or
                 lies elsewhere on this machine). Default: $OMNIRETRIEVER_OMNI_CHECKPOINT, else the path
                 recorded at training (the version's "base_checkpoint" tag). Its weights must have the
                 recorded digest ("base_sha256"); other weights are refused with a CheckpointError naming
                 both digests. A model without a base (the tiny backbone) refuses the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

COLUMNS = ("text", "video", "audio")
MEDIA_COLUMNS = ("video", "audio")
MAX_ROWS = 4096


def _absent(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _media_value(value: Any, row: int, column: str, media_root: Path | None) -> Any:
    """A path confined to media_root (when set); bytes pass through for the decoder's own checks."""
    from model.errors import InputError, PathEscapeError
    from model.manifest import resolve_media

    if media_root is None or not isinstance(value, str):
        return value
    try:
        return str(resolve_media(media_root, value))
    except PathEscapeError as exc:
        raise InputError(row, column, exc.reason) from None


def dataframe_rows(frame: Any, media_root: str | Path | None = None, max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    """DataFrame -> request rows for model.inference.Embedder: absent cells dropped, paths confined."""
    from model.errors import InputError

    if not isinstance(frame, pd.DataFrame):
        raise InputError(0, None, f"expected a pandas DataFrame with columns {', '.join(COLUMNS)}, got {type(frame).__name__}")
    if len(frame) > max_rows:
        raise InputError(max_rows, None, f"the input has {len(frame)} rows, over the limit of {max_rows}")
    root = Path(media_root) if media_root else None
    rows = []
    for i, record in enumerate(frame.to_dict("records")):
        row = {}
        for column, value in record.items():
            if _absent(value):
                continue
            row[str(column)] = _media_value(value, i, str(column), root) if column in MEDIA_COLUMNS else value
        rows.append(row)
    return rows


def base_checkpoint(model_dir: str | Path, value: Any) -> str | None:
    """model_config's base_checkpoint for the model in `model_dir`: None when unset, the directory when the
    model has a base; refused when it is not a path, and when the model has no base to load."""
    from model.errors import CheckpointError
    from model.omni.store import read_base_identity

    if value is None or value == "":
        return None
    if not isinstance(value, (str, Path)):
        raise CheckpointError(model_dir, "base_checkpoint",
                              f"model_config's base_checkpoint must be a directory path, got {type(value).__name__}")
    if read_base_identity(model_dir) is None:
        raise CheckpointError(model_dir, "base_checkpoint",
                              f"model_config gives base_checkpoint={str(value)!r}, but this model has no base checkpoint "
                              "to load (no base.json: the tiny backbone is trained from scratch); remove the key")
    return str(value)


class OmniRetrieverPyfunc(PythonModel):
    """Embeds rows of any modality subset with the logged model (see the module docstring)."""

    def load_context(self, context) -> None:
        from model.inference import Embedder
        from model.store import load_model

        config = context.model_config or {}
        self.media_root = config.get("media_root") or None
        self.max_rows = int(config.get("max_rows") or MAX_ROWS)
        model_dir = context.artifacts["model_dir"]
        self.embedder = Embedder(load_model(model_dir, base=base_checkpoint(model_dir, config.get("base_checkpoint"))))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        rows = dataframe_rows(model_input, self.media_root, self.max_rows)
        return self.embedder.embed(rows).astype(np.float32, copy=False)


mlflow.models.set_model(OmniRetrieverPyfunc())
