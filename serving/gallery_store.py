"""The gallery as a Milvus store: a user's library, growing every day, searched without loading it whole.

    with GalleryStore.open("library.db", weights_sha256) as store:          # Milvus Lite: a local path
        hits = store.search(queries, "av", top_k=10, filter='split == "test"')
    GalleryStore.open("https://milvus.example:19530", weights_sha256)       # a cluster, same API

The URI alone picks the engine: a local path ending in .db is Milvus Lite (embedded; one process at a
time per path), http(s)://host:port a Milvus cluster, with the token from $OMNIRETRIEVER_MILVUS_TOKEN or
from the file $OMNIRETRIEVER_MILVUS_TOKEN_FILE names (a mounted Kubernetes secret). No other scheme.

One collection per (model, view), named omniretriever_<first 16 hex of the weights sha256>_<view>, so a new
model's galleries are built beside the served one's; every collection's properties hold the full weights
sha256, and a collection whose recorded digest is not the model's, or a store holding only other models'
galleries of a view, is refused, as serving/index.py's load refuses another model's index. Fields of a
view's collection, one row per entry (a window of an item, or its caption):

    pk            "<item id>@<start, 3 decimals>": stable, so re-adding a window overwrites it
    embedding     FLOAT_VECTOR (dim of the model), unit length
    item_id, media_uri (the media path as the manifest gives it), start, end (seconds; -1 unknown)
    split, source (the manifest or dataset name), duration (the item's seconds; -1 unknown),
    modalities (the view actually embedded: "v" for a video-only clip in an av collection),
    ingest_time (int seconds), content_hash (sha256 of media bytes + captions + decode settings)

A second collection per model, omniretriever_<digest16>_items, is the ledger: one row per (view, item)
holding the content hash and the number of entries written, upserted only after all of the item's entries
are in. An item is done in a view exactly when its ledger row there carries its current hash, so a killed
`index add` redoes only unfinished items, and an item with no entry in a view (an audio-only clip in a v
gallery) is still known to be done. Entries imported from an index file carry the hash "imported", which
no item has, so a later `index add` of the same items re-embeds them.

Index type and metric are fixed when a view's collection is created (IndexConfig): FLAT (exact, the Lite
default), AUTOINDEX, HNSW (the cluster default) or IVF_FLAT, with COSINE or IP on the unit embeddings.
Milvus Lite 3.2.2 accepted all four with both metrics (and L2, IVF_PQ, DISKANN, which are not offered).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.errors import OmniRetrieverError
from model.modalities import VIEWS, canonical_view
from serving.index import UNKNOWN, Entries, GalleryIndex, Hits, save_index

PREFIX = "omniretriever"
FORMAT = "omniretriever-store-v1"
LEDGER = "items"  # the ledger collection's suffix (never a view name)
TOKEN_ENV = "OMNIRETRIEVER_MILVUS_TOKEN"
TOKEN_FILE_ENV = "OMNIRETRIEVER_MILVUS_TOKEN_FILE"
IMPORTED = "imported"  # the content hash of entries imported from an index file (never a sha256)
MAX_TOP_K = 16384  # Milvus's largest search limit
MAX_ID, MAX_URI, MAX_NAME = 1024, 4096, 1024  # VARCHAR lengths: item ids, media paths, split and source names
CHUNK = 512  # rows per upsert, ids per `in [...]` filter
INDEX_TYPES = ("FLAT", "AUTOINDEX", "HNSW", "IVF_FLAT")
METRICS = ("COSINE", "IP")
PARAMS = {"HNSW": ({"M": 16, "efConstruction": 200}, {"ef": 128}),  # (build, search) params of IndexConfig.named
          "IVF_FLAT": ({"nlist": 1024}, {"nprobe": 32})}
HIT_FIELDS = ["item_id", "start", "end", "modalities", "media_uri"]
_PROP_DIGEST, _PROP_FORMAT, _PROP_VIEW = "omniretriever.weights_sha256", "omniretriever.format", "omniretriever.view"


class StoreError(OmniRetrieverError, ValueError):
    """A store that cannot be opened or used as asked: a bad URI, a missing view, a bad filter, ..."""


class ModelMismatchError(StoreError):
    """A collection built by another model than the one asking (its weights sha256 differs)."""


@dataclass(frozen=True)
class Connection:
    engine: str  # "lite" or "cluster"
    uri: str  # Lite: the absolute path; a cluster: its URL
    token: str = field(default="", repr=False)

    def describe(self) -> str:
        return f"Milvus Lite {self.uri}" if self.engine == "lite" else f"Milvus cluster {self.uri}"


def connection(uri: str | Path, env: Mapping[str, str] = os.environ) -> Connection:
    """Which engine a store URI names: a local path ending in .db (Milvus Lite) or http(s)://host:port (a
    cluster, token from TOKEN_ENV or the file TOKEN_FILE_ENV names); anything else is refused."""
    uri = str(uri)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        return Connection("cluster", uri, _token(env))
    if scheme:
        raise StoreError(f"store URI {uri!r}: {scheme}:// is not supported; give a local path ending in .db "
                         "(Milvus Lite) or http(s)://host:port (a Milvus cluster)")
    if not uri.endswith(".db"):
        raise StoreError(f"store URI {uri!r}: a Milvus Lite store is a local path ending in .db "
                         "(a cluster is http(s)://host:port)")
    path = Path(uri).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} exists and is not a Milvus Lite store (Lite keeps a directory there)")
    return Connection("lite", str(path))


def _token(env: Mapping[str, str]) -> str:
    token, file = env.get(TOKEN_ENV, ""), env.get(TOKEN_FILE_ENV, "")
    if token and file:
        raise StoreError(f"both {TOKEN_ENV} and {TOKEN_FILE_ENV} are set: set one")
    if not file:
        return token
    try:
        return Path(file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StoreError(f"{TOKEN_FILE_ENV}={file}: cannot read the token ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class IndexConfig:
    """How a view's embeddings are indexed, fixed when its collection is created."""

    index_type: str = "FLAT"  # FLAT (exact; the Lite default), AUTOINDEX, HNSW (the cluster default), IVF_FLAT
    metric: str = "COSINE"  # COSINE or IP: the same ranking on unit embeddings; scores are cosines either way
    build: dict = field(default_factory=dict)  # index build params: HNSW {"M", "efConstruction"}, IVF_FLAT {"nlist"}
    search: dict = field(default_factory=dict)  # search params: HNSW {"ef"} (raised to top_k), IVF_FLAT {"nprobe"}

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise StoreError(f"index type {self.index_type!r} is not one of {', '.join(INDEX_TYPES)}")
        if self.metric not in METRICS:
            raise StoreError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")

    @classmethod
    def named(cls, index_type: str, metric: str = "COSINE") -> "IndexConfig":
        """An index type with its usual parameters (PARAMS)."""
        build, search = PARAMS.get(index_type, ({}, {}))
        return cls(index_type, metric, dict(build), dict(search))

    @classmethod
    def default(cls, engine: str) -> "IndexConfig":
        """Exact search on Lite (a library on one machine); HNSW on a cluster."""
        return cls.named("FLAT" if engine == "lite" else "HNSW")


