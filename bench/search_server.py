"""Gallery search on a Milvus server instead of Milvus Lite: what a query costs through the store and the
transformer, side by side with the embed alone and in-process ONNX Runtime, at each collection size.

    unshare -rn python tests/netns.py python bench/search_server.py [--sizes 10000 100000] [--index HNSW]
    python bench/search_server.py --uri http://milvus.example:19530 ...     # a server or cluster of your own

Without --uri it starts Milvus 2.3.5 standalone (the `milvus` package, a test dependency: the server binary with
embedded etcd and local storage, the code a cluster's nodes run, in one process) for the run and stops it after.
That server listens on every interface and cannot be told otherwise, so it is only started in a private network
namespace, where loopback is the one interface (tests/netns.py under unshare -rn); elsewhere the run refuses.
With --uri (token from $OMNIRETRIEVER_MILVUS_TOKEN, as serving reads it) the server is yours: the run drops
the bench model's collections there before each size and after the run, nothing else.

For each size, the model's av gallery of synthetic clustered unit embeddings (bench/search.py's) is written
through GalleryStore with --index (HNSW, the cluster default), published, and searched: one query vector from
this process ("store direct"), then through the real local endpoint (tritonserver + the KServe transformer)
started on the server: a caption through `omniretriever-search` (top_k 10, gallery av), the same caption through
`omniretriever` alone and in-process ONNX Runtime, p50/p99 at each concurrency. Prints the tables and writes
bench/results/search_server.json (--out to write elsewhere). A model that does not exist is replaced by a
randomly initialised tiny one.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_BENCH = Path(__file__).resolve().parent


def _bench_search():
    """bench/search.py as a module (it sets up sys.path for the `serving` package and bench/common)."""
    spec = importlib.util.spec_from_file_location("bench_search", _BENCH / "search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bs = _bench_search()
from common import report, table  # noqa: E402  (on sys.path once bench/search.py is loaded)


def isolated() -> bool:
    """Whether this process is in a network namespace of loopback alone."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


class ServerRun(bs.Run):
    """bench/search.py's run, its store a Milvus server: one URI for every size, the model's collections
    dropped before each."""

    def __init__(self, args, work: Path, progress: Progress, server: str):
        super().__init__(args, work, progress)
        self.server = server

    def uri(self, n: int, spec: str = "FLAT") -> str:
        return self.server

    def drop(self) -> None:
        from pymilvus import MilvusClient

        from serving.store.schema import alias_name

        client = MilvusClient(uri=self.server, token=os.environ.get("OMNIRETRIEVER_MILVUS_TOKEN", ""))
        mine = alias_name(self.digest, "")  # omniretriever_<digest16>_
        for name in client.list_collections():
            if name.startswith(mine):
                for alias in client.list_aliases(name).get("aliases", []):
                    client.drop_alias(alias)
                client.drop_collection(name)
        client.close()

    def fill(self, n: int) -> dict:
        from serving.store import GalleryStore

        self.drop()
        task = self.progress.add_task(f"filling {self.args.index} {n:,}", total=n)
        start = time.perf_counter()
        with GalleryStore.open(self.server, self.digest, bs.index_config(self.args.index)) as store:
            store.ensure_view(bs.VIEW, self.dim)
            bs.fill_new_items(store, n, self.dim, lambda rows: self.progress.advance(task, rows))
            written = time.perf_counter()
            store.publish()  # flush, index, load, alias
            self._wait_indexed(store, n)
        sealed = time.perf_counter()
        self.progress.remove_task(task)
        built = {"index": self.args.index, "write s": written - start, "items/s": n / (written - start),
                 "publish + index s": sealed - written}
        self.log(f"{self.args.index} collection of {n:,}: {built['items/s']:,.0f} items/s, published and indexed "
                 f"in {built['publish + index s']:.1f} s")
        return built

    def _wait_indexed(self, store, n: int, timeout: float = 600) -> None:
        """Until the server reports every row of the view indexed (searches of unindexed rows scan them)."""
        name = store.info(bs.VIEW).name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            desc = store.client.describe_index(name, "embedding")
            if int(desc.get("indexed_rows", 0)) >= n and int(desc.get("pending_index_rows", 0)) == 0:
                return
            time.sleep(1)
        raise TimeoutError(f"{name}: the server had not indexed its {n:,} rows after {timeout:.0f} s ({desc})")

    def store_side(self, n: int) -> None:
        from serving.store import GalleryStore

        built = self.fill(n)
        queries = bs.synthetic_queries(n, self.dim, 64)
        with GalleryStore.open(self.server, self.digest) as store:  # as the transformer opens it
            self._cells(n, "store direct", lambda w, i: store.search(queries[i % len(queries)][None], bs.VIEW, bs.TOP_K))
        self.collections[n] = built


