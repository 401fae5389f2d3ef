"""The endpoint under hostile and heavy load: this tree against a baseline git ref, side by side in one run.

    python bench/serving_faults.py [--baseline REF] [--text-seconds 15] [--clip-seconds 29]

For each tree (the working tree, and --baseline's, extracted with `git archive`) a child process builds a
randomly initialised tiny model (speed does not depend on the weights), exports it, starts the real local
endpoint (tritonserver + the KServe transformer, default limits) and measures:

    empty elements   one 60 MiB binary TEXT tensor of zero-length elements, legal in size (the request limit is
                     64 MiB), sent once; /v2/health/ready is asked meanwhile every 50 ms, each time on a new
                     connection like a kubelet probe: the probes' p50 and max latency while the request is in
                     flight, and the big request's status and time.
    heavy clips      one-row caption queries over HTTP at concurrency 8, first alone, then while six clients
                     send requests of four 4K clips of --clip-seconds each (VIDEO, inside every limit) back to
                     back: the captions' p50 and p99, and what the clip requests got.

Prints a table and writes bench/results/serving_faults.json; the ratios are baseline / this tree.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

_BENCH = Path(__file__).resolve().parent
ROOT = _BENCH.parent
MiB = 1024 * 1024
CAPTIONS = ["a red square moves left while a low tone plays", "a blue star spins as a bell rings",
            "a green circle bounces over a hum", "a yellow triangle drifts right in silence"]


# --- media ------------------------------------------------------------------------------------------------------


def make_clip(path: Path, seconds: float, width: int = 3840, height: int = 2160, fps: int = 30) -> Path:
    """An H.264 mp4 of `seconds` at 4K: a textured background with a moving box (phone-camera sized)."""
    import av

    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "30"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = background.copy()
            x = (i * 16) % (width - 256)
            frame[800:1056, x:x + 256] = (255, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# --- requests ---------------------------------------------------------------------------------------------------


def binary_body(name: str, elements: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A V2 binary-tensor-extension body with one BYTES input of these elements."""
    blob = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    head = json.dumps({"inputs": [{"name": name, "shape": [len(elements)], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(blob)}}]}).encode()
    return head + blob, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}


def empty_elements_body(total_bytes: int) -> tuple[bytes, dict[str, str]]:
    """A binary TEXT tensor of zero-length elements filling `total_bytes` (4 bytes each: a zero length)."""
    count = (total_bytes - 256) // 4
    head = json.dumps({"inputs": [{"name": "TEXT", "shape": [count], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 4 * count}}]}).encode()
    return head + bytes(4 * count), {"Content-Type": "application/octet-stream",
                                     "Inference-Header-Content-Length": str(len(head))}


def caption_body(text: str) -> bytes:
    return json.dumps({"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": [text]}]}).encode()


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    if response.getheader("connection", "").lower() == "close":
        conn.close()
    return response.status


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"n": int(ms.size), "p50 ms": float(np.percentile(ms, 50)), "p99 ms": float(np.percentile(ms, 99)),
            "max ms": float(ms.max())}


# --- the measurements (in the child, against one tree's endpoint) ----------------------------------------------


def measure_empty_elements(host: str, port: int, infer: str) -> dict:
    body, headers = empty_elements_body(60 * MiB)
    probes: list[float] = []
    result: dict = {}
    done = threading.Event()

    def big() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        start = time.perf_counter()
        try:
            result["status"] = post(conn, infer, body, headers)
        except OSError as exc:
            result["status"] = f"{type(exc).__name__}"
        result["seconds"] = time.perf_counter() - start
        done.set()

    thread = threading.Thread(target=big)
    thread.start()
    while not done.is_set():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        start = time.perf_counter()
        conn.request("GET", "/v2/health/ready")
        conn.getresponse().read()
        probes.append(time.perf_counter() - start)
        conn.close()
        time.sleep(0.05)
    thread.join()
    stats = percentiles(probes)
    return {"health probes": stats["n"], "health p50 ms": stats["p50 ms"], "health max ms": stats["max ms"],
            "60 MiB status": result["status"], "60 MiB seconds": result["seconds"]}


def caption_load(host: str, port: int, infer: str, seconds: float, concurrency: int = 8) -> dict:
    stop_at = time.perf_counter() + seconds

    def worker(w: int) -> tuple[list[float], int]:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        times, errors, i = [], 0, 0
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            status = post(conn, infer, caption_body(CAPTIONS[(w + i) % len(CAPTIONS)]), {"Content-Type": "application/json"})
            times.append(time.perf_counter() - start)
            errors += status != 200
            i += 1
        return times, errors

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, range(concurrency)))
    stats = percentiles([t for times, _ in results for t in times])
    return {"text n": stats["n"], "text errors": sum(e for _, e in results), "text p50 ms": stats["p50 ms"],
            "text p99 ms": stats["p99 ms"]}


