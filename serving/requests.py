"""V2 requests -> Preprocessor rows, and search options: the transformer's input checks, without kserve.

A request carries any of the BYTES tensors TEXT, VIDEO, AUDIO, each of shape [B] (or [B, 1]), all with
the same B. Row i takes element i of each tensor; an empty element (b"" or "") means that modality is
absent from the row. TEXT elements are UTF-8 captions; VIDEO and AUDIO elements are the encoded bytes
of a media file (binary tensor data over HTTP, raw contents over gRPC). Every refusal is a RequestError
naming the field (input, row, parameter) and what was expected; the server turns it into a 400
(RequestTooLarge: 413).

`decode_http_body` reads a V2 HTTP body (JSON, or a JSON header followed by binary tensor data) and
`decode_inputs` the inputs of either protocol. Both check every size and count first: the JSON part
against max_json_bytes, each declared shape against max_elements (empty elements count too), and only
then split binary data, reading no more elements than the shape declares, so the work a request can
cause is bounded by the limits, not by its length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from model.errors import OmniRetrieverError
from model.modalities import canonical_view
from serving.filters import FilterError, parse_filter
from serving.limits import REQUEST_INPUTS, ServingLimits
from serving.tensors import AUDIO, REQUEST_FIELDS, TEXT, VIDEO, request_inputs

_SPECS = {spec.name: spec for spec in request_inputs()}  # TEXT, VIDEO, AUDIO
MAX_NAMED = 64  # request parameters, input parameters, requested outputs: most entries of each
MAX_DIMS = 8  # most dimensions of a declared shape


class RequestError(OmniRetrieverError, ValueError):
    """A request the transformer cannot serve: unknown tensor, wrong datatype or shape, bad option (400)."""

    status = 400


class RequestTooLarge(RequestError):
    """A request over a size or count limit: its JSON, its tensor elements (413)."""

    status = 413


@dataclass(frozen=True)
class Tensor:
    """One request input as received: name, V2 datatype, declared shape and the decoded elements."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: Sequence | None  # the elements, flat (or an array of the shape); None when they do not fill the shape


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
    if tensor.values is None or len(_flat(tensor.values)) != shape[0]:
        raise RequestError(f"input {tensor.name}: the data does not match its shape {list(shape)}")
    return shape[0]


def _flat(values: Sequence) -> Sequence:
    return values.reshape(-1) if isinstance(values, np.ndarray) else values


def _element(tensor: Tensor, row: int) -> str | bytes | None:
    """Element `row` as a caption (TEXT) or media bytes (VIDEO, AUDIO); None when empty (absent)."""
    value = _flat(tensor.values)[row]
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
        _check_unicode(value, f"input TEXT, row {row}")
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
    filter: str = ""  # a Milvus expression re-rendered by serving.filters ("" for none)


def _plain(value: Any) -> Any:
    """A request parameter as a plain value: REST gives JSON values, gRPC gives InferParameter messages."""
    if hasattr(value, "WhichOneof"):
        which = value.WhichOneof("parameter_choice")
        return None if which is None else getattr(value, which)
    return value


def search_options(parameters: Mapping[str, Any] | None, views: tuple[str, ...], default_top_k: int,
                   max_top_k: int) -> SearchOptions:
    """top_k, gallery and filter from the request parameters; the gallery defaults to the index's first view, the
    filter (serving/filters.py's grammar) to none."""
    if parameters is not None and not isinstance(parameters, Mapping) and not hasattr(parameters, "items"):
        raise RequestError(f"parameters: expected an object of name: value, got {_shown(parameters)}")
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
    try:
        where = parse_filter(params.get("filter", ""))
    except FilterError as exc:
        raise RequestError(f"parameter filter: {exc}") from None
    return SearchOptions(top_k=top_k, gallery=gallery, filter=where)


# --- decoding V2 bodies (HTTP) and inputs (HTTP and gRPC), bounded by the limits ----------------------------


