"""Long media as overlapping windows: where the windows fall, what each decodes to, and an index whose entries
carry their time ranges, so a search finds the moment in a long video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset.mp4 import write_mp4
from model.errors import InputError
from model.inference import Embedder
from model.media import DecodeConfig, MediaLimits, Windowing, audio_track, decode_clip, decode_windows, fit_length, log_mel
from omniretriever.cli import app
from serving.index import load_index

FPS, SR, LONG = 12, 16_000, 70.0  # LONG: over the 60 s a single clip may last


def ramp(n: int, size: int = 64) -> np.ndarray:
    """Frame i's brightness is 16 + i (mod 220): the picture says which frame it is."""
    levels = (16 + np.arange(n) % 220).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(levels[:, None, None, None], (n, size, size, 3)))


def burst(seconds: float, start: float, length: float) -> np.ndarray:
    """Silence with a 1 kHz tone from `start` for `length` seconds."""
    wave = np.zeros(int(seconds * SR), np.float32)
    t = np.arange(int(length * SR)) / SR
    wave[int(start * SR): int(start * SR) + t.size] = 0.3 * np.sin(2 * np.pi * 1000 * t)
    return wave


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("long")
    return write_mp4(root / "long.mp4", ramp(int(LONG * FPS)), burst(LONG, 30.0, 1.0), FPS, SR)


def test_windows_cover_the_clip_and_short_clips_stay_whole():
    w = Windowing(4.0, 2.0)
    assert w.spans(3.0) == [(0.0, 3.0)] and w.spans(5.0) == [(0.0, 5.0)]  # up to window + stride / 2: whole
    spans = w.spans(20.0)
    assert spans[0] == (0.0, 4.0) and spans[-1] == (16.0, 20.0) and len(spans) == 9
    assert all(b - a == 4.0 for a, b in spans) and all(y[0] - x[0] == 2.0 for x, y in zip(spans, spans[1:]))
    assert Windowing(4.0, 2.0).spans(21.0)[-2:] == [(16.0, 20.0), (17.0, 21.0)]  # the last one ends at the end
    assert Windowing.for_model(DecodeConfig()) == Windowing(4.0, 2.0)  # the model's audio window, half of it
    for bad, message in [((4.0, 0.0), "stride must be positive"), ((4.0, 5.0), "at most the window length"),
                         ((float("nan"), 1.0), "positive number of seconds"), ((-1.0, 1.0), "positive number")]:
        with pytest.raises(ValueError, match=message):
            Windowing(*bad)


def test_each_window_decodes_the_frames_and_the_audio_of_its_span(long_clip):
    config = DecodeConfig()
    limits = MediaLimits(max_seconds=3600)
    clip = decode_windows(long_clip, long_clip, config, limits, Windowing(4.0, 2.0))
    assert clip.has_video and clip.has_audio and clip.seconds == pytest.approx(LONG)
    assert len(clip.spans) == 34 and clip.spans[-1] == (66.0, 70.0)
    assert clip.frames.shape == (34, config.num_frames, 64, 64, 3)
    for (start, end), frames in zip(clip.spans, clip.frames):
        times = start + (2 * np.arange(config.num_frames) + 1) * (end - start) / (2 * config.num_frames)
        want = 16 + np.floor(times * FPS).astype(int) % 220  # the frame on screen at each sampled time
        assert np.abs(frames.reshape(len(times), -1).mean(1) - want).max() < 3
    wave, _ = audio_track(long_clip, config, limits)
    for k in (14, 15, 16):  # windows 28-32, 30-34 and 32-36 s: the burst (30-31 s) is heard in the first two
        start = int(clip.spans[k][0] * SR)
        np.testing.assert_allclose(clip.mel[k], log_mel(fit_length(wave[start:], config.num_samples), config).numpy(),
                                   atol=1e-5)
    loud = [float(np.abs(wave[int(a * SR): int(b * SR)]).max()) for a, b in clip.spans[13:17]]
    assert [v > 0.1 for v in loud] == [False, True, True, False]  # 26-30 s ends where the burst starts
    # a clip up to the window is one window, decoded exactly as decode_clip decodes it
    short = write_mp4(long_clip.with_name("short.mp4"), ramp(36), burst(3.0, 1.0, 1.0), FPS, SR)
    one, whole = decode_windows(short, short, config, limits, Windowing(4.0, 2.0)), decode_clip(short, short, config)
    assert one.spans == [(0.0, 3.0)]
    np.testing.assert_array_equal(one.frames[0], whole.frames)
    np.testing.assert_array_equal(one.mel[0], whole.mel)


