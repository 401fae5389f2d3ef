"""The transformer's gRPC server: kserve's servicer less the repository methods, requests decoded on a worker.

kserve's gRPC server deserializes ModelInferRequest on the event loop and binds every interface; here
ModelInfer takes the serialized message, `scan_infer_request` walks its wire format to refuse one with too
many fields before protobuf builds them, and `decode_grpc_request` checks it like an HTTP body, on a worker.
StatusInterceptor turns exceptions into their status (serving.server.status); LoopbackGRPCServer binds one
host with the serving message size limit."""

from __future__ import annotations

from concurrent import futures
from typing import Any, Callable

import grpc
from grpc_interceptor.server import AsyncServerInterceptor
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.interceptors import LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferResponse
from kserve.utils.utils import to_headers

from serving.limits import ServingLimits
from serving.requests import (MAX_DIMS, MAX_NAMED, ElementBudget, InferenceBody, RequestError, RequestTooLarge, Tensor,
                              _plain, check_input, check_input_count, check_parameters, check_request_id,
                              split_bytes)
from serving.server.readiness import TransformerDataPlane
from serving.server.status import NotServed, error_status
from serving.server.workers import Workers

GRPC_SERVICE = "inference.GRPCInferenceService"


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise RequestError("the gRPC message is not a valid ModelInferRequest (a truncated varint)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int, budget: list[int]):
    """(field number, (start, end) of a length-delimited value or None) of one protobuf message's fields,
    counting each against budget[0]: the fields a message can make the parser build are bounded."""
    pos = start
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise RequestTooLarge("the gRPC message has too many fields (tensor elements, shape dimensions, "
                                  "parameters or outputs) for the limits")
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        span = None
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            span, pos = (pos, pos + length), pos + length
        else:
            raise RequestError(f"the gRPC message is not a valid ModelInferRequest (wire type {wire})")
        if pos > end:
            raise RequestError("the gRPC message is not a valid ModelInferRequest (a field runs past its end)")
        yield number, span


def scan_infer_request(raw: bytes, limits: ServingLimits) -> None:
    """Walk a ModelInferRequest's wire format down to each input's contents, without building it: refuse one
    whose fields (one per BYTES element in contents) exceed the limits, before protobuf parses them all."""
    buf, budget = memoryview(raw), [limits.max_elements + 8 * MAX_NAMED + 64 * MAX_DIMS]
    for number, span in _fields(buf, 0, len(buf), budget):
        if number == 5 and span is not None:  # inputs: InferInputTensor
            for inner, inner_span in _fields(buf, span[0], span[1], budget):
                if inner == 5 and inner_span is not None:  # contents: InferTensorContents
                    for _ in _fields(buf, inner_span[0], inner_span[1], budget):
                        pass


def _grpc_parameters(where: str, params: Any) -> dict[str, Any]:
    if len(params) > MAX_NAMED:
        raise RequestError(f"{where}: {len(params)} entries, at most {MAX_NAMED}")
    return check_parameters(where, {key: _plain(value) for key, value in params.items()})


def decode_grpc_request(raw: bytes, limits: ServingLimits) -> tuple[str, str, InferenceBody]:
    """A serialized ModelInferRequest -> (model name, model version, InferenceBody), checked like HTTP bodies."""
    scan_infer_request(raw, limits)
    try:
        request = pb.ModelInferRequest.FromString(raw)
    except Exception as exc:  # noqa: BLE001  protobuf's DecodeError, invalid UTF-8 in a string field, ...
        raise RequestError(f"the gRPC message is not a valid ModelInferRequest: {exc}") from None
    raw_contents = request.raw_input_contents
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise RequestError(f"the request has {len(request.inputs)} inputs but {len(raw_contents)} raw_input_contents")
    check_input_count(len(request.inputs))
    parameters = _grpc_parameters("parameters", request.parameters)
    budget = ElementBudget(limits.max_elements)
    tensors = []
    for i, tensor in enumerate(request.inputs):
        if len(tensor.shape) > MAX_DIMS:
            raise RequestError(f"input {tensor.name!r}: shape has {len(tensor.shape)} dimensions, at most {MAX_DIMS}")
        spec = check_input(i, tensor.name, tensor.datatype, list(tensor.shape))
        _grpc_parameters(f"input {spec.name}: parameters", tensor.parameters)
        budget.charge(spec)
        values = None
        if raw_contents:
            if tensor.HasField("contents"):
                raise RequestError(f"input {spec.name}: contents given as well as raw_input_contents")
            if spec.datatype == "BYTES":
                values = split_bytes(raw_contents[i], spec.elements)
        elif spec.datatype == "BYTES" and len(tensor.contents.bytes_contents) == spec.elements:
            values = list(tensor.contents.bytes_contents)
        tensors.append(Tensor(spec.name, spec.datatype, spec.shape, values))
    if len(request.outputs) > MAX_NAMED:
        raise RequestError(f"outputs: {len(request.outputs)} entries, at most {MAX_NAMED}")
    body = InferenceBody(tensors, check_request_id(request.id) or None, parameters,
                         tuple(o.name for o in request.outputs))
    return request.model_name, request.model_version, body


class TransformerServicer(InferenceServicer):
    """kserve's servicer whose ModelInfer takes the serialized request and decodes it on a worker."""

    def __init__(self, data_plane: TransformerDataPlane, workers: Workers, limits: ServingLimits):
        super().__init__(data_plane, None)
        self.workers = workers
        self.limits = limits

    async def ModelInfer(self, request: bytes, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        model_name, version, body = await self.workers.run("decode", decode_grpc_request, request, self.limits)
        if version:
            raise NotServed(f"model versions are not served: leave model_version empty (asked for {version!r})")
        await self._data_plane.require_ready(model_name)
        response = await self._data_plane.infer_body(model_name, body, to_headers(context))
        if isinstance(response, pb.ModelInferResponse):
            return response
        if isinstance(response, InferResponse):
            return response.to_grpc()
        return pb.ModelInferResponse(id=response["id"], model_name=response["model_name"], outputs=response["outputs"])

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """The served methods: kserve's, less the repository extension, ModelInfer without a deserializer."""
        def unary(method: Callable, request: Any, response: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=request.FromString if request else None,
                response_serializer=response.SerializeToString)

        return {
            "ServerLive": unary(self.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": unary(self.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": unary(self.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": unary(self.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": unary(self.ModelInfer, None, pb.ModelInferResponse),
        }


class StatusInterceptor(AsyncServerInterceptor):
    """An exception raised by a method -> its gRPC status (error_status), never Python's text for unknown ones."""

    async def intercept(self, method: Callable, request: Any, context: grpc.aio.ServicerContext,
                        method_name: str) -> Any:
        try:
            return await method(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001
            _, code, message, retry_after = error_status(exc)
            if retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(retry_after)),))
            await context.abort(code, message)


class LoopbackGRPCServer(GRPCServer):
    """kserve's gRPC server bound to one host (kserve's binds every interface) with a message size limit."""

    def __init__(self, host: str, port: int, data_plane: TransformerDataPlane, workers: Workers,
                 limits: ServingLimits, grace_period: int):
        super().__init__(port, data_plane, None, kwargs={}, grace_period=grace_period)
        self._host = host
        self._workers = workers
        self._limits = limits

    async def start(self, max_workers: int) -> None:
        size = self._limits.max_request_bytes
        self._server = grpc.aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), StatusInterceptor()),
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
        )
        handlers = TransformerServicer(self._data_plane, self._workers, self._limits).handlers()
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, handlers),))
        self._server.add_registered_method_handlers(GRPC_SERVICE, handlers)
        self._server.add_insecure_port(f"{self._host}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()
