"""Serving commands: export, serve, query, index build / add / remove / stats / import / export, manifest
(mounted on the `omniretriever` root).

Every heavy import (torch, onnx, tritonclient, kserve's server) happens inside a command, and kserve
itself only ever runs in the transformer's own process.
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from model.cli_errors import exits_on, fail
from serving.limits import MAX_BATCH_SIZE, ServingLimits  # light: the defaults of `serve`

DEFAULT_LIMITS = ServingLimits()
app = typer.Typer(help="Export, serve and query OmniRetriever.", no_args_is_help=True)
index_app = typer.Typer(help="Gallery indexes for the search model.", no_args_is_help=True)
# How `index add --model models:/NAME@ALIAS` is downloaded: (uri, into directory) -> the model directory. The
# registry lies above this package, so the program's assembly (omniretriever/cli.py) provides it.
fetch_registered_model: Callable[[str, Path], Path] | None = None
app.add_typer(index_app, name="index")


@app.command("export")
def export_cmd(
    model: Annotated[Path, typer.Option(help="Run directory or model directory to export.")] = Path("runs/default"),
    out: Annotated[Path, typer.Option(help="Model repository to build (replaced if it is one already).")] = Path("model_repository"),
) -> None:
    """Build the Triton model repository: the tiny encoder as ONNX (checked against PyTorch), a pretrained
    backbone as its saved PyTorch model in the python backend (LoRA merged, checked against unmerged)."""
    from model.errors import OmniRetrieverError
    from serving.manifests import BASE_MOUNT
    from serving.repository import build_repository, read_repository

    from rich.console import Console

    with exits_on(OmniRetrieverError, FileNotFoundError, FileExistsError, ValueError):
        with Console(stderr=True).status(f"exporting {model}, checking parity, writing {out}"):
            build_repository(model, out)
    info = read_repository(out)
    if info.get("backbone", "tiny") == "tiny":
        typer.echo(f"repository: {out}  (production/: onnxruntime on GPU, local/: python backend on CPU)")
        typer.echo(f"ONNX parity: max |onnxruntime - pytorch| = {info['max_abs_diff']:.2e} over {info['rows_checked']} "
                   "rows with random subsets of modalities")
        return
    typer.echo(f"repository: {out}  (production/: PyTorch in the python backend on GPU, base at the mount "
               f"{BASE_MOUNT}; local/: the same on CPU, base {info['base']['path']})")
    typer.echo(f"LoRA merge parity: max |merged - unmerged| = {info['max_abs_diff']:.2e} over {info['rows_checked']} "
               f"rows with random subsets of modalities; base digest {info['base']['digest'][:16]}…")


def _limits(**options: float) -> ServingLimits:
    """`serve`'s limit options (named as ServingLimits' fields) as ServingLimits; a bad value exits with its message."""
    with exits_on(ValueError):
        return ServingLimits(**options)


@app.command("serve")
def serve_cmd(
    repo: Annotated[Path, typer.Option(help="Model repository built by `omniretriever export`.")] = Path("model_repository"),
    index: Annotated[Optional[str], typer.Option(
        help="Gallery store URI (a Milvus Lite .db path, http(s)://host:port) or .safetensors index file: also serve "
             "search as omniretriever-search.")] = None,
    media_root: Annotated[Optional[Path], typer.Option(
        help="Dataset root the gallery's media paths are relative to: turns on the search page at /ui (needs --index).")] = None,
    host: Annotated[str, typer.Option(help="Address every server binds.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="The transformer's HTTP port.")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="The transformer's gRPC port.")] = 8081,
    triton_http_port: Annotated[Optional[int], typer.Option(help="Triton's HTTP port (default: a free one).")] = None,
    triton_grpc_port: Annotated[Optional[int], typer.Option(help="Triton's gRPC port (default: a free one).")] = None,
    max_request_bytes: Annotated[int, typer.Option(help="Largest request body.")] = DEFAULT_LIMITS.max_request_bytes,
    max_media_bytes: Annotated[int, typer.Option(help="Largest VIDEO or AUDIO element.")] = DEFAULT_LIMITS.max_media_bytes,
    max_media_seconds: Annotated[float, typer.Option(help="Longest clip.")] = DEFAULT_LIMITS.max_media_seconds,
    max_rows: Annotated[int, typer.Option(help=f"Most rows per request (at most {MAX_BATCH_SIZE}).")] = DEFAULT_LIMITS.max_rows,
    max_elements: Annotated[int, typer.Option(help="Most tensor elements per request, empty ones included.")] = DEFAULT_LIMITS.max_elements,
    max_json_bytes: Annotated[int, typer.Option(help="Largest JSON body, or JSON header of a binary body.")] = DEFAULT_LIMITS.max_json_bytes,
    text_workers: Annotated[int, typer.Option(help="Threads preprocessing caption-only requests.")] = DEFAULT_LIMITS.text_workers,
    media_workers: Annotated[int, typer.Option(help="Threads decoding requests with video or audio.")] = DEFAULT_LIMITS.media_workers,
    queue_timeout_seconds: Annotated[float, typer.Option(help="Longest wait for a worker before a 503.")] = DEFAULT_LIMITS.queue_timeout_seconds,
    header_timeout_seconds: Annotated[float, typer.Option(help="HTTP: time allowed for a request's headers.")] = DEFAULT_LIMITS.header_timeout_seconds,
    body_timeout_seconds: Annotated[float, typer.Option(help="HTTP: time allowed for a request's body.")] = DEFAULT_LIMITS.body_timeout_seconds,
    idle_timeout_seconds: Annotated[float, typer.Option(help="HTTP: an idle connection is closed after this.")] = DEFAULT_LIMITS.idle_timeout_seconds,
    log_dir: Annotated[Optional[Path], typer.Option(help="Keep the servers' logs here (default: a temp dir).")] = None,
) -> None:
    """Start tritonserver and the KServe transformer; serve until Ctrl-C, then stop both."""
    from model.errors import OmniRetrieverError
    from serving.launcher import LocalEndpoint, ServingError

    limits = _limits(max_request_bytes=max_request_bytes, max_media_bytes=max_media_bytes,
                     max_media_seconds=max_media_seconds, max_rows=max_rows, max_elements=max_elements,
                     max_json_bytes=max_json_bytes, text_workers=text_workers, media_workers=media_workers,
                     queue_timeout_seconds=queue_timeout_seconds, header_timeout_seconds=header_timeout_seconds,
                     body_timeout_seconds=body_timeout_seconds, idle_timeout_seconds=idle_timeout_seconds)
    endpoint = LocalEndpoint(repo, index=index, host=host, http_port=http_port, grpc_port=grpc_port,
                             triton_http_port=triton_http_port, triton_grpc_port=triton_grpc_port, limits=limits,
                             log_dir=log_dir, media_root=media_root)
    # Ctrl-C stops, also when started with SIGINT ignored (a background job of a script); SIGTERM stops cleanly too
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with endpoint:
            typer.echo(endpoint.describe())
            typer.echo("serving; Ctrl-C to stop")
            while True:
                endpoint.check_alive()
                time.sleep(0.5)
    except KeyboardInterrupt:
        typer.echo("stopped")
    except ServingError as exc:  # a server failed to start or died
        fail(str(exc), code=1)
    except (OmniRetrieverError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@app.command("query")
def query_cmd(
    text: Annotated[Optional[str], typer.Option(help="Caption.")] = None,
    video: Annotated[Optional[Path], typer.Option(help="Video file (its audio is not used unless --audio names it).")] = None,
    audio: Annotated[Optional[Path], typer.Option(help="Audio or video file whose audio track is used.")] = None,
    top_k: Annotated[int, typer.Option(help="Results to return when the server has a search model.")] = 10,
    gallery: Annotated[Optional[str], typer.Option(help="Gallery view to search (t, v, a, tv, av, at, tva).")] = None,
    filter: Annotated[Optional[str], typer.Option(
        "--filter", help="Only entries matching this expression over split, source, duration, modalities, item_id, "
                         "start, end, ingest_time, e.g. 'split == \"test\" and duration >= 30'.")] = None,
    url: Annotated[str, typer.Option(help="The transformer: http://host:port or grpc://host:port.")] = "http://127.0.0.1:8080",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Embed one query (any of --text, --video, --audio) and print its top-k gallery items."""
    from tritonclient.utils import InferenceServerException

    from serving.client import query

    if text is None and video is None and audio is None:
        fail("give at least one of --text, --video, --audio")
    try:
        result = query(url, text=text, video=video, audio=audio, top_k=top_k, gallery=gallery, filter=filter)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except InferenceServerException as exc:
        fail(f"{url}: {exc.message() or exc}")
    except OSError as exc:  # connection refused, unreachable host, ...
        fail(f"{url}: cannot reach the server ({exc.strerror or exc})")
    if as_json:
        typer.echo(json.dumps({"embedding": result.embedding.tolist(), "gallery": result.gallery,
                               "hits": [h._asdict() for h in result.hits]}))
        return
    typer.echo(f"embedding: {result.embedding.shape[0]} floats, norm {float((result.embedding ** 2).sum()) ** 0.5:.4f}")
    if result.hits:
        typer.echo(f"top {len(result.hits)} in gallery view {result.gallery!r}:")
        for rank, hit in enumerate(result.hits, 1):
            span = f"  {hit.start:.2f}-{hit.end:.2f} s" if hit.start >= 0 else ""
            mark = f"  ({hit.modalities} only)" if hit.modalities != result.gallery else ""
            where = f"  {hit.uri}" if hit.uri else ""
            caption = f"  \"{hit.caption[:80]}{'…' if len(hit.caption) > 80 else ''}\"" if hit.caption else ""
            typer.echo(f"{rank:4d}  {hit.score:+.4f}  {hit.id}{span}{mark}{where}{caption}")


