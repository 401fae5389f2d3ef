"""Decoding throughput: clips/s with no cache, filling the cache, and from a warm cache.

    python bench/decode.py [--data data] [--split train] [--clips 300]

Uses the dataset at --data (generated if missing, a small one). The three passes run side by side
in one process on the same clips; the figure is the warm-cache speed-up over decoding.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from model.cache import FeatureCache  # noqa: E402
from model.manifest import read_split, resolve_media  # noqa: E402
from model.media import decode_clip  # noqa: E402


def timed_pass(paths: list[tuple[Path, Path]], fn) -> float:
    start = time.perf_counter()
    for video, audio in paths:
        fn(video, audio)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--clips", type=int, default=300)
    args = ap.parse_args(argv)
    if not (args.data / "manifests").is_dir():
        from dataset.config import SynthConfig
        from dataset.synth import synthesize

        args.data = Path(tempfile.mkdtemp(prefix="bench-data-")) / "data"
        synthesize(args.data, SynthConfig(train=args.clips, val=0, test=0))
    records = read_split(args.data, args.split)[: args.clips]
    paths = [(resolve_media(args.data, r.video), resolve_media(args.data, r.audio)) for r in records]
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        cache = FeatureCache(tmp)
        passes = {"decode (no cache)": lambda v, a: decode_clip(v, a),
                  "cache miss (decode + write)": cache.get, "cache hit": cache.get}
        seconds = {name: timed_pass(paths, fn) for name, fn in passes.items()}
    base = seconds["decode (no cache)"]
    rows = [{"pass": name, "clips": len(paths), "seconds": s, "clips/s": len(paths) / s, "speed-up": base / s}
            for name, s in seconds.items()]
    report("decode", f"Decoding {len(paths)} clips from {args.data}/{args.split} (1 process)", rows)


if __name__ == "__main__":
    main()