@dataclass(frozen=True)
class ItemMeta:
    """What a store row records of the item it belongs to, beside the entry itself."""

    media_uri: str = ""  # the media path as the manifest gives it (relative to the data root); "" unknown
    split: str = ""
    source: str = ""  # the manifest or dataset name
    duration: float = UNKNOWN  # seconds
    content_hash: str = IMPORTED


@dataclass(frozen=True)
class StoreHits(Hits):
    """Hits plus each hit's media URI. A row with fewer hits than the others (a filter matching fewer
    entries, an approximate index) is padded with id "", score -inf."""

    uris: np.ndarray  # object (B, k)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    view: str  # a view name, or LEDGER
    weights_sha256: str
    dim: int
    index_type: str
    metric: str


def collection_name(weights_sha256: str, view: str) -> str:
    return f"{PREFIX}_{weights_sha256[:16]}_{view}"


def entry_key(item_id: str, start: float) -> str:
    """The primary key of an entry: the item and where the entry starts, to the millisecond."""
    return f"{item_id}@{float(start):.3f}"


def check_item_id(item_id: str) -> None:
    """An id the store can hold and name in a filter; StoreError otherwise."""
    if len(item_id.encode("utf-8")) > MAX_ID:
        raise StoreError(f"item id {item_id[:40]!r}… is over {MAX_ID} bytes")
    if any(ord(c) < 32 for c in item_id):
        raise StoreError(f"item id {item_id!r} holds a control character, which a filter expression cannot name")


