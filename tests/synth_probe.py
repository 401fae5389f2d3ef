"""Generate a small dataset at whatever CPU dispatch level this process was started with; print what came out.

    python -m tests.synth_probe OUT      (environment: NPY_DISABLE_CPU_FEATURES, GLIBC_TUNABLES,
                                          OPENBLAS_CORETYPE, PROBE_FFMPEG_FLAGS, PROBE_X264_ASM)

numpy, glibc and OpenBLAS read their variables at start-up. FFmpeg and x264 detect the CPU
themselves: PROBE_FFMPEG_FLAGS forces FFmpeg's flags (av_force_cpu_flags) before anything is encoded,
as a CPU with fewer features would detect them, and PROBE_X264_ASM is the x264 asm level of the
unpinned control encoding below. Prints one JSON object:
    files     relative path -> md5 of every file of the dataset (the generator as shipped)
    numpy     the SIMD features numpy's dispatcher uses in this process
    ffmpeg    FFmpeg's CPU flags in force before encoding
    controls  md5s of what CPU-dispatched code computes here: numpy's own float32 arctan2, cos and exp,
              the C library's exp and sin, and the first clips encoded WITHOUT the generator's pinning
              (x264 at PROBE_X264_ASM, FFmpeg on its flags): these may differ between levels, the files must not.
Used by tests/test_synth_portable.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from dataset import config, ffmpeg_cpu, mp4, scenes, synth

CONFIG = config.SynthConfig(train=12, val=4, test=14, seed=5, train_captions=2)
CONTROL_CLIPS = 8


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def numpy_features() -> list[str]:
    from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]


def _ufunc_controls() -> dict[str, str]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(20_000) * 30).astype(np.float32)
    y = (rng.standard_normal(20_000) * 30).astype(np.float32)
    z = rng.uniform(-700, 700, 20_000)
    return {"np.arctan2 f32": _md5(np.arctan2(y, x).tobytes()), "np.cos f32": _md5(np.cos(x).tobytes()),
            "np.exp f64": _md5(np.exp(z).tobytes()),
            "libm exp, sin": _md5(json.dumps([(math.exp(v / 10), math.sin(v * 100)) for v in z.tolist()]).encode())}


def _unpinned_encoding(out: Path) -> str:
    """md5 of the first clips encoded with the CPU's own code paths (the generator without its pins)."""
    asm = os.environ.get("PROBE_X264_ASM", "auto")
    options = {k: v for k, v in mp4.X264_OPTIONS.items() if k != "x264-params"} | {"x264-params": f"asm={asm}"}
    pinned_options, pin = mp4.X264_OPTIONS, mp4.portable_cpu_paths
    mp4.X264_OPTIONS, mp4.portable_cpu_paths = options, contextlib.nullcontext
    try:
        digests = []
        for i in range(CONTROL_CLIPS):
            frames, audio = synth.render_clip(scenes.sample_scene("test", i, CONFIG), CONFIG)
            path = mp4.write_mp4(out / f"unpinned-{i}.mp4", frames, audio, CONFIG.fps, CONFIG.sample_rate)
            digests.append(_md5(path.read_bytes()))
    finally:
        mp4.X264_OPTIONS, mp4.portable_cpu_paths = pinned_options, pin
    return _md5(" ".join(digests).encode())


def main(argv: list[str] | None = None) -> None:
    out = Path((argv or sys.argv[1:])[0])
    flags = os.environ.get("PROBE_FFMPEG_FLAGS")
    if flags is not None:
        ffmpeg_cpu.force_cpu_flags(ffmpeg_cpu.cpu_flags() & int(flags, 0))
    ffmpeg_flags = ffmpeg_cpu.cpu_flags()
    data = out / "data"
    synth.synthesize(data, CONFIG, workers=1, progress=False)
    files = {p.relative_to(data).as_posix(): _md5(p.read_bytes()) for p in sorted(data.rglob("*")) if p.is_file()}
    scenes = [json.loads(line) for split in config.SPLITS
              for line in (data / "scenes" / f"{split}.jsonl").read_text().splitlines()]
    controls = {**_ufunc_controls(), "unpinned encoding": _unpinned_encoding(out)}
    print(json.dumps({"files": files, "numpy": numpy_features(), "ffmpeg": ffmpeg_flags, "controls": controls,
                      "covers": {a: sorted({str(s[a]) for s in scenes}) for a in ("kind", "ambient", "pattern")}}))


if __name__ == "__main__":
    main()
