"""Import throughput of `data import folder`.

    python bench/import_data.py [--items 1000] [--repeats 3] [--workdir DIR]

Generates a media library of --items clips in the folder format (one 2 s 64x64 12 fps H.264 + AAC mp4,
copied under a name per item, and a captions CSV of file, caption, caption_2), then times
`import_dataset("folder", ...)` with the media copied and hard-linked, each into a fresh OUT on the same
file system (best of --repeats). An import reads the CSV, checks each path stays inside the library,
probes each file's streams (PyAV), copies or links it and writes the manifest and import.json; the figure is
items a second in one process.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from dataset.importers import ImportOptions, import_dataset  # noqa: E402
from dataset.mp4 import write_mp4  # noqa: E402

SIZE, FPS, SECONDS, SAMPLE_RATE = 64, 12, 2.0, 16_000


def make_library(root: Path, items: int) -> tuple[Path, Path]:
    """(the media folder, its captions CSV): `items` copies of one generated clip, two captions each."""
    import numpy as np

    media = root / "library"
    (media / "clips").mkdir(parents=True)
    n = int(SECONDS * FPS)
    frames = np.broadcast_to(np.linspace(16, 235, n).astype(np.uint8)[:, None, None, None], (n, SIZE, SIZE, 3)).copy()
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    clip = Path(write_mp4(root / "clip.mp4", frames, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
                          FPS, SAMPLE_RATE))
    lines = ["file,caption,caption_2"]
    for i in range(items):
        shutil.copyfile(clip, media / "clips" / f"clip-{i:06d}.mp4")
        lines.append(f"clips/clip-{i:06d}.mp4,clip number {i} of the library,another caption of clip {i}")
    captions = root / "captions.csv"
    captions.write_text("\n".join(lines) + "\n")
    return media, captions


def time_import(media: Path, captions: Path, work: Path, mode: str, repeats: int) -> tuple[float, int, int]:
    """(best seconds of `repeats` imports, items written, items skipped)."""
    best, written, skipped = float("inf"), 0, 0
    for r in range(repeats):
        out = work / f"out-{mode}-{r}"
        start = time.perf_counter()
        result = import_dataset("folder", media, out, ImportOptions(captions=captions, media=mode))
        best = min(best, time.perf_counter() - start)
        written, skipped = sum(result.items.values()), len(result.skipped)
        shutil.rmtree(out)
    return best, written, skipped


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="imports per media mode; the fastest is kept")
    ap.add_argument("--workdir", type=Path, default=None, help="where the library and imports go (default: a temp dir)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-import-", dir=args.workdir) as tmp:
        work = Path(tmp)
        media, captions = make_library(work, args.items)
        clip_bytes = (work / "clip.mp4").stat().st_size
        rows = []
        for mode in ("copy", "link"):
            seconds, written, skipped = time_import(media, captions, work, mode, args.repeats)
            rows.append({"media": mode, "items": written, "skipped": skipped, "seconds": seconds,
                         "items/s": written / seconds, "MB/s": written * clip_bytes / 1e6 / seconds})
    report("import", f"data import folder: {args.items} clips of {clip_bytes / 1e3:.0f} kB (1 process, best of "
           f"{args.repeats})", rows, {"clip": {"side": SIZE, "fps": FPS, "seconds": SECONDS, "bytes": clip_bytes}})


if __name__ == "__main__":
    main()
