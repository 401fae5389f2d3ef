"""One set of media limits (model/media_limits.py), the same in the decoder, validation and the server: 4K
either way up and DCI 4K pass, a long side over 4096 px is refused by both with the same message."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from dataset import rules, validation
from model.errors import MediaLimitError
from model.media import MediaLimits, decode_clip, inspect_video
from model.media_limits import MediaLimits as DeclaredLimits
from serving.limits import MiB, ServingLimits

FPS, SR = 5, 16_000


def big_clip(path: Path, width: int, height: int, frames: int = 6) -> Path:
    """A flat H.264 clip of width x height (6 frames at 5 fps: 1.2 s, inside validation's bounds) with a tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"threads": "1", "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=SR, layout="mono")
        planes = np.full((height * 3 // 2, width), 100, np.uint8)  # yuv420p: Y plane, then U and V
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        n = frames * SR // FPS
        wave = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(n) / SR)).astype(np.float32)[None]
        audio = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        audio.sample_rate, audio.pts = SR, 0
        container.mux(sound.encode(audio) + sound.encode(None))
    return path


SIZES = {"dci": (4096, 2160), "portrait": (2160, 3840), "portrait-dci": (2160, 4096), "too-wide": (4098, 2160)}


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A dataset root whose val split holds one record per SIZES entry."""
    root = tmp_path_factory.mktemp("big") / "data"
    (root / "videos").mkdir(parents=True)
    (root / "manifests").mkdir()
    lines = []
    for name, (width, height) in SIZES.items():
        big_clip(root / "videos" / f"{name}.mp4", width, height)
        path = f"videos/{name}.mp4"
        lines.append(json.dumps({"id": name, "text": f"a {name} clip", "video": path, "audio": path}))
    (root / "manifests" / "val.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def big_report(big, tmp_path_factory) -> tuple[validation.ValidationResult, dict[str, list[str]]]:
    result = validation.validate(big, tmp_path_factory.mktemp("big-report") / "r", split="val", workers=2,
                                 progress=False)
    rejected = [json.loads(x) for x in result.rejected_manifest.read_text().splitlines()]
    return result, {e["record"]["id"]: e["reasons"] for e in rejected}


@pytest.mark.parametrize("name", ["dci", "portrait", "portrait-dci"])
def test_4k_either_way_up_and_dci_4k_decode_and_validate(big, big_report, name):
    clip = decode_clip(big / "videos" / f"{name}.mp4", big / "videos" / f"{name}.mp4")
    assert clip.frames.shape == (8, 64, 64, 3) and clip.has_audio
    _, reasons = big_report
    assert name not in reasons


def test_a_long_side_over_4096_is_refused_by_decoder_and_validation_with_one_message(big, big_report):
    path = big / "videos" / "too-wide.mp4"
    with pytest.raises(MediaLimitError) as err:
        decode_clip(path, path)
    assert err.value.reason == "resolution 4098x2160 is over the limit: long side 4098 > 4096 px"
    result, reasons = big_report
    assert reasons["too-wide"] == [err.value.reason]  # the decoder's words, the one reason
    assert result.failed_expectations["long_side"]["ids"] == ["too-wide"] and result.rejected == 1
    assert inspect_video(path).width == 4098  # validation's probe measures it; the suite refuses it


@pytest.mark.parametrize("size,message", [
    ((3840, 2160), None), ((2160, 3840), None), ((4096, 2304), None), ((2304, 4096), None),
    ((4097, 2160), "resolution 4097x2160 is over the limit: long side 4097 > 4096 px"),
    ((2305, 4000), "resolution 2305x4000 is over the limit: short side 2305 > 2304 px"),
    ((5000, 3000), "resolution 5000x3000 is over the limit: long side 5000 > 4096 px and short side 3000 > 2304 px"),
])
def test_check_size_is_orientation_free(size, message):
    assert MediaLimits().check_size(*size) == message
    assert MediaLimits().check_size(*size[::-1]) == (message and message.replace(
        f"{size[0]}x{size[1]}", f"{size[1]}x{size[0]}"))


@pytest.mark.parametrize("kwargs,message", [
    ({"max_seconds": 0}, "max_seconds=0"), ({"max_file_bytes": -1}, "max_file_bytes=-1"),
    ({"max_long_side": 0}, "max_long_side=0"), ({"min_decoded_fraction": 1.5}, "min_decoded_fraction=1.5"),
    ({"max_short_side": 5000}, "max_short_side=5000 is over max_long_side=4096"),
])
def test_bad_media_limits_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=f"MediaLimits: invalid .*{message}"):
        MediaLimits(**kwargs)


def test_the_decoder_declares_the_limits_once():
    assert MediaLimits is DeclaredLimits
    assert (MediaLimits().max_file_bytes, MediaLimits().max_seconds) == (64 * MiB, 60.0)
    assert (MediaLimits().max_long_side, MediaLimits().max_short_side) == (4096, 2304)


def test_validation_takes_its_maxima_from_the_media_limits():
    t, shared = rules.Thresholds(), MediaLimits()
    assert (t.max_seconds, t.max_file_bytes) == (shared.max_seconds, shared.max_file_bytes)
    assert (t.max_long_side, t.max_short_side) == (shared.max_long_side, shared.max_short_side)
    assert t.limits() == shared
    assert rules.Thresholds(max_seconds=10.0).limits() == replace(shared, max_seconds=10.0)  # --max-seconds overrides
    probing = t.media_limits()  # the probe measures long and big media; the suite refuses them
    assert probing.max_seconds == rules.MAX_DECODE_SECONDS and probing.max_file_bytes == shared.max_file_bytes


def test_the_server_tightens_only_the_bytes():
    limits = ServingLimits()
    assert limits.media() == replace(MediaLimits(), max_file_bytes=16 * MiB)
    assert limits.max_media_seconds == MediaLimits().max_seconds
    assert ServingLimits(max_media_seconds=6.0).media() == replace(MediaLimits(), max_file_bytes=16 * MiB,
                                                                  max_seconds=6.0)
