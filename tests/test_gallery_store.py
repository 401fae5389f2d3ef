"""The gallery store on real Milvus Lite (a .db in each test's tmp dir): engines, writes, filters, search,
another model's collections."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving.gallery_store import (GalleryStore, IndexConfig, ItemMeta, ModelMismatchError, StoreError,
                                   collection_name, connection)
from serving.index import Entries


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def forge(uri: Path, name: str, digest: str) -> None:
    """A collection `name` whose properties say it was built by the model with `digest`."""
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(uri))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=8)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=2)
    params = client.prepare_index_params()
    params.add_index("embedding", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=params,
                             properties={"omniretriever.format": "omniretriever-store-v1",
                                         "omniretriever.weights_sha256": digest, "omniretriever.view": "t"})
    client.close()


def test_the_uri_picks_the_engine_and_other_schemes_are_refused(tmp_path):
    assert connection(tmp_path / "g.db") == connection(str(tmp_path / "g.db"))
    lite = connection(tmp_path / "g.db")
    assert lite.engine == "lite" and lite.uri == str(tmp_path / "g.db")
    token_file = tmp_path / "token"
    token_file.write_text("root:Milvus\n")
    cluster = connection("https://milvus.example:19530", {"OMNIRETRIEVER_MILVUS_TOKEN_FILE": str(token_file)})
    assert (cluster.engine, cluster.token) == ("cluster", "root:Milvus") and "Milvus" not in repr(cluster)
    assert connection("http://h:19530", {"OMNIRETRIEVER_MILVUS_TOKEN": "t"}).token == "t"
    (tmp_path / "file.db").write_text("not a store")
    for uri, env, message in [("s3://bucket/g.db", {}, "s3:// is not supported"),
                              ("file:///tmp/g.db", {}, "file:// is not supported"),
                              ("gallery", {}, "ending in .db"),
                              (str(tmp_path / "file.db"), {}, "is not a Milvus Lite store"),
                              ("http://h:1", {"OMNIRETRIEVER_MILVUS_TOKEN": "a",
                                              "OMNIRETRIEVER_MILVUS_TOKEN_FILE": "b"}, "set one"),
                              ("http://h:1", {"OMNIRETRIEVER_MILVUS_TOKEN_FILE": str(tmp_path / "no")}, "cannot read")]:
        with pytest.raises(StoreError, match=message):
            connection(uri, env)
    with pytest.raises(StoreError, match="index type 'IVF_PQ'"):
        IndexConfig("IVF_PQ")
    assert IndexConfig.default("lite").index_type == "FLAT" and IndexConfig.default("cluster").index_type == "HNSW"


def test_a_lite_store_open_in_another_process_is_refused_clearly(tmp_path):
    uri = tmp_path / "g.db"
    holder = subprocess.Popen([sys.executable, "-c", f"""
from serving.gallery_store import GalleryStore
import sys
store = GalleryStore.open({str(uri)!r}, "a" * 64)
print("open", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(StoreError, match="is open in another process"):
            GalleryStore.open(uri)
    finally:
        holder.communicate("", timeout=60)
    with GalleryStore.open(uri, "a" * 64) as store:  # free once that process is gone
        assert store.views == ()


def test_upsert_delete_filter_and_another_models_collections(tmp_path):
    uri, digest = tmp_path / "g.db", "a" * 64
    gallery = unit_rows(40, 16, 0)
    ids = [f"id{i // 2}" for i in range(40)]  # 20 items of two windows each
    entries = Entries(ids, np.array([0.0, 2.0] * 20), np.array([2.0, 4.0] * 20), ["av"] * 38 + ["v"] * 2)
    meta = {i: ItemMeta(media_uri=f"videos/{i}.mp4", split="test" if int(i[2:]) % 2 else "train", source="s",
                        duration=4.0, content_hash=f"h{i}") for i in dict.fromkeys(ids)}
    with GalleryStore.open(uri, digest, IndexConfig("FLAT", "IP")) as store:
        store.ensure_view("av", 16)
        store.replace_items("av", list(meta), gallery, entries, meta)
        store.replace_items("av", list(meta), gallery, entries, meta)  # again: the same rows, none doubled
        assert store.count("av") == (40, 20)
        assert store.done("av", {"id1": "hid1", "id2": "changed", "zz": "x"}) == {"id1"}
        hits = store.search(gallery[[4, 7]], "av", 5)
        scores = gallery[[4, 7]] @ gallery.T
        want = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        assert hits.ids.tolist() == [[ids[j] for j in row] for row in want]
        np.testing.assert_allclose(hits.scores, np.take_along_axis(scores, want, 1), atol=1e-5)
        assert hits.start[0, 0] == 0.0 and hits.start[1, 0] == 2.0 and hits.uris[0, 0] == "videos/id2.mp4"
        only = store.search(gallery[:3], "av", 40, filter='split == "test" and start >= 2.0')
        assert only.ids.shape == (3, 10) and all(int(i[2:]) % 2 for i in only.ids.ravel())
        assert (only.start == 2.0).all()
        assert store.search(gallery[:1], "av", 5, filter='modalities == "v"').ids.tolist() == [["id19"] * 2]
        assert store.remove("av", ids=["id0", "nope"]) == ["id0"]
        assert sorted(store.remove("av", where='media_uri like "videos/id1%"')) == sorted(
            ["id1"] + [f"id{i}" for i in range(10, 20)])
        assert store.count("av") == (16, 8) and store.done("av", {"id1": "hid1"}) == set()
        with pytest.raises(StoreError, match="filter 'start >>> 1'"):
            store.search(gallery[:1], "av", 5, filter="start >>> 1")
        ties = Entries(["b", "c", "a"], np.zeros(3), np.ones(3), ["av"] * 3)
        store.replace_items("av", ["b", "c", "a"], np.repeat(gallery[:1], 3, 0), ties,
                            {i: ItemMeta() for i in "abc"})
        assert store.search(gallery[:1], "av", 3).ids.tolist() == [["a", "b", "c"]]  # equal scores: by key
    with GalleryStore.open(uri, "b" * 64) as other:
        with pytest.raises(ModelMismatchError, match=f"built by other models \\({'a' * 16}\\)"):
            other.search(gallery[:1], "av", 3)
    with pytest.raises(StoreError, match="was created with FLAT/IP, not HNSW/COSINE"):
        with GalleryStore.open(uri, digest, IndexConfig("HNSW")) as store:
            store.ensure_view("av", 16)
    forge(uri, collection_name(digest, "t"), "a" * 16 + "c" * 48)  # named for this model, recorded as another's
    with pytest.raises(ModelMismatchError, match=f"built by the model with weights sha256 {'a' * 16 + 'c' * 48}"):
        GalleryStore.open(uri, digest)
