"""kserve 0.21's ModelServer with what the transformer needs and kserve does not do: TransformerServer.

This module works around four kserve behaviours; on a kserve upgrade, check each against kserve's source:

    1. A binary V2 HTTP body goes DataPlane.decode_inference_request -> InferRequest.from_bytes
       (kserve/protocol/infer_type.py), which turns every binary BYTES input back into JSON strings with
       InferInput.set_data_from_numpy(..., binary_data=False), decoding each element as UTF-8: media bytes
       that are not UTF-8 fail there, and a header without "inputs" raises a KeyError. BinarySafeDataPlane
       decodes such bodies with parse_binary_request, which checks them and keeps each binary input's bytes
       by writing InferInput's private `_raw_data`, the attribute InferInput.as_numpy() reads.
    2. RESTServer (kserve/protocol/rest/server.py) hard-codes uvicorn's host "0.0.0.0": TransformerServer.start
       repeats the single-worker branch of ModelServer.start (kserve/model_server.py) and sets the uvicorn
       config's host afterwards.
    3. Nothing in kserve limits the size of an HTTP body: the BodyLimit middleware on kserve.model_server.app
       answers 413 first.
    4. GRPCServer.start (kserve/protocol/grpc/server.py) binds "[::]:<port>" and reads its message size limits
       from kserve's own command line (grpc_max_send/receive_message_length): LoopbackGRPCServer repeats its
       start with one host and the serving limit.
"""

from __future__ import annotations

import asyncio
from concurrent import futures
from typing import Any

import grpc
import kserve
import orjson
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.server import RESTServer
from starlette.exceptions import HTTPException

from serving.limits import ServingLimits


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