def measure_heavy_clips(host: str, port: int, infer: str, clip: bytes, seconds: float) -> dict:
    caption_load(host, port, infer, 2.0)  # warm up
    alone = caption_load(host, port, infer, seconds)
    body, headers = binary_body("VIDEO", [clip] * 4)
    stop = threading.Event()
    clip_results: list[tuple[float, int | str]] = []

    def heavy() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=300)
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status: int | str = post(conn, infer, body, headers)
            except OSError as exc:
                status = type(exc).__name__
                conn.close()
            clip_results.append((time.perf_counter() - start, status))

    clients = [threading.Thread(target=heavy) for _ in range(6)]
    for t in clients:
        t.start()
    time.sleep(1.0)  # the clip requests are uploaded and decoding
    loaded = caption_load(host, port, infer, seconds)
    stop.set()
    for t in clients:
        t.join()
    statuses: dict[str, int] = {}
    for _, status in clip_results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"alone": alone, "with clips": loaded, "clip requests": len(clip_results), "clip statuses": statuses,
            "clip p50 s": float(np.median([s for s, _ in clip_results])) if clip_results else None}


def child(tree: Path, clip_path: Path, text_seconds: float, out: Path) -> None:
    """Run in a process whose sys.path starts at `tree`: that tree's endpoint, measured."""
    sys.path.insert(0, str(tree))
    from model.config import load_config
    from model.encoder import OmniEncoder
    from model.store import save_model
    from model.text import TextTokenizer
    from serving.launcher import LocalEndpoint
    from serving.repository import build_repository
    from serving.tensors import EMBEDDING_MODEL

    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        cfg = load_config("tiny")
        tokenizer = TextTokenizer.train(CAPTIONS, cfg.vocab_size, cfg.max_text_len)
        model = save_model(work / "model", OmniEncoder(cfg).eval(), tokenizer)
        repo = build_repository(model, work / "repo")
        with LocalEndpoint(repo, startup_timeout=300) as endpoint:
            host, port = endpoint.http_url.split("//")[1].split(":")
            infer = f"/v2/models/{EMBEDDING_MODEL}/infer"
            results = {"empty elements": measure_empty_elements(host, int(port), infer),
                       "heavy clips": measure_heavy_clips(host, int(port), infer, clip_path.read_bytes(), text_seconds)}
    out.write_text(json.dumps(results))


# --- the parent: both trees, one table --------------------------------------------------------------------------


def extract(ref: str, into: Path) -> Path:
    """The files of git ref `ref` (this repository's) in `into`."""
    archive = into / "tree.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), ref], check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def run_tree(label: str, tree: Path, clip: Path, text_seconds: float, work: Path) -> dict:
    out = work / f"{label.replace(' ', '_')}.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, __file__, "--child", str(tree), "--clip", str(clip), "--text-seconds",
                    str(text_seconds), "--out", str(out)], check=True, cwd=tree, env=env)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", help="a git ref to measure beside the working tree (e.g. a commit before a fix)")
    ap.add_argument("--text-seconds", type=float, default=15.0, help="length of each caption-load window")
    ap.add_argument("--clip-seconds", type=float, default=29.0)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child(args.child, args.clip, args.text_seconds, args.out)

    sys.path.insert(0, str(_BENCH))
    from common import report
    from rich.console import Console

    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        with console.status(f"encoding a 4K clip of {args.clip_seconds:g} s"):
            clip = make_clip(work / "clip.mp4", args.clip_seconds)
        console.print(f"4K clip: {clip.stat().st_size / MiB:.1f} MiB, {args.clip_seconds:g} s")
        trees = [("this tree", ROOT)]
        if args.baseline:
            trees.insert(0, (f"baseline {args.baseline}", extract(args.baseline, work)))
        measured = {}
        for label, tree in trees:
            with console.status(f"measuring {label}"):
                measured[label] = run_tree(label, tree, clip, args.text_seconds, work)
    rows = []
    for label, m in measured.items():
        empty, heavy = m["empty elements"], m["heavy clips"]
        rows.append({"tree": label, "health p50 ms (60 MiB in flight)": empty["health p50 ms"],
                     "health max ms": empty["health max ms"], "60 MiB status": str(empty["60 MiB status"]),
                     "60 MiB s": empty["60 MiB seconds"], "text p99 ms alone": heavy["alone"]["text p99 ms"],
                     "text p99 ms (6 clip reqs)": heavy["with clips"]["text p99 ms"],
                     "text p50 ms (6 clip reqs)": heavy["with clips"]["text p50 ms"],
                     "text errors": heavy["alone"]["text errors"] + heavy["with clips"]["text errors"],
                     "clip reqs": heavy["clip requests"], "clip statuses": json.dumps(heavy["clip statuses"])})
    extra = {"measured": measured, "clip_seconds": args.clip_seconds, "text_seconds": args.text_seconds,
             "load_average_end": os.getloadavg()[0]}
    if len(rows) == 2:
        base, this = rows
        extra["ratios (baseline / this tree)"] = {
            k: base[k] / this[k] for k in ("health max ms", "text p99 ms (6 clip reqs)", "60 MiB s") if this[k]}
    os.environ.setdefault("COLUMNS", "200")
    report("serving_faults", "The endpoint under a 60 MiB request of empty elements and six requests of 4K clips",
           rows, extra)
    if "ratios (baseline / this tree)" in extra:
        console.print(extra["ratios (baseline / this tree)"])


if __name__ == "__main__":
    main()