@dataclass(frozen=True)
class InferenceBody:
    """One decoded inference request of either protocol: what the models read."""

    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # plain values: str, int, float, bool
    outputs: tuple[str, ...] = ()  # requested output names (every output is returned)

    def has_media(self) -> bool:
        """Whether any row carries video or audio: such requests go to the media workers."""
        return any(t.name in (VIDEO, AUDIO) and t.values is not None and any(len(v) for v in _flat(t.values))
                   for t in self.inputs)


@dataclass(frozen=True)
class InputSpec:
    """One input as declared, before its data is read: checked by `check_input`."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    elements: int  # product of the shape


def _shown(value: Any) -> str:
    """A short description of a JSON value for messages: its type and, if small, the value."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text}" if len(text) <= 40 else kind


def _check_unicode(value: str, where: str) -> None:
    """Strings from JSON may hold lone surrogates (a "\\ud800" escape), which are not Unicode text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"{where}: not valid Unicode (a lone surrogate at character {exc.start}; "
                           "\\uD800-\\uDFFF escapes must come in pairs)") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_parameters(where: str, params: Any) -> dict[str, Any]:
    """A parameters object: at most MAX_NAMED names, each a string, number or boolean."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise RequestError(f"{where}: expected an object of name: value, got {_shown(params)}")
    if len(params) > MAX_NAMED:
        raise RequestError(f"{where}: {len(params)} entries, at most {MAX_NAMED}")
    out = {}
    for key, value in params.items():
        _check_unicode(str(key), f"{where} name {key!r}")
        if not isinstance(value, (str, int, float)):  # bool is an int
            raise RequestError(f"{where}.{key}: expected a string, number or boolean, got {_shown(value)}")
        if isinstance(value, str):
            _check_unicode(value, f"{where}.{key}")
        out[str(key)] = value
    return out


def check_input(index: int, name: Any, datatype: Any, shape: Any) -> InputSpec:
    """Name, datatype and shape of input `index` as declared: their types, not yet their meaning."""
    if not isinstance(name, str):
        raise RequestError(f"input {index}: name must be a string, got {_shown(name)}")
    where = f"input {name!r}" if name not in REQUEST_FIELDS else f"input {name}"
    if not isinstance(datatype, str):
        raise RequestError(f"{where}: datatype must be a string such as \"BYTES\", got {_shown(datatype)}")
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS \
            or not all(_is_int(d) and d >= 0 for d in shape):
        raise RequestError(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers, "
                           f"got {_shown(shape if not isinstance(shape, tuple) else list(shape))}")
    return InputSpec(name, datatype.upper(), tuple(shape), math.prod(shape))


