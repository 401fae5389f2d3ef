"""Helpers shared by the benchmarks: a rich table on the console and a JSON file beside it, a stopwatch
over the calls of a function, and how many video and audio tokens an encoder config gives a clip."""

from __future__ import annotations

import functools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table(title: str, rows: list[dict]) -> Table:
    """rows (dicts with the same keys) as a rich table: numbers right-aligned, floats to 3 decimals."""
    out = Table(title=title)
    for col in rows[0]:
        out.add_column(col, justify="right" if isinstance(rows[0][col], (int, float)) else "left")
    for row in rows:
        out.add_row(*(f"{v:,.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    return out


def report(name: str, title: str, rows: list[dict], extra: dict | None = None, out: Path | None = None) -> Path:
    """Print rows as a table and write {"machine", "rows", **extra} to bench/results/<name>.json."""
    Console().print(table(title, rows))
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}, indent=2) + "\n")
    Console().print(f"wrote {path}")
    return path


class Stopwatch:
    """The seconds spent inside the functions `wrap` returns, summed (`seconds`); a wrapped call made inside
    another is counted once. `sync` runs before each reading of the clock (torch.cuda.synchronize on a GPU,
    so queued kernels are counted where they ran)."""

    def __init__(self, sync: Callable[[], object] | None = None):
        self.seconds = 0.0
        self.sync = sync or (lambda: None)
        self._depth = 0

    def wrap(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self.sync()
            start = time.perf_counter()
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                self.sync()
                self.seconds += time.perf_counter() - start
        return timed


def media_tokens(cfg) -> tuple[int, int]:
    """(video, audio) tokens one clip gives the trunk under encoder config `cfg`, every token kept: the tiny
    encoder's tubelets and patches, or the Qwen2.5-Omni towers' outputs (merged patches, 25 audio tokens a second)."""
    if cfg.backbone == "tiny":
        return cfg.video_tokens, cfg.audio_tokens
    from model.omni.preprocess import HOP, MERGE, PATCH, SAMPLE_RATE, TEMPORAL, audio_token_count, video_token_count

    d, side = cfg.decode, cfg.decode.frame_size // PATCH
    grid = (-(-d.num_frames // TEMPORAL), side, side)
    return video_token_count(grid, MERGE), audio_token_count(int(d.audio_seconds * SAMPLE_RATE) // HOP)
