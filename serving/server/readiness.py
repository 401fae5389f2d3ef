"""Readiness that includes Triton's: PredictorHealth and the data plane built on it.

kserve's DataPlane.ready/model_ready ignore the predictor unless --enable_predictor_health_check, and then ask
it on every probe. Here Triton is asked (ServerReady and ModelReady of every Triton model the served models
use, over the inference gRPC channel) at most once a second; while it is unreachable the server and its
models report not-ready and inference is refused with 503 / UNAVAILABLE. The channel is kserve's own (InferenceClientFactory's singleton,
created here first with short reconnect backoffs); the probes use its private `_channel`. The data plane
also lists no protocol extensions: the model repository API is not served."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import grpc
from kserve import context as kserve_context
from kserve.errors import ModelNotFound, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.utils.inference_client_factory import InferenceClientFactory

from serving.requests import InferenceBody
from serving.server.status import PredictorUnavailable
from serving.tensors import ENCODER_MODEL

log = logging.getLogger("omniretriever.transformer")
HEALTH_INTERVAL_SECONDS = 1.0  # the predictor's health is asked at most this often


class PredictorHealth:
    """Triton's readiness (the server and `models`: the encoder, and the text model when one is served), asked
    over the inference channel at most once per `interval` seconds; concurrent askers share one probe."""

    CHANNEL_ARGS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
                    ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 1000)]

    def __init__(self, models: tuple[str, ...] = (ENCODER_MODEL,), interval: float = HEALTH_INTERVAL_SECONDS):
        self.models = models
        self.interval = interval
        self._stub: GRPCInferenceServiceStub | None = None
        self._checked_at = -math.inf
        self._state = (False, "the predictor has not been asked yet")
        self._probe: asyncio.Future | None = None

    @property
    def host(self) -> str:
        config = kserve_context.get_predictor_config()
        return config.predictor_host if config is not None else "(none)"

    def connect(self) -> None:
        """Create kserve's predictor client (the models' channel too) on the running loop, before any model does."""
        config = kserve_context.get_predictor_config()
        client = InferenceClientFactory().get_grpc_client(
            url=config.predictor_host, use_ssl=config.use_ssl, timeout=config.timeout, retries=config.retries,
            channel_args=list(self.CHANNEL_ARGS))
        self._stub = GRPCInferenceServiceStub(client._channel)

    def invalidate(self) -> None:
        """Ask again on the next check (an inference call just found the predictor unreachable)."""
        self._checked_at = -math.inf

    async def check(self) -> tuple[bool, str]:
        """(ready, why not)."""
        if time.monotonic() - self._checked_at < self.interval:
            return self._state
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._ask())
        return await asyncio.shield(self._probe)

    async def _ask(self) -> tuple[bool, str]:
        try:
            if self._stub is None:
                self.connect()
            timeout = self.interval
            server, *models = await asyncio.gather(
                self._stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout),
                *(self._stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=timeout) for name in self.models))
            if server.ready and all(m.ready for m in models):
                state = (True, "")
            else:
                ready = ", ".join(f"model {name} ready={m.ready}" for name, m in zip(self.models, models))
                state = (False, f"the predictor (Triton at {self.host}) reports server ready={server.ready}, {ready}")
        except grpc.RpcError as exc:
            state = (False, f"the predictor (Triton at {self.host}) is unreachable ({exc.code().name})")
        except Exception as exc:  # noqa: BLE001  never let a probe fail the request that asked
            log.error("predictor health probe failed", exc_info=exc)
            state = (False, f"the predictor (Triton at {self.host}) could not be asked")
        self._state, self._checked_at, self._probe = state, time.monotonic(), None
        if not state[0]:
            log.warning("not ready: %s", state[1])
        return state


class TransformerDataPlane(DataPlane):
    """kserve's DataPlane whose readiness includes the predictor's, without the repository extension."""

    def __init__(self, model_registry: Any, health: PredictorHealth):
        super().__init__(model_registry=model_registry)
        self.health = health

    def metadata(self) -> dict:
        return {**super().metadata(), "extensions": []}

    async def ready(self) -> bool:
        models = self._model_registry.get_models()
        if not all([await self._model_registry.is_model_ready(name) for name in models]):
            return False
        return (await self.health.check())[0]

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        if self._model_registry.get_model(model_name) is None:
            raise ModelNotFound(model_name)
        if not await self._model_registry.is_model_ready(model_name):
            return False
        return disable_predictor_health_check or (await self.health.check())[0]

    async def require_ready(self, model_name: str) -> None:
        """Raise ModelNotFound (404), ModelNotReady or PredictorUnavailable (503) unless the model can serve."""
        if not await self.model_ready(model_name, disable_predictor_health_check=True):
            raise ModelNotReady(model_name)
        ready, reason = await self.health.check()
        if not ready:
            raise PredictorUnavailable(reason)

    async def infer_body(self, model_name: str, body: InferenceBody, headers: dict[str, str]) -> Any:
        """The model's answer to a decoded request; a predictor found unreachable is asked again next time."""
        try:
            response, _ = await self.infer(model_name=model_name, request=body, headers=headers)
        except PredictorUnavailable:
            self.health.invalidate()
            raise
        return response