class ElementBudget:
    """max_elements over all of a request's inputs, charged from each declared shape before any data is read."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def charge(self, spec: InputSpec) -> None:
        self.used += spec.elements
        if self.used > self.limit:
            raise RequestTooLarge(f"input {spec.name}: shape {list(spec.shape)} brings the request to {self.used} "
                                  f"tensor elements, over the limit of {self.limit} (empty elements count too)")


def split_bytes(data: bytes | memoryview, count: int) -> list[bytes] | None:
    """Exactly `count` BYTES elements (each a 4-byte little-endian length, then the bytes) filling `data`, or None.

    Reads at most `count` elements whatever the length of `data`."""
    view = memoryview(data)
    out, pos, end = [], 0, len(view)
    for _ in range(count):
        if pos + 4 > end:
            return None
        size = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if pos + size > end:
            return None
        out.append(bytes(view[pos:pos + size]))
        pos += size
    return out if pos == end else None


def flatten(data: Any, count: int) -> list | None:
    """The elements of JSON tensor data (a list, nested lists allowed) if there are exactly `count`, else None.

    Stops as soon as more than `count` elements are seen."""
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
            if len(out) > count:
                return None
        else:
            stack.pop()
    return out if len(out) == count else None


def _load_json(data: bytes | memoryview, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "surrogate" in str(exc):  # valid JSON with a lone \\uD800 escape: reported by the field that holds it
            try:
                return json.loads(bytes(data))
            except ValueError:
                pass
        raise RequestError(f"{what} is not valid JSON: {exc}") from None


def _check_outputs(outputs: Any) -> tuple[str, ...]:
    if outputs is None:
        return ()
    if not isinstance(outputs, list):
        raise RequestError(f"outputs: expected a list of {{\"name\": ...}} objects, got {_shown(outputs)}")
    if len(outputs) > MAX_NAMED:
        raise RequestError(f"outputs: {len(outputs)} entries, at most {MAX_NAMED}")
    names = []
    for i, out in enumerate(outputs):
        if not isinstance(out, Mapping) or not isinstance(out.get("name"), str):
            raise RequestError(f"outputs[{i}]: expected an object with a string \"name\", got {_shown(out)}")
        check_parameters(f"outputs[{i}].parameters", out.get("parameters"))
        names.append(out["name"])
    return tuple(names)


def check_request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"id: expected a string, got {_shown(value)}")
    _check_unicode(value, "id")
    return value


def check_input_count(n: int) -> None:
    if n > REQUEST_INPUTS:
        raise RequestError(f"the request has {n} inputs, at most {REQUEST_INPUTS} ({', '.join(REQUEST_FIELDS)})")


def decode_http_body(body: bytes, header_length: Any, limits: ServingLimits) -> InferenceBody:
    """A V2 HTTP body -> InferenceBody. With an Inference-Header-Content-Length (`header_length`) the body is a
    JSON header followed by the binary data of the inputs that give parameters.binary_data_size; without one
    it is all JSON. Raises RequestError naming the field for anything malformed."""
    binary = header_length is not None
    if binary:
        try:
            json_length = int(header_length)
        except (TypeError, ValueError):
            raise RequestError(f"header Inference-Header-Content-Length {header_length!r} is not an integer") from None
        if not 0 < json_length <= len(body):
            raise RequestError(f"Inference-Header-Content-Length {json_length} is outside the body of {len(body)} bytes")
    else:
        json_length = len(body)
    what = "the request's JSON header" if binary else "the request body"
    if json_length > limits.max_json_bytes:
        raise RequestTooLarge(f"{what} is {json_length} bytes of JSON, over the limit of {limits.max_json_bytes} "
                              "bytes (send media as binary tensor data)")
    view = memoryview(body)
    header = _load_json(view[:json_length], what)
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise RequestError(f'{what} needs an object with an "inputs" list')
    request_id = check_request_id(header.get("id"))
    parameters = check_parameters("parameters", header.get("parameters"))
    outputs = _check_outputs(header.get("outputs"))
    check_input_count(len(header["inputs"]))
    budget = ElementBudget(limits.max_elements)
    tensors, offset = [], json_length
    for i, item in enumerate(header["inputs"]):
        if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
            raise RequestError(f"input {i}: needs name, shape and datatype")
        spec = check_input(i, item["name"], item["datatype"], item["shape"])
        params = check_parameters(f"input {spec.name}: parameters", item.get("parameters"))
        budget.charge(spec)
        data = item.get("data")
        if data is None:
            size = params.get("binary_data_size")
            if not _is_int(size) or size < 0 or offset + size > len(body):
                raise RequestError(f"input {spec.name}: binary_data_size {size!r} does not fit the body")
            chunk, offset = view[offset:offset + size], offset + size
            values = split_bytes(chunk, spec.elements) if spec.datatype == "BYTES" else None
        else:
            if not isinstance(data, list):
                raise RequestError(f"input {spec.name}: data must be a list, got {_shown(data)}")
            values = flatten(data, spec.elements) if spec.datatype == "BYTES" else None
        tensors.append(Tensor(spec.name, spec.datatype, spec.shape, values))
    if offset != len(body):
        raise RequestError(f"the body has {len(body) - offset} bytes after the last binary input")
    return InferenceBody(tensors, request_id, parameters, outputs)
