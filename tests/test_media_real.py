"""Decoding media as real uploads bring it: phone rotation, MPEG-TS and other streams without an index,
cover art, audio that starts late, variable frame rate, one-frame clips, truncation; and the default
dataset's clips decoding to exactly what the decoder before seeking and time-based sampling gave."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from dataset.mp4 import write_mp4
from dataset.probe import probe_record
from dataset.rules import ABSENT, Thresholds
from model.errors import MediaError
from model.media import (DecodeConfig, MediaLimits, check_file, decode_audio, decode_clip, decode_video, fit_length,
                         inspect_video, log_mel, probe, uniform_indices)

SR = 16_000


def pattern(n: int, height: int, width: int) -> np.ndarray:
    """uint8 (n, height, width, 3): a white block in the top-left corner (shows orientation) on a background
    whose brightness grows with the frame index."""
    frames = np.repeat(np.linspace(10, 120, n).astype(np.uint8)[:, None, None, None], 3, axis=3)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (n, height, width, 3)))
    frames[:, : height // 4, : width // 8] = 255
    return frames


def tone(seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 1000 * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def write(path: Path, frames: np.ndarray | None, audio: np.ndarray | None = None, *, fmt: str | None = None,
          fps: int = 12, pts: list[int] | None = None, rotation: int | None = None, hflip: bool = False,
          gop: int | None = None, audio_start: float = 0.0, cover: np.ndarray | None = None,
          options: dict | None = None, codec: str = "libx264") -> Path:
    """A media file as cameras, phones and encoders write them (PyAV): H.264 video with an optional
    display matrix (or another `codec`), fixed GOP and explicit presentation times (in 1/fps units); AAC (MP3 for fmt="mp3")
    audio from `audio_start` s; an optional cover-art picture."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        video = sound = picture = None
        if frames is not None:
            opts = {"threads": "1", "preset": "ultrafast"} if codec == "libx264" else {"deadline": "realtime"}
            if gop:
                opts.update(g=str(gop), keyint_min=str(gop), **({"sc_threshold": "0"} if codec == "libx264" else {}))
            video = container.add_stream(codec, rate=fps, options=opts)
            video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            if rotation is not None or hflip:
                video.set_display_rotation(rotation or 0, hflip=hflip)
        if cover is not None:
            picture = container.add_stream("mjpeg", rate=1)
            picture.width, picture.height, picture.pix_fmt = cover.shape[1], cover.shape[0], "yuvj420p"
            picture.disposition = av.stream.Disposition.attached_pic
        if audio is not None:
            sound = container.add_stream("libmp3lame" if fmt == "mp3" else "aac", rate=SR, layout="mono")
        if picture is not None:
            frame = av.VideoFrame.from_ndarray(cover, format="rgb24").reformat(format="yuvj420p")
            frame.pts = 0
            container.mux(picture.encode(frame) + picture.encode(None))
        if video is not None:
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
                frame.pts = i if pts is None else pts[i]
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.time_base, frame.pts = SR, Fraction(1, SR), int(round(audio_start * SR))
            container.mux(sound.encode(frame) + sound.encode(None))
    return path


