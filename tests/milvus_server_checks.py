"""The gallery store on a real Milvus server, not Lite: what a cluster does differently.

Run by tests/test_milvus_server.py inside a private network namespace (tests/netns.py), never collected on its
own (its name does not start with test_): the server is Milvus 2.3.5 standalone (the `milvus` package: the
server binary with embedded etcd and local storage, the code a cluster's nodes run, in one process), which
listens on every interface and cannot be told otherwise. Unlike Lite it answers reads with the collection's
consistency level (Bounded: possibly a few seconds stale), returns hits without the primary key's field
name, and builds HNSW (the cluster default) for real. Each test starts from an empty server.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from omniretriever.cli import app
from serving.index import Entries
from serving.store import REBUILD, GalleryStore, IndexConfig, ItemMeta, store_collections
from tests.test_gallery_store import add, assert_holds, library, reference, reference_file, unit_rows  # noqa: F401


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from milvus import MilvusServer

    milvus = MilvusServer()
    milvus.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    milvus.start()  # waits for its health check
    try:
        yield f"http://127.0.0.1:{milvus.listen_port}"
    finally:
        milvus.stop()


@pytest.fixture
def uri(server):
    """The server, emptied of what an earlier test left."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=server)
    for name in client.list_collections():
        for alias in client.list_aliases(name).get("aliases", []):
            client.drop_alias(alias)
        client.drop_collection(name)
    client.close()
    return server


def test_it_is_a_milvus_server(uri):
    from pymilvus import MilvusClient

    assert MilvusClient(uri=uri).get_server_version().startswith("v2.3")
    assert GalleryStore.open(uri, "a" * 64).conn.engine == "cluster"


def test_what_a_client_writes_it_reads_at_once(uri):
    """Reads that follow a write (the ledger before a re-add, counts, removals) see it: a re-added item's old
    windows are replaced, not kept beside the new ones, although the server's default consistency is Bounded."""
    ids = [f"i{k}" for k in range(10)]
    two = Entries(ids * 2, np.array([0.0] * 10 + [2.0] * 10), np.array([2.0] * 10 + [4.0] * 10), ["av"] * 20)
    one = Entries(ids, np.full(10, 1.0), np.full(10, 3.0), ["av"] * 10)
    with GalleryStore.open(uri, "a" * 64) as store:
        store.ensure_view("av", 16)
        store.replace_items("av", ids, unit_rows(20, 16, 1), two, {i: ItemMeta(content_hash="h1") for i in ids})
        assert store.done("av", {i: "h1" for i in ids}) == set(ids)
        assert store.count("av") == (20, 10)
        store.replace_items("av", ids, unit_rows(10, 16, 2), one, {i: ItemMeta(content_hash="h2") for i in ids})
        assert store.count("av") == (10, 10) and store.done("av", {i: "h1" for i in ids}) == set()
        assert store.remove("av", ["i0", "i1"]) == ["i0", "i1"] and store.count("av") == (8, 8)
        entries, _, _ = store.entries("av")
        assert sorted(entries.ids) == ids[2:] and set(entries.start) == {1.0}


