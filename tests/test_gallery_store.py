"""The gallery store on real Milvus Lite (a .db in each test's tmp dir): engines, writes, filters, search
parity with the index file, `index add` (idempotent, resumable after kill -9), remove and stats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model.manifest import read_split
from omniretriever.cli import app
from serving.store import (REBUILD, GalleryStore, IndexConfig, ItemMeta, ModelMismatchError, StoreError,
                                   collection_name, connection, entry_key, store_collections)
from serving.index import Entries, build_index_report, load_index

VIEWS = ("av", "t")
WINDOW = ("--window", "2", "--stride", "1")  # the 2-4 s test clips become 2-3 windows each


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def library(tiny_data, tmp_path_factory) -> Path:
    """tiny_data's test split as a library manifest: test-000001 without audio (video only), test-000002
    without video (audio only)."""
    lines = []
    for r in read_split(tiny_data, "test"):
        obj = json.loads(r.to_json())
        obj["audio"] = None if r.id == "test-000001" else obj["audio"]
        obj["video"] = None if r.id == "test-000002" else obj["video"]
        lines.append(json.dumps(obj))
    path = tmp_path_factory.mktemp("library") / "library.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def reference_file(tiny_run, tiny_data, library, tmp_path_factory) -> Path:
    """`index build` of the library, windowed as the tests add it: what the store must hold."""
    out = tmp_path_factory.mktemp("reference") / "library.safetensors"
    return build_index_report(tiny_run, tiny_data, "test", list(VIEWS), out, manifest=library, workers=1,
                              progress=False, window=2.0, stride=1.0).index


@pytest.fixture(scope="module")
def reference(reference_file):
    return load_index(reference_file)


def add(run, data, uri, *extra: str):
    return CliRunner().invoke(app, ["index", "add", "--model", str(run), "--data", str(data), "--uri", str(uri),
                                    "--view", "av", "--view", "t", "--workers", "1", *WINDOW, *extra])


def stored(uri, view: str) -> dict[str, tuple[np.ndarray, str]]:
    """pk -> (embedding, modalities) of every entry of `view`."""
    with GalleryStore.open(uri) as store:
        entries, emb, _ = store.entries(view)
    return {entry_key(i, s): (e, m) for i, s, e, m in zip(entries.ids, entries.start, emb, entries.modalities)}


def assert_holds(uri, index) -> None:
    """The store holds exactly the index's entries (no more, none doubled), with the same embeddings."""
    for view in VIEWS:
        got, want = stored(uri, view), index.entries[view]
        keys = [entry_key(i, s) for i, s in zip(want.ids, want.start)]
        assert sorted(got) == sorted(keys), view
        for k, e, m in zip(keys, index.embeddings[view], want.modalities):
            np.testing.assert_allclose(got[k][0], e, atol=1e-5)
            assert got[k][1] == m


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
                             properties={"omniretriever.format": "omniretriever-store-v2",
                                         "omniretriever.weights_sha256": digest, "omniretriever.view": "t",
                                         "omniretriever.generation": "1"})
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
from serving.store import GalleryStore
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
                        duration=4.0, content_hash=f"h{i}", caption=f"caption of {i} ✓") for i in dict.fromkeys(ids)}
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
        assert hits.captions.tolist() == [[f"caption of {i} ✓" for i in row] for row in hits.ids.tolist()]
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
    forge(uri, collection_name(digest, "t", 1), "a" * 16 + "c" * 48)  # named for this model, recorded as another's
    with pytest.raises(ModelMismatchError, match=f"built by the model with weights sha256 {'a' * 16 + 'c' * 48}"):
        GalleryStore.open(uri, digest)