def literal(text: str) -> str:
    """`text` as a Milvus expression string literal (Milvus takes JSON's escapes, but not \\u)."""
    check_item_id(text)
    return json.dumps(text, ensure_ascii=False)


def in_filter(fld: str, values: Iterable[str]) -> str:
    return f"{fld} in [{', '.join(literal(v) for v in values)}]"


def _chunks(seq: list, size: int = CHUNK) -> Iterator[list]:
    for i in range(0, len(seq), size):
        yield seq[i: i + size]


class _Quiet(logging.Filter):
    """Drop what pymilvus and Milvus Lite log that the store reports itself or that changes nothing: each
    failed call's error with a traceback (the store raises it, as StoreError where it is the caller's), and,
    on Lite, which has neither MVCC timestamps nor AllocTimestamp, a warning and a NotImplementedError per
    query_iterator."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        locked = record.exc_info is not None and type(record.exc_info[1]).__name__ == "DataDirLockedError"
        return not (locked or message.startswith("RPC error") or "mvccTs" in message
                    or "Method not implemented" in message)


QUIETED = ("pymilvus.decorators", "pymilvus.client.iterator.query_iterator", "grpc._server",
           "milvus_lite.server_manager")


def _locked(store: Path) -> bool:
    """Whether another process holds Milvus Lite's lock on `store` (its LOCK file, flock'ed while open)."""
    import fcntl

    try:
        fd = os.open(store / "LOCK", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock


def _client(conn: Connection):
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    for name in QUIETED:
        if not any(isinstance(f, _Quiet) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(_Quiet())
    try:
        if conn.engine == "lite":
            Path(conn.uri).parent.mkdir(parents=True, exist_ok=True)
            return MilvusClient(conn.uri)
        return MilvusClient(uri=conn.uri, token=conn.token)
    except MilvusException as exc:
        if conn.engine == "lite" and _locked(Path(conn.uri)):
            raise StoreError(f"{conn.describe()} is open in another process (Milvus Lite allows one process per "
                             "store): stop it, or use a cluster") from None
        raise StoreError(f"cannot open {conn.describe()}: {getattr(exc, 'message', exc)}") from None


def _collections(client) -> list[CollectionInfo]:
    """Every collection of this project in the store (others are left alone)."""
    out = []
    for name in sorted(client.list_collections()):
        if not name.startswith(PREFIX + "_"):
            continue
        desc = client.describe_collection(name)
        props = desc.get("properties", {})
        if _PROP_FORMAT not in props:
            continue  # not made by this module
        if props[_PROP_FORMAT] != FORMAT:
            raise StoreError(f"collection {name}: format {props.get(_PROP_FORMAT)!r}, expected {FORMAT!r}")
        dim = next((f["params"]["dim"] for f in desc["fields"] if f["name"] in ("embedding", "marker")), 0)
        index = client.describe_index(name, "embedding") if props[_PROP_VIEW] != LEDGER else {}
        out.append(CollectionInfo(name, props[_PROP_VIEW], props[_PROP_DIGEST], int(dim),
                                  index.get("index_type", ""), index.get("metric_type", "")))
    return out


def _schema(kind: str, dim: int):
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_ID + 16)
    s.add_field("item_id", DataType.VARCHAR, max_length=MAX_ID)
    s.add_field("content_hash", DataType.VARCHAR, max_length=64)
    s.add_field("ingest_time", DataType.INT64)
    if kind == LEDGER:  # a collection needs a vector: the ledger's is a constant
        s.add_field("marker", DataType.FLOAT_VECTOR, dim=2)
        s.add_field("view", DataType.VARCHAR, max_length=8)
        s.add_field("entries", DataType.INT64)
        return s
    s.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("media_uri", DataType.VARCHAR, max_length=MAX_URI)
    s.add_field("start", DataType.DOUBLE)
    s.add_field("end", DataType.DOUBLE)
    s.add_field("split", DataType.VARCHAR, max_length=MAX_NAME)
    s.add_field("source", DataType.VARCHAR, max_length=MAX_NAME)
    s.add_field("duration", DataType.DOUBLE)
    s.add_field("modalities", DataType.VARCHAR, max_length=8)
    return s


class GalleryStore:
    """One model's galleries in a Milvus store: open with GalleryStore.open (see the module docstring)."""

    def __init__(self, client, conn: Connection, weights_sha256: str, index: IndexConfig | None,
                 collections: list[CollectionInfo]):
        self.client, self.conn, self.weights_sha256, self._index = client, conn, weights_sha256, index
        self._mine = {c.view: c for c in collections if c.weights_sha256 == weights_sha256}
        self._others = [c for c in collections if c.weights_sha256 != weights_sha256]
        self._loaded: set[str] = set()

    @classmethod
    def open(cls, uri: str | Path, weights_sha256: str | None = None, index: IndexConfig | None = None,
             env: Mapping[str, str] = os.environ) -> "GalleryStore":
        """The galleries of the model with `weights_sha256` (None: the only model the store holds). `index`
        configures the collections this store creates (None: IndexConfig.default for the engine)."""
        conn = connection(uri, env)
        client = _client(conn)
        try:
            collections = _collections(client)
            digests = sorted({c.weights_sha256 for c in collections})
            if weights_sha256 is None:
                if len(digests) != 1:
                    held = ", ".join(d[:16] for d in digests) or "none"
                    raise StoreError(f"{conn.describe()} holds the galleries of {len(digests)} models ({held}): "
                                     "name the model (--model)")
                weights_sha256 = digests[0]
            for c in collections:
                if c.name.startswith(collection_name(weights_sha256, "")) and c.weights_sha256 != weights_sha256:
                    raise ModelMismatchError(f"collection {c.name} of {conn.describe()} was built by the model with "
                                             f"weights sha256 {c.weights_sha256}, not {weights_sha256}")
        except BaseException:
            client.close()
            raise
        return cls(client, conn, weights_sha256, index, collections)

    def __enter__(self) -> "GalleryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @property
    def views(self) -> tuple[str, ...]:
        """The views this model has a gallery of, in VIEWS order."""
        return tuple(v for v in VIEWS if v in self._mine)

    def info(self, view: str) -> CollectionInfo:
        """The collection of `view`; ModelMismatchError when only other models have one."""
        view = canonical_view(view)
        if view in self._mine:
            return self._mine[view]
        others = sorted({c.weights_sha256[:16] for c in self._others if c.view == view})
        if others:
            raise ModelMismatchError(
                f"{self.conn.describe()} has no {view} gallery of the model with weights sha256 "
                f"{self.weights_sha256[:16]}…; its {view} galleries were built by other models "
                f"({', '.join(others)}): add this model's with `omniretriever index add`")
        raise StoreError(f"{self.conn.describe()} has no {view} gallery of this model "
                         f"(it has: {', '.join(self.views) or 'none'})")

    # --- writing -------------------------------------------------------------------------------------------

    def ensure_view(self, view: str, dim: int) -> CollectionInfo:
        """The collection of `view`, created (with the ledger) if missing; refused when its dim differs, or when
        an IndexConfig given to open differs from the one it was created with."""
        view = canonical_view(view)
        if LEDGER not in self._mine:
            self._create(LEDGER, 2, IndexConfig())
        if view not in self._mine:
            return self._create(view, dim, self._index or IndexConfig.default(self.conn.engine))
        have = self._mine[view]
        if have.dim != dim:
            raise StoreError(f"collection {have.name} holds {have.dim}-d embeddings, not {dim}-d")
        if self._index is not None and (have.index_type, have.metric) != (self._index.index_type, self._index.metric):
            raise StoreError(f"collection {have.name} was created with {have.index_type}/{have.metric}, "
                             f"not {self._index.index_type}/{self._index.metric}; remove it to change the index")
        return have

    def _create(self, kind: str, dim: int, index: IndexConfig) -> CollectionInfo:
        name = collection_name(self.weights_sha256, kind)
        params = self.client.prepare_index_params()
        params.add_index("marker" if kind == LEDGER else "embedding", index_type=index.index_type,
                         metric_type=index.metric, params=dict(index.build))
        props = {_PROP_FORMAT: FORMAT, _PROP_DIGEST: self.weights_sha256, _PROP_VIEW: kind}
        self.client.create_collection(name, schema=_schema(kind, dim), index_params=params, properties=props)
        info = CollectionInfo(name, kind, self.weights_sha256, dim, index.index_type, index.metric)
        self._mine[kind] = info
        return info

    def _load(self, name: str) -> str:
        if name not in self._loaded:
            self.client.load_collection(name)
            self._loaded.add(name)
        return name

    def replace_items(self, view: str, ids: list[str], embeddings: np.ndarray, entries: Entries,
                      meta: Mapping[str, ItemMeta], now: int | None = None) -> None:
        """Make `ids`' entries in `view` exactly `entries` (rows of `embeddings`, (N, D) float32): their old
        entries are deleted, the new ones upserted, then each item's ledger row (its hash, its number of entries,
        0 for an item without one) is written, which marks it done."""
        name, ledger = self._load(self.info(view).name), self._load(self._mine[LEDGER].name)
        view, now = self.info(view).view, int(time.time()) if now is None else now
        if embeddings.shape[0] != len(entries):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(entries)} entries")
        if not set(entries.ids) <= set(ids):
            raise ValueError(f"entries of items not among the ids: {sorted(set(entries.ids) - set(ids))[:5]}")
        keys = [entry_key(i, s) for i, s in zip(entries.ids, entries.start)]
        if len(set(keys)) != len(keys):
            twice = next(k for k, n in Counter(keys).items() if n > 1)
            raise ValueError(f"two entries have the key {twice!r}: an item's windows must start at least 1 ms apart")
        for chunk in _chunks(ids):
            self.client.delete(name, filter=in_filter("item_id", chunk))
        rows = [{"pk": k, "embedding": e, "item_id": i, "start": float(s), "end": float(t),
                 "modalities": m, "ingest_time": now, "media_uri": meta[i].media_uri, "split": meta[i].split,
                 "source": meta[i].source, "duration": float(meta[i].duration), "content_hash": meta[i].content_hash}
                for k, i, s, t, m, e in zip(keys, entries.ids, entries.start, entries.end, entries.modalities,
                                            np.asarray(embeddings, np.float32))]
        for chunk in _chunks(rows):
            self.client.upsert(name, chunk)
        counts = {i: 0 for i in ids} | Counter(entries.ids)
        marks = [{"pk": f"{view}/{i}", "item_id": i, "view": view, "content_hash": meta[i].content_hash,
                  "entries": n, "ingest_time": now, "marker": [1.0, 0.0]} for i, n in counts.items()]
        for chunk in _chunks(marks):
            self.client.upsert(ledger, chunk)

    def done(self, view: str, hashes: Mapping[str, str]) -> set[str]:
        """The items of `hashes` (id -> content hash) whose entries in `view` are all in, with that hash."""
        if canonical_view(view) not in self._mine:
            return set()
        ledger, view = self._load(self._mine[LEDGER].name), canonical_view(view)
        out = set()
        for chunk in _chunks(list(hashes)):
            for row in self.client.query(ledger, filter=f"view == {literal(view)} and {in_filter('item_id', chunk)}",
                                         output_fields=["item_id", "content_hash"], limit=len(chunk)):
                if hashes[row["item_id"]] == row["content_hash"]:
                    out.add(row["item_id"])
        return out

    def remove(self, view: str, ids: Iterable[str] = (), where: str | None = None) -> list[str]:
        """Remove items from `view`: those of `ids`, and every item with an entry matching the expression
        `where` (all of its entries go, and its ledger row, so a later add puts it back). The items removed."""
        name, ledger = self._load(self.info(view).name), self._load(self._mine[LEDGER].name)
        view = self.info(view).view
        wanted = list(dict.fromkeys(ids))
        if where:
            have = set(wanted)
            wanted += [i for i in self._scan(name, where, ["item_id"], distinct="item_id") if i not in have]
        found: set[str] = set()
        for chunk in _chunks(wanted):
            found.update(self._scan(name, in_filter("item_id", chunk), ["item_id"], distinct="item_id"))
            found.update(self._scan(ledger, f"view == {literal(view)} and {in_filter('item_id', chunk)}", ["item_id"],
                                    distinct="item_id"))
            self.client.delete(name, filter=in_filter("item_id", chunk))
            self.client.delete(ledger, ids=[f"{view}/{i}" for i in chunk])
        return [i for i in wanted if i in found]

    # --- reading -------------------------------------------------------------------------------------------

    def _scan(self, name: str, expr: str, fields: list[str], distinct: str | None = None) -> Iterator:
        """Every row matching `expr` (a dict of `fields`), or each distinct value of the field `distinct`."""
        from pymilvus.exceptions import MilvusException

        seen = set()
        try:
            it = self.client.query_iterator(name, batch_size=1000, filter=expr, output_fields=fields)
            try:
                while batch := it.next():
                    for row in batch:
                        if distinct is None:
                            yield row
                        elif row[distinct] not in seen:
                            seen.add(row[distinct])
                            yield row[distinct]
            finally:
                it.close()
        except MilvusException as exc:
            raise StoreError(f"filter {expr!r}: {getattr(exc, 'message', exc)}") from None

    def count(self, view: str) -> tuple[int, int]:
        """(entries, items) of `view`: items are those done (in the ledger), with or without an entry."""
        name, ledger = self._load(self.info(view).name), self._load(self._mine[LEDGER].name)
        entries = self.client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
        items = self.client.query(ledger, filter=f"view == {literal(self.info(view).view)}",
                                  output_fields=["count(*)"])[0]["count(*)"]
        return int(entries), int(items)

    def entries(self, view: str) -> tuple[Entries, np.ndarray, list[str]]:
        """All of `view`'s entries, by item id then start: (Entries, float32 (N, D) embeddings, media URIs)."""
        info = self.info(view)
        rows = sorted(self._scan(self._load(info.name), "", ["pk", "embedding", *HIT_FIELDS]),
                      key=lambda r: (r["item_id"], r["start"], r["pk"]))
        emb = np.asarray([r["embedding"] for r in rows], np.float32).reshape(len(rows), info.dim)
        entries = Entries([r["item_id"] for r in rows], np.array([r["start"] for r in rows], np.float64),
                          np.array([r["end"] for r in rows], np.float64), [r["modalities"] for r in rows])
        return entries, emb, [r["media_uri"] for r in rows]

    def search(self, queries: np.ndarray, view: str, top_k: int, filter: str | None = None) -> StoreHits:
        """queries (B, D) float32 -> the k best entries of gallery `view` per row (k = min(top_k, entries
        matching `filter`, a Milvus boolean expression over the scalar fields)), best first; equal scores
        (within TIE) in primary-key order."""
        from pymilvus.exceptions import MilvusException

        info = self.info(view)
        q = np.asarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != info.dim:
            raise ValueError(f"queries have shape {q.shape}, expected (B, {info.dim})")
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be in [1, {MAX_TOP_K}], got {top_k}")
        params = dict(self._index.search if self._index else IndexConfig.default(self.conn.engine).search)
        if info.index_type == "HNSW":
            params["ef"] = max(int(params.get("ef", 0)), top_k)
        try:
            res = self.client.search(self._load(info.name), data=q, limit=top_k, filter=filter or "",
                                     output_fields=HIT_FIELDS, search_params={"metric_type": info.metric,
                                                                              "params": params})
        except MilvusException as exc:
            raise StoreError(f"search of {info.name} (filter {filter!r}): {getattr(exc, 'message', exc)}") from None
        return _hits([_tie_ordered(r) for r in res])


