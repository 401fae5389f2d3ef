"""How the transformer answers a request it cannot serve: exceptions, their HTTP and gRPC status, JSON error bodies.

kserve's catch-all handler answers 500 with the exception's text (and Starlette then re-raises it, so uvicorn
closes the keep-alive connection); here every handler maps its exception with `error_status`: a 4xx naming
the field, 503 + Retry-After when the predictor or the workers are unavailable, a bare 500 otherwise."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from fastapi.responses import Response
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady

from serving.requests import RequestError

log = logging.getLogger("omniretriever.transformer")
RETRY_AFTER_SECONDS = 1


class Unavailable(Exception):
    """The request cannot be served now, through no fault of its own: 503 + Retry-After / UNAVAILABLE."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PredictorUnavailable(Unavailable):
    """Triton is unreachable or not ready."""


class Overloaded(Unavailable):
    """Every worker of a kind stayed busy for the whole queueing deadline."""


class NotServed(Exception):
    """A route or method this server does not serve (the V1 protocol, model versions, the repository API): 404."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def error_status(exc: BaseException) -> tuple[int, grpc.StatusCode, str, int | None]:
    """(HTTP status, gRPC code, message, Retry-After seconds or None) for an exception raised serving a request."""
    if isinstance(exc, RequestError):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.status == 413 else grpc.StatusCode.INVALID_ARGUMENT
        return exc.status, code, str(exc), None
    if isinstance(exc, InvalidInput):
        return 400, grpc.StatusCode.INVALID_ARGUMENT, str(exc), None
    if isinstance(exc, ModelNotFound):
        return 404, grpc.StatusCode.NOT_FOUND, str(exc), None
    if isinstance(exc, NotServed):
        return 404, grpc.StatusCode.NOT_FOUND, exc.reason, None
    if isinstance(exc, Unavailable):
        return 503, grpc.StatusCode.UNAVAILABLE, exc.reason, RETRY_AFTER_SECONDS
    if isinstance(exc, ModelNotReady):
        return 503, grpc.StatusCode.UNAVAILABLE, str(exc), RETRY_AFTER_SECONDS
    if isinstance(exc, InferenceError):  # the predictor failed: its status and details, no Python traceback
        return 500, grpc.StatusCode.INTERNAL, str(exc), None
    log.error("internal error serving a request", exc_info=exc)
    return 500, grpc.StatusCode.INTERNAL, "internal server error (logged by the transformer)", None


def json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    """JSON with every non-ASCII character escaped, so a message quoting a lone surrogate still encodes."""
    return Response(json.dumps(content, ensure_ascii=True).encode(), status, headers=headers,
                    media_type="application/json")


def error_response(exc: BaseException) -> Response:
    status, _, message, retry_after = error_status(exc)
    return json_response(status, {"error": message},
                         {"Retry-After": str(retry_after)} if retry_after is not None else None)
