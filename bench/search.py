"""Gallery search: what `index add` writes a second, what a query costs through the store and the transformer,
the recall of each index type, and a sizing estimate for 10^8 entries.

    python bench/search.py [--model runs/default] [--sizes 10000 100000] [--served-sizes 10000 100000]
                           [--seconds 3] [--concurrency 1 8 32] [--recall-size 100000] [--recall-queries 200]
    python bench/search.py --sizes 10000 100000 1000000     # also the 1M collection, store direct (~17 min here)

The default run takes about 10 minutes on the 2-core machine; --sizes 2000 --served-sizes 2000 --recall-size
5000 --seconds 1 about one.

One run, every figure side by side (the shared 2-core machine is noisy), on Milvus Lite (a local .db store):

    add          `index add` (serving.library.add_items: decode, embed, write, mark done) of --add-items generated
                 clips in views av and t, then its re-run (nothing changed: the ledger check only); and
                 GalleryStore.replace_items of synthetic unit embeddings without decoding: in batches of 5000
                 new items while a collection is filled (the delete of their old entries skipped: new items have
                 none), and in batches of 64 (index add's) of existing items into the full collection
    latency      for each of --sizes entries (synthetic, dimension of the model's embeddings, view av, FLAT):
                 GalleryStore.search of one query vector ("store direct") in this process; then, for
                 --served-sizes, the real local endpoint (tritonserver + the KServe transformer) started on that
                 store: a caption through `omniretriever-search` (top_k 10, gallery av), the same caption
                 through the embedding model `omniretriever` alone, and in-process ONNX Runtime on the
                 caption's encoder arrays (bench/serving.py's paths); p50/p99 per request at each concurrency
                 (client threads, one request in flight each)
    recall       recall@10 of FLAT, FLAT with metric IP, AUTOINDEX, HNSW and IVF_FLAT (IndexConfig.named) on
                 --recall-size entries against exact numpy top-10 of the same --recall-queries queries, the store
                 opened with the index's config (its search params) and as the transformer opens it (without
                 one); p50 of a one-query search; each collection's fill rate and seal (index build) time
    sizing       memory, shards, replicas for 10^8 entries of 256, 1024 and 3584 dims from the measured
                 per-entry costs (memory a process loading the largest collection grows by, fill rate, the
                 store-direct p50 against entries); every assumption is printed and stored with the figures

Synthetic entries are clustered like embeddings: one cluster a hundred entries, each entry its cluster's
Gaussian centre plus Gaussian noise of the same scale, normalised (members' cosine about 0.5); a query is a
fresh member of a random cluster. Milvus Lite runs in the process that opens a store and holds the store's
lock until that process releases it, so each collection is built and searched here first, released, and only
then served. Prints the tables and writes bench/results/search.json; "load" is the machine's 1-minute load average when
a row was measured (other work on a shared machine moves the figures). A model that does not exist is replaced
by a randomly initialised tiny one (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# bench/ holds serving.py, which would shadow the `serving` package: take bench/ off the front of sys.path
# and keep it at the end for `common` (as bench/serving.py does).
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(_BENCH.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH] + [str(_BENCH)]
from common import report, table  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402


def _bench_serving():
    """bench/serving.py as a module (its name is the serving package's): its model, queries and paths."""
    spec = importlib.util.spec_from_file_location("bench_serving", _BENCH / "serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VIEW = "av"
TOP_K = 10
BUILD_BATCH = 5000  # items per replace_items call while a collection is filled
ADD_BATCH = 64  # index add's --batch-size default
MIN_REQUESTS = 5  # a cell's fewest requests, however slow they are
CLUSTER = 100  # synthetic entries per cluster
HNSW_M = 16
GIB = 2 ** 30
SIZING = {"entries": 10 ** 8, "node_usable_gib": 64, "replicas": 2, "scalar_bytes": 256}


# --- synthetic entries ---------------------------------------------------------------------------------------

def _centres(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, n]).standard_normal((max(1, n // CLUSTER), dim), dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def entry_chunks(n: int, dim: int, seed: int = 0, chunk: int = BUILD_BATCH) -> Iterator[np.ndarray]:
    """The n synthetic unit embeddings of a collection, `chunk` rows at a time (the same for the same n)."""
    centres = _centres(n, dim, seed)
    for c, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([seed, n, c])
        m = min(chunk, n - start)
        yield _unit(centres[rng.integers(len(centres), size=m)] + rng.standard_normal((m, dim), dtype=np.float32))


def synthetic_queries(n_entries: int, dim: int, count: int, draw: int = 0, seed: int = 0) -> np.ndarray:
    """`count` unit queries for the collection of n_entries (and `seed`): fresh members of random clusters of
    it, a different set for each `draw`."""
    centres = _centres(n_entries, dim, seed)
    rng = np.random.default_rng([seed, n_entries, 10 ** 9 + draw])
    return _unit(centres[rng.integers(len(centres), size=count)] + rng.standard_normal((count, dim), dtype=np.float32))


def item_id(i: int) -> str:
    return f"syn-{i:07d}"


# --- the store ------------------------------------------------------------------------------------------------

class _NewItemsOnly:
    """A store client for filling a collection with new items: replace_items' delete of their old entries
    (which new items do not have) is skipped; everything else is the client's."""

    def __init__(self, client):
        self._client = client

    def delete(self, *args, **kwargs) -> None:
        return None

    def __getattr__(self, name: str):
        return getattr(self._client, name)


def release(uri: Path) -> None:
    """Stop the Milvus Lite server this process runs for `uri` (closing the store's clients does not): its data
    is sealed and the store's lock freed for another process."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(uri))


def _meta():
    from serving.store import ItemMeta

    return ItemMeta(media_uri="", split="synthetic", source="bench", duration=4.0, content_hash="synthetic")


def _write(store, ids: list[str], emb: np.ndarray) -> None:
    from serving.index import Entries

    meta = _meta()
    entries = Entries(ids, np.zeros(len(ids)), np.full(len(ids), 4.0), [VIEW] * len(ids))
    store.replace_items(VIEW, ids, emb, entries, {i: meta for i in ids})


def fill_new_items(store, n: int, dim: int, on_rows: Callable[[int], None]) -> None:
    """Write the n synthetic entries (one an item) into the store's VIEW, created beforehand, in batches of
    BUILD_BATCH new items, with replace_items' delete of their old entries skipped (_NewItemsOnly)."""
    client, store.client = store.client, _NewItemsOnly(store.client)
    try:
        done = 0
        for emb in entry_chunks(n, dim):
            _write(store, [item_id(i) for i in range(done, done + len(emb))], emb)
            done += len(emb)
            on_rows(len(emb))
    finally:
        store.client = client


def index_config(spec: str):
    """IndexConfig.named of "TYPE" or "TYPE:METRIC" (COSINE unless given)."""
    from serving.store import IndexConfig

    index_type, _, metric = spec.partition(":")
    return IndexConfig.named(index_type, metric or "COSINE")


def build_collection(uri: Path, digest: str, n: int, dim: int, spec: str, on_rows: Callable[[int], None]) -> dict:
    """Fill a fresh store at `uri` with the n synthetic entries (one an item) in batches of BUILD_BATCH new
    items, then seal it (release): items/s of the writes, seconds of the seal, bytes on disk."""
    from serving.store import GalleryStore

    start = time.perf_counter()
    with GalleryStore.open(uri, digest, index_config(spec)) as store:
        store.ensure_view(VIEW, dim)
        opened = time.perf_counter()
        fill_new_items(store, n, dim, on_rows)
        written = time.perf_counter()
        store.publish()  # served: the transformer searches only a published generation
    release(uri)
    sealed = time.perf_counter()
    disk = sum(f.stat().st_size for f in uri.rglob("*") if f.is_file())
    return {"open s": opened - start, "write s": written - opened, "items/s": n / (written - opened),
            "seal s": sealed - written, "disk bytes": disk}


def rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def loaded_bytes(uri: Path, digest: str, dim: int) -> int:
    """How much a fresh process's RSS grows when it opens the store at `uri` and loads `VIEW` (a first search):
    Milvus Lite runs in the process that opens a store, so this is what serving the collection costs in memory."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(uri), digest, str(dim)], check=True,
                         capture_output=True, text=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["bytes"])


def _rss_child(uri: str, digest: str, dim: int) -> None:
    import milvus_lite.adapter.grpc.server  # noqa: F401 - imported before the first reading: code, not data
    import pymilvus  # noqa: F401

    from serving.store import GalleryStore

    before = rss()
    with GalleryStore.open(uri, digest) as store:
        store.search(np.ones((1, dim), np.float32), VIEW, TOP_K)
        print(json.dumps({"bytes": rss() - before}))


# --- timing ---------------------------------------------------------------------------------------------------

def run_cell(call: Callable[[int, int], object], concurrency: int, seconds: float) -> dict:
    """`concurrency` threads calling call(worker, i) back to back for `seconds` (each at least once, and
    MIN_REQUESTS in all): requests answered, failures, throughput and latency of the answered ones
    (bench/serving.py's cell, with failures counted instead of raised, so a refused request under load shows)."""
    stop_at = time.perf_counter() + seconds
    each = -(-MIN_REQUESTS // concurrency)
    errors: list[str] = []

    def worker(wid: int) -> list[float]:
        times, i = [], 0
        while time.perf_counter() < stop_at or i < each:
            t0 = time.perf_counter()
            try:
                call(wid, i)
                times.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            i += 1
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = np.concatenate([np.asarray(t, float) for t in pool.map(worker, range(concurrency))])
    wall = time.perf_counter() - start
    ok = latencies.size > 0
    return {"requests": int(latencies.size), "errors": len(errors), "req/s": latencies.size / wall,
            "p50 ms": float(np.percentile(latencies, 50) * 1e3) if ok else float("nan"),
            "p99 ms": float(np.percentile(latencies, 99) * 1e3) if ok else float("nan"),
            "first error": errors[0] if errors else ""}


# --- the steps ------------------------------------------------------------------------------------------------

class Run:
    """The state of one benchmark run: its arguments, work directory, model, progress and results."""

    def __init__(self, args: argparse.Namespace, work: Path, progress: Progress):
        from model.store import load_model, weights_digest

        self.args, self.work, self.progress = args, work, progress
        self.bs = _bench_serving()
        trained = (args.model / "model" / "config.json").exists() or (args.model / "config.json").exists()
        self.model_name = str(args.model) if trained else "random tiny"
        self.model = args.model if trained else self.bs.random_model(work)
        self.loaded = load_model(self.model)
        self.dim = self.loaded.config.embed_dim
        self.digest = weights_digest(self.model)
        self.add_rows: list[dict] = []
        self.latency: list[dict] = []
        self.collections: dict[int, dict] = {}
        self.recall: list[dict] = []
        self.errors: dict[str, str] = {}  # "entries path c=C" -> the first failure of that cell
        self.started = time.perf_counter()

    def log(self, message: str) -> None:
        self.progress.console.print(f"[{time.perf_counter() - self.started:6.0f} s] {message}")

    def uri(self, n: int, spec: str = "FLAT") -> Path:
        return self.work / f"gallery-{spec.lower().replace(':', '-')}-{n}.db"

    # add with decoding ------------------------------------------------------------------------------------

    def clips(self) -> Path:
        from dataset.config import SynthConfig
        from dataset.synth import synthesize

        data = self.work / "data"
        task = self.progress.add_task(f"generating {self.args.add_items} clips", total=None)
        synthesize(data, SynthConfig(train=0, val=0, test=self.args.add_items), progress=False)
        self.progress.remove_task(task)
        return data

    def add_decoding(self, data: Path) -> None:
        from serving.library import add_items

        uri, before = self.work / "add.db", 0
        for label in ("index add (decode + embed + write)", "index add re-run (unchanged: ledger check)"):
            task = self.progress.add_task(label, total=self.args.add_items)
            start = time.perf_counter()
            rep = add_items(self.model, data, [VIEW, "t"], uri, split="test",
                            on_batch=lambda b, task=task: self.progress.update(task, completed=b.items_done))
            seconds = time.perf_counter() - start
            self.progress.remove_task(task)
            entries = sum(rep.entries.values())
            self.add_rows.append({"write": label, "collection entries": before, "items": rep.records,
                                  "entries written": entries, "seconds": seconds, "items/s": rep.records / seconds})
            before += entries
            self.log(f"{label}: {rep.records} items, {entries} entries in {seconds:.1f} s")
        release(uri)

    # collections, store-direct latency, index add at size ---------------------------------------------------

    def build(self, n: int, spec: str = "FLAT") -> dict:
        uri = self.uri(n, spec)
        task = self.progress.add_task(f"filling {spec} {n:,}", total=n)
        built = build_collection(uri, self.digest, n, self.dim, spec,
                                 lambda rows: self.progress.advance(task, rows))
        self.progress.remove_task(task)
        self.log(f"{spec} collection of {n:,}: {built['items/s']:,.0f} items/s, sealed in {built['seal s']:.1f} s, "
                 f"{built['disk bytes'] / n:,.0f} bytes/entry on disk")
        return built

    def store_side(self, n: int) -> None:
        """Build the FLAT collection of n, search it from this process at each concurrency, time index add's
        batches of existing items into it, and release it."""
        from serving.store import GalleryStore

        built = self.build(n)
        self.add_rows.append({"write": f"replace_items, {BUILD_BATCH} new items a call (filling)",
                              "collection entries": n, "items": n, "entries written": n, "seconds": built["write s"],
                              "items/s": built["items/s"]})
        queries = synthetic_queries(n, self.dim, 64)
        uri = self.uri(n)
        built["memory bytes"] = loaded_bytes(uri, self.digest, self.dim)
        with GalleryStore.open(uri, self.digest) as store:
            start = time.perf_counter()
            store.search(queries[:1], VIEW, TOP_K)  # loads the collection
            built["load s"] = time.perf_counter() - start
            self._cells(n, "store direct", lambda w, i: store.search(queries[i % len(queries)][None], VIEW, TOP_K))
            self._add_at_size(store, n)
        release(uri)
        self.collections[n] = built

    def _add_at_size(self, store, n: int) -> None:
        """replace_items of existing items (same embeddings) in index add's batches, into the full collection."""
        batches = 2 if n <= 100_000 else 1
        first = next(entry_chunks(n, self.dim))  # the first entries' embeddings
        start = time.perf_counter()
        for b in range(batches):
            rows = slice(b * ADD_BATCH, (b + 1) * ADD_BATCH)
            _write(store, [item_id(i) for i in range(rows.start, rows.stop)], first[rows])
        seconds = time.perf_counter() - start
        items = batches * ADD_BATCH
        self.add_rows.append({"write": f"replace_items, {ADD_BATCH} existing items a call (index add's batch)",
                              "collection entries": n, "items": items, "entries written": items, "seconds": seconds,
                              "items/s": items / seconds})
        self.log(f"index add batches into {n:,}: {items / seconds:,.1f} items/s")

    def _cells(self, n: int, path: str, call: Callable[[int, int], object]) -> None:
        call(0, 0)  # warm up: connections, sessions, the collection loaded
        for c in self.args.concurrency:
            task = self.progress.add_task(f"{n:,} entries: {path} c={c}", total=None)
            self._cell(n, path, c, call)
            self.progress.remove_task(task)

    def _cell(self, n: int, path: str, c: int, call: Callable[[int, int], object]) -> None:
        cell = run_cell(call, c, self.args.seconds)
        if first := cell.pop("first error"):
            self.errors[f"{n} {path} c={c}"] = first
        self.latency.append({"entries": n, "path": path, "concurrency": c, **cell, "load": os.getloadavg()[0]})
        self.log(f"{n:,} {path} c={c}: p50 {cell['p50 ms']:.1f} ms, p99 {cell['p99 ms']:.1f} ms, "
                 f"{cell['req/s']:.1f} req/s" + (f", {cell['errors']} errors ({first})" if cell["errors"] else ""))

    # served ---------------------------------------------------------------------------------------------------

    def served(self, n: int, repo: Path, items: list) -> None:
        """The endpoint started on the collection of n: search, embed and in-process ORT at each concurrency."""
        import tritonclient.grpc as grpcclient

        from model.inference import Preprocessor
        from serving.client import query_inputs, split_url
        from serving.launcher import LocalEndpoint
        from serving.tensors import IDS, SEARCH_MODEL

        task = self.progress.add_task(f"starting the endpoint on {n:,} entries", total=None)
        with LocalEndpoint(repo, index=str(self.uri(n)), startup_timeout=300) as endpoint:
            self.progress.remove_task(task)
            width = max(self.args.concurrency)
            paths = self.bs.Paths(repo, Preprocessor.from_model(self.loaded), endpoint, items, width)
            calls = paths.calls("text")
            clients = [grpcclient.InferenceServerClient(split_url(endpoint.grpc_url)[1]) for _ in range(width)]
            captions = [text for text, _ in items]

            def search(w: int, i: int) -> None:
                result = clients[w].infer(SEARCH_MODEL, query_inputs(grpcclient, captions[i % len(captions)], None, None),
                                          parameters={"top_k": TOP_K, "gallery": VIEW})
                if result.as_numpy(IDS).shape != (1, TOP_K):
                    raise RuntimeError(f"search answered {result.as_numpy(IDS).shape} ids")

            for c in self.args.concurrency:  # the three paths side by side at each concurrency
                for path, call in (("in-process ORT (text)", calls["in-process ORT"]),
                                   ("transformer embed (text)", calls["transformer"]),
                                   ("transformer search (text)", search)):
                    call(0, 0)
                    task = self.progress.add_task(f"{n:,} entries: {path} c={c}", total=None)
                    self._cell(n, path, c, call)
                    self.progress.remove_task(task)

    # recall -----------------------------------------------------------------------------------------------------

    def recalls(self) -> None:
        from serving.store import GalleryStore

        n = self.args.recall_size
        gallery = np.concatenate(list(entry_chunks(n, self.dim)))
        queries = synthetic_queries(n, self.dim, self.args.recall_queries, draw=1)
        scores = queries @ gallery.T
        exact = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]
        del scores
        for spec in self.args.index_types:
            uri, own = self.uri(n, spec), index_config(spec)
            built = self.collections.get(n) if spec == "FLAT" and uri.exists() else None
            built = built or self.build(n, spec)
            row = {"index": own.index_type, "metric": own.metric, "entries": n, "queries": len(queries)}
            for opened, config in (("own search params", own), ("as served", None)):
                with GalleryStore.open(uri, self.digest, config) as store:
                    found = []
                    for chunk in range(0, len(queries), 50):
                        found += [[int(i.split("-")[1]) for i in ids if i]
                                  for ids in store.search(queries[chunk: chunk + 50], VIEW, TOP_K).ids]
                    recall = float(np.mean([len(set(f) & set(e)) / TOP_K for f, e in zip(found, exact)]))
                    row[f"recall@10 ({opened})"] = recall
                    if config is not None:
                        times = []
                        for q in queries[: self.args.latency_queries]:
                            t0 = time.perf_counter()
                            store.search(q[None], VIEW, TOP_K)
                            times.append(time.perf_counter() - t0)
                        row["p50 ms"] = float(np.median(times) * 1e3)
                        row["search params"] = str(config.search or "none (Milvus's defaults)")
            row |= {"build items/s": built["items/s"], "seal s": built["seal s"], "load": os.getloadavg()[0]}
            release(uri)
            if spec != "FLAT" or n not in self.collections:
                shutil.rmtree(uri, ignore_errors=True)
            self.recall.append(row)
            self.log(f"{spec}: recall@10 {row['recall@10 (own search params)']:.3f} "
                     f"(as served {row['recall@10 (as served)']:.3f}), p50 {row['p50 ms']:.1f} ms")


# --- derived figures -------------------------------------------------------------------------------------------

def _cell(rows: list[dict], n: int, path: str, c: int) -> dict | None:
    return next((r for r in rows if r["entries"] == n and r["path"] == path and r["concurrency"] == c), None)


def targets(run: Run) -> list[dict]:
    out = []
    cs = run.args.concurrency
    for n in run.args.served_sizes:
        for c in cs:
            ort, embed, search = (_cell(run.latency, n, p, c) for p in
                                  ("in-process ORT (text)", "transformer embed (text)", "transformer search (text)"))
            if not (ort and embed and search):
                continue
            out.append({"entries": n, "concurrency": c, "embed req/s x in-process ORT": embed["req/s"] / ort["req/s"],
                        "search p50 / embed p50": search["p50 ms"] / embed["p50 ms"],
                        "search p99 / embed p99": search["p99 ms"] / embed["p99 ms"],
                        "search ms added (p50)": search["p50 ms"] - embed["p50 ms"]})
    return out


def per_query_scaling(run: Run) -> dict:
    """Least-squares fit of store-direct p50 at concurrency 1 against entries: ms a query per million entries."""
    pts = [(n, r["p50 ms"]) for n in sorted(run.collections) if (r := _cell(run.latency, n, "store direct", 1))]
    if len(pts) < 2:
        return {}
    x, y = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
    slope, intercept = np.polyfit(x, y, 1)
    return {"ms per million entries": float(slope * 1e6), "fixed ms": float(intercept), "points": pts,
            "dim": run.dim}


def _per_entry(collections: dict[int, dict], key: str) -> float:
    """Bytes an entry of `key`: the growth from the smallest collection to the largest (a process's fixed
    memory cancels), or the one collection's figure over its entries."""
    if not collections:
        return float("nan")
    lo, hi = min(collections), max(collections)
    if lo == hi:
        return collections[hi][key] / hi
    return (collections[hi][key] - collections[lo][key]) / (hi - lo)


def sizing(run: Run) -> dict:
    """10^8 entries of each dimension: memory, shards, replicas, from the measured costs and SIZING's assumptions."""
    from model.config import load_config

    n, node, replicas, scalars = (SIZING[k] for k in ("entries", "node_usable_gib", "replicas", "scalar_bytes"))
    # the embedding sizes: tiny/base's head, qwen2_5_omni's 1024-d MLP head, and the Qwen2.5-Omni-7B thinker's
    # hidden size (model/omni/random_checkpoint.py), what an embedding without a head would have
    dims = {int(load_config("tiny").embed_dim): "tiny, base", int(load_config("qwen2_5_omni").embed_dim): "qwen2_5_omni",
            3584: "7B hidden"}
    biggest = max(run.collections) if run.collections else None
    measured = run.collections.get(biggest, {})
    lite_bytes, disk_bytes = (_per_entry(run.collections, k) for k in ("memory bytes", "disk bytes"))
    rate = measured.get("items/s", float("nan"))
    scaling = per_query_scaling(run)
    rows = []
    for dim, what in dims.items():
        raw, graph, other = n * dim * 4, n * HNSW_M * 2 * 4, n * scalars
        total = raw + graph + other
        shards = math.ceil(total / (node * GIB))
        flat_ms = scaling.get("ms per million entries", float("nan")) * n / 1e6 * dim / run.dim
        rows.append({"dim": dim, "model": what, "vectors GiB": raw / GIB, "HNSW links GiB": graph / GIB,
                     "scalars GiB": other / GIB, "a replica GiB": total / GIB, "shards": shards,
                     "replicas": replicas, "query nodes": shards * replicas, "FLAT s/query, 1 Lite": flat_ms / 1e3,
                     "FLAT s/query, a shard": flat_ms / 1e3 / shards})
    assumptions = [
        f"{n:.0e} entries (one a window or caption), float32 vectors: raw = entries x dim x 4 bytes",
        f"HNSW M={HNSW_M}: about M x 2 x 4 = {HNSW_M * 8} bytes of links an entry (level 0; upper levels add ~1/M)",
        f"scalar fields (pk, item_id, media_uri, split, source, content_hash, numbers) ~{scalars} bytes an entry, "
        "all loaded for filtering",
        f"{node} GiB usable per query node (after the OS, the index build and segment-load headroom); "
        "shards = ceil(per-replica memory / usable)",
        f"{replicas} replicas (one node lost keeps every shard served); more replicas for QPS, which needs a "
        "measurement on the cluster (HNSW cost grows ~log N, not measured here)",
        "FLAT per-query cost scales linearly with entries x dim from the store-direct p50 fit on Lite "
        f"(measured at dim {run.dim}); it shows why 10^8 needs an approximate index, not what a cluster's FLAT costs",
        f"ingest at the measured Lite fill rate ({rate:,.0f} items/s, one process, dim {run.dim}): "
        f"{n / rate / 3600:,.1f} h for 10^8 in one process; a cluster spreads inserts over its shards' channels",
    ]
    return {"rows": rows, "assumptions": assumptions, "measured": {
        "collection entries": biggest,
        "Lite memory bytes per entry (RSS of a process loading the collection, smallest to largest)": lite_bytes,
        "Lite disk bytes per entry (smallest to largest)": disk_bytes, "raw bytes per entry": run.dim * 4, "fill items/s": rate,
        "per-query scaling (store direct, c=1)": scaling}}


# --- main ------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("runs/default"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                    help="collection sizes searched from this process (store direct); add 1000000 for the 1M "
                         "collection (about 7 more minutes here)")
    ap.add_argument("--served-sizes", type=int, nargs="*", default=[10_000, 100_000],
                    help="of --sizes, those also served through the transformer")
    ap.add_argument("--seconds", type=float, default=3.0, help="per path, size and concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--add-items", type=int, default=128, help="generated clips for index add with decoding")
    ap.add_argument("--recall-size", type=int, default=100_000)
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument("--latency-queries", type=int, default=20, help="one-query searches for each index type's p50")
    ap.add_argument("--index-types", nargs="+", default=["FLAT", "FLAT:IP", "AUTOINDEX", "HNSW", "IVF_FLAT"],
                    help="TYPE or TYPE:METRIC (COSINE unless given) for the recall table")
    ap.add_argument("--workdir", type=Path, default=None, help="where the stores go (default: a temp dir)")
    ap.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        return _rss_child(args.rss_child[0], args.rss_child[1], int(args.rss_child[2]))
    args.sizes = sorted(set(args.sizes))
    if not set(args.served_sizes) <= set(args.sizes):
        ap.error(f"--served-sizes {args.served_sizes} must be among --sizes {args.sizes}")
    os.environ.setdefault("COLUMNS", "160")  # one line per row when the output is not a terminal

    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-search-", dir=args.workdir) as tmp, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     transient=True) as progress:
        from serving.repository import build_repository

        work = Path(tmp)
        run = Run(args, work, progress)
        repo = build_repository(run.model, work / "repo")
        data = run.clips()
        items = run.bs.queries(data, 32, work)
        run.add_decoding(data)
        for n in args.sizes:
            run.store_side(n)
            if n in args.served_sizes:
                run.served(n, repo, items)
        run.recalls()
        elapsed = time.perf_counter() - run.started

    size = sizing(run)
    goals = targets(run)
    console = Console()
    console.print(table("index add and replace_items: items a second (Milvus Lite)", run.add_rows))
    console.print(table(f"recall@10 vs exact numpy ({args.recall_size:,} entries, {args.recall_queries} queries)",
                        run.recall))
    if goals:
        console.print(table("targets: embed x in-process ORT; search / embed", goals))
    console.print(table(f"sizing for {SIZING['entries']:.0e} entries", size["rows"]))
    for line in size["assumptions"]:
        console.print(f"  assumption: {line}")
    for key, value in size["measured"].items():
        if isinstance(value, (int, float)):
            console.print(f"  measured: {key}: {value:,.1f}")
    if scaling := size["measured"]["per-query scaling (store direct, c=1)"]:
        console.print(f"  measured: store-direct p50 at c=1 grows {scaling['ms per million entries']:,.0f} ms per million "
                      f"entries (dim {scaling['dim']})")
    flat = next((r for r in run.recall if (r["index"], r["metric"]) == ("FLAT", "COSINE")), None)
    main_n = 100_000 if 100_000 in args.served_sizes else (max(args.served_sizes) if args.served_sizes else None)
    top_c = max(args.concurrency)
    summary = {
        "embed req/s at c=%d x in-process ORT (%s entries)" % (top_c, main_n):
            next((g["embed req/s x in-process ORT"] for g in goals if g["entries"] == main_n and g["concurrency"] == top_c), None),
        "search p50 / embed p50 at c=1 (%s entries; target <= 1.2)" % main_n:
            next((g["search p50 / embed p50"] for g in goals if g["entries"] == main_n and g["concurrency"] == 1), None),
        "recall@10 of FLAT (target >= 0.98)": flat["recall@10 (own search params)"] if flat else None,
    }
    for k, v in summary.items():
        console.print(f"  target: {k}: {'n/a' if v is None else f'{v:.3f}'}")
    extra = {"model": run.model_name, "dim": run.dim, "seconds_per_cell": args.seconds, "elapsed_s": elapsed,
             "load_average": {"start": load_at_start, "end": os.getloadavg()[0]},
             "synthetic": f"{CLUSTER} entries a cluster, Gaussian centre + Gaussian noise of the same scale, normalised; "
                          "queries: fresh members of random clusters",
             "errors": run.errors, "add": run.add_rows, "collections": {str(k): v for k, v in run.collections.items()}, "recall": run.recall,
             "targets": {"summary": summary, "rows": goals}, "sizing": size}
    report("search", f"Gallery search latency ({run.model_name}, dim {run.dim}, Milvus Lite FLAT, top_k {TOP_K})",
           run.latency, extra)


if __name__ == "__main__":
    main()
