"""Decoding throughput.

    python bench/decode.py [--data data] [--split train] [--clips 300]
    python bench/decode.py --lengths 4,30,300 [--height 1080] [--fps 30] [--gop 2] [--frames 16]

The first form: clips/s with no cache, filling the cache, and from a warm cache, on the dataset at
--data (generated if missing, a small one). The three passes run side by side in one process on the
same clips; the figure is the warm-cache speed-up over decoding.

The second: seconds to decode --frames frames from one H.264 clip of each length (generated, --height
p 16:9, --fps, a keyframe every --gop s; best of --repeats), by seeking to each pick's keyframe (the default) and by
decoding the clip from its start (seek=False, what every decode did before seeking), side by side in
one process on the same files; both give the same frames (checked).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from model.cache import FeatureCache  # noqa: E402
from model.manifest import read_split, resolve_media  # noqa: E402
from model.media import DecodeConfig, MediaLimits, decode_clip, decode_video  # noqa: E402


def timed_pass(paths: list[tuple[Path, Path]], fn) -> float:
    start = time.perf_counter()
    for video, audio in paths:
        fn(video, audio)
    return time.perf_counter() - start


def cache_bench(args: argparse.Namespace) -> None:
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


def write_clip(path: Path, seconds: float, height: int, fps: int, gop_seconds: float) -> Path:
    """An H.264 clip (libx264 ultrafast, yuv420p) of moving gradients: every frame differs."""
    import av

    width = (height * 16 // 9) // 2 * 2
    ramp = (np.arange(height + width + 220) % 220 + 16).astype(np.uint8)  # luma[r, c] = ramp[r + c + shift]
    gop = max(1, int(round(gop_seconds * fps)))
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={
            "preset": "ultrafast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        chroma = np.full((height // 2, width), 128, np.uint8)
        for i in range(int(round(seconds * fps))):
            luma = np.lib.stride_tricks.as_strided(ramp[7 * i % 220:], shape=(height, width), strides=(1, 1))
            frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def length_bench(args: argparse.Namespace) -> None:
    lengths = [float(s) for s in args.lengths.split(",")]
    config = DecodeConfig(num_frames=args.frames)
    limits = MediaLimits(max_seconds=max(lengths) + 1, max_file_bytes=1 << 34)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lengths-") as tmp:
        for seconds in lengths:
            path = write_clip(Path(tmp) / f"clip-{seconds:g}s.mp4", seconds, args.height, args.fps, args.gop)
            times: dict[str, float] = {}
            frames: dict[str, np.ndarray] = {}
            if seconds == lengths[0]:
                for seek in (False, True):  # warm up: first-call costs (libraries, caches) out of the figures
                    decode_video(path, config, limits, seek=seek)
            for name, seek in (("linear (before)", False), ("seek (after)", True)):
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    frames[name] = decode_video(path, config, limits, seek=seek)
                    best = min(best, time.perf_counter() - start)
                times[name] = best
            same = bool(np.array_equal(*frames.values()))
            rows.append({"clip": f"{seconds:g} s {args.height}p{args.fps}", "MB": path.stat().st_size / 1e6,
                         **{f"{k} s": v for k, v in times.items()},
                         "speed-up": times["linear (before)"] / times["seek (after)"], "same frames": str(same)})
            if not same:
                raise SystemExit(f"seek and linear decoding differ on {path}")
    report("decode_lengths", f"{args.frames} frames from one clip, keyframe every {args.gop:g} s (1 process, best of "
           f"{args.repeats})", rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--lengths", default=None, help="comma-separated clip lengths in seconds: the seek benchmark")
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="timings per clip and method; the best is kept")
    args = ap.parse_args(argv)
    if args.lengths:
        length_bench(args)
    else:
        cache_bench(args)


if __name__ == "__main__":
    main()
