"""Serving throughput and latency: in-process ONNX Runtime vs Triton direct vs through the KServe transformer.

    python bench/serving.py [--model runs/default] [--data data] [--seconds 4] [--concurrency 1 8 32]

One run exports --model to a temporary repository, starts the real local endpoint (tritonserver with the
python backend + the transformer) and drives every path with the same one-row queries, side by side:

    in-process ORT            encoder arrays -> onnxruntime.InferenceSession.run of the joint graph in this
                              process (the baseline)
    in-process ORT, text graph  captions only: text_ids and text_mask -> ORT on the text graph in this process
    in-process prep + ORT     the raw query -> model.inference.Preprocessor -> ORT on the graph serving uses
    Triton direct             encoder arrays -> tritonclient.grpc -> tritonserver (dynamic batching), to the
                              model the transformer uses (omniretriever-text-encoder for captions)
    transformer               the raw query -> tritonclient.grpc -> transformer (preprocess) -> Triton over grpc-v2

at each concurrency (client threads with a request in flight each), for two workloads: a caption ("text")
and a clip's video and audio ("av", decoded from mp4 bytes). The figure is each path's throughput as a
ratio of in-process ORT on the joint graph at the same workload and concurrency ("x in-process"), and as a
ratio of in-process ORT on the graph the path itself runs ("x same graph": the text graph for captions);
p50/p99 are per-request latencies.
Prints a table and writes bench/results/serving.json. A model that does not exist is replaced by a
randomly initialised tiny one (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

# This file shares its name with the `serving` package: take bench/ off the front of sys.path (where Python
# put it) so `import serving` finds the package, and keep it at the end for `common`.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(_BENCH.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH] + [str(_BENCH)]
from common import report  # noqa: E402

from model.inference import Preprocessor  # noqa: E402
from model.store import load_model  # noqa: E402

WORKLOADS = ("text", "av")
PATHS = ("in-process ORT", "in-process ORT, text graph", "in-process prep + ORT", "Triton direct", "transformer")
TEXT_GRAPH = "in-process ORT, text graph"  # measured for the text workload only


def random_model(out: Path) -> Path:
    """A tiny model with random weights and a tokenizer trained on a few captions."""
    from model.config import load_config
    from model.encoder import OmniEncoder
    from model.store import save_model
    from model.text import TextTokenizer

    cfg = load_config("tiny")
    tok = TextTokenizer.train(["a red square moves left while a low tone plays"], cfg.vocab_size, cfg.max_text_len)
    return save_model(out / "model", OmniEncoder(cfg).eval(), tok)


def queries(data: Path, n: int, work: Path) -> list[tuple[str, bytes]]:
    """(caption, mp4 bytes) of n clips: from --data if it is a dataset, else a small synthetic one."""
    from model.manifest import read_split, resolve_media

    if not (data / "manifests").is_dir():
        from dataset.config import SynthConfig
        from dataset.synth import synthesize

        data = work / "data"
        synthesize(data, SynthConfig(train=0, val=0, test=n), progress=False)
    records = read_split(data, "test")[:n]
    return [(r.text, resolve_media(data, r.video).read_bytes()) for r in records]


def rows_for(workload: str, items: list[tuple[str, bytes]]) -> list[dict]:
    return [{"text": t} if workload == "text" else {"video": m, "audio": m} for t, m in items]


def run_cell(call: Callable[[int, int], None], concurrency: int, seconds: float) -> dict:
    """`concurrency` threads calling call(worker, i) back to back for `seconds`; throughput and latency."""
    stop_at = time.perf_counter() + seconds

    def worker(wid: int) -> list[float]:
        times, i = [], 0
        while time.perf_counter() < stop_at or i < 2:
            start = time.perf_counter()
            call(wid, i)
            times.append(time.perf_counter() - start)
            i += 1
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = np.concatenate([np.asarray(t) for t in pool.map(worker, range(concurrency))])
    wall = time.perf_counter() - start
    return {"requests": int(latencies.size), "req/s": latencies.size / wall,
            "p50 ms": float(np.percentile(latencies, 50) * 1e3), "p99 ms": float(np.percentile(latencies, 99) * 1e3)}


class Paths:
    """The ways of embedding one query, each a call(worker, i) on the i-th query of the workload."""

    def __init__(self, repo: Path, prep: Preprocessor, endpoint, items: list, concurrency: int):
        import onnxruntime as ort
        import tritonclient.grpc as grpcclient

        from serving.client import query_inputs, split_url
        from serving.repository import VERSION, production_dir
        from serving.tensors import ENCODER_MODEL, TEXT_ENCODER_MODEL

        def session(model: str):
            path = production_dir(repo) / model / VERSION / "model.onnx"
            return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) if path.is_file() else None

        self.session, self.text_session = session(ENCODER_MODEL), session(TEXT_ENCODER_MODEL)
        self.prep = prep
        self.grpc = grpcclient
        self.query_inputs = query_inputs
        self.triton = [grpcclient.InferenceServerClient(split_url(endpoint.triton_grpc_url)[1]) for _ in range(concurrency)]
        self.transformer = [grpcclient.InferenceServerClient(split_url(endpoint.grpc_url)[1]) for _ in range(concurrency)]
        self.items = items

    def calls(self, workload: str) -> dict[str, Callable[[int, int], None]]:
        """path -> call; captions run on the text graph where the repository has one, as serving does."""
        from model.export import TEXT_INPUTS
        from serving.client import encoder_inputs
        from serving.tensors import EMBEDDING, EMBEDDING_MODEL, ENCODER_MODEL, TEXT_ENCODER_MODEL

        rows = rows_for(workload, self.items)
        arrays = [self.prep([row]) for row in rows]
        text = workload == "text" and self.text_session is not None
        served_arrays = [{k: a[k] for k in TEXT_INPUTS} for a in arrays] if text else arrays
        served, model = (self.text_session, TEXT_ENCODER_MODEL) if text else (self.session, ENCODER_MODEL)
        triton_inputs = [encoder_inputs(self.grpc, a) for a in served_arrays]
        n = len(rows)

        def prep_and_run(w: int, i: int) -> None:
            prepared = self.prep([rows[i % n]])
            served.run([EMBEDDING], {k: prepared[k] for k in TEXT_INPUTS} if text else prepared)

        def transformer(w: int, i: int) -> None:
            row = rows[i % n]
            inputs = self.query_inputs(self.grpc, row.get("text"), row.get("video"), row.get("audio"))
            self.transformer[w].infer(EMBEDDING_MODEL, inputs)

        calls = {"in-process ORT": lambda w, i: self.session.run([EMBEDDING], arrays[i % n])}
        if text:
            calls[TEXT_GRAPH] = lambda w, i: self.text_session.run([EMBEDDING], served_arrays[i % n])
        return calls | {
            "in-process prep + ORT": prep_and_run,
            "Triton direct": lambda w, i: self.triton[w].infer(model, triton_inputs[i % n]),
            "transformer": transformer,
        }


def measure(model: Path, items: list, work: Path, concurrencies: list[int], seconds: float,
            workloads: tuple[str, ...] = WORKLOADS) -> list[dict]:
    """Export `model` into `work`, start the endpoint, and time every path, workload and concurrency."""
    from rich.progress import Progress

    from serving.launcher import LocalEndpoint
    from serving.repository import build_repository

    repo = build_repository(model, work / "repo")
    rows: list[dict] = []
    with LocalEndpoint(repo, startup_timeout=300) as endpoint:
        paths = Paths(repo, Preprocessor.from_model(load_model(model)), endpoint, items, max(concurrencies))
        with Progress(transient=True) as bar:
            task = bar.add_task("benchmarking", total=len(workloads) * len(concurrencies) * len(PATHS))
            for workload in workloads:
                calls = paths.calls(workload)
                for fn in calls.values():  # warm up every path once (sessions, connections, caches)
                    fn(0, 0)
                for concurrency in concurrencies:
                    for path in PATHS:
                        bar.advance(task)
                        if path not in calls:
                            continue
                        bar.update(task, description=f"{workload} c={concurrency} {path}")
                        cell = run_cell(calls[path], concurrency, seconds)
                        rows.append({"workload": workload, "concurrency": concurrency, "path": path, **cell})
    for row in rows:
        same = [r for r in rows if r["workload"] == row["workload"] and r["concurrency"] == row["concurrency"]]
        base = next(r for r in same if r["path"] == PATHS[0])
        graph = next((r for r in same if r["path"] == TEXT_GRAPH), base)  # what the served path runs
        row["x in-process"] = row["req/s"] / base["req/s"]
        row["x same graph"] = row["req/s"] / (base if row["path"] == PATHS[0] else graph)["req/s"]
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("runs/default"))
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--seconds", type=float, default=4.0, help="per path, workload and concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--queries", type=int, default=32, help="distinct queries cycled through")
    ap.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    args = ap.parse_args(argv)

    load_at_start = os.getloadavg()[0]  # a shared machine's load moves these figures; it is recorded with them
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        trained = (args.model / "model" / "config.json").exists() or (args.model / "config.json").exists()
        model = args.model if trained else random_model(work)
        items = queries(args.data, args.queries, work)
        rows = measure(model, items, work, args.concurrency, args.seconds, tuple(args.workloads))
    extra = {"model": str(args.model if trained else "random tiny"), "seconds_per_cell": args.seconds,
             "queries": len(items), "load_average": {"start": load_at_start, "end": os.getloadavg()[0]},
             "paths": PATHS}
    os.environ.setdefault("COLUMNS", "120")  # one line per row when the output is not a terminal
    report("serving", f"Serving one-row queries ({extra['model']}): throughput x in-process ORT", rows, extra)


if __name__ == "__main__":
    main()
