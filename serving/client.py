"""Querying the transformer with tritonclient (V2 protocol, HTTP or gRPC).

    query("http://127.0.0.1:8080", text="a dog barks")                 -> QueryResult(embedding, hits)
    query("grpc://127.0.0.1:8081", video="clip.mp4", top_k=5, gallery="tv")

With the search model served (`serve --index`) the result carries the top-k hits (gallery id, score, the
time range within the item, the view embedded); otherwise only the embedding. Media is read from the path (or given as bytes) and sent as encoded bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from serving.tensors import (AUDIO, CAPTIONS, EMBEDDING, EMBEDDING_MODEL, END, IDS, MEDIA_URIS, MODALITIES, SCORES, SEARCH_MODEL,
                             START, TEXT, VIDEO, request_inputs, v2_datatype)

Media = str | os.PathLike | bytes | None


class Hit(NamedTuple):
    id: str
    score: float
    start: float  # seconds into the item (-1: the index does not say)
    end: float
    modalities: str  # the view the hit was embedded in ("v" for a video-only clip in an "av" gallery)
    uri: str = ""  # the media path the store records ("" for entries imported from an index file)
    caption: str = ""  # the caption the store records ("" likewise, and for a store written before captions)


@dataclass
class QueryResult:
    embedding: np.ndarray  # float32 (D,)
    hits: list[Hit] = field(default_factory=list)  # best first; empty without search
    gallery: str | None = None  # the gallery view searched


def split_url(url: str, protocol: str = "http") -> tuple[str, str]:
    """("http" | "grpc", "host:port") from "http://h:p", "grpc://h:p" or a bare "h:p" (taking `protocol`)."""
    for scheme in ("http", "grpc"):
        if url.startswith(f"{scheme}://"):
            return scheme, url[len(scheme) + 3:].rstrip("/")
    if "://" in url:
        raise ValueError(f"url {url!r}: expected http://host:port, grpc://host:port or host:port")
    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    return protocol, url.rstrip("/")


def client_module(protocol: str) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def _read_media(value: Media, name: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"--{name.lower()} {path}: no such file")
    return path.read_bytes()


def encoder_inputs(module: Any, arrays: dict[str, np.ndarray]) -> list[Any]:
    """The encoder's input arrays (Preprocessor's output: model.inference.INPUTS, and audio_mask for a
    backbone with its own audio features; or the text model's text_ids and text_mask) as tritonclient
    InferInputs for Triton direct, in that order."""
    from model.inference import INPUTS  # torch: imported only by callers that build encoder inputs

    inputs = []
    for name in (*(n for n in INPUTS if n in arrays), *(n for n in arrays if n not in INPUTS)):
        tensor = module.InferInput(name, list(arrays[name].shape), v2_datatype(arrays[name].dtype))
        tensor.set_data_from_numpy(arrays[name])
        inputs.append(tensor)
    return inputs


def query_inputs(module: Any, text: str | None, video: Media, audio: Media) -> list[Any]:
    """One row: the given fields as the transformer's request inputs (serving.tensors.request_inputs), batch 1."""
    values = {TEXT: text.encode("utf-8") if text is not None else None,
              VIDEO: _read_media(video, VIDEO) if video is not None else None,
              AUDIO: _read_media(audio, AUDIO) if audio is not None else None}
    if all(v is None for v in values.values()):
        raise ValueError("give at least one of text, video, audio")
    inputs = []
    for spec in request_inputs():
        if values[spec.name] is not None:
            tensor = module.InferInput(spec.name, spec.batch_shape(1), spec.datatype)
            tensor.set_data_from_numpy(np.array([values[spec.name]], dtype=spec.numpy_dtype))
            inputs.append(tensor)
    return inputs


def query(url: str, text: str | None = None, video: Media = None, audio: Media = None, top_k: int = 10,
          protocol: str = "http", gallery: str | None = None, timeout: float = 60.0,
          filter: str | None = None) -> QueryResult:
    """Embed one row (any of text, video, audio) and, when the search model is served, return its top-k
    (only entries matching `filter`, a boolean expression over the store's scalar fields, when given)."""
    protocol, address = split_url(url, protocol)
    module = client_module(protocol)
    client = module.InferenceServerClient(address, network_timeout=timeout) if protocol == "http" \
        else module.InferenceServerClient(address)
    try:
        inputs = query_inputs(module, text, video, audio)
        if client.is_model_ready(SEARCH_MODEL):
            params = {"top_k": int(top_k), **({"gallery": gallery} if gallery else {}),
                      **({"filter": filter} if filter is not None else {})}
            result = client.infer(SEARCH_MODEL, inputs, parameters=params)
            text_of = lambda name: [i.decode() if isinstance(i, bytes) else str(i) for i in result.as_numpy(name)[0]]  # noqa: E731
            hits = [Hit(*row) for row in zip(text_of(IDS), result.as_numpy(SCORES)[0].tolist(),
                                             result.as_numpy(START)[0].tolist(), result.as_numpy(END)[0].tolist(),
                                             text_of(MODALITIES), text_of(MEDIA_URIS), text_of(CAPTIONS))]
            return QueryResult(result.as_numpy(EMBEDDING)[0], hits, _response_parameter(result, "gallery"))
        if gallery is not None or filter is not None:
            raise ValueError(f"{url} serves no search model ({SEARCH_MODEL}): start it with --index to search")
        result = client.infer(EMBEDDING_MODEL, inputs)
        return QueryResult(result.as_numpy(EMBEDDING)[0])
    finally:
        client.close()


def _response_parameter(result: Any, key: str) -> str | None:
    response = result.get_response()
    params = response.get("parameters", {}) if isinstance(response, dict) else getattr(response, "parameters", {})
    value = params.get(key) if params else None
    if value is not None and hasattr(value, "string_param"):
        return value.string_param
    return value
