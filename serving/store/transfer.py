"""A store's galleries to and from index files (serving/index.py), and what `index stats` lists."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from model.modalities import VIEWS
from serving.index import UNKNOWN, GalleryIndex, save_index
from serving.store.engine import StoreError, client_for, connection, release
from serving.store.gallery import GalleryStore
from serving.store.schema import LEDGER, OWN_WRITES, IndexConfig, ItemMeta, check_item_id, collections_of, literal


def store_collections(uri: str | Path, env: Mapping[str, str] = os.environ) -> list[dict]:
    """Every collection of the store with its counts (what `index stats` prints): name, view, weights_sha256,
    dim, index_type, metric, generation, live (searched through the model's alias), rows (entries), items (per
    view: done items, with or without an entry)."""
    conn = connection(uri, env)
    client = client_for(conn)
    try:
        out = []
        for c in collections_of(client):
            client.load_collection(c.name)
            rows = client.query(c.name, filter="", output_fields=["count(*)"], **OWN_WRITES)[0]["count(*)"]
            out.append({**c.__dict__, "rows": int(rows)})
        ledgers = {(c["weights_sha256"], c["generation"]): c["name"] for c in out if c["view"] == LEDGER}
        for c in out:
            if c["view"] != LEDGER:
                ledger = ledgers[c["weights_sha256"], c["generation"]]
                c["items"] = int(client.query(ledger, filter=f"view == {literal(c['view'])}",
                                              output_fields=["count(*)"], **OWN_WRITES)[0]["count(*)"])
        order = {v: n for n, v in enumerate(VIEWS)}
        return sorted((c for c in out if c["view"] != LEDGER),
                      key=lambda c: (c["weights_sha256"], c["generation"], order.get(c["view"], len(order))))
    finally:
        release(conn, client)


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
        if not store.live:
            store.publish()
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
