"""The transformer's HTTP server: the V2 inference routes only, a body limit, header/body/idle timeouts.

V2RESTServer routes health, metadata, ready and infer, and the search page under /ui (serving/server/ui.py: on
only with a media root); the repository API, the V1 protocol and model versions
get a 404 naming the reason. Infer bodies are decoded by serving.requests on a worker thread, every size and
count checked before any per-element work. uvicorn has a keep-alive timeout but none for headers or bodies:
TimedHttpToolsProtocol adds them. Nothing in kserve limits the size of a body: BodyLimit answers 413 first."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from kserve.protocol.rest.server import RESTServer, metrics_handler
from kserve.protocol.rest.v2_datamodels import InferenceResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from serving.limits import ServingLimits
from serving.requests import decode_http_body
from serving.server.readiness import TransformerDataPlane
from serving.server import ui
from serving.server.status import NotServed, Unavailable, error_response, json_response
from serving.server.workers import Workers

MAX_HEADER_BYTES = 64 * 1024  # request line and headers of one HTTP request


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
            response = json_response(413, {"error": self._message(int(declared))})
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


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body timeouts and a header size limit.

    idle (uvicorn's timeout_keep_alive): no request in progress, from the connection's opening or the last
    response; header_timeout: from a request's first byte to the end of its headers; body_timeout: from the end
    of the headers to the end of the body. A request past either timeout gets 408 (when no response has
    started) and its connection is closed; the other connections are not affected."""

    header_timeout = 10.0
    body_timeout = 70.0
    max_header_bytes = MAX_HEADER_BYTES

    @classmethod
    def with_limits(cls, limits: ServingLimits) -> type["TimedHttpToolsProtocol"]:
        return type(cls.__name__, (cls,), {"header_timeout": limits.header_timeout_seconds,
                                           "body_timeout": limits.body_timeout_seconds})

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._in_headers = False
        self._header_bytes = 0

    def _arm(self, seconds: float, handler: Callable[[], None]) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # a connection that never sends a request is idle too (uvicorn arms this timer only after a response)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._reply_and_close(431, f"request headers over {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._header_bytes = True, 0
        self._arm(self.header_timeout, self._headers_timed_out)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._arm(self.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes httptools cannot parse, as JSON naming the parser's reason."""
        exc = sys.exc_info()[1]  # data_received calls this while handling httptools' HttpParserError
        self._reply_and_close(400, f"not a valid HTTP/1.1 request: {exc or msg}")

    def _headers_timed_out(self) -> None:
        self._read_timer = None
        self._reply_and_close(408, f"request headers not received within {self.header_timeout:g} s")

    def _body_timed_out(self) -> None:
        self._read_timer = None
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        self._reply_and_close(408, f"request body not received within {self.body_timeout:g} s "
                                   "(body_timeout_seconds)")

    def _reply_and_close(self, status: int, message: str) -> None:
        if self.transport.is_closing():
            return
        body = json.dumps({"error": message}).encode()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application's receive() sees a disconnect; its send() is dropped
            self.cycle.message_event.set()
        self.transport.write(b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                                       b"content-length: ", str(len(body)).encode(), b"\r\n",
                                       b"connection: close\r\n\r\n", body]))
        self.transport.close()


def _answering(handler: Callable) -> Callable:
    """An HTTP handler whose exceptions become error responses (the connection stays open)."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except HTTPException as exc:
            return json_response(exc.status_code, {"error": str(exc.detail)})
        except ClientDisconnect:
            return Response(status_code=400)
        except Exception as exc:  # noqa: BLE001  mapped by error_status; unknown ones are logged there
            return error_response(exc)

    return wrapper


class V2RESTServer(RESTServer):
    """kserve's REST server serving the V2 inference protocol only (see the module's notes 1-3)."""

    def __init__(self, app: str, data_plane: TransformerDataPlane, workers: Workers, limits: ServingLimits,
                 http_port: int, page: ui.SearchPage | None = None, **kwargs: Any):
        super().__init__(app, data_plane, None, http_port, **kwargs)
        self.workers = workers
        self.limits = limits
        self.page = page

    def _add_exception_handlers(self, app: FastAPI) -> None:
        """None: every route answers its own errors (kserve's catch-all would close the connection)."""

    def _register_endpoints(self, app: FastAPI) -> None:
        plane, workers, limits = self.dataplane, self.workers, self.limits

        async def live() -> dict:
            return {"live": True}

        async def ready() -> Any:
            if await plane.ready():
                return {"ready": True}
            _, reason = await plane.health.check()
            raise Unavailable(f"not ready: {reason or 'a model is not loaded'}")

        async def metadata() -> dict:
            return plane.metadata()

        async def models() -> dict:
            return {"models": list(plane.model_registry.get_models())}

        async def model_metadata(model_name: str) -> dict:
            return await plane.model_metadata(model_name)

        async def model_ready(model_name: str) -> dict:
            await plane.require_ready(model_name)
            return {"name": model_name, "ready": True}

        async def infer(request: Request, model_name: str) -> Any:
            await plane.require_ready(model_name)
            body = await request.body()
            decoded = await workers.run("decode", decode_http_body, body,
                                        request.headers.get("inference-header-content-length"), limits)
            headers = dict(request.headers)
            response = await plane.infer_body(model_name, decoded, headers)
            response, response_headers = plane.encode(model_name=model_name, response=response, headers=headers,
                                                      req_attributes={})
            response_headers.pop("content-length", None)
            response_headers.pop("content-type", None)
            if isinstance(response, bytes):
                return Response(response, 200, headers=response_headers)
            result = InferenceResponse.model_validate(response)
            if response_headers:
                return json_response(200, result.model_dump(), response_headers)
            return result

        async def versions(model_name: str, version: str, rest: str = "") -> None:
            raise NotServed(f"model versions are not served: use /v2/models/{model_name}{rest or ''} "
                            f"(asked for version {version!r})")

        async def repository(rest: str = "") -> None:
            raise NotServed("the model repository API (index, load, unload) is not served")

        async def v1(rest: str = "") -> None:
            raise NotServed("the V1 protocol is not served: use V2, POST /v2/models/<name>/infer")

        every = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]
        app.add_api_route("/", _answering(live), methods=["GET"])
        app.add_api_route("/metrics", metrics_handler, methods=["GET"])
        for path, handler, methods in [
            ("/v2", metadata, ["GET"]),
            ("/v2/health/live", live, ["GET"]),
            ("/v2/health/ready", ready, ["GET"]),
            ("/v2/models", models, ["GET"]),
            ("/v2/models/{model_name}", model_metadata, ["GET"]),
            ("/v2/models/{model_name}/ready", model_ready, ["GET"]),
            ("/v2/models/{model_name}/infer", infer, ["POST"]),
            ("/v2/models/{model_name}/versions/{version}{rest:path}", versions, every),
            ("/v2/repository{rest:path}", repository, every),
            ("/v1{rest:path}", v1, every),
        ]:
            app.add_api_route(path, _answering(handler), methods=methods, response_model=None)
        ui.register(app, self.page, plane, workers, _answering)