@dataclass(frozen=True)
class Real:
    root: Path
    upright: Path  # 160x96 stored, 2 s, audio
    portrait: Path  # the same pixels with a -90 degree display matrix (a phone held upright)
    mirrored: Path  # -90 degrees and mirrored (a front camera)
    vfr: Path  # 4 fps for 3 s, then 36 fps for 1 s (1 ms time base)
    late_audio: Path  # 4 s video, 1 s of audio from 1.98 s
    ts: Path  # MPEG-TS, 24 fps, 2 s GOPs, 6 s
    fragmented: Path  # fragmented mp4, 1 s GOPs
    live_webm: Path  # VP8 webm written live: no duration, no cues
    cover_mp3: Path  # an mp3 with cover art
    one_frame: Path  # one frame (the project's mp4 writer)
    gops: Path  # mp4, 1 s GOPs, 6 s, with B-frames
    truncated: Path  # a faststart mp4 (index first) cut to 40 % of its bytes


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Real:
    root = tmp_path_factory.mktemp("real-media")
    stored = pattern(24, 96, 160)
    fast = write(root / "faststart.mp4", pattern(48, 64, 64), fmt="mp4", options={"movflags": "faststart"})
    cut = root / "truncated.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.4)])
    vfr_pts = [250 * i for i in range(12)] + [3000 + 1000 * i // 36 for i in range(36)]
    flat = np.repeat(np.arange(20, 212, 4, dtype=np.uint8)[:, None, None, None], 3, axis=3)  # 48 levels, 4 apart
    return Real(
        root=root,
        upright=write(root / "upright.mp4", stored, tone(2)),
        portrait=write(root / "portrait.mp4", stored, tone(2), rotation=-90),
        mirrored=write(root / "mirrored.mp4", stored, tone(2), rotation=-90, hflip=True),
        vfr=write(root / "vfr.mp4", np.ascontiguousarray(np.broadcast_to(flat, (48, 64, 64, 3))), fps=1000,
                  pts=vfr_pts),
        late_audio=write(root / "late.mp4", pattern(48, 64, 64), tone(1.0), audio_start=1.98),
        ts=write(root / "gop2s.ts", pattern(144, 64, 96), tone(6), fmt="mpegts", fps=24, gop=48),
        fragmented=write(root / "fragmented.mp4", pattern(72, 64, 64), gop=12, fmt="mp4",
                         options={"movflags": "frag_keyframe+empty_moov"}),
        live_webm=write(root / "live.webm", pattern(72, 64, 64), gop=12, fmt="webm", codec="libvpx",
                        options={"live": "1"}),
        cover_mp3=write(root / "song.mp3", None, tone(2), fmt="mp3", cover=np.full((64, 64, 3), 200, np.uint8)),
        one_frame=write_mp4(root / "one_frame.mp4", pattern(1, 64, 64), tone(1.0)),
        gops=write(root / "gops.mp4", pattern(72, 64, 64), tone(6), gop=12),
        truncated=cut,
    )


def row(root: Path, name: Path) -> dict:
    return probe_record(root, {"id": "x", "text": "a clip", "video": name.name, "audio": name.name})


# ----------------------------------------------------------------------------------------------
# The display matrix
# ----------------------------------------------------------------------------------------------


def test_a_portrait_phone_clip_decodes_upright(real):
    stored = decode_video(real.upright)
    shown = decode_video(real.portrait)
    assert np.array_equal(shown, np.rot90(stored, k=-1, axes=(1, 2)))  # -90 degrees: a quarter turn clockwise
    assert shown[0, :8, -8:].mean() > 200 and shown[0, :8, :8].mean() < 150  # the corner block went top-right
    assert np.array_equal(decode_video(real.mirrored), stored.swapaxes(1, 2))  # turned, then mirrored


def test_validation_reports_the_size_as_shown(real):
    assert (row(real.root, real.upright)["width"], row(real.root, real.upright)["height"]) == (160, 96)
    facts = row(real.root, real.portrait)
    assert (facts["width"], facts["height"]) == (96, 160) and facts["last_frame_decodes"] == "ok"
    assert (facts["long_side"], facts["short_side"]) == (160, 96)  # what the resolution limits bound
    assert inspect_video(real.portrait).orientation != "upright"


# ----------------------------------------------------------------------------------------------
# Streams without an index, one-frame clips, cover art, truncation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ts", "fragmented", "live_webm", "gops"])
def test_streams_with_long_gops_or_no_index_validate_and_decode(real, name):
    path = getattr(real, name)
    facts = row(real.root, path)
    assert facts["first_frame_decodes"] == "ok" and facts["last_frame_decodes"] == "ok", facts
    config = DecodeConfig(num_frames=16)
    frames = decode_video(path, config)
    assert np.array_equal(frames, decode_video(path, config, seek=False))  # seeking gives the linear decode's frames
    background = frames[:, -8:, -8:].mean(axis=(1, 2, 3))
    assert np.all(np.diff(background) > 0) and background[0] < 30 and background[-1] > 100  # spread over the clip


def test_a_one_frame_clip_is_not_truncated(real):
    facts = row(real.root, real.one_frame)
    assert facts["first_frame_decodes"] == "ok" and facts["last_frame_decodes"] == "ok", facts
    frames = decode_video(real.one_frame)
    assert frames.shape == (8, 64, 64, 3) and all(np.array_equal(f, frames[0]) for f in frames)


def test_a_truncated_file_still_is(real):
    with pytest.raises(MediaError, match="truncated") as err:
        decode_video(real.truncated)
    assert str(real.truncated) in str(err.value)
    facts = row(real.root, real.truncated)
    assert facts["first_frame_decodes"] == "ok" and "truncated" in facts["last_frame_decodes"]


def test_cover_art_is_not_video(real):
    assert probe(real.cover_mp3)["streams"] == ["audio", "attached picture"]
    facts = row(real.root, real.cover_mp3)
    assert "has no video stream" in facts["has_video_stream"] and facts["audio_decodes"] == "ok"
    partial = probe_record(real.root, {"id": "x", "text": "a song", "video": real.cover_mp3.name,
                                       "audio": real.cover_mp3.name}, Thresholds(allow_partial=True))
    assert (partial["has_video_stream"], partial["modalities"], partial["audio_decodes"]) == (ABSENT, "at", "ok")
    with pytest.raises(MediaError, match="no video stream .*attached picture"):
        decode_video(real.cover_mp3)
    wave, has_audio = decode_audio(real.cover_mp3)
    assert has_audio and np.abs(wave[: SR]).max() > 0.2


# ----------------------------------------------------------------------------------------------
# Time: variable frame rate, audio start
# ----------------------------------------------------------------------------------------------


def test_variable_frame_rate_is_sampled_by_time(real):
    # frame k's level is 20 + 4k; frames 0-11 are shown 0.25 s each, frames 12-47 1/36 s each (to 3.973 s)
    with av.open(str(real.vfr)) as container:
        stream = container.streams.video[0]
        decoded = {float(f.time): f.to_ndarray(format="rgb24").mean() for f in container.decode(stream)}
        end = float(stream.duration * stream.time_base)  # the mp4 gives the last frame 1 ms
    shown = sorted(decoded)
    on_screen = [shown[np.searchsorted(shown, (i + 0.5) * end / 8, side="right") - 1] for i in range(8)]
    levels = decode_video(real.vfr).mean(axis=(1, 2, 3))
    assert np.allclose(levels, [decoded[t] for t in on_screen], atol=1.0), levels
    by_index = [decoded[shown[i]] for i in uniform_indices(48, 8)]  # what sampling by frame index gives
    assert not np.allclose(levels, by_index, atol=1.0)
    assert on_screen[:6] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]  # six of eight picks in the slow first 3 s