SKIPPED = 3  # `index build`: the index was written, but some records were left out (see the rejects file)


@index_app.command("build")
def index_build_cmd(
    model: Annotated[Path, typer.Option(help="Run directory or model directory (the one the server serves).")] = Path("runs/default"),
    data: Annotated[Path, typer.Option(help="Dataset root (media paths are relative to it).")] = Path("data"),
    split: Annotated[str, typer.Option(help="Split whose items form the gallery.")] = "test",
    manifest: Annotated[Optional[Path], typer.Option(
        help="Build from this manifest instead of DATA/manifests/SPLIT.jsonl: a file, or a validation report "
             "directory (its validated.jsonl).")] = None,
    views: Annotated[list[str], typer.Option("--view", help="Gallery view(s): t, v, a, tv, av, at, tva (repeat).")] = ["av"],
    out: Annotated[Path, typer.Option(help="Index file to write (safetensors).")] = Path("gallery.safetensors"),
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (default: all cores).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Stop at the first bad record (naming its line and id) instead of leaving it out.")] = False,
    window: Annotated[Optional[float], typer.Option(
        help="Cut items longer than this many seconds into windows, each its own entry "
             "[default: the model's audio window].")] = None,
    stride: Annotated[Optional[float], typer.Option(help="Seconds from one window's start to the next [default: half "
                                                         "the window].")] = None,
) -> None:
    """Embed a split's items in the given views and write the gallery index the search model ranks.

    An item longer than the window becomes one entry per window (a search result names its start and end);
    an item lacking part of a view (a video-only clip in an av gallery) is embedded from what it has and
    marked so; one with none of the view is not in it.

    A record whose manifest line is malformed, whose media path leaves DATA or whose media does not decode is
    left out and listed (line, id, field, reason) in OUT's stem + .rejects.jsonl beside the index. Exit status:
    0 every record indexed, 3 some left out, 2 a bad input or option, or nothing indexable (with --strict:
    any bad record)."""
    from model.errors import OmniRetrieverError
    from serving.index import build_index_report, load_index, rejects_path

    try:
        built = build_index_report(model, data, split, views, out, manifest=manifest,
                                   on_error="raise" if strict else "skip", workers=workers, window=window, stride=stride)
    except (OmniRetrieverError, FileNotFoundError, ValueError) as exc:
        rejects = getattr(exc, "rejects", None)
        fail(f"{exc}; every record is listed in {rejects_path(out)}" if rejects else str(exc))
    index = load_index(built.index)
    source = split if manifest is None else str(built.manifest)
    typer.echo(f"index: {built.index}  {len(index)} items of {source}, {index.dim}-d; entries per view: "
               + ", ".join(f"{v} {len(index.entries[v])}" for v in index.views))
    partial = {v: sum(m != v for m in index.entries[v].modalities) for v in index.views}
    if any(partial.values()):
        typer.echo("entries embedded from part of their view (items without video or audio): "
                   + ", ".join(f"{v} {n}" for v, n in partial.items() if n))
    if index.meta.get("empty_views"):
        typer.secho(f"no item holds view(s) {', '.join(index.meta['empty_views'])}: left out of the index",
                    fg=typer.colors.YELLOW, err=True)
    if built.rejects:
        kinds: dict[str, int] = {}
        for r in built.rejects:
            kinds[r.error] = kinds.get(r.error, 0) + 1
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        typer.secho(f"skipped {len(built.rejects)} of {len(index) + len(built.rejects)} records of {built.manifest} "
                    f"({detail}); each is listed with its line, id and reason in {built.rejects_file}",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(SKIPPED)


def _index_config(index_type: Optional[str], metric: Optional[str]):
    """--index-type / --metric as an IndexConfig for new collections; None when neither is given."""
    from serving.store import IndexConfig

    if index_type is None and metric is None:
        return None
    with exits_on(ValueError):
        return IndexConfig.named((index_type or "FLAT").upper(), (metric or "COSINE").upper())


@contextmanager
def _batch_progress(label: str) -> Iterator[Callable]:
    """A callback for library.add_items' batches: a progress bar on a terminal, else one line a batch (a log)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda b: typer.echo(f"{label}: batch {b.number}/{b.batches} stored, {b.items_done}/{b.items} items",
                                   err=True)
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda b: bar.update(task, total=b.items, completed=b.items_done)


def _store_digest(model: Optional[Path]) -> Optional[str]:
    from model.store import weights_digest

    if model is None:
        return None
    with exits_on(FileNotFoundError):
        return weights_digest(model)


URI_HELP = "Gallery store: a local path ending in .db (Milvus Lite) or http(s)://host:port (a Milvus cluster)."


@index_app.command("add")
def index_add_cmd(
    uri: Annotated[str, typer.Option(help=URI_HELP)] = ...,
    model: Annotated[str, typer.Option(
        help="Run directory, model directory, or a registered model: models:/NAME@ALIAS (e.g. "
             "models:/omniretriever@champion) or models:/NAME/VERSION.")] = "runs/default",
    data: Annotated[Path, typer.Option(help="Dataset root (media paths are relative to it).")] = Path("data"),
    split: Annotated[Optional[str], typer.Option(help="Split whose items to add (or --manifest).")] = None,
    manifest: Annotated[Optional[Path], typer.Option(
        help="Add this manifest's items: a file, or a validation report directory (its validated.jsonl).")] = None,
    views: Annotated[list[str], typer.Option("--view", help="Gallery view(s): t, v, a, tv, av, at, tva (repeat).")] = ["av"],
    source: Annotated[Optional[str], typer.Option(
        help="The rows' source field [default: the manifest's stem, or DATA's name for a split].")] = None,
    batch_size: Annotated[int, typer.Option(help="Items decoded, embedded and stored together (the most a kill "
                                                 "loses).")] = 64,
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (default: all cores).")] = None,
    window: Annotated[Optional[float], typer.Option(help="Window length in seconds [default: the model's audio "
                                                         "window].")] = None,
    stride: Annotated[Optional[float], typer.Option(help="Seconds between windows [default: half the window].")] = None,
    index_type: Annotated[Optional[str], typer.Option(
        help="Index of new collections: FLAT, AUTOINDEX, HNSW, IVF_FLAT [default: FLAT on Lite, HNSW on a cluster].")] = None,
    metric: Annotated[Optional[str], typer.Option(help="COSINE or IP [default: COSINE].")] = None,
    rejects: Annotated[Optional[Path], typer.Option(
        help="Where to list skipped records [default: beside a Lite store, STEM.rejects.jsonl; printed for a "
             "cluster].")] = None,
    rebuild: Annotated[bool, typer.Option(
        help="Re-embed the whole library into a new generation of the model's galleries, served (an alias swap) "
             "only once complete; a killed rebuild resumes.")] = False,
) -> None:
    """Embed a library's new and changed items into the gallery store, in batches (resumable after a kill).

    An item already stored with the same content hash (its media bytes, captions and decode settings) is not
    decoded again; a changed one replaces its old entries. A record that cannot be indexed is skipped and
    listed. A model's first gallery, and a --rebuild, is searched only once every item is in. Exit status:
    0 every record stored, 3 some skipped, 2 a bad input or option."""
    from pymilvus.exceptions import MilvusException

    from model.errors import OmniRetrieverError
    from serving.index import rejects_path, write_rejects
    from serving.store import LIVE, REBUILD, connection
    from serving.library import add_items

    config = _index_config(index_type, metric)
    with exits_on(OmniRetrieverError, FileNotFoundError, ValueError), tempfile.TemporaryDirectory(
            prefix="omniretriever-model-") as tmp:
        conn = connection(uri)
        if model.startswith("models:/"):
            if fetch_registered_model is None:
                fail(f"--model {model}: this program was built without the registry")
            model = fetch_registered_model(model, Path(tmp))
        with _batch_progress(f"adding to {uri}") as on_batch:
            try:
                report = add_items(model, data, views, uri, split=split, manifest=manifest, source=source,
                                   batch_size=batch_size, workers=workers, window=window, stride=stride, index=config,
                                   on_batch=on_batch, generation=REBUILD if rebuild else LIVE)
            except MilvusException as exc:
                fail(f"{conn.describe()}: {getattr(exc, 'message', exc)}", code=1)
    typer.echo(f"store: {conn.describe()}  model {report.weights_sha256[:16]}…  {report.records} records of {report.source}: "
               f"{report.embedded} embedded, {report.unchanged} unchanged (not decoded)")
    if report.entries:
        typer.echo("entries written: " + ", ".join(f"{v} {n}" for v, n in report.entries.items()))
    typer.echo(f"generation {report.generation}: " + ("published (now searched)" if report.published else "served"))
    if rejects is None and conn.engine == "lite":
        rejects = rejects_path(conn.uri)
    if rejects is not None:
        write_rejects(rejects, report.rejects)
    if report.rejects:
        where = f"each is listed with its line, id and reason in {rejects}" if rejects else "listed below"
        typer.secho(f"skipped {len(report.rejects)} records of {report.source}; {where}", fg=typer.colors.YELLOW,
                    err=True)
        if rejects is None:
            for r in report.rejects:
                typer.echo(json.dumps(r.to_dict(), ensure_ascii=False), err=True)
        raise typer.Exit(SKIPPED)


@index_app.command("remove")
def index_remove_cmd(
    uri: Annotated[str, typer.Option(help=URI_HELP)] = ...,
    views: Annotated[list[str], typer.Option("--view", help="Gallery view(s) to remove from (repeat).")] = ...,
    ids: Annotated[Optional[str], typer.Option(help="Item ids, comma-separated.")] = None,
    where: Annotated[Optional[str], typer.Option(
        help="A Milvus expression over the fields (split, source, media_uri, ingest_time, ...): every item with "
             "an entry matching it is removed whole.")] = None,
    model: Annotated[Optional[Path], typer.Option(
        help="The model whose galleries to change [default: the only one in the store].")] = None,
) -> None:
    """Remove items (all of their entries) from gallery views of the store; `index add` can put them back."""
    from model.errors import OmniRetrieverError
    from serving.store import GalleryStore

    if (ids is None) == (where is None):
        fail("give one of --ids or --where")
    wanted = [i.strip() for i in (ids or "").split(",") if i.strip()]
    with exits_on(OmniRetrieverError, ValueError):
        with GalleryStore.open(uri, _store_digest(model)) as store:
            for view in views:
                removed = store.remove(view, wanted, where)
                entries, items = store.count(view)
                typer.echo(f"{store.info(view).view}: removed {len(removed)} items"
                           + (f" ({', '.join(removed[:10])}{', …' if len(removed) > 10 else ''})" if removed else "")
                           + f"; {items} items, {entries} entries left")


@index_app.command("stats")
def index_stats_cmd(
    uri: Annotated[str, typer.Option(help=URI_HELP)] = ...,
    as_json: Annotated[bool, typer.Option("--json", help="Print the collections as JSON.")] = False,
) -> None:
    """The store's galleries: per model (weights sha256) and view, entries, items, dim and index."""
    from model.errors import OmniRetrieverError
    from serving.store import connection, store_collections

    with exits_on(OmniRetrieverError):
        conn, collections = connection(uri), store_collections(uri)
    if as_json:
        typer.echo(json.dumps(collections))
        return
    typer.echo(f"store: {conn.describe()}  {len(collections)} galleries")
    for c in collections:
        state = "served" if c["live"] else "not served"
        typer.echo(f"model {c['weights_sha256']}  view {c['view']:>3}  generation {c['generation']} ({state}): "
                   f"{c['rows']} entries, {c['items']} items, {c['dim']}-d, {c['index_type']}/{c['metric']}  "
                   f"({c['name']})")


@index_app.command("publish")
def index_publish_cmd(
    uri: Annotated[str, typer.Option(help=URI_HELP)] = ...,
    model: Annotated[Optional[Path], typer.Option(
        help="The model whose galleries to publish [default: the only one in the store].")] = None,
    generation: Annotated[Optional[int], typer.Option(
        help="The generation to serve [default: the newest one not served yet]; an older one rolls back.")] = None,
) -> None:
    """Serve a generation of a model's galleries: swap the model's aliases to its collections, one view at a
    time, each swap atomic. What `index add` does itself when it completes a first build or a rebuild."""
    from model.errors import OmniRetrieverError
    from serving.store import REBUILD, GalleryStore, StoreError

    with exits_on(OmniRetrieverError):
        with GalleryStore.open(uri, _store_digest(model), generation=REBUILD if generation is None else generation) as store:
            if not store.views:
                raise StoreError(f"{store.conn.describe()} holds no generation {store.generation} of the model "
                                 f"{store.weights_sha256[:16]}… (nothing to publish)")
            before = store.publish()
    typer.echo(f"generation {store.generation} of the model {store.weights_sha256[:16]}… served ("
               + ", ".join(store.views) + ")" + (f"; generation {before} before" if before is not None else ""))


@index_app.command("import")
def index_import_cmd(
    index: Annotated[Path, typer.Option(help="Index file (safetensors) written by `index build`.")] = ...,
    uri: Annotated[str, typer.Option(help=URI_HELP)] = ...,
    index_type: Annotated[Optional[str], typer.Option(help="Index of new collections (see `index add`).")] = None,
    metric: Annotated[Optional[str], typer.Option(help="COSINE or IP.")] = None,
) -> None:
    """Put an index file's galleries into the store, under the model that built it (replacing its items)."""
    from model.errors import OmniRetrieverError
    from serving.store import import_index
    from serving.index import load_index

    config = _index_config(index_type, metric)
    with exits_on(OmniRetrieverError, FileNotFoundError, ValueError):
        written = import_index(load_index(index), uri, config=config)
    typer.echo(f"imported {index} into {uri}: " + ", ".join(f"{v} {n} entries" for v, n in written.items()))


@index_app.command("export")
def index_export_cmd(
    uri: Annotated[str, typer.Option(help=URI_HELP)] = ...,
    out: Annotated[Path, typer.Option(help="Index file to write (safetensors).")] = Path("gallery.safetensors"),
    model: Annotated[Optional[Path], typer.Option(
        help="The model whose galleries to export [default: the only one in the store].")] = None,
) -> None:
    """Write a model's galleries in the store as an index file (what `serve --index` reads)."""
    from model.errors import OmniRetrieverError
    from serving.store import export_index
    from serving.index import load_index

    with exits_on(OmniRetrieverError, ValueError):
        path = export_index(uri, out, _store_digest(model))
    index = load_index(path)
    typer.echo(f"index: {path}  {len(index)} items; entries per view: "
               + ", ".join(f"{v} {len(index.entries[v])}" for v in index.views))


@app.command("manifest")
def manifest_cmd(
    name: Annotated[str, typer.Option(help="InferenceService name.")] = "omniretriever",
    storage_uri: Annotated[str, typer.Option(help="Where the repository's production/ directory is stored.")] = ...,
    image: Annotated[str, typer.Option(help="Transformer image, pinned by tag or digest.")] = ...,
    canary_percent: Annotated[Optional[int], typer.Option(help="Share of traffic for this revision (0-100).")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs for the Triton predictor.")] = 1,
    index: Annotated[Optional[str], typer.Option(
        help="Gallery index file (.safetensors) inside the transformer container, imported by each pod at start.")] = None,
    store: Annotated[Optional[str], typer.Option(
        help="Milvus cluster the search ranks through, http(s)://host:port (instead of --index).")] = None,
    store_secret: Annotated[Optional[str], typer.Option(
        help="Kubernetes Secret holding the cluster's token, mounted read-only as a file in the transformer "
             "[default: none, an unauthenticated Milvus on a private network].")] = None,
    store_secret_key: Annotated[Optional[str], typer.Option(
        help="The Secret's key that holds the token [default: token].")] = None,
    predictor_image: Annotated[Optional[str], typer.Option(
        help="Triton image with torch and this project (serving/Dockerfile.triton), for a pretrained backbone.")] = None,
    base_pvc: Annotated[Optional[str], typer.Option(
        help="PersistentVolumeClaim holding the base checkpoint of a pretrained backbone.")] = None,
    base_path: Annotated[Optional[str], typer.Option(
        help="The base checkpoint's directory inside that claim (relative).")] = None,
    media_pvc: Annotated[Optional[str], typer.Option(
        help="PersistentVolumeClaim holding the gallery's media: turns on the search page at /ui (needs --store "
             "or --index).")] = None,
    media_path: Annotated[Optional[str], typer.Option(
        help="The media root's directory inside that claim (relative; the dataset root the gallery was indexed "
             "from) [default: the whole claim].")] = None,
) -> None:
    """Print the KServe InferenceService (v1beta1) for a repository as YAML. A pretrained backbone's needs
    --predictor-image, --base-pvc and --base-path: the predictor mounts the base read-only. Search through
    a Milvus cluster takes --store and, where it checks tokens, --store-secret: the transformer reads the
    token from the mounted Secret, so the manifest never holds it. --media-pvc mounts the gallery's media
    read-only in the transformer and turns on the search page."""
    import yaml

    from serving.manifests import BaseCheckpoint, GalleryStoreRef, MediaVolume, inference_service

    if (base_pvc is None) != (base_path is None):
        fail("--base-pvc and --base-path go together: the claim and the checkpoint's directory inside it")
    if store is None and store_secret is not None:
        fail("--store-secret needs --store: the Secret holds the token of the Milvus cluster --store names")
    if store_secret is None and store_secret_key is not None:
        fail("--store-secret-key needs --store-secret: the key names an entry of that Secret")
    if media_pvc is None and media_path is not None:
        fail("--media-path needs --media-pvc: it names a directory inside that claim")
    base = BaseCheckpoint(base_pvc, base_path) if base_pvc is not None else None
    media = MediaVolume(media_pvc, media_path or "") if media_pvc is not None else None
    key = "token" if store_secret_key is None else store_secret_key
    ref = GalleryStoreRef(store, store_secret, key) if store is not None else None
    with exits_on(ValueError):
        manifest = inference_service(name, storage_uri, image, canary_percent, gpus, index=index,
                                     predictor_image=predictor_image, base=base, store=ref, media=media)
    typer.echo(yaml.safe_dump(manifest, sort_keys=False))
