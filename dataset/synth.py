"""The synthetic audio-video-text benchmark, written in the exact layout of OmniRetriever-Bench.

    OUT/manifests/{train,val,test}.jsonl   {"id","text","video","audio"}; video == audio == "videos/<id>.mp4"
    OUT/videos/<id>.mp4                    H.264 (libx264, yuv420p) video + AAC audio, mono
    OUT/scenes/<split>.jsonl               the latent scene of every clip (attributes, nuisances, template)
    OUT/dataset.json                       generator version, config, split sizes, media settings

Every clip is drawn from a latent scene (dataset/scenes.py). Some attributes are visible only
(background colour and pattern, object colour, motion direction), one is audible only (the ambient
sound bed) and three are shared the way real events are: the object's kind sets the timbre of its
sound, its size sets the pitch, and each of its 1-4 visible bounces is in sync with a note onset.
Captions (dataset/captions.py) come from many templates and synonyms (dataset/vocabulary.py) and
mention the object plus a random subset of the other attributes; a few templates are held out for
the test split. Frames and sound are rendered by dataset/render.py and dataset/audio.py and written
by dataset/mp4.py; this module runs the clips in a process pool and writes the tables.
docs/DATASET.md explains the design.

The scene of clip i of a split is drawn from np.random.default_rng([seed, split_index, i]), so the
output is byte-identical for a given config, whatever the worker count or order. It is also the same
on every x86-64 CPU, whatever SIMD it has: the arithmetic that decides bytes uses only correctly
rounded operations (transcendentals come from dataset/portable_math.py, never from numpy's
CPU-dispatched kernels; no BLAS), and the encoders run their portable C code (x264 with asm=0,
FFmpeg with its CPU flags forced to 0 while a file is written; dataset/ffmpeg_cpu.py).
docs/DATASET.md says why.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dataset.audio import render_audio
from dataset.config import SPLITS, SynthConfig, validate_config
from dataset.mp4 import write_mp4
from dataset.render import render_frames
from dataset.scenes import Scene, sample_scene
from dataset.summary import summarize
from dataset.vocabulary import AUDIBLE_ONLY, SHARED, TEMPLATES, TEST_ONLY_TEMPLATES, VISIBLE_ONLY
from model.manifest import Record, manifest_path, write_manifest
from model.parallel import map_with_progress
from model.store import replace_dir

GENERATOR_VERSION = "1.3.0"


def render_clip(scene: Scene, config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N, H, W, 3) uint8 RGB, audio float32 mono) of one scene."""
    return render_frames(scene, config), render_audio(scene, config)



def _make_clip(job: tuple[str, int, SynthConfig, str]) -> str:
    """Sample, render and write one clip; returns its scene as a JSON line."""
    split, index, config, videos_dir = job
    scene = sample_scene(split, index, config)
    frames, audio = render_clip(scene, config)
    write_mp4(Path(videos_dir) / f"{scene.id}.mp4", frames, audio, config.fps, config.sample_rate)
    return scene.to_json()


def _jobs(config: SynthConfig, videos_dir: Path) -> list[tuple[str, int, SynthConfig, str]]:
    return [(split, i, config, str(videos_dir)) for split, n in config.split_sizes().items() for i in range(n)]


def _run_jobs(jobs: list[Any], workers: int, progress: bool) -> list[str]:
    return list(map_with_progress(_make_clip, jobs, workers=workers, label="synth", progress=progress))


def dataset_metadata(config: SynthConfig) -> dict[str, Any]:
    """The content of dataset.json: nothing in it varies between runs of one config."""
    return {
        "name": "omniretriever-synth",
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "splits": config.split_sizes(),
        "config": asdict(config),
        "media": {
            "container": "mp4", "video_codec": "h264 (libx264)", "pix_fmt": "yuv420p",
            "width": config.width, "height": config.height, "fps": config.fps,
            "audio_codec": "aac", "sample_rate": config.sample_rate, "channels": 1,
            "min_seconds": config.min_seconds, "max_seconds": config.max_seconds,
        },
        "templates": {"count": len(TEMPLATES), "test_only": list(TEST_ONLY_TEMPLATES)},
        "attributes": {"shared": list(SHARED), "visible_only": list(VISIBLE_ONLY), "audible_only": list(AUDIBLE_ONLY)},
    }


def _write_tables(root: Path, config: SynthConfig, scene_lines: list[str]) -> None:
    (root / "scenes").mkdir()
    by_split: dict[str, list[str]] = {split: [] for split in SPLITS}
    for line in scene_lines:
        by_split[json.loads(line)["split"]].append(line)
    for split, lines in by_split.items():
        (root / "scenes" / f"{split}.jsonl").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
        scenes = [json.loads(x) for x in lines]
        rel = [f"videos/{s['id']}.mp4" for s in scenes]
        records = [Record(s["id"], s["caption"], p, p, tuple(s["alt_captions"])) for s, p in zip(scenes, rel)]
        write_manifest(manifest_path(root, split), records)
    meta = json.dumps(dataset_metadata(config), indent=2)
    (root / "dataset.json").write_text(meta + "\n", encoding="utf-8")


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it")


def synthesize(out: str | Path, config: SynthConfig = SynthConfig(), *, workers: int | None = None,
               progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Generate the benchmark under `out` and return summarize(out).

    Output appears only when complete: clips are written to a staging directory next to `out`,
    which is moved into place at the end and removed on any error or interrupt.
    """
    validate_config(config)
    out = Path(out)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "videos").mkdir(parents=True)
        jobs = _jobs(config, staging / "videos")
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        _write_tables(staging, config, _run_jobs(jobs, workers, progress))
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summarize(out)


def is_up_to_date(out: str | Path, config: SynthConfig) -> bool:
    """True when `out` holds a complete dataset generated by this GENERATOR_VERSION from `config`."""
    try:
        meta = json.loads((Path(out) / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    if meta.get("generator_version") != GENERATOR_VERSION or meta.get("config") != asdict(config):
        return False
    return all(manifest_path(out, split).is_file() for split in SPLITS)