@pytest.fixture(scope="module")
def library(long_clip, tiny_data, tmp_path_factory) -> Path:
    """Two short clips of the default dataset and the 70 s clip."""
    import shutil

    root = tmp_path_factory.mktemp("library") / "data"
    (root / "videos").mkdir(parents=True)
    (root / "manifests").mkdir()
    lines = []
    for name in ("test-000000", "test-000001"):
        shutil.copy(tiny_data / "videos" / f"{name}.mp4", root / "videos")
        lines.append({"id": name, "text": f"clip {name}", "video": f"videos/{name}.mp4", "audio": f"videos/{name}.mp4"})
    shutil.copy(long_clip, root / "videos" / "long.mp4")
    lines.append({"id": "long", "text": "a seventy second ramp", "video": "videos/long.mp4", "audio": "videos/long.mp4"})
    (root / "manifests" / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def test_index_build_cuts_long_media_into_windows_with_their_times(library, tiny_run, tmp_path):
    out = tmp_path / "g.safetensors"
    res = CliRunner().invoke(app, ["index", "build", "--model", str(tiny_run), "--data", str(library), "--view", "av",
                                   "--view", "t", "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    index = load_index(out)
    av, t = index.entries["av"], index.entries["t"]
    assert av.ids == ["test-000000", "test-000001"] + ["long"] * 34 and index.ids == ["test-000000", "test-000001", "long"]
    assert av.start[0] == 0 and 2 <= av.end[0] <= 4.5  # a short clip: one entry, its whole length
    assert list(zip(av.start[2:5], av.end[2:5])) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0)] and (av.start[-1], av.end[-1]) == (66, 70)
    assert t.ids == ["test-000000", "test-000001", "long"] and (t.start[2], t.end[2]) == (0.0, LONG)  # a caption: the item
    # a window's own embedding finds that window, with its time range
    hits = index.search_hits(index.embeddings["av"][20][None], "av", 3)
    assert (hits.ids[0, 0], hits.start[0, 0], hits.end[0, 0]) == ("long", av.start[20], av.end[20]) == ("long", 36.0, 40.0)
    # options: longer windows and strides
    out2 = tmp_path / "g10.safetensors"
    res = CliRunner().invoke(app, ["index", "build", "--model", str(tiny_run), "--data", str(library), "--view", "v",
                                   "--window", "10", "--stride", "5", "--out", str(out2), "--workers", "1"])
    assert res.exit_code == 0, res.output
    v = load_index(out2).entries["v"]
    assert v.ids.count("long") == 13 and (v.start[-1], v.end[-1]) == (60.0, 70.0)
    assert load_index(out2).meta["window"] == 10.0 and load_index(out2).meta["stride"] == 5.0
    bad = CliRunner().invoke(app, ["index", "build", "--model", str(tiny_run), "--data", str(library), "--window", "4",
                                   "--stride", "8", "--out", str(tmp_path / "bad.safetensors")])
    assert bad.exit_code == 2 and "at most the window length" in bad.output and not (tmp_path / "bad.safetensors").exists()


def test_a_clip_over_the_single_clip_limit_is_refused_as_one_query(long_clip, tiny_run):
    with pytest.raises(InputError, match="over the limit of 60 s"):
        Embedder(tiny_run).embed([{"video": str(long_clip)}])