def test_a_store_written_before_captions_is_read_and_extended_without_them(tmp_path, monkeypatch):
    """Collections of format v2 (no caption field) stay usable: searched (captions ""), added to; a rebuild
    writes v3, whose hits carry captions, through the same alias; rolling back to v2 works too."""
    import serving.store.gallery as gallery_module

    uri, digest, rows = tmp_path / "g.db", "d" * 64, unit_rows(6, 8, 3)
    entries = Entries([f"i{k}" for k in range(6)], np.zeros(6), np.ones(6), ["t"] * 6)
    meta = {i: ItemMeta(content_hash="h", caption=f"about {i}") for i in entries.ids}
    with monkeypatch.context() as old:
        old.setattr(gallery_module, "FORMAT", "omniretriever-store-v2")
        with GalleryStore.open(uri, digest) as store:
            store.ensure_view("t", 8)
            store.replace_items("t", entries.ids[:4], rows[:4], Entries(entries.ids[:4], np.zeros(4), np.ones(4),
                                                                       ["t"] * 4), meta)
            store.publish()
    with GalleryStore.open(uri, digest) as store:  # this release, on the v2 generation
        assert not store.info("t").captions
        store.replace_items("t", entries.ids[4:], rows[4:], Entries(entries.ids[4:], np.zeros(2), np.ones(2),
                                                                   ["t"] * 2), meta)
        hits = store.search(rows[:2], "t", 3)
        assert hits.ids[:, 0].tolist() == ["i0", "i1"] and (hits.captions == "").all()
        with GalleryStore.open(uri, digest, generation=REBUILD) as rebuild:
            rebuild.ensure_view("t", 8)
            rebuild.replace_items("t", entries.ids, rows, entries, meta)
            assert rebuild.info("t").captions and rebuild.publish() == 1
        hits = store.search(rows[:2], "t", 3)  # the client opened before the swap follows it
        assert hits.captions[:, 0].tolist() == ["about i0", "about i1"]
    res = CliRunner().invoke(app, ["index", "publish", "--uri", str(uri), "--generation", "1"])
    assert res.exit_code == 0, res.output
    with GalleryStore.open(uri, digest) as store:
        assert store.generation == 1 and (store.search(rows[:1], "t", 2).captions == "").all()


def test_an_imported_index_searches_like_the_index_and_exports_back(reference_file, reference, tmp_path):
    uri = tmp_path / "g.db"
    res = CliRunner().invoke(app, ["index", "import", "--index", str(reference_file), "--uri", str(uri)])
    assert res.exit_code == 0, res.output
    queries = np.concatenate([reference.embeddings["t"][:4], unit_rows(4, reference.dim, 1)])
    with GalleryStore.open(uri, reference.weights_sha256) as store:
        for view in VIEWS:
            hits, want = store.search(queries, view, 10), reference.search_hits(queries, view, 10)
            assert hits.ids.tolist() == want.ids.tolist(), view
            np.testing.assert_allclose(hits.scores, want.scores, atol=1e-5)
            for f in ("start", "end"):
                np.testing.assert_allclose(getattr(hits, f), getattr(want, f), atol=1e-3)
            assert hits.modalities.tolist() == want.modalities.tolist()
    assert_holds(uri, reference)
    res = CliRunner().invoke(app, ["index", "export", "--uri", str(uri), "--out", str(tmp_path / "back.safetensors")])
    assert res.exit_code == 0, res.output
    back = load_index(tmp_path / "back.safetensors")
    assert back.weights_sha256 == reference.weights_sha256 and sorted(back.views) == sorted(reference.views)
    for view in VIEWS:
        order = np.lexsort((reference.entries[view].start, np.array(reference.entries[view].ids)))
        assert back.entries[view].ids == [reference.entries[view].ids[i] for i in order]
        np.testing.assert_array_equal(back.embeddings[view], reference.embeddings[view][order])


