"""The gallery as a Milvus store: a user's library, growing every day, searched without loading it whole.

    with GalleryStore.open("library.db", weights_sha256) as store:          # Milvus Lite: a local path
        hits = store.search(queries, "av", top_k=10, filter='split == "test"')
    GalleryStore.open("https://milvus.example:19530", weights_sha256)       # a cluster, same API

The URI alone picks the engine: a local path ending in .db is Milvus Lite (embedded; one process at a
time per path), http(s)://host:port a Milvus cluster, with the token from $OMNIRETRIEVER_MILVUS_TOKEN or
from the file $OMNIRETRIEVER_MILVUS_TOKEN_FILE names (a mounted Kubernetes secret). No other scheme.

One collection per (model, view, generation), named omniretriever_<first 16 hex of the weights sha256>_<view>_g<N>,
so a new model's galleries are built beside the served one's; every collection's properties hold the full
weights sha256, and a collection whose recorded digest is not the model's, or a store holding only other
models' galleries of a view, is refused, as serving/index.py's load refuses another model's index.

Searches read a model's galleries through Milvus aliases, omniretriever_<digest16>_<view>, each naming the
collection of the live generation. A gallery is built in a generation nobody searches yet (the first one of a
model, or a rebuild: `index add --rebuild`, the re-embed of a library after a promotion) and published when
complete: publish() loads its collections and swaps each alias in one step, so a query sees the old gallery
or the new one, never half of one. Adding to the live generation (the library's new items of the day) is
seen item by item, each item whole. Fields of a view's collection, one row per entry (a window of an item,
or its caption):

    pk            "<item id>@<start, 3 decimals>": stable, so re-adding a window overwrites it
    embedding     FLOAT_VECTOR (dim of the model), unit length
    item_id, media_uri (the media path as the manifest gives it), start, end (seconds; -1 unknown)
    split, source (the manifest or dataset name), duration (the item's seconds; -1 unknown),
    modalities (the view actually embedded: "v" for a video-only clip in an av collection),
    ingest_time (int seconds), content_hash (sha256 of media bytes + captions + decode settings),
    caption (the item's caption, shown with a hit; "" unknown: entries imported from an index file)

Collections of the previous format (v2, without caption) are read and written as before, without captions;
their hits have the caption "".

A second collection per model and generation, omniretriever_<digest16>_items_g<N>, is the ledger: one row per (view, item)
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

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from model.modalities import VIEWS, canonical_view
from serving.index import Entries
from serving.store.engine import Connection, ModelMismatchError, StoreError, client_for, connection, release
from serving.store.hits import StoreHits, hits_of, tie_ordered
from serving.store.schema import (
    CAPTIONS,
    FORMAT,
    HIT_FIELDS,
    LEDGER,
    MAX_TOP_K,
    OWN_WRITES,
    PARAMS,
    PROP_DIGEST,
    PROP_FORMAT,
    PROP_GENERATION,
    PROP_VIEW,
    CollectionInfo,
    IndexConfig,
    ItemMeta,
    chunks,
    alias_name,
    collection_name,
    collections_of,
    display_caption,
    entry_key,
    in_filter,
    literal,
    schema_of,
)


COLLECTION_NOT_FOUND = 100  # pymilvus's error code for a name that is no collection (or alias)
LIVE, REBUILD = "live", "rebuild"  # what GalleryStore.open's `generation` may name besides a number


def _live(mine: Iterable[CollectionInfo]) -> int | None:
    """The served generation among a model's collections (its ledger is behind the alias), if any."""
    return next((c.generation for c in mine if c.view == LEDGER and c.live), None)


def _generation(mine: list[CollectionInfo], generation: str | int) -> int:
    """The generation GalleryStore.open(generation=...) names, among a model's collections `mine`."""
    have = sorted({c.generation for c in mine})
    live = _live(mine)
    newer = [g for g in have if live is None or g > live]
    if generation == LIVE:
        return live if live is not None else (newer[-1] if newer else 1)
    if generation == REBUILD:
        return newer[-1] if newer else (have[-1] + 1 if have else 1)
    if isinstance(generation, int) and not isinstance(generation, bool) and generation >= 1:
        return generation
    raise StoreError(f"generation {generation!r}: give {LIVE!r}, {REBUILD!r} or a number from 1")


