"""The KServe transformer: V2 requests of text / video / audio -> Triton over grpc-v2 -> embeddings or top-k.

Two kserve.Model subclasses in one ModelServer:

    omniretriever         inputs TEXT, VIDEO, AUDIO (BYTES [B], any subset per row) -> EMBEDDING FP32 [B, D]
    omniretriever-search  the same inputs, parameters top_k, gallery and filter -> IDS BYTES [B, K], SCORES FP32
                          [B, K], START, END, MODALITIES, MEDIA_URIS, CAPTIONS, EMBEDDING; ranked through a gallery
                          store (serving/store/; an index file is imported into one at start)

Both run model.inference.Preprocessor (the preprocessing of training and evaluation) on the request rows,
send the five encoder arrays to the Triton model `omniretriever-encoder` over grpc-v2 and read EMBEDDING
from its answer by name. A request whose rows are all captions goes to `omniretriever-text-encoder` instead
when the repository has one (the tiny encoder's text graph: the same embedding for a fraction of the work),
with text_ids and text_mask only. Nothing about a request is kept on the model objects, so concurrent requests
cannot see each other's data.

Run it as a process (`python -m serving.transformer --model_dir REPO/production --predictor_host H:P ...`;
the local launcher and the container image do). The server (serving/server/) binds --host
(127.0.0.1 unless told otherwise) for both HTTP and gRPC, refuses bodies over --max_request_bytes with a
413 (gRPC: RESOURCE_EXHAUSTED), decodes requests itself on worker threads (serving/requests.py: every
size and count checked before any per-element work, media bytes kept intact), reports not-ready while
Triton is unreachable, and serves no model repository API. The models preprocess a request on the "media"
workers when any row carries video or audio and on the "text" workers otherwise, so heavy clips never queue
captions behind them. With --media_root it also serves the search page at /ui (serving/server/ui.py,
serving/ui/), which plays the hits' media from that directory.

`import kserve` parses sys.argv at import time; the flags here use kserve's own names where they mean the
same thing (--http_port, --grpc_port, --model_name, --predictor_host, --predictor_protocol) and
distinct names otherwise, so that parse agrees with this module's.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import grpc
import kserve
import numpy as np
from kserve.errors import InferenceError, InvalidInput
from kserve.predictor_config import PredictorConfig
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput

from model.config import config_from_dict
from model.errors import InputError
from model.inference import Preprocessor, load_tokenizer
from serving.store import GalleryStore, StoreError, import_index
from serving.index import load_index
from serving.limits import ServingLimits
from serving.server.model_server import TransformerServer
from serving.server.status import PredictorUnavailable
from serving.server.ui import SearchPage
from serving.server.workers import Workers
from serving.requests import InferenceBody, RequestError, SearchOptions, rows_from_tensors, search_options
from serving.tensors import (EMBEDDING_MODEL, ENCODER_MODEL, TEXT_ENCODER_MODEL, TensorSpec, embedding_outputs,
                             encoder_inputs, encoder_outputs, search_outputs, text_encoder_inputs)

log = logging.getLogger("omniretriever.transformer")
DEFAULT_TOP_K = 10
INDEX_SUFFIX = ".safetensors"  # --index names an index file (imported at load) rather than a store URI


def _output(response: InferResponse, name: str) -> np.ndarray:
    out = response.get_output_by_name(name)
    if out is None:
        raise InferenceError(f"the predictor's response has no output {name!r}")
    return out.as_numpy()


def _infer_output(spec: TensorSpec, data: np.ndarray) -> InferOutput:
    """`data` ([B, ...]) as the output `spec`: its name and V2 datatype."""
    return InferOutput(spec.name, list(data.shape), spec.datatype, data=data)


def _bad_input(exc: Exception) -> InvalidInput:
    return InvalidInput(str(exc))


class EmbeddingModel(kserve.Model):
    """TEXT / VIDEO / AUDIO rows -> EMBEDDING [B, D], through the Triton model ENCODER_MODEL (caption-only
    requests: TEXT_ENCODER_MODEL, when model.json names it)."""

    def __init__(self, name: str, model_dir: Path, limits: ServingLimits, workers: Workers | None = None):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.limits = limits
        self.workers = workers or Workers(limits)
        self.preprocessor: Preprocessor | None = None
        self.info: dict = {}
        self._routes: dict[str, tuple[str, tuple[TensorSpec, ...]]] = {}  # "media"/"text" -> (Triton model, inputs)

    def load(self) -> bool:
        """Read the preprocessing (encoder.json, tokenizer.json) that export put beside the Triton model."""
        root = self.model_dir / ENCODER_MODEL
        missing = [f for f in ("encoder.json", "tokenizer.json", "model.json") if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{root} lacks {', '.join(missing)}: --model_dir must be a repository's "
                                    "production/ directory built by `omniretriever export`")
        config = config_from_dict(json.loads((root / "encoder.json").read_text()), str(root / "encoder.json"))
        self.info = json.loads((root / "model.json").read_text())
        tokenizer = load_tokenizer(config, root / "tokenizer.json", self.info.get("pad_token_id"))
        self.preprocessor = Preprocessor(tokenizer, config, self.limits.media())
        text_model = self.info.get("text_model") or {}
        if text_model and text_model.get("triton_model") != TEXT_ENCODER_MODEL:
            raise ValueError(f"{root / 'model.json'} names text model {text_model.get('triton_model')!r}, "
                             f"this transformer sends captions to {TEXT_ENCODER_MODEL!r}: rebuild the repository")
        # the tensors of Triton's requests, computed once: (model, its input specs) for clips and for captions
        joint = (ENCODER_MODEL, encoder_inputs(config))
        self._routes = {"media": joint, "text": (TEXT_ENCODER_MODEL, text_encoder_inputs(config)) if text_model else joint}
        self._outputs = [RequestedOutput(spec.name) for spec in encoder_outputs(config)]
        self.ready = True
        return self.ready

    @property
    def triton_models(self) -> tuple[str, ...]:
        """The Triton models this model sends requests to (what readiness asks about)."""
        return tuple(dict.fromkeys(model for model, _ in self._routes.values()))

    def _arrays(self, rows: list[dict], names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        try:
            return self.preprocessor(rows, names)
        except InputError as exc:
            raise _bad_input(exc) from None

    def _encoder_request(self, payload: InferenceBody, kind: str) -> InferRequest:
        """On a worker thread: check the rows, preprocess them (media decoding included), build Triton's request
        for the route of `kind` ("media" or "text")."""
        try:
            rows = rows_from_tensors(payload.inputs, self.limits.max_rows)
        except RequestError as exc:
            raise _bad_input(exc) from None
        model, specs = self._routes[kind]
        arrays = self._arrays(rows, tuple(spec.name for spec in specs))
        inputs = []
        for spec in specs:
            tensor = InferInput(spec.name, spec.batch_shape(len(rows)), spec.datatype)
            tensor.set_data_from_numpy(np.ascontiguousarray(arrays[spec.name]), binary_data=True)
            inputs.append(tensor)
        return InferRequest(model_name=model, infer_inputs=inputs, request_id=payload.id or uuid.uuid4().hex,
                            request_outputs=list(self._outputs))

    async def encoder_request(self, payload: Any) -> InferRequest:
        """The Triton request for a decoded request, prepared on the media workers if any row has video or
        audio, else on the text workers."""
        if not isinstance(payload, InferenceBody):
            raise InvalidInput("expected a V2 inference request (POST /v2/models/<name>/infer or gRPC ModelInfer)")
        kind = "media" if payload.has_media() else "text"
        return await self.workers.run(kind, self._encoder_request, payload, kind)

    def read_embedding(self, response: InferResponse) -> np.ndarray:
        """The (B, D) embedding of Triton's answer, by the embedding output's spec."""
        (spec,) = embedding_outputs(self.preprocessor.config)
        return _output(response, spec.name).astype(spec.numpy_dtype, copy=False)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> InferRequest:
        return await self.encoder_request(payload)

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        """Send the request to Triton over grpc-v2; its refusals come back as 400, its absence as 503 (with
        Retry-After; gRPC UNAVAILABLE), its other failures as 500."""
        try:
            return await super().predict(payload, headers)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidInput(f"the predictor refused the request: {details}") from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise PredictorUnavailable(f"the predictor (Triton at {self.predictor_config.predictor_host}) "
                                           f"is unreachable: {details}") from None
            raise InferenceError(f"predictor {self.predictor_config.predictor_host} failed ({code.name}): {details}") from None

    async def postprocess(self, result: InferResponse, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> InferResponse:
        (spec,) = embedding_outputs(self.preprocessor.config)
        out = _infer_output(spec, self.read_embedding(result))
        return InferResponse(response_id=result.id or "", model_name=self.name, infer_outputs=[out])


@dataclass(frozen=True)
class _SearchCall:
    """What preprocess hands predict for one search request (kept off the model object)."""

    request: InferRequest
    options: SearchOptions


class SearchModel(EmbeddingModel):
    """Embeds the query rows like EmbeddingModel, then ranks a gallery view of a GalleryStore: IDS, SCORES, START,
    END, MODALITIES, MEDIA_URIS, CAPTIONS, EMBEDDING.

    `index` is a store URI (a Milvus Lite .db path, or http(s)://host:port) or a .safetensors index file, which
    load imports into a Milvus Lite store in a private temporary directory (removed at exit), so both rank
    through the store and a request's filter means the same on either."""

    def __init__(self, name: str, model_dir: Path, limits: ServingLimits, index: str | Path,
                 workers: Workers | None = None):
        super().__init__(name, model_dir, limits, workers)
        self.index = str(index)
        self.store: GalleryStore | None = None
        self.views: tuple[str, ...] = ()

    def _store_uri(self, weights_sha256: str) -> tuple[str, tuple[str, ...]]:
        """The store to open and the views to offer (an index file's own order, else the store's)."""
        if not self.index.endswith(INDEX_SUFFIX):
            return self.index, ()
        index = load_index(self.index)
        if index.weights_sha256 != weights_sha256:
            raise ValueError(f"index {self.index} was built with weights {index.weights_sha256[:12]}, "
                             f"the served model has {weights_sha256[:12]}: rebuild the index")
        workdir = Path(tempfile.mkdtemp(prefix="omniretriever-gallery-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        uri = str(workdir / "gallery.db")
        import_index(index, uri)
        log.info("imported index %s into %s", self.index, uri)
        return uri, index.views

    def load(self) -> bool:
        super().load()
        weights = str(self.info.get("weights_sha256"))
        uri, views = self._store_uri(weights)
        try:
            store = GalleryStore.open(uri, weights)
        except StoreError as exc:
            raise ValueError(f"--index {self.index}: {exc}") from None
        views = views or store.views
        if not views:
            store.close()
            raise ValueError(f"--index {self.index}: {store.conn.describe()} holds no gallery of the served model "
                             f"(weights {weights[:16]}…): add one with `omniretriever index add`")
        if not store.live:
            store.close()
            raise ValueError(f"--index {self.index}: the gallery of the served model (weights {weights[:16]}…) in "
                             f"{store.conn.describe()} is still being built (generation {store.generation}, not yet "
                             "published): it is served once `index add` completes, or after `index publish`")
        wrong = {v: store.info(v).dim for v in views if store.info(v).dim != self.preprocessor.config.embed_dim}
        if wrong:
            store.close()
            view, dim = next(iter(wrong.items()))
            raise ValueError(f"--index {self.index}: view {view} holds {dim}-d embeddings, the model makes "
                             f"{self.preprocessor.config.embed_dim}-d ones")
        self.store, self.views = store, tuple(views)
        self.ready = True
        return self.ready

    def _search(self, embedding: np.ndarray, options: SearchOptions):
        try:
            return self.store.search(embedding, options.gallery, options.top_k, options.filter)
        except StoreError as exc:
            raise InferenceError(str(exc)) from None

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _SearchCall:
        try:
            options = search_options(getattr(payload, "parameters", None), self.views, DEFAULT_TOP_K,
                                     self.limits.max_top_k)
        except RequestError as exc:
            raise _bad_input(exc) from None
        return _SearchCall(await self.encoder_request(payload), options)

    async def predict(self, payload: _SearchCall, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        response = await super().predict(payload.request, headers)
        embedding = self.read_embedding(response)
        # ranking reads the whole gallery view: on a worker, like preprocessing, not on the event loop
        hits = await self.workers.run("text", self._search, embedding, payload.options)
        encode = np.vectorize(str.encode, otypes=[object])
        # IDS, SCORES, START, END, MODALITIES, MEDIA_URIS, CAPTIONS, EMBEDDING
        arrays = (encode(hits.ids), hits.scores, hits.start, hits.end, encode(hits.modalities), encode(hits.uris),
                  encode(hits.captions), embedding)
        specs = search_outputs(self.preprocessor.config, int(hits.ids.shape[1]))
        outputs = [_infer_output(spec, array) for spec, array in zip(specs, arrays, strict=True)]
        params = {"gallery": payload.options.gallery, "top_k": int(hits.ids.shape[1])}
        return InferResponse(response_id=response.id or "", model_name=self.name, infer_outputs=outputs,
                             parameters=params)

    async def postprocess(self, result: InferResponse, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> InferResponse:
        return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.transformer", description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", type=Path, default=Path("/mnt/models"),
                        help="the repository's production/ directory (KServe mounts storageUri at /mnt/models)")
    parser.add_argument("--index", default=None,
                        help="gallery store URI (a Milvus Lite .db path or http(s)://host:port) or a .safetensors "
                             "index file (imported into a private Milvus Lite store): enables the search model")
    parser.add_argument("--media_root", type=Path, default=None,
                        help="the dataset root the gallery's media paths are relative to: turns on the search page at "
                             "/ui on the HTTP port, which plays the hits' media from here (needs --index)")
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


def build_models(args: argparse.Namespace, limits: ServingLimits, workers: Workers | None = None) -> list[kserve.Model]:
    models: list[kserve.Model] = [EmbeddingModel(args.model_name, args.model_dir, limits, workers)]
    if args.index is not None:
        models.append(SearchModel(f"{args.model_name}-search", args.model_dir, limits, args.index, workers))
    for model in models:
        model.load()
    return models


def search_page(args: argparse.Namespace) -> SearchPage | None:
    """The search page's settings when --media_root is given (it searches, so --index is needed too)."""
    if args.media_root is None:
        return None
    if args.index is None:
        raise SystemExit("--media_root turns on the search page, which needs a gallery: give --index too")
    if not args.media_root.is_dir():
        raise SystemExit(f"--media_root {args.media_root} is not a directory")
    return SearchPage(args.media_root.resolve(), f"{args.model_name}-search")


def main(argv: list[str] | None = None) -> None:
    """Start the transformer; it runs until SIGINT or SIGTERM."""
    import torch

    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log.warning("ignoring unknown arguments: %s", " ".join(unknown))
    torch.set_num_threads(1)  # requests are preprocessed concurrently in threads; one op thread each
    page = search_page(args)
    limits = ServingLimits(**{f.name: getattr(args, f.name) for f in fields(ServingLimits)})
    predictor = PredictorConfig(
        predictor_host=args.predictor_host, predictor_protocol=args.predictor_protocol,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds)
    workers = Workers(limits)
    server = TransformerServer(args.host, limits, workers, http_port=args.http_port, grpc_port=args.grpc_port,
                               page=page, predictor_config=predictor, grace_period=args.grace_seconds,
                               enable_latency_logging=False)
    server.start(build_models(args, limits, workers))


if __name__ == "__main__":
    main()