def test_add_stores_the_library_then_skips_unchanged_items_without_decoding(tiny_run, tiny_data, library, reference,
                                                                          tmp_path, monkeypatch):
    uri = tmp_path / "g.db"
    res = add(tiny_run, tiny_data, uri, "--manifest", str(library), "--batch-size", "10")
    assert res.exit_code == 0, res.output
    assert "24 embedded, 0 unchanged" in res.output and "batch 3/3 stored, 24/24 items" in res.output
    assert_holds(uri, reference)
    av = stored(uri, "av")
    assert {m for k, (_, m) in av.items() if k.startswith("test-000001@")} == {"v"}  # video only
    assert {m for k, (_, m) in av.items() if k.startswith("test-000002@")} == {"a"}  # audio only
    with GalleryStore.open(uri) as store:
        hit = store.search(reference.embeddings["av"][:1], "av", 1)
        assert hit.uris[0, 0] == "videos/test-000000.mp4"
        assert hit.captions[0, 0] == read_split(tiny_data, "test")[0].text
    assert (tmp_path / "g.rejects.jsonl").read_text() == ""

    import model.data

    decoded: list[int] = []
    real = model.data.load_bank

    def counting(*args, **kwargs):
        bank = real(*args, **kwargs)
        decoded.append(len(set(bank.ids)))
        return bank

    monkeypatch.setattr(model.data, "load_bank", counting)
    res = add(tiny_run, tiny_data, uri, "--manifest", str(library))
    assert res.exit_code == 0 and "0 embedded, 24 unchanged" in res.output and decoded == [], res.output
    lines = library.read_text().splitlines()
    changed = json.loads(lines[5]) | {"text": "a different caption"}
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines[:5] + [json.dumps(changed)] + lines[6:]) + "\n")
    before = stored(uri, "t")
    res = add(tiny_run, tiny_data, uri, "--manifest", str(edited))
    assert res.exit_code == 0 and "1 embedded, 23 unchanged" in res.output and decoded == [1], res.output
    after = stored(uri, "t")
    assert sorted(after) == sorted(before)
    assert [k for k in after if not np.array_equal(after[k][0], before[k][0])] == [f"{changed['id']}@0.000"]
    assert stored(uri, "av").keys() == av.keys()

    res = CliRunner().invoke(app, ["index", "remove", "--uri", str(uri), "--view", "av", "--view", "t",
                                   "--where", 'item_id in ["test-000003", "test-000004"]'])
    assert res.exit_code == 0 and res.output.count("removed 2 items") == 2, res.output
    res = CliRunner().invoke(app, ["index", "remove", "--uri", str(uri), "--view", "t", "--ids", "test-000005"])
    assert "t: removed 1 items (test-000005); 21 items, 21 entries left" in res.output, res.output
    res = CliRunner().invoke(app, ["index", "stats", "--uri", str(uri), "--json"])
    stats = {c["view"]: c for c in json.loads(res.output)}
    assert stats["t"]["rows"] == 21 and stats["av"]["items"] == 22 and stats["av"]["index_type"] == "FLAT"
    assert stats["av"]["weights_sha256"] == reference.weights_sha256 and stats["av"]["dim"] == reference.dim
    res = add(tiny_run, tiny_data, uri, "--manifest", str(edited))  # puts back exactly what was removed
    assert res.exit_code == 0 and "3 embedded, 21 unchanged" in res.output and decoded == [1, 3], res.output
    assert [c["items"] for c in store_collections(uri)] == [24, 24]


