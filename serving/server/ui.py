"""The search page: static files of serving/ui/ at /ui, the page's facts at /ui/info, gallery media at /ui/media/<id>.

    GET /ui, /ui/                 index.html (the page calls POST /v2/models/<name>-search/infer itself)
    GET /ui/<asset>               app.js, style.css: only the files of ASSETS, nothing listed
    GET /ui/info                  {"search_model", "weights_sha256", "views", "gallery": {view: {entries, items}},
                                   "max_media_bytes", "max_top_k"}
    GET|HEAD /ui/media/<item id>  the item's media file: the path the gallery store records for that id (the
                                  manifest's, relative to the dataset root), under --media_root

The media route serves only files the gallery names: the id is looked up in the store (an id it lacks is a 404),
the recorded path is resolved (symlinks followed) and must lie inside the media root (else 404), be a regular
file of a type in MEDIA_TYPES and at most MediaLimits' max_file_bytes. A single byte range (`Range: bytes=a-b`,
`a-`, `-n`) gets 206 with Content-Range, so players can seek; a range that is malformed, multiple or outside
the file gets 416 with `Content-Range: bytes */<size>`. Without a media root the server registers none of
these routes but one answering 404 that says how to turn the page on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from model.media_limits import MediaLimits
from serving.media_files import ASSETS, CHUNK, MEDIA_TYPES, UI_DIR, BadRange, byte_range, confined  # noqa: F401
from serving.server.status import NotServed, json_response
from serving.server.workers import Workers

@dataclass(frozen=True)
class SearchPage:
    """What the page needs: the media root, the search model's name, and the largest media file served."""

    media_root: Path
    search_model: str
    max_file_bytes: int = MediaLimits().max_file_bytes


def _chunks(path: Path, first: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(first)
        while length > 0:
            data = f.read(min(CHUNK, length))
            if not data:
                return
            length -= len(data)
            yield data


def media_response(path: Path, range_header: str | None, head: bool = False) -> Response:
    """The file at `path` (already confined and typed), whole (200) or the asked range (206); 416 for a bad range."""
    size = path.stat().st_size
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    media_type = MEDIA_TYPES[path.suffix.lower()]
    try:
        span = byte_range(range_header, size)
    except BadRange as exc:
        return json_response(416, {"error": str(exc)}, headers | {"Content-Range": f"bytes */{size}"})
    first, last = span if span is not None else (0, size - 1)
    length = last - first + 1 if size else 0
    headers["Content-Length"] = str(length)
    status = 200
    if span is not None:
        status, headers["Content-Range"] = 206, f"bytes {first}-{last}/{size}"
    if head:
        return Response(None, status, headers=headers, media_type=media_type)
    return StreamingResponse(_chunks(path, first, length), status, headers=headers, media_type=media_type)


def register(app: FastAPI, page: SearchPage | None, plane: Any, workers: Workers, answering: Any) -> None:
    """Add the page's routes to `app` (each wrapped by `answering`, which maps exceptions to responses)."""
    if page is None:
        async def off(rest: str = "") -> None:
            raise NotServed("the search page is off: start the transformer with --media_root DIR "
                            "(`omniretriever serve --index URI --media-root DIR`)")

        app.add_api_route("/ui{rest:path}", answering(off), methods=["GET", "HEAD"], response_model=None)
        return
    root = page.media_root.resolve()

    def search_model() -> Any:
        model = plane.model_registry.get_model(page.search_model)
        if model is None or getattr(model, "store", None) is None:
            raise NotServed(f"the search page needs the search model {page.search_model} (start with --index)")
        return model

    async def index() -> Response:
        return await asset("index.html")

    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise NotServed(f"/ui/{name[:80]} is not a file of the search page")
        return Response((UI_DIR / name).read_bytes(), 200, media_type=ASSETS[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    def gallery_info(model: Any) -> dict:
        counts = {view: model.store.count(view) for view in model.views}
        return {view: {"entries": entries, "items": items} for view, (entries, items) in counts.items()}

    async def info() -> Response:
        model = search_model()
        gallery = await workers.run("text", gallery_info, model)
        return json_response(200, {"search_model": page.search_model, "weights_sha256": model.info.get("weights_sha256"),
                                   "views": list(model.views), "gallery": gallery,
                                   "max_media_bytes": model.limits.max_media_bytes, "max_top_k": model.limits.max_top_k})

    def locate(item_id: str) -> Path:
        model = search_model()
        uri = model.store.media_uri(item_id)
        if uri is None:
            raise NotServed(f"no gallery item {item_id[:80]!r} with media")
        path = confined(root, uri)
        if path is None or not path.is_file():
            raise NotServed(f"the media of item {item_id[:80]!r} is not a file under the media root")
        if path.suffix.lower() not in MEDIA_TYPES:
            raise NotServed(f"the media of item {item_id[:80]!r} is not of a served type "
                            f"({', '.join(sorted(MEDIA_TYPES))})")
        if path.stat().st_size > page.max_file_bytes:
            raise NotServed(f"the media of item {item_id[:80]!r} is over the limit of {page.max_file_bytes} bytes")
        return path

    async def media(request: Request, item_id: str) -> Response:
        path = await workers.run("text", locate, item_id)
        return media_response(path, request.headers.get("range"), head=request.method == "HEAD")

    app.add_api_route("/ui", answering(index), methods=["GET"], response_model=None)
    app.add_api_route("/ui/", answering(index), methods=["GET"], response_model=None)
    app.add_api_route("/ui/info", answering(info), methods=["GET"], response_model=None)
    app.add_api_route("/ui/media/{item_id:path}", answering(media), methods=["GET", "HEAD"], response_model=None)
    app.add_api_route("/ui/{name:path}", answering(asset), methods=["GET"], response_model=None)
