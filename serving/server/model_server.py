"""kserve 0.21's ModelServer with what the transformer needs and kserve does not do: TransformerServer.

This package works around these kserve (and uvicorn) behaviours; on an upgrade, check each against the source:

    1. Decoding. kserve's V2 HTTP route (kserve/protocol/rest/v2_endpoints.py) parses JSON bodies with
       FastAPI/pydantic on the event loop, and a binary body goes InferRequest.from_bytes
       (kserve/protocol/infer_type.py), which splits every BYTES tensor (deserialize_bytes_tensor, one
       Python step per element, however many the shape declares) and turns it back into UTF-8 JSON strings,
       also on the event loop: media bytes fail there and a body of empty elements stalls every client.
       The gRPC server deserializes ModelInferRequest on the event loop too. Here both protocols' infer
       requests are decoded by serving.requests / grpc_api.decode_grpc_request in a worker thread, every size
       and count checked before any per-element work.
    2. Routes. kserve registers the model repository extension (POST /v2/repository/models/<m>/load|unload,
       gRPC RepositoryModelLoad/Unload) without authentication: one request unloads a model for good.
       http_api.V2RESTServer routes the V2 inference protocol only (health, metadata, ready, infer), answers the
       repository API, the V1 protocol and model versions with a 404 naming the reason, and the gRPC server
       registers no repository methods (UNIMPLEMENTED).
    3. Errors. kserve's catch-all Exception handler answers 500 with the exception's text, and Starlette
       re-raises it after the response, so uvicorn closes the keep-alive connection; NotImplementedError is a
       501, a failed load a 503; its gRPC interceptor reads a `reason` that ServerNotReady lacks. Here every
       handler maps its exception with `error_status` (4xx naming the field, 503 + Retry-After when the
       predictor or the workers are unavailable, a bare 500 otherwise; status.py) and the connection stays usable.
    4. Readiness. DataPlane.ready/model_ready ignore the predictor unless --enable_predictor_health_check,
       and then ask it on every probe. readiness.TransformerDataPlane asks Triton (ServerReady and ModelReady of the
       encoder, over the inference gRPC channel) at most once a second and reports not-ready, and refuses
       inference with 503 / UNAVAILABLE, while Triton is unreachable. The channel is kserve's own
       (InferenceClientFactory's singleton, created here first with short reconnect backoffs); the health
       probes use its private `_channel`.
    5. Worker threads. kserve runs preprocessing in the loop's default executor, which setup_event_loop
       configures on a loop asyncio.run then replaces. workers.Workers keeps bounded pools per kind of work
       (decoding, captions, media) and gives a request that waits past queue_timeout_seconds a 503.
    6. HTTP timeouts. uvicorn has a keep-alive timeout but none for headers or bodies: a request that never
       finishes holds its connection for ever. http_api.TimedHttpToolsProtocol closes a connection whose headers or
       body do not arrive in time (408), whose headers grow past MAX_HEADER_BYTES (431), or that stays idle,
       also before its first request.
    7. RESTServer (kserve/protocol/rest/server.py) hard-codes uvicorn's host "0.0.0.0": TransformerServer.start
       repeats the single-worker branch of ModelServer.start (kserve/model_server.py) and sets the uvicorn
       config's host (and protocol class) afterwards.
    8. Nothing in kserve limits the size of an HTTP body: the BodyLimit middleware on kserve.model_server.app
       (http_api) answers 413 first.
    9. GRPCServer.start (kserve/protocol/grpc/server.py) binds "[::]:<port>" and reads its message size limits
       from kserve's own command line (grpc_max_send/receive_message_length): grpc_api.LoopbackGRPCServer repeats its
       start with one host and the serving limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kserve

from serving.limits import ServingLimits
from serving.server.grpc_api import LoopbackGRPCServer
from serving.server.http_api import BodyLimit, TimedHttpToolsProtocol, V2RESTServer
from serving.server.readiness import PredictorHealth, TransformerDataPlane
from serving.server.ui import SearchPage
from serving.server.workers import Workers


class TransformerServer(kserve.ModelServer):
    """kserve.ModelServer on `host` only, with the limits, timeouts, worker pools and predictor-aware readiness."""

    def __init__(self, host: str, limits: ServingLimits, workers: Workers | None = None,
                 page: SearchPage | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.host = host
        self.page = page
        self.limits = limits
        self.workers = workers or Workers(limits)
        self.health = PredictorHealth()
        self.dataplane = TransformerDataPlane(self.registered_models, self.health)

    def start(self, models: list[kserve.Model]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self.health.models = tuple(dict.fromkeys(name for m in models for name in getattr(m, "triton_models", ())))
        kserve.model_server.app.add_middleware(BodyLimit, max_bytes=self.limits.max_request_bytes)
        self._rest_server = V2RESTServer("kserve.model_server:app", self.dataplane, self.workers, self.limits,
                                         self.http_port, page=self.page, grace_period=self.grace_period,
                                         timeout_keep_alive=self.limits.idle_timeout_seconds)
        self._rest_server.config.host = self.host
        self._rest_server.config.http = TimedHttpToolsProtocol.with_limits(self.limits)
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = LoopbackGRPCServer(self.host, self.grpc_port, self.dataplane, self.workers,
                                                   self.limits, self.grace_period)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.register_signal_handler()
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        asyncio.get_running_loop().set_exception_handler(self.default_exception_handler)
        self.health.connect()
        await super()._serve()
