"""The KServe transformer: V2 requests of text / video / audio -> Triton over grpc-v2 -> embeddings or top-k.

Two kserve.Model subclasses in one ModelServer:

    omniretriever         inputs TEXT, VIDEO, AUDIO (BYTES [B], any subset per row) -> EMBEDDING FP32 [B, D]
    omniretriever-search  the same inputs, parameters top_k and gallery -> IDS BYTES [B, K], SCORES FP32 [B, K],
                          EMBEDDING; ranked against a gallery index (serving/index.py)

Both run model.inference.Preprocessor (the preprocessing of training and evaluation) on the request rows,
send the five encoder arrays to the Triton model `omniretriever-encoder` over grpc-v2 and read EMBEDDING
from its answer by name. Nothing about a request is kept on the model objects, so concurrent requests
cannot see each other's data.

Run it as a process (`python -m serving.transformer --model_dir REPO/production --predictor_host H:P ...`;
the local launcher and the container image do). The server binds --host (127.0.0.1 unless told otherwise)
for both HTTP and gRPC, refuses bodies over --max_request_bytes with a 413 (gRPC: RESOURCE_EXHAUSTED),
and decodes binary tensor data itself so media bytes that are not UTF-8 reach the model intact.

`import kserve` parses sys.argv at import time; the flags here use kserve's own names where they mean the
same thing (--http_port, --grpc_port, --model_name, --predictor_host, --predictor_protocol) and
distinct names otherwise, so that parse agrees with this module's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import uuid
from concurrent import futures
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import grpc
import kserve
import numpy as np
import orjson
from fastapi.responses import JSONResponse
from kserve.errors import InferenceError, InvalidInput
from kserve.predictor_config import PredictorConfig
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
from kserve.protocol.rest.server import RESTServer
from starlette.exceptions import HTTPException

from model.config import EncoderConfig
from model.errors import InputError
from model.inference import Preprocessor
from model.text import TextTokenizer
from serving.index import GalleryIndex, load_index
from serving.limits import ServingLimits
from serving.requests import RequestError, SearchOptions, Tensor, rows_from_tensors, search_options
from serving.tensors import EMBEDDING, EMBEDDING_MODEL, ENCODER_MODEL, IDS, SCORES, encoder_inputs

log = logging.getLogger("omniretriever.transformer")
DEFAULT_TOP_K = 10


def _tensors(payload: Any) -> list[Tensor]:
    """The request's inputs as Tensors; elements that cannot be decoded against the shape become None."""
    if not isinstance(payload, InferRequest):
        raise RequestError("expected a V2 inference request (POST /v2/models/<name>/infer or gRPC ModelInfer)")
    tensors = []
    for inp in payload.inputs:
        try:
            values = inp.as_numpy()
        except Exception:  # malformed binary data or data that does not fill the shape: reported by the checks
            values = None
        tensors.append(Tensor(inp.name, inp.datatype, tuple(int(d) for d in inp.shape), values))
    return tensors


def _output(response: InferResponse, name: str) -> np.ndarray:
    out = response.get_output_by_name(name)
    if out is None:
        raise InferenceError(f"the predictor's response has no output {name!r}")
    return out.as_numpy()


def _bad_input(exc: Exception) -> InvalidInput:
    return InvalidInput(str(exc))


