"""Every tensor the serving stack exchanges, defined once: names, V2 datatypes and shapes.

    Triton model `omniretriever-encoder` (ENCODER_MODEL), both configs (production ONNX, local python):
        inputs   the arrays of model.inference.input_names(cfg) (INPUTS; a Qwen2.5-Omni model adds
                 audio_mask), shapes and dtypes from input_shapes(cfg)
        output   EMBEDDING  FP32 [B, embed_dim]
    Triton model `omniretriever-text-encoder` (TEXT_ENCODER_MODEL), the tiny encoder's text graph:
        inputs   text_ids, text_mask (model.export.TEXT_INPUTS), as the encoder's
        output   EMBEDDING  FP32 [B, embed_dim]
    KServe transformer `omniretriever` (EMBEDDING_MODEL):
        inputs   TEXT, VIDEO, AUDIO  BYTES [B]  (any subset; an empty element is an absent modality)
        output   EMBEDDING  FP32 [B, embed_dim]
    KServe search model `omniretriever-search` (SEARCH_MODEL): the same inputs, request parameters
        top_k (int) and gallery (a view name such as "av"), outputs IDS BYTES [B, K], SCORES FP32 [B, K],
        START and END FP32 [B, K] (seconds: where in its item each hit lies; -1 when the index does not
        say), MODALITIES BYTES [B, K] (the view each hit was embedded in: "v" for a video-only clip in an
        "av" gallery), MEDIA_URIS BYTES [B, K] (each hit's media path as the store records it; "" when it
        does not, as for entries imported from an index file), CAPTIONS BYTES [B, K] (each hit's caption as
        the store records it; "" likewise) and EMBEDDING.

repository.py renders config.pbtxt from `encoder_inputs` / `encoder_outputs`, the transformer builds
its Triton requests from them and writes its answers by `embedding_outputs` / `search_outputs`, the
client (and requests.py's checks) follow `request_inputs`, and a test parses both config.pbtxt files
against them. Shapes here leave out the batch dimension, as config.pbtxt does when max_batch_size > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.config import AnyConfig
from model.export import OUTPUT, TEXT_INPUTS
from model.inference import input_names, input_shapes
from serving.limits import MAX_BATCH_SIZE  # noqa: F401  config.pbtxt max_batch_size, defined with the limits

ENCODER_MODEL = "omniretriever-encoder"  # the Triton model (predictor)
TEXT_ENCODER_MODEL = "omniretriever-text-encoder"  # the Triton model for caption-only requests (tiny encoder)
EMBEDDING_MODEL = "omniretriever"  # the transformer's embedding model
SEARCH_MODEL = "omniretriever-search"  # the transformer's search model

EMBEDDING = OUTPUT  # "EMBEDDING"
TEXT, VIDEO, AUDIO = "TEXT", "VIDEO", "AUDIO"  # the transformer's inputs
REQUEST_FIELDS = {TEXT: "text", VIDEO: "video", AUDIO: "audio"}  # transformer input -> Preprocessor field
IDS, SCORES = "IDS", "SCORES"  # search outputs
START, END, MODALITIES = "START", "END", "MODALITIES"  # each hit's time range in its item, and the view it holds
MEDIA_URIS = "MEDIA_URIS"  # each hit's media path, as the gallery store records it
CAPTIONS = "CAPTIONS"  # each hit's caption, as the gallery store records it

_V2_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32,
             "BYTES": np.object_}
_NUMPY_V2 = {"bool": "BOOL", "uint8": "UINT8", "int32": "INT32", "int64": "INT64", "float32": "FP32"}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: its name, V2 datatype ("FP32", "BYTES", ...) and shape without the batch dimension."""

    name: str
    datatype: str
    dims: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(_V2_NUMPY[self.datatype])

    @property
    def triton_type(self) -> str:
        """The config.pbtxt data_type: TYPE_FP32, TYPE_BOOL, TYPE_STRING for BYTES, ..."""
        return "TYPE_STRING" if self.datatype == "BYTES" else f"TYPE_{self.datatype}"

    def batch_shape(self, batch: int) -> list[int]:
        return [batch, *self.dims]


def v2_datatype(numpy_dtype: str | np.dtype) -> str:
    """numpy dtype name -> V2 datatype."""
    return _NUMPY_V2[np.dtype(numpy_dtype).name]


def encoder_inputs(cfg: AnyConfig) -> tuple[TensorSpec, ...]:
    """The Triton model's inputs, in the order of model.inference.input_names (INPUTS, then "audio_mask"
    for a backbone with its own audio features)."""
    shapes = input_shapes(cfg)
    return tuple(TensorSpec(name, v2_datatype(shapes[name][1]), tuple(int(d) for d in shapes[name][0][1:]))
                 for name in input_names(cfg))


def text_encoder_inputs(cfg: AnyConfig) -> tuple[TensorSpec, ...]:
    """The text graph's inputs: the encoder's text_ids and text_mask."""
    return tuple(spec for spec in encoder_inputs(cfg) if spec.name in TEXT_INPUTS)


def encoder_outputs(cfg: AnyConfig) -> tuple[TensorSpec, ...]:
    return (TensorSpec(EMBEDDING, "FP32", (cfg.embed_dim,)),)


def request_inputs() -> tuple[TensorSpec, ...]:
    """The transformer's inputs: one encoded element per row; b"" (or a missing tensor) = absent."""
    return tuple(TensorSpec(name, "BYTES", ()) for name in REQUEST_FIELDS)


def embedding_outputs(cfg: AnyConfig) -> tuple[TensorSpec, ...]:
    """The embedding model's outputs: the encoder's EMBEDDING, as Triton returns it."""
    return encoder_outputs(cfg)


def search_outputs(cfg: AnyConfig, top_k: int) -> tuple[TensorSpec, ...]:
    """The search model's outputs for `top_k` results per row: IDS, SCORES, START, END, MODALITIES, MEDIA_URIS,
    CAPTIONS, then the embedding outputs."""
    return (TensorSpec(IDS, "BYTES", (top_k,)), TensorSpec(SCORES, "FP32", (top_k,)), TensorSpec(START, "FP32", (top_k,)),
            TensorSpec(END, "FP32", (top_k,)), TensorSpec(MODALITIES, "BYTES", (top_k,)),
            TensorSpec(MEDIA_URIS, "BYTES", (top_k,)), TensorSpec(CAPTIONS, "BYTES", (top_k,)), *embedding_outputs(cfg))