def test_late_audio_starts_with_silence_and_ends_early_with_silence(real):
    wave, has_audio = decode_audio(real.late_audio)
    assert has_audio and wave.shape == (4 * SR,)
    assert np.abs(wave[: int(1.9 * SR)]).max() == 0.0  # silence first (the encoder's priming frame starts 1.916 s)
    assert np.abs(wave[: int(1.98 * SR)]).max() < 0.01
    assert np.abs(wave[int(1.99 * SR): int(2.9 * SR)]).max() > 0.25  # the tone, from 1.98 s
    assert np.abs(wave[int(3.1 * SR):]).max() < 0.02  # and silence after it ends (2.98 s)


# ----------------------------------------------------------------------------------------------
# The default dataset's clips decode exactly as before
# ----------------------------------------------------------------------------------------------


def legacy_decode(path: Path, config: DecodeConfig, limits: MediaLimits = MediaLimits()) -> tuple[np.ndarray, np.ndarray]:
    """The decoder as it was before display matrices, audio start times, time-based sampling and seeking:
    every frame decoded, picks by frame index among the container's frame count; audio from sample 0."""
    from av.video.reformatter import VideoReformatter

    path = check_file(path, limits)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        counted = stream.frames
        wanted = uniform_indices(counted, config.num_frames)
        reformatter, frames = VideoReformatter(), []
        for n, frame in enumerate(container.decode(stream)):
            if n in wanted:
                rgb = reformatter.reformat(frame, width=config.frame_size, height=config.frame_size,
                                           format="rgb24").to_ndarray()
                frames.extend([rgb] * wanted.count(n))
        assert n + 1 == counted
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=config.sample_rate)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(container.streams.audio[0])
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.stack(frames), fit_length(np.concatenate(chunks).astype(np.float32), config.num_samples)


@pytest.fixture(scope="module")
def default_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few clips as `omniretriever data synth` writes data/ (constant frame rate, audio from 0)."""
    from dataset.config import SynthConfig
    from dataset.synth import synthesize

    root = tmp_path_factory.mktemp("default-layout") / "data"
    synthesize(root, SynthConfig(train=4, val=0, test=0, seed=3), workers=1, progress=False)
    return root


@pytest.mark.parametrize("config", [DecodeConfig(), DecodeConfig(num_frames=16, frame_size=56, audio_seconds=8.0),
                                    DecodeConfig(num_frames=48, frame_size=32)], ids=["tiny", "omni-like", "dense"])
def test_default_dataset_clips_decode_bit_identically(default_layout, config):
    clips = sorted((default_layout / "videos").glob("*.mp4"))
    assert len(clips) == 4
    for clip in clips:
        frames, wave = legacy_decode(clip, config)
        new = decode_clip(clip, clip, config)
        assert np.array_equal(new.frames, frames), clip
        assert np.array_equal(new.mel, log_mel(wave, config).numpy()), clip
        assert np.array_equal(decode_clip(clip, clip, config, audio_input="waveform").mel, wave), clip


def test_a_rotation_that_is_not_a_quarter_turn_is_refused_by_name(tmp_path):
    path = write(tmp_path / "tilted.mp4", pattern(4, 64, 64), rotation=30)
    with pytest.raises(MediaError, match="not a multiple of 90 degrees") as err:
        decode_video(path)
    assert str(path) in str(err.value)


def test_a_seek_that_misses_falls_back_to_decoding_from_the_start(real, monkeypatch):
    import model.media.timeline as media

    wanted = decode_video(real.gops, DecodeConfig(num_frames=16))
    real_picks, calls = media.decode_picks, []

    def missing(*args, at_start=True, **kwargs):
        calls.append(at_start)
        if not at_start:
            raise media.SeekMissed
        return real_picks(*args, at_start=at_start, **kwargs)

    monkeypatch.setattr(media, "decode_picks", missing)
    assert np.array_equal(decode_video(real.gops, DecodeConfig(num_frames=16)), wanted)
    assert calls == [False, True]  # the seek in the open container missed; a fresh one decoded from the start