class EmbeddingModel(kserve.Model):
    """TEXT / VIDEO / AUDIO rows -> EMBEDDING [B, D], through the Triton model ENCODER_MODEL."""

    def __init__(self, name: str, model_dir: Path, limits: ServingLimits):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.limits = limits
        self.preprocessor: Preprocessor | None = None
        self.info: dict = {}

    def load(self) -> bool:
        """Read the preprocessing (encoder.json, tokenizer.json) that export put beside the Triton model."""
        root = self.model_dir / ENCODER_MODEL
        missing = [f for f in ("encoder.json", "tokenizer.json", "model.json") if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{root} lacks {', '.join(missing)}: --model_dir must be a repository's "
                                    "production/ directory built by `omniretriever export`")
        config = EncoderConfig.from_dict(json.loads((root / "encoder.json").read_text()), str(root / "encoder.json"))
        tokenizer = TextTokenizer.load(root / "tokenizer.json", config.max_text_len)
        self.preprocessor = Preprocessor(tokenizer, config, self.limits.media())
        self.info = json.loads((root / "model.json").read_text())
        self.ready = True
        return self.ready

    def _arrays(self, rows: list[dict]) -> dict[str, np.ndarray]:
        try:
            return self.preprocessor(rows)
        except InputError as exc:
            raise _bad_input(exc) from None

    async def encoder_request(self, payload: Any) -> InferRequest:
        """Check and preprocess the rows (media decoding runs in a worker thread) into a Triton request."""
        try:
            rows = rows_from_tensors(_tensors(payload), self.limits.max_rows)
        except RequestError as exc:
            raise _bad_input(exc) from None
        arrays = await asyncio.to_thread(self._arrays, rows)
        inputs = []
        for spec in encoder_inputs(self.preprocessor.config):
            tensor = InferInput(spec.name, spec.batch_shape(len(rows)), spec.datatype)
            tensor.set_data_from_numpy(np.ascontiguousarray(arrays[spec.name]), binary_data=True)
            inputs.append(tensor)
        request_id = getattr(payload, "id", None) or uuid.uuid4().hex
        return InferRequest(model_name=ENCODER_MODEL, infer_inputs=inputs, request_id=request_id,
                            request_outputs=[RequestedOutput(EMBEDDING)])

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> InferRequest:
        return await self.encoder_request(payload)

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        """Send the request to Triton over grpc-v2; its refusals come back as 400, its failures as 500."""
        try:
            return await super().predict(payload, headers)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidInput(f"the predictor refused the request: {details}") from None
            raise InferenceError(f"predictor {self.predictor_config.predictor_host} failed ({code.name}): {details}") from None

    async def postprocess(self, result: InferResponse, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> InferResponse:
        embedding = _output(result, EMBEDDING).astype(np.float32, copy=False)  # (B, D)
        out = InferOutput(EMBEDDING, list(embedding.shape), "FP32", data=embedding)
        return InferResponse(response_id=result.id or "", model_name=self.name, infer_outputs=[out])


@dataclass(frozen=True)
class _SearchCall:
    """What preprocess hands predict for one search request (kept off the model object)."""

    request: InferRequest
    options: SearchOptions


class SearchModel(EmbeddingModel):
    """Embeds the query rows like EmbeddingModel, then ranks a gallery view of the index: IDS, SCORES, EMBEDDING."""

    def __init__(self, name: str, model_dir: Path, limits: ServingLimits, index_path: Path):
        super().__init__(name, model_dir, limits)
        self.index_path = Path(index_path)
        self.index: GalleryIndex | None = None

    def load(self) -> bool:
        super().load()
        index = load_index(self.index_path)
        if index.weights_sha256 != self.info.get("weights_sha256"):
            raise ValueError(f"index {self.index_path} was built with weights {index.weights_sha256[:12]}, "
                             f"the served model has {str(self.info.get('weights_sha256'))[:12]}: rebuild the index")
        if index.dim != self.preprocessor.config.embed_dim:
            raise ValueError(f"index {self.index_path} holds {index.dim}-d embeddings, the model makes "
                             f"{self.preprocessor.config.embed_dim}-d ones")
        self.index = index
        self.ready = True
        return self.ready

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _SearchCall:
        try:
            options = search_options(getattr(payload, "parameters", None), self.index.views, DEFAULT_TOP_K,
                                     self.limits.max_top_k)
        except RequestError as exc:
            raise _bad_input(exc) from None
        return _SearchCall(await self.encoder_request(payload), options)

    async def predict(self, payload: _SearchCall, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        response = await super().predict(payload.request, headers)
        embedding = _output(response, EMBEDDING).astype(np.float32, copy=False)
        ids, scores = self.index.search(embedding, payload.options.gallery, payload.options.top_k)
        outputs = [
            InferOutput(IDS, list(ids.shape), "BYTES", data=np.vectorize(str.encode, otypes=[object])(ids)),
            InferOutput(SCORES, list(scores.shape), "FP32", data=scores),
            InferOutput(EMBEDDING, list(embedding.shape), "FP32", data=embedding),
        ]
        params = {"gallery": payload.options.gallery, "top_k": int(ids.shape[1])}
        return InferResponse(response_id=response.id or "", model_name=self.name, infer_outputs=outputs,
                             parameters=params)

    async def postprocess(self, result: InferResponse, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> InferResponse:
        return result


# --- the server: loopback binds, a request size limit, binary-safe REST decoding -----------------------------


def parse_binary_request(body: bytes, json_length: Any, model_name: str) -> InferRequest:
    """A V2 binary-tensor HTTP body -> InferRequest whose binary inputs keep their raw bytes.

    kserve's own decoder turns binary BYTES back into UTF-8 JSON strings, which fails on media; here raw
    tensors are handed to the model as they arrived. Every inconsistency is an InvalidInput (400)."""
    try:
        json_length = int(json_length)
    except (TypeError, ValueError):
        raise InvalidInput(f"header Inference-Header-Content-Length {json_length!r} is not an integer") from None
    if not 0 < json_length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {json_length} is outside the body of {len(body)} bytes")
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request's JSON header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput('the request\'s JSON header needs an "inputs" list')
    inputs, raw, offset = [], [], json_length
    for i, spec in enumerate(header["inputs"]):
        if not isinstance(spec, dict) or not {"name", "shape", "datatype"} <= set(spec):
            raise InvalidInput(f"input {i}: needs name, shape and datatype")
        params = spec.get("parameters") or {}
        tensor = InferInput(str(spec["name"]), list(spec["shape"]), str(spec["datatype"]), data=spec.get("data"),
                            parameters=params)
        chunk = None
        if spec.get("data") is None:
            size = params.get("binary_data_size")
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise InvalidInput(f"input {spec['name']}: binary_data_size {size!r} does not fit the body")
            chunk, offset = body[offset:offset + size], offset + size
        inputs.append(tensor)
        raw.append(chunk)
    if offset != len(body):
        raise InvalidInput(f"the body has {len(body) - offset} bytes after the last binary input")
    outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in header.get("outputs") or [] if "name" in o]
    request = InferRequest(model_name=model_name, infer_inputs=inputs, request_id=header.get("id"),
                           parameters=header.get("parameters"), request_outputs=outputs or None)
    for tensor, chunk in zip(inputs, raw):
        tensor._raw_data = chunk  # kserve's InferInput reads raw bytes in as_numpy()
    return request


class BinarySafeDataPlane(DataPlane):
    """kserve's DataPlane, decoding binary V2 HTTP bodies with parse_binary_request."""

    def decode_inference_request(self, body: Any, headers: dict, model_name: str) -> InferRequest:
        if isinstance(body, bytes):
            return parse_binary_request(body, headers.get("inference-header-content-length"), model_name)
        return super().decode_inference_request(body, headers, model_name)


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 with the size and the limit, before it is parsed."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: int | str) -> str:
        return f"request body of {size} bytes is over the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(status_code=413, content={"error": self._message(int(declared))})
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # a chunked body that declared no length
                raise HTTPException(status_code=413, detail=self._message(f"more than {self.max_bytes}"))
            return message

        await self.app(scope, counted, send)


class LoopbackGRPCServer(GRPCServer):
    """kserve's gRPC server bound to one host (kserve's binds every interface) with a message size limit."""

    def __init__(self, host: str, port: int, data_plane: DataPlane, extension: Any, max_message_bytes: int,
                 grace_period: int):
        super().__init__(port, data_plane, extension, kwargs={}, grace_period=grace_period)
        self._host = host
        self._max_message_bytes = max_message_bytes

    async def start(self, max_workers: int) -> None:
        self._server = grpc.aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[("grpc.max_receive_message_length", self._max_message_bytes),
                     ("grpc.max_send_message_length", self._max_message_bytes)],
        )
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(f"{self._host}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


class TransformerServer(kserve.ModelServer):
    """kserve.ModelServer on `host` only, with the request size limit and binary-safe decoding."""

    def __init__(self, host: str, limits: ServingLimits, **kwargs: Any):
        super().__init__(**kwargs)
        self.host = host
        self.limits = limits
        self.dataplane = BinarySafeDataPlane(model_registry=self.registered_models)

    def start(self, models: list[kserve.Model]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        kserve.model_server.app.add_middleware(BodyLimit, max_bytes=self.limits.max_request_bytes)
        self._rest_server = RESTServer("kserve.model_server:app", self.dataplane, self.model_repository_extension,
                                       self.http_port, grace_period=self.grace_period,
                                       timeout_keep_alive=self.timeout_keep_alive)
        self._rest_server.config.host = self.host
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = LoopbackGRPCServer(self.host, self.grpc_port, self.dataplane,
                                                   self.model_repository_extension, self.limits.max_request_bytes,
                                                   self.grace_period)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.transformer", description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", type=Path, default=Path("/mnt/models"),
                        help="the repository's production/ directory (KServe mounts storageUri at /mnt/models)")
    parser.add_argument("--index", type=Path, default=None, help="gallery index file: enables the search model")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind, HTTP and gRPC")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--model_name", default=EMBEDDING_MODEL,
                        help="name of the embedding model; search is served as <name>-search")
    parser.add_argument("--predictor_host", required=True, help="Triton's gRPC address, host:port")
    parser.add_argument("--predictor_protocol", default="grpc-v2", choices=["grpc-v2"])
    parser.add_argument("--predictor_request_timeout_seconds", type=int, default=60)
    parser.add_argument("--grace_seconds", type=int, default=5, help="how long in-flight requests may finish on stop")
    for field in fields(ServingLimits):
        parser.add_argument(f"--{field.name}", type=type(field.default), default=field.default,
                            help=f"serving limit (default {field.default})")
    return parser


def build_models(args: argparse.Namespace, limits: ServingLimits) -> list[kserve.Model]:
    models: list[kserve.Model] = [EmbeddingModel(args.model_name, args.model_dir, limits)]
    if args.index is not None:
        models.append(SearchModel(f"{args.model_name}-search", args.model_dir, limits, args.index))
    for model in models:
        model.load()
    return models


def main(argv: list[str] | None = None) -> None:
    """Start the transformer; it runs until SIGINT or SIGTERM."""
    import torch

    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log.warning("ignoring unknown arguments: %s", " ".join(unknown))
    torch.set_num_threads(1)  # requests are preprocessed concurrently in threads; one op thread each
    limits = ServingLimits(**{f.name: getattr(args, f.name) for f in fields(ServingLimits)})
    predictor = PredictorConfig(
        predictor_host=args.predictor_host, predictor_protocol=args.predictor_protocol,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds)
    server = TransformerServer(args.host, limits, http_port=args.http_port, grpc_port=args.grpc_port,
                               predictor_config=predictor, grace_period=args.grace_seconds,
                               enable_latency_logging=False)
    server.start(build_models(args, limits))


if __name__ == "__main__":
    main()
