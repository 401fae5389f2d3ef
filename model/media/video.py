"""Video as a player shows it: `decode_video` (frames by presentation time, turned as the display matrix
says) and `inspect_video` (what validation reports: the shown size, whether the first and last frames
decode, whether the stream stops short)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from model.errors import MediaError, MediaLimitError
from model.media.settings import DecodeConfig, MediaLimits
from model.media.streams import (FFMPEG_ERRORS, UPRIGHT, Orientation, check_complete, check_duration, check_file,
                                 declared_seconds, open_container, orientation_of, stream_kinds, uniform_indices,
                                 video_streams)
from model.media.timeline import pick_frames, read_timeline


def video_stream(path: Path, container: av.container.InputContainer) -> av.stream.Stream:
    streams = video_streams(container)
    if not streams:
        kinds = ", ".join(sorted(set(stream_kinds(container)))) or "none"
        raise MediaError(path, f"no video stream (streams present: {kinds}); an audio-only file given as video?")
    return streams[0]


Spans = Callable[[float], Sequence[tuple[float, float]]]  # clip seconds -> the (start, end) windows to sample


def decode_video(path: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits(),
                 *, seek: bool = True) -> np.ndarray:
    """uint8 (num_frames, frame_size, frame_size, 3) RGB frames as a player shows them: the frame on screen at
    num_frames times spread uniformly over the clip (by presentation time, so variable frame rates are
    sampled evenly too), turned as the stream's display matrix says.

    With seek (the default) each frame is decoded from its keyframe, jumping past the rest, so the cost
    stays about flat in clip length; where a seek misses, the clip is decoded from the start instead
    (seek=False always does that). Both give the same frames."""
    frames, _, _ = decode_video_spans(path, config, limits, seek=seek)
    return frames[0]


def decode_video_spans(path: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits(),
                       spans: Spans | None = None, *, seek: bool = True
                       ) -> tuple[np.ndarray, list[tuple[float, float]], float]:
    """(uint8 (W, num_frames, frame_size, frame_size, 3), the W spans, the clip's seconds): decode_video's
    frames for each window `spans(seconds)` gives (seconds from the first frame shown), all decoded in one
    pass over the file; spans=None is the whole clip, one window."""
    path = check_file(path, limits)
    with open_container(path) as container:
        stream = video_stream(path, container)
        # the size as stored: the limits are on the long and the short side, so turning it changes nothing
        too_big = limits.check_size(stream.codec_context.width, stream.codec_context.height)
        if too_big:
            raise MediaLimitError(path, too_big)
        declared = declared_seconds(container, stream)
        check_duration(path, declared, limits)
        index = stream.index
        timeline = read_timeline(path, container, stream, limits)
        if timeline is None:
            return _decode_by_count(path, index, config, limits, declared, spans)
        check_duration(path, timeline.seconds, limits)
        check_complete(path, "video", timeline.seconds, declared, limits)
        windows = _windows(spans, timeline.seconds)
        whole = (0.0, timeline.seconds)  # the whole clip: sampled as decode_video always has, to the last bit
        times = [timeline.sample(config.num_frames, None if w == whole else w) for w in windows]
        picks, orientation = pick_frames(path, container, stream, timeline, {p for ts in times for p in ts}, config, seek)
    shown = {p: orientation.apply(picture) for p, picture in picks.items()}
    return np.stack([np.stack([shown[p] for p in ts]) for ts in times]), windows, timeline.seconds  # (W, N, H, W, 3)


def _windows(spans: Spans | None, seconds: float) -> list[tuple[float, float]]:
    windows = [(0.0, seconds)] if spans is None else [(float(a), float(b)) for a, b in spans(seconds)]
    if not windows:
        raise ValueError(f"no window to decode in a {seconds:.2f} s clip")
    return windows


def _decode_by_count(path: Path, index: int, config: DecodeConfig, limits: MediaLimits,
                     declared: float | None, spans: Spans | None = None
                     ) -> tuple[np.ndarray, list[tuple[float, float]], float]:
    """For a stream whose packets carry no presentation times: every frame decoded, picks by position (the
    frames taken as evenly spaced in time)."""
    reformatter = VideoReformatter()
    size = config.frame_size
    frames: list[np.ndarray] = []
    orientation: Orientation | None = None
    last_time, step = 0.0, 0.0
    with open_container(path) as container:
        stream = container.streams[index]
        step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        try:
            for frame in container.decode(stream):
                if orientation is None:
                    orientation = orientation_of(path, frame)
                if frame.time is not None:
                    last_time = float(frame.time)
                    check_duration(path, last_time, limits)
                frames.append(reformatter.reformat(frame, width=size, height=size, format="rgb24").to_ndarray())
        except FFMPEG_ERRORS as exc:
            if not frames:
                raise MediaError(path, f"video stream does not decode: {exc}") from None
            raise MediaError(path, f"video decoding failed after {len(frames)} frames (truncated?): {exc}") from None
    if not frames:
        raise MediaError(path, "video stream has no decodable frames (truncated or corrupt)")
    seconds = last_time + step
    check_complete(path, "video", seconds, declared, limits)
    n = len(frames)
    windows = _windows(spans, seconds)
    if spans is None:
        positions = [uniform_indices(n, config.num_frames)]
    else:
        bounds = [(min(n - 1, int(a / seconds * n)) if seconds else 0, int(b / seconds * n) if seconds else n) for a, b in windows]
        positions = [[lo + i for i in uniform_indices(max(hi - lo, 1), config.num_frames)] for lo, hi in bounds]
    return np.stack([np.stack([orientation.apply(frames[min(i, n - 1)]) for i in ps]) for ps in positions]), windows, seconds


@dataclass
class VideoFacts:
    """What validation reports of a video stream (media.inspect_video)."""

    width: int  # as shown (after the display matrix)
    height: int
    orientation: str
    fps: float | None
    declared: float | None  # the container's stated duration of the stream, s
    seconds: float | None  # the span its packets cover, s
    first_error: str | None  # why the first frame does not decode, or None
    last_error: str | None  # why the last frame does not decode (or the stream stops short), or None


def inspect_video(path: str | Path, limits: MediaLimits = MediaLimits()) -> VideoFacts:
    """Whether the first and the last frame of a file's video decode, and whether it stops short of its
    declared duration, without an index (MPEG-TS, fragmented mp4 and webm work): the packets are read
    first (no decoding), then the first frame is decoded, then the last keyframe's group of frames (a
    seek to it, or a decode from the start where the seek misses). A one-frame clip is whole; cover
    art is not video (MediaError, as for a file with no video stream)."""
    path = check_file(path, limits)
    config = DecodeConfig(num_frames=1, frame_size=8)
    with open_container(path) as container:
        stream = video_stream(path, container)
        index, stored = stream.index, (stream.codec_context.width, stream.codec_context.height)
        fps = float(stream.average_rate) if stream.average_rate else None
        declared = declared_seconds(container, stream)
        try:
            timeline, read_error = read_timeline(path, container, stream, limits), None
        except MediaError as exc:
            timeline, read_error = None, exc.reason
        facts = VideoFacts(stored[0], stored[1], UPRIGHT.describe(), fps, declared,
                           timeline.seconds if timeline else None, None, read_error)
        if timeline is not None:
            try:
                _, orientation = pick_frames(path, container, stream, timeline, {timeline.start}, config, False)
            except MediaError as exc:
                facts.first_error = exc.reason
                return facts
            facts.width, facts.height = orientation.shown_size(*stored)
            facts.orientation = orientation.describe()
            try:
                pick_frames(path, container, stream, timeline, {timeline.last}, config, True)
            except MediaError as exc:
                facts.last_error = exc.reason
                return facts
    if timeline is None:  # the packets stop early (read_error) or carry no times: decode from the start
        facts.first_error = _first_frame_error(path, index)
        if facts.first_error is None and read_error is None:
            try:
                decode_video(path, config, limits)
            except MediaError as exc:
                facts.last_error = exc.reason
        return facts
    step = float((timeline.end - timeline.last) * timeline.time_base)
    if declared and timeline.seconds < declared - 2 * step - 0.1:
        facts.last_error = (f"the last decodable frame ends at {timeline.seconds:.2f} s of a declared "
                            f"{declared:.2f} s")
    return facts


def _first_frame_error(path: Path, index: int) -> str | None:
    """Why no frame of stream `index` decodes from the start of the file, or None when one does."""
    try:
        with open_container(path) as container:
            if next(container.decode(container.streams[index]), None) is None:
                return "no frame decodes"
    except MediaError as exc:
        return exc.reason
    except FFMPEG_ERRORS as exc:
        return f"does not decode: {exc}"
    return None

