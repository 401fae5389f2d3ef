"""V2 request tensors -> Preprocessor rows, and search options: the transformer's input checks, without kserve.

A request carries any of the BYTES tensors TEXT, VIDEO, AUDIO, each of shape [B] (or [B, 1]), all with
the same B. Row i takes element i of each tensor; an empty element (b"" or "") means that modality is
absent from the row. TEXT elements are UTF-8 captions; VIDEO and AUDIO elements are the encoded bytes
of a media file (binary tensor data over HTTP, raw contents over gRPC). Every refusal is a RequestError
naming the tensor (and row) and what was expected; the server turns it into a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.errors import OmniRetrieverError
from model.modalities import canonical_view
from serving.tensors import REQUEST_FIELDS, TEXT, request_inputs

_SPECS = {spec.name: spec for spec in request_inputs()}  # TEXT, VIDEO, AUDIO


class RequestError(OmniRetrieverError, ValueError):
    """A request the transformer cannot serve: unknown tensor, wrong datatype or shape, bad option."""


@dataclass(frozen=True)
class Tensor:
    """One request input as received: name, V2 datatype, declared shape and the decoded elements."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray | None  # None when the elements could not be decoded


def _rows_of(tensor: Tensor, max_rows: int) -> int:
    if tensor.name not in REQUEST_FIELDS:
        raise RequestError(f"unknown input {tensor.name!r}: expected any of {', '.join(REQUEST_FIELDS)}")
    if tensor.datatype != _SPECS[tensor.name].datatype:
        raise RequestError(f"input {tensor.name}: datatype {tensor.datatype}, expected {_SPECS[tensor.name].datatype}")
    shape = tuple(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise RequestError(f"input {tensor.name}: shape {list(shape)}, expected [B] or [B, 1] (one element per row)")
    if not 1 <= shape[0] <= max_rows:
        raise RequestError(f"input {tensor.name}: {shape[0]} rows, expected 1 to {max_rows} rows per request")
    if tensor.values is None or tensor.values.size != shape[0]:
        raise RequestError(f"input {tensor.name}: the data does not match its shape {list(shape)}")
    return shape[0]


def _element(tensor: Tensor, row: int) -> str | bytes | None:
    """Element `row` as a caption (TEXT) or media bytes (VIDEO, AUDIO); None when empty (absent)."""
    value = tensor.values.reshape(-1)[row]
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, str):
        raise RequestError(f"input {tensor.name}, row {row}: expected bytes, got {type(value).__name__}")
    if len(value) == 0:
        return None
    if tensor.name == TEXT:
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RequestError(f"input TEXT, row {row}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        return value
    if isinstance(value, str):
        raise RequestError(f"input {tensor.name}, row {row}: media must be sent as binary data (the binary tensor "
                           "extension over HTTP, or gRPC), got a JSON string")
    return value


def rows_from_tensors(tensors: list[Tensor], max_rows: int) -> list[dict[str, Any]]:
    """Request tensors -> Preprocessor rows {"text": str, "video": bytes, "audio": bytes} (absent fields left out)."""
    if not tensors:
        raise RequestError(f"the request has no inputs: give any of {', '.join(REQUEST_FIELDS)}")
    names = [t.name for t in tensors]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RequestError(f"input(s) {', '.join(duplicated)} given more than once")
    counts = {t.name: _rows_of(t, max_rows) for t in tensors}
    if len(set(counts.values())) > 1:
        raise RequestError("inputs disagree on the number of rows: " + ", ".join(f"{n} has {c}" for n, c in counts.items()))
    rows: list[dict[str, Any]] = [{} for _ in range(next(iter(counts.values())))]
    for tensor in tensors:
        for i, row in enumerate(rows):
            value = _element(tensor, i)
            if value is not None:
                row[REQUEST_FIELDS[tensor.name]] = value
    return rows


@dataclass(frozen=True)
class SearchOptions:
    top_k: int
    gallery: str  # canonical view name of the gallery side


def _plain(value: Any) -> Any:
    """A request parameter as a plain value: REST gives JSON values, gRPC gives InferParameter messages."""
    if hasattr(value, "WhichOneof"):
        which = value.WhichOneof("parameter_choice")
        return None if which is None else getattr(value, which)
    return value


def search_options(parameters: Mapping[str, Any] | None, views: tuple[str, ...], default_top_k: int,
                   max_top_k: int) -> SearchOptions:
    """top_k and gallery from the request parameters; the gallery defaults to the index's first view."""
    params = {k: _plain(v) for k, v in (parameters or {}).items()}
    top_k = params.get("top_k", default_top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= max_top_k:
        raise RequestError(f"parameter top_k: expected an integer from 1 to {max_top_k}, got {top_k!r}")
    gallery = params.get("gallery", views[0])
    try:
        gallery = canonical_view(str(gallery))
    except ValueError as exc:
        raise RequestError(f"parameter gallery: {exc}") from None
    if gallery not in views:
        raise RequestError(f"parameter gallery: the index holds the view(s) {', '.join(views)}, not {gallery!r}")
    return SearchOptions(top_k=top_k, gallery=gallery)