class GalleryStore:
    """One generation of one model's galleries in a Milvus store: open with GalleryStore.open (see the module
    docstring)."""

    def __init__(self, client, conn: Connection, weights_sha256: str, index: IndexConfig | None,
                 collections: list[CollectionInfo], generation: int):
        self.client, self.conn, self.weights_sha256, self._index = client, conn, weights_sha256, index
        self.generation = generation
        self._all = [c for c in collections if c.weights_sha256 == weights_sha256]
        self._mine = {c.view: c for c in self._all if c.generation == generation}
        self._others = [c for c in collections if c.weights_sha256 != weights_sha256]
        self._loaded: set[str] = set()

    @classmethod
    def open(cls, uri: str | Path, weights_sha256: str | None = None, index: IndexConfig | None = None,
             env: Mapping[str, str] = os.environ, *, generation: str | int = LIVE, wait: float = 0.0) -> "GalleryStore":
        """The galleries of the model with `weights_sha256` (None: the only model the store holds), in one
        generation: LIVE, the served one (if none is served yet: the newest being built, else a new one);
        REBUILD, one newer than the served one (the newest such being built, resumed, else a new one); or a
        number, that generation as it is. `index` configures the collections this store creates (None:
        IndexConfig.default for the engine). A Lite store open in another process is waited for `wait` s."""
        conn = connection(uri, env)
        client = client_for(conn, wait)
        try:
            collections = collections_of(client)
            digests = sorted({c.weights_sha256 for c in collections})
            if weights_sha256 is None:
                if len(digests) != 1:
                    held = ", ".join(d[:16] for d in digests) or "none"
                    raise StoreError(f"{conn.describe()} holds the galleries of {len(digests)} models ({held}): "
                                     "name the model (--model)")
                weights_sha256 = digests[0]
            for c in collections:
                if c.name.startswith(alias_name(weights_sha256, "")) and c.weights_sha256 != weights_sha256:
                    raise ModelMismatchError(f"collection {c.name} of {conn.describe()} was built by the model with "
                                             f"weights sha256 {c.weights_sha256}, not {weights_sha256}")
            chosen = _generation([c for c in collections if c.weights_sha256 == weights_sha256], generation)
        except BaseException:
            release(conn, client)
            raise
        return cls(client, conn, weights_sha256, index, collections, chosen)

    def __enter__(self) -> "GalleryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the client; the last one of a Lite store in this process also frees the store (engine.release)."""
        release(self.conn, self.client)

    def flush(self) -> None:
        """Seal what this generation was written (Milvus searches sealed data fastest; Lite much faster)."""
        for info in self._mine.values():
            self.client.flush(info.name)

    @property
    def views(self) -> tuple[str, ...]:
        """The views this generation has a gallery of, in VIEWS order."""
        return tuple(v for v in VIEWS if v in self._mine)

    @property
    def live(self) -> bool:
        """Whether this generation is the served one (its collections are behind the model's aliases)."""
        return LEDGER in self._mine and self._mine[LEDGER].live

    @property
    def live_generation(self) -> int | None:
        """The generation of this model that is served, if any."""
        return _live(self._all)

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
        raise StoreError(f"{self.conn.describe()} has no {view} gallery of this model in generation "
                         f"{self.generation} (it has: {', '.join(self.views) or 'none'})")

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
                             f"not {self._index.index_type}/{self._index.metric}; rebuild the gallery "
                             "(`index add --rebuild`) to change the index")
        return have

    def publish(self) -> int | None:
        """Serve this generation: load its collections, then point the model's aliases at them, one view at a
        time (each swap is atomic: a search reads the old collection or the new one, never a mix). Generations
        older than both this one and the one served before are dropped; that one is kept for searches still in
        flight and for a rollback (publish it again). Returns
        the generation served before (None if none was)."""
        if not self.views:
            raise StoreError(f"generation {self.generation} of the model {self.weights_sha256[:16]}… holds no "
                             "gallery: nothing to publish")
        before = self.live_generation
        self.flush()
        for info in self._mine.values():
            self.client.load_collection(info.name)
        for kind, info in sorted(self._mine.items(), key=lambda kv: kv[0] == LEDGER):  # the ledger last
            alias = alias_name(self.weights_sha256, kind)
            if any(c.view == kind and c.live for c in self._all):
                self.client.alter_alias(info.name, alias)
            else:
                self.client.create_alias(info.name, alias)
        for c in self._all:  # a view the served generation had and this one lacks is no longer served
            if c.live and c.view not in self._mine:
                self.client.drop_alias(alias_name(self.weights_sha256, c.view))
        keep = self.generation if before is None else min(before, self.generation)
        for c in self._all:
            if c.generation < keep:
                self.client.drop_collection(c.name)
        self._all = [replace(c, live=c.generation == self.generation) for c in self._all if c.generation >= keep]
        self._mine = {c.view: c for c in self._all if c.generation == self.generation}
        return before

    def _create(self, kind: str, dim: int, index: IndexConfig) -> CollectionInfo:
        name = collection_name(self.weights_sha256, kind, self.generation)
        params = self.client.prepare_index_params()
        params.add_index("marker" if kind == LEDGER else "embedding", index_type=index.index_type,
                         metric_type=index.metric, params=dict(index.build))
        props = {PROP_FORMAT: FORMAT, PROP_DIGEST: self.weights_sha256, PROP_VIEW: kind,
                 PROP_GENERATION: str(self.generation)}
        captions = CAPTIONS[FORMAT]
        self.client.create_collection(name, schema=schema_of(kind, dim, captions), index_params=params,
                                      properties=props)
        info = CollectionInfo(name, kind, self.weights_sha256, dim, index.index_type, index.metric, self.generation,
                              captions=captions)
        self._mine[kind] = info
        self._all.append(info)
        return info

    def _read(self, kind: str) -> str:
        """What reads of `kind` (a view or LEDGER) name: the model's alias when this generation is served, so a
        swap is followed and a generation dropped after later swaps is never named; else the collection."""
        info = self.info(kind) if kind != LEDGER else self._mine[LEDGER]
        return self._load(alias_name(self.weights_sha256, info.view) if self.live else info.name)

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
        info = self.info(view)
        name, ledger = self._load(info.name), self._load(self._mine[LEDGER].name)
        view, now = info.view, int(time.time()) if now is None else now
        if embeddings.shape[0] != len(entries):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(entries)} entries")
        if not set(entries.ids) <= set(ids):
            raise ValueError(f"entries of items not among the ids: {sorted(set(entries.ids) - set(ids))[:5]}")
        keys = [entry_key(i, s) for i, s in zip(entries.ids, entries.start)]
        if len(set(keys)) != len(keys):
            twice = next(k for k, n in Counter(keys).items() if n > 1)
            raise ValueError(f"two entries have the key {twice!r}: an item's windows must start at least 1 ms apart")
        for chunk in chunks(ids):  # only items the ledger knows can have entries here (a pk lookup, no scan)
            known = [row["item_id"] for row in self.client.get(ledger, ids=[f"{view}/{i}" for i in chunk],
                                                              output_fields=["item_id"], **OWN_WRITES)]
            if known:
                self.client.delete(name, filter=in_filter("item_id", known))
        captions = {i: display_caption(meta[i].caption) for i in ids} if info.captions else None  # v2: none
        rows = [{"pk": k, "embedding": e, "item_id": i, "start": float(s), "end": float(t),
                 "modalities": m, "ingest_time": now, "media_uri": meta[i].media_uri, "split": meta[i].split,
                 "source": meta[i].source, "duration": float(meta[i].duration), "content_hash": meta[i].content_hash,
                 **({"caption": captions[i]} if captions is not None else {})}
                for k, i, s, t, m, e in zip(keys, entries.ids, entries.start, entries.end, entries.modalities,
                                            np.asarray(embeddings, np.float32))]
        for chunk in chunks(rows):
            self.client.upsert(name, chunk)
        counts = {i: 0 for i in ids} | Counter(entries.ids)
        marks = [{"pk": f"{view}/{i}", "item_id": i, "view": view, "content_hash": meta[i].content_hash,
                  "entries": n, "ingest_time": now, "marker": [1.0, 0.0]} for i, n in counts.items()]
        for chunk in chunks(marks):
            self.client.upsert(ledger, chunk)

    def done(self, view: str, hashes: Mapping[str, str]) -> set[str]:
        """The items of `hashes` (id -> content hash) whose entries in `view` are all in, with that hash."""
        if canonical_view(view) not in self._mine:
            return set()
        ledger, view = self._load(self._mine[LEDGER].name), canonical_view(view)
        out = set()
        for chunk in chunks(list(hashes)):
            for row in self.client.query(ledger, filter=f"view == {literal(view)} and {in_filter('item_id', chunk)}",
                                         output_fields=["item_id", "content_hash"], limit=len(chunk),
                                         **OWN_WRITES):
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
        for chunk in chunks(wanted):
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
            it = self.client.query_iterator(name, batch_size=1000, filter=expr, output_fields=fields, **OWN_WRITES)
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
        name, ledger = self._read(view), self._read(LEDGER)
        entries = self.client.query(name, filter="", output_fields=["count(*)"], **OWN_WRITES)[0]["count(*)"]
        items = self.client.query(ledger, filter=f"view == {literal(self.info(view).view)}",
                                  output_fields=["count(*)"], **OWN_WRITES)[0]["count(*)"]
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

    def media_uri(self, item_id: str) -> str | None:
        """The media path recorded for `item_id` (the first view holding it that records one); None when no view
        of this generation holds the item, or none records its media."""
        try:
            expr = f"item_id == {literal(item_id)} and media_uri != \"\""
        except StoreError:
            return None
        from pymilvus.exceptions import MilvusException

        for view in self.views:
            target = alias_name(self.weights_sha256, view) if self.live else self.info(view).name
            try:
                self._read(view)  # follows a swap, as search does
                rows = self.client.query(target, filter=expr, output_fields=["media_uri"], limit=1)
            except MilvusException as exc:
                if getattr(exc, "code", None) == COLLECTION_NOT_FOUND:  # a view a later generation no longer serves
                    continue
                raise StoreError(f"lookup of item {item_id!r} in {target}: {getattr(exc, 'message', exc)}") from None
            if rows:
                return str(rows[0]["media_uri"])
        return None

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
        # A live generation is searched through its alias, so a swap to a rebuilt one (perhaps of another index
        # type) is seen by the next search: the parameters of every index type go along (each reads its own),
        # and the metric is the collection's own.
        params = {k: v for _, search in PARAMS.values() for k, v in search.items()}
        params.update(self._index.search if self._index else {})
        params["ef"] = max(int(params["ef"]), top_k)
        target = self._read(info.view)

        def search(fields: list[str]) -> list:
            return self.client.search(target, data=q, limit=top_k, filter=filter or "", output_fields=fields,
                                      search_params={"params": params})

        try:
            try:
                res = search(HIT_FIELDS + ["caption"])
            except MilvusException as exc:
                if "caption" not in str(getattr(exc, "message", exc)):
                    raise
                # the alias names a v2 generation (kept for a rollback, or published by an older release): a
                # cluster refuses an output field a collection lacks (Lite leaves it out): ask without captions
                res = search(HIT_FIELDS)
        except MilvusException as exc:
            raise StoreError(f"search of {target} (filter {filter!r}): {getattr(exc, 'message', exc)}") from None
        return hits_of([tie_ordered(r) for r in res])