TIE = 1e-6  # scores this close count as equal: Milvus's float32 dot products of one vector differ by row (1 ulp)


def _tie_ordered(hits: list[dict]) -> list[dict]:
    """Best first; a run of hits whose scores lie within TIE of the run's best, in primary-key order."""
    ranked = sorted(hits, key=lambda h: -h["distance"])
    out: list[dict] = []
    while ranked:
        n = next((j for j, h in enumerate(ranked) if ranked[0]["distance"] - h["distance"] > TIE), len(ranked))
        out += sorted(ranked[:n], key=lambda h: h["pk"])
        ranked = ranked[n:]
    return out


def _hits(rows: list[list[dict]]) -> StoreHits:
    """StoreHits from Milvus's hit lists, padded to the longest."""
    k = max((len(r) for r in rows), default=0)
    pad = {"distance": -np.inf, "entity": {"item_id": "", "start": UNKNOWN, "end": UNKNOWN, "modalities": "",
                                           "media_uri": ""}}
    full = [r + [pad] * (k - len(r)) for r in rows]

    def col(f: str, dtype) -> np.ndarray:  # (B, k)
        return np.array([[h["entity"][f] for h in r] for r in full], dtype).reshape(len(rows), k)

    scores = np.array([[h["distance"] for h in r] for r in full], np.float32).reshape(len(rows), k)
    return StoreHits(col("item_id", object), scores, col("start", np.float32), col("end", np.float32),
                     col("modalities", object), col("media_uri", object))