def start_server(base: Path):
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base))
    server.start()
    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("runs/default"))
    ap.add_argument("--uri", default=None, help="a Milvus server or cluster of your own (default: start Milvus "
                                                 "2.3.5 standalone, in a private network namespace only)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--index", default="HNSW", help="TYPE or TYPE:METRIC of the gallery (bench/search.py's names)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per path, size and concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--add-items", type=int, default=32, help="generated clips whose captions are the queries")
    ap.add_argument("--out", type=Path, default=None, help="where the JSON goes (default bench/results/search_server.json)")
    args = ap.parse_args(argv)
    if args.uri is None and not isolated():
        ap.error("the Milvus standalone server listens on every interface: run this in a private network namespace "
                 "(unshare -rn python tests/netns.py python bench/search_server.py ...), or give --uri")
    args.sizes, args.served_sizes = sorted(set(args.sizes)), sorted(set(args.sizes))
    os.environ.setdefault("COLUMNS", "160")

    load_at_start = os.getloadavg()[0]
    server = None
    with tempfile.TemporaryDirectory(prefix="bench-search-server-") as tmp, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     transient=True) as progress:
        from serving.repository import build_repository

        work = Path(tmp)
        try:
            if args.uri is None:
                task = progress.add_task("starting Milvus 2.3.5 standalone", total=None)
                server = start_server(work / "milvus")
                progress.remove_task(task)
            uri = args.uri or f"http://127.0.0.1:{server.listen_port}"
            run = ServerRun(args, work, progress, uri)
            from pymilvus import MilvusClient

            version = MilvusClient(uri=uri, token=os.environ.get("OMNIRETRIEVER_MILVUS_TOKEN", "")).get_server_version()
            run.log(f"Milvus {version} at {uri}")
            repo = build_repository(run.model, work / "repo")
            items = run.bs.queries(run.clips(), 32, work)
            try:
                for n in args.sizes:
                    run.store_side(n)
                    run.served(n, repo, items)
            finally:
                run.drop()
            elapsed = time.perf_counter() - run.started
        finally:
            if server is not None:
                server.stop()

    goals = bs.targets(run)
    console = Console()
    if goals:
        console.print(table("targets: embed x in-process ORT; search / embed", goals))
    main_n = 100_000 if 100_000 in args.sizes else max(args.sizes)
    at = next((g for g in goals if g["entries"] == main_n and g["concurrency"] == min(args.concurrency)), None)
    summary = {f"search p50 / embed p50 at c={min(args.concurrency)} ({main_n} entries; target <= 1.2)":
               at["search p50 / embed p50"] if at else None}
    for k, v in summary.items():
        console.print(f"  target: {k}: {'n/a' if v is None else f'{v:.3f}'}")
    extra = {"model": run.model_name, "dim": run.dim, "server": f"Milvus {version}" + ("" if args.uri else
             " standalone (the milvus package), in this process's network namespace"),
             "index": args.index, "seconds_per_cell": args.seconds, "elapsed_s": elapsed,
             "load_average": {"start": load_at_start, "end": os.getloadavg()[0]}, "errors": run.errors,
             "collections": {str(k): v for k, v in run.collections.items()},
             "targets": {"summary": summary, "rows": goals}}
    report("search_server", f"Gallery search latency on a Milvus server ({run.model_name}, dim {run.dim}, "
           f"{args.index}, top_k {bs.TOP_K})", run.latency, extra, out=args.out)


if __name__ == "__main__":
    main()