def test_search_ranks_like_numpy_with_ties_in_key_order(uri):
    gallery = unit_rows(200, 16, 3)
    gallery[100:110] = gallery[0]  # ten copies of entry 0: equal scores, returned in primary-key order
    ids = [f"e{k:03d}" for k in range(200)]
    entries = Entries(ids, np.zeros(200), np.ones(200), ["t"] * 200)
    meta = {i: ItemMeta(split="test" if k % 2 else "train", content_hash="h", caption=f"caption {i}")
            for k, i in enumerate(ids)}
    queries = unit_rows(5, 16, 4)
    queries[0] = gallery[0]
    with GalleryStore.open(uri, "b" * 64, IndexConfig("FLAT", "COSINE")) as store:
        store.ensure_view("t", 16)
        store.replace_items("t", ids, gallery, entries, meta)
        store.publish()
        hits = store.search(queries, "t", 12)
        scores = queries @ gallery.T
        want = np.argsort(-scores, axis=1, kind="stable")[:, :12]
        np.testing.assert_allclose(hits.scores, np.take_along_axis(scores, want, 1), atol=1e-5)
        assert hits.ids[0, :11].tolist() == ["e000", *(f"e{k}" for k in range(100, 110))]  # the whole tie, first
        copies = {"e000", *(f"e{k}" for k in range(100, 110))}  # a tie cut by k may return any of them (server's choice)
        for got, row in zip(hits.ids[1:].tolist(), want[1:]):
            others = [i for i in got if i not in copies]
            assert others == [ids[j] for j in row if ids[j] not in copies][:len(others)]
        assert hits.captions[1].tolist() == [f"caption {i}" for i in hits.ids[1]]
        odd = store.search(queries, "t", 12, filter='split == "test"')
        assert all(int(i[1:]) % 2 for i in odd.ids.ravel())


def test_index_add_stores_a_library_and_a_rerun_skips_every_item(tiny_run, tiny_data, library, reference, uri):  # noqa: F811
    res = add(tiny_run, tiny_data, uri, "--manifest", str(library), "--batch-size", "10")
    assert res.exit_code == 0 and "24 embedded, 0 unchanged" in res.output, res.output
    assert_holds(uri, reference)
    res = add(tiny_run, tiny_data, uri, "--manifest", str(library))  # at once: the ledger just written is read
    assert res.exit_code == 0 and "0 embedded, 24 unchanged" in res.output, res.output
    stats = {c["view"]: c for c in json.loads(CliRunner().invoke(app, ["index", "stats", "--uri", uri, "--json"]).output)}
    assert stats["av"]["index_type"] == "HNSW" and stats["av"]["items"] == 24 and stats["av"]["live"]
    with GalleryStore.open(uri) as store:
        hit = store.search(reference.embeddings["av"][:1], "av", 1)  # HNSW, through the alias
        assert hit.ids[0, 0] == reference.entries["av"].ids[0] and hit.uris[0, 0] == "videos/test-000000.mp4"


def test_a_rebuild_is_served_once_published_and_rolled_back_through_aliases(uri):
    digest, old, new = "d" * 64, unit_rows(6, 8, 5), unit_rows(6, 8, 6)

    def fill(store, vectors, prefix):
        ids = [f"{prefix}{i}" for i in range(len(vectors))]
        store.ensure_view("av", 8)
        store.replace_items("av", ids, vectors, Entries(ids, np.zeros(6), np.ones(6), ["av"] * 6),
                            {i: ItemMeta(content_hash="h") for i in ids})

    with GalleryStore.open(uri, digest) as first:
        fill(first, old, "old")
        assert first.publish() is None
    with GalleryStore.open(uri, digest) as reader:  # what a serving process holds
        assert reader.search(new[:1], "av", 1).ids[0, 0].startswith("old")
        with GalleryStore.open(uri, digest, generation=REBUILD) as rebuild:
            fill(rebuild, new, "new")
            assert reader.search(new[:1], "av", 1).ids[0, 0].startswith("old")  # unpublished: not searched
            assert rebuild.publish() == 1
        assert reader.search(new[:1], "av", 1).ids.tolist() == [["new0"]]  # the same client, after the swap
    assert [(c["generation"], c["live"]) for c in store_collections(uri)] == [(1, False), (2, True)]
    res = CliRunner().invoke(app, ["index", "publish", "--uri", uri, "--generation", "1"])
    assert res.exit_code == 0 and "generation 1 of the model dddddddddddddddd… served (av); generation 2 before" in res.output
    with GalleryStore.open(uri, digest) as live:
        assert live.generation == 1 and live.search(old[:1], "av", 1).ids.tolist() == [["old0"]]