def store_collections(uri: str | Path, env: Mapping[str, str] = os.environ) -> list[dict]:
    """Every collection of the store with its counts (what `index stats` prints): name, view, weights_sha256,
    dim, index_type, metric, entries, items (per view: done items, with or without an entry)."""
    conn = connection(uri, env)
    client = _client(conn)
    try:
        out = []
        for c in _collections(client):
            client.load_collection(c.name)
            rows = client.query(c.name, filter="", output_fields=["count(*)"])[0]["count(*)"]
            out.append({**c.__dict__, "rows": int(rows)})
        ledgers = {c["weights_sha256"]: c["name"] for c in out if c["view"] == LEDGER}
        for c in out:
            if c["view"] != LEDGER:
                c["items"] = int(client.query(ledgers[c["weights_sha256"]], filter=f"view == {literal(c['view'])}",
                                              output_fields=["count(*)"])[0]["count(*)"])
        return [c for c in out if c["view"] != LEDGER]
    finally:
        client.close()


def import_index(index: GalleryIndex, uri: str | Path, *, config: IndexConfig | None = None,
                 source: str | None = None) -> dict[str, int]:
    """Put an index file's entries into the store (its model's collections, created if missing), replacing
    the entries its items had there: view -> entries written. Their content hash is IMPORTED."""
    split, source = str(index.meta.get("split", "")), source or str(index.meta.get("manifest", ""))
    written = {}
    with GalleryStore.open(uri, index.weights_sha256, config) as store:
        for view in index.views:
            entries, emb = index.entries[view], index.embeddings[view]
            for i in entries.ids:
                check_item_id(i)
            ends: dict[str, float] = {}
            for i, t in zip(entries.ids, entries.end):
                ends[i] = max(ends.get(i, UNKNOWN), float(t))
            meta = {i: ItemMeta(split=split, source=source, duration=d) for i, d in ends.items()}
            store.ensure_view(view, emb.shape[1])
            store.replace_items(view, list(ends), emb, entries, meta)
            written[view] = len(entries)
    return written


def export_index(uri: str | Path, out: str | Path, weights_sha256: str | None = None) -> Path:
    """Write a model's galleries (every view it has in the store) as an index file (serving/index.py)."""
    with GalleryStore.open(uri, weights_sha256) as store:
        if not store.views:
            raise StoreError(f"{store.conn.describe()} holds no gallery of the model {store.weights_sha256[:16]}…")
        entries, embeddings = {}, {}
        for view in store.views:
            entries[view], embeddings[view], _ = store.entries(view)
        extra = {"store": store.conn.uri, "exported": int(time.time())}
        ids = list(dict.fromkeys(i for e in entries.values() for i in e.ids))
        return save_index(out, ids, embeddings, store.weights_sha256, extra, entries)