def test_add_skips_bad_records_and_reports_their_lines(tiny_run, tiny_data, tmp_path):
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    good = (tiny_data / "videos" / "test-000000.mp4").read_bytes()
    (data / "videos" / "good.mp4").write_bytes(good)
    (data / "videos" / "bad.mp4").write_bytes(good[:500])
    manifest = tmp_path / "uploads.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"id": "good", "text": "a clip", "video": "videos/good.mp4", "audio": "videos/good.mp4"}),
        json.dumps({"id": "bad", "text": "truncated", "video": "videos/bad.mp4", "audio": None}),
        '{"id": "broken"',
        json.dumps({"id": "escape", "text": "out of the root", "video": "../outside.mp4", "audio": None})]) + "\n")
    res = CliRunner().invoke(app, ["index", "add", "--model", str(tiny_run), "--data", str(data), "--uri",
                                   str(tmp_path / "u.db"), "--manifest", str(manifest), "--workers", "1"])
    assert res.exit_code == 3, res.output
    assert "1 embedded, 0 unchanged" in res.output and "skipped 3 records" in res.output
    rejects = [json.loads(x) for x in (tmp_path / "u.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["id"], r["field"], r["error"]) for r in rejects] == [
        (2, "bad", "video", "MediaError"), (3, None, None, "ManifestError"), (4, "escape", "video", "PathEscapeError")]
    assert [c["items"] for c in store_collections(tmp_path / "u.db")] == [1]


@pytest.mark.slow  # about 15 s: a subprocess killed with SIGKILL mid-add, then the rest
def test_an_add_killed_mid_run_resumes_without_losing_or_doubling(tiny_run, tiny_data, library, reference, tmp_path):
    uri = tmp_path / "g.db"
    args = [sys.executable, "-m", "omniretriever.cli", "index", "add", "--model", str(tiny_run), "--data",
            str(tiny_data), "--uri", str(uri), "--manifest", str(library), "--view", "av", "--view", "t",
            "--workers", "1", "--batch-size", "3", *WINDOW]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    for line in proc.stderr:
        assert time.time() < deadline, "no batch stored in time"
        if "batch 2/8 stored" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the add ended before it was killed"
    done = [c["items"] for c in store_collections(uri)]
    assert all(6 <= n < 24 for n in done), done
    assert not any(c["live"] for c in store_collections(uri))  # a half-built first gallery is never searched
    res = add(tiny_run, tiny_data, uri, "--manifest", str(library), "--batch-size", "3")
    assert res.exit_code == 0, res.output
    assert f"{24 - min(done)} embedded, {min(done)} unchanged" in res.output
    assert "generation 1: published" in res.output
    assert_holds(uri, reference)
    assert [(c["items"], c["generation"], c["live"]) for c in store_collections(uri)] == [(24, 1, True)] * 2


def test_a_rebuild_is_searched_only_once_published_then_at_once_by_every_client(tmp_path):
    """Generations: the first gallery and a rebuild are written unpublished; publish swaps the aliases, which a
    client opened before the swap follows on its next search; a killed rebuild is resumed, not restarted; old
    generations go, the one served before stays for a rollback; a view the new generation lacks stops being
    served."""
    uri, digest = tmp_path / "g.db", "d" * 64
    old, new = unit_rows(6, 8, 1), unit_rows(6, 8, 2)

    def fill(store, vectors, prefix, views=("av", "t")):
        ids = [f"{prefix}{i}" for i in range(len(vectors))]
        entries = Entries(ids, np.zeros(len(ids)), np.ones(len(ids)), ["av"] * len(ids))
        for view in views:
            store.ensure_view(view, 8)
            store.replace_items(view, ids, vectors, entries, {i: ItemMeta(content_hash=f"h{i}") for i in ids})

    with GalleryStore.open(uri, digest) as first:
        assert (first.generation, first.live) == (1, False)
        fill(first, old, "old")
        assert first.publish() is None and first.live
    reader = GalleryStore.open(uri, digest)  # what a serving process holds
    assert (reader.generation, reader.live) == (1, True)
    assert reader.search(new[:1], "av", 1).ids[0, 0].startswith("old")
    with GalleryStore.open(uri, digest, generation=REBUILD) as rebuild:
        assert (rebuild.generation, rebuild.live) == (2, False)
        fill(rebuild, new[:3], "new")
    with GalleryStore.open(uri, digest, generation=REBUILD) as rebuild:  # a killed rebuild: resumed
        assert rebuild.generation == 2 and rebuild.done("av", {"new0": "hnew0", "new5": "hnew5"}) == {"new0"}
        assert reader.search(new[:1], "av", 1).ids[0, 0].startswith("old")  # unpublished: not searched
        fill(rebuild, new, "new")
        assert rebuild.publish() == 1
    assert reader.search(new[:1], "av", 1).ids.tolist() == [["new0"]]  # the same client, after the swap
    assert [(c["generation"], c["live"]) for c in store_collections(uri)] == [(1, False), (1, False), (2, True), (2, True)]
    with GalleryStore.open(uri, digest, generation=REBUILD) as rebuild:
        assert rebuild.generation == 3
        fill(rebuild, old, "third", views=("av",))
        assert rebuild.publish() == 2
    assert reader.search(old[:1], "av", 1).ids.tolist() == [["third0"]]
    assert reader.count("av") == (6, 6) and reader.media_uri("third0") is None  # its own generation is gone
    stats = [(c["view"], c["generation"], c["live"]) for c in store_collections(uri)]
    assert stats == [("t", 2, False), ("av", 2, False), ("av", 3, True)]  # generation 1 dropped
    with GalleryStore.open(uri, digest) as live:
        assert (live.generation, live.views) == (3, ("av",))
        with pytest.raises(StoreError, match="no t gallery of this model in generation 3"):
            live.search(old[:1], "t", 1)
    reader.close()
    res = CliRunner().invoke(app, ["index", "publish", "--uri", str(uri), "--generation", "2"])  # a rollback
    assert res.exit_code == 0 and "generation 2 of the model dddddddddddddddd… served (t, av); generation 3 before" in res.output
    with GalleryStore.open(uri, digest) as live:
        assert live.generation == 2 and live.search(new[:1], "t", 1).ids.tolist() == [["new0"]]
    res = CliRunner().invoke(app, ["index", "stats", "--uri", str(uri)])
    assert "view  av  generation 2 (served): 6 entries, 6 items" in res.output
    assert "view  av  generation 3 (not served)" in res.output
    res = CliRunner().invoke(app, ["index", "publish", "--uri", str(uri), "--generation", "7"])
    assert res.exit_code == 2 and "holds no generation 7" in res.output
