"""A video stream's Timeline from a pass over its packets (no decoding, no index needed), and the frames
picked by presentation time decoded from their keyframes (`pick_frames`: seeking, with a decode from the
start where a seek misses)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from model.errors import MediaError, MediaLimitError
from model.media.settings import DecodeConfig, MediaLimits
from model.media.streams import FFMPEG_ERRORS, UPRIGHT, Orientation, open_container, orientation_of


@dataclass
class Timeline:
    """A video stream's packets in decode order, read without decoding (no index needed)."""

    time_base: Fraction
    pts: list[int]  # presentation time of each packet's frame, time_base units
    keyframe: list[bool]
    shown: list[bool]  # False for a frame decoded only to decode others (an edit list starting mid-GOP)
    start: int  # first presentation time of a shown frame
    end: int  # when the last frame stops being shown

    @property
    def seconds(self) -> float:
        return float((self.end - self.start) * self.time_base)

    @property
    def last(self) -> int:
        """The pts of the last frame shown."""
        return max(p for p, on in zip(self.pts, self.shown) if on)

    def sample(self, n: int, span: tuple[float, float] | None = None) -> list[int]:
        """The pts of the frame shown at each of n times spread uniformly (segment centres) over [start, end),
        or over `span` (seconds from the first frame shown): the frame with the largest pts at or before the
        time. Constant and variable frame rates alike."""
        shown = sorted(p for p, on in zip(self.pts, self.shown) if on)
        lo, length = self.start, Fraction(self.end - self.start)
        if span is not None:
            lo = self.start + Fraction(span[0]) / self.time_base
            length = Fraction(span[1] - span[0]) / self.time_base
        picks = []
        for i in range(n):
            at = lo + (2 * i + 1) * length / (2 * n)
            j = bisect.bisect_right(shown, at) - 1
            picks.append(shown[max(j, 0)])
        return picks

    def gop_start(self) -> list[int]:
        """For each packet, the decode index of the keyframe it is decoded from."""
        out, last = [], 0
        for i, key in enumerate(self.keyframe):
            if key:
                last = i
            out.append(last)
        return out


def read_timeline(path: Path, container: av.container.InputContainer, stream: av.stream.Stream,
                  limits: MediaLimits) -> Timeline | None:
    """The stream's Timeline from a pass over its packets (cheap: nothing is decoded); None when some
    packet has no presentation time (then frames can only be counted, not timed). Leaves the container
    at its end: seek or reopen before decoding."""
    pts: list[int] = []
    ends: list[int] = []
    keys: list[bool] = []
    shown: list[bool] = []
    durations: list[int] = []
    tb = stream.time_base or Fraction(1, 1)
    horizon = int(limits.max_seconds / tb) if tb else None
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            keys.append(bool(packet.is_keyframe))
            shown.append(not packet.is_discard)
            if packet.duration:
                durations.append(packet.duration)
            ends.append(packet.pts + (packet.duration or 0))
            if horizon is not None and packet.pts - pts[0] > horizon:
                raise MediaLimitError(path, f"video runs past the limit of {limits.max_seconds:g} s")
    except FFMPEG_ERRORS as exc:
        if not pts:
            raise MediaError(path, f"video stream does not read: {exc}") from None
        raise MediaError(path, f"video stream stops after {len(pts)} packets (truncated?): {exc}") from None
    lead = keys.index(True) if True in keys else len(keys)
    pts, keys, shown, ends = pts[lead:], keys[lead:], shown[lead:], ends[lead:]  # nothing decodes before a keyframe
    if not any(shown):
        return None
    if len(set(pts)) != len(pts):
        return None  # repeated times: cannot tell frames apart by time
    on = [i for i, s in enumerate(shown) if s]
    end = max(ends[i] for i in on)
    last = max(on, key=pts.__getitem__)
    if end <= pts[last]:  # the last frame has no duration: give it the typical one
        step = int(np.median(durations)) if durations else _frame_step(stream, tb)
        end = pts[last] + max(step, 1)
    return Timeline(Fraction(tb), pts, keys, shown, min(pts[i] for i in on), end)


def _frame_step(stream: av.stream.Stream, tb: Fraction) -> int:
    rate = stream.average_rate or stream.guessed_rate
    return int(round(1 / (rate * tb))) if rate and tb else 1


class SeekMissed(Exception):
    """A seek did not land on the keyframe it aimed at (or the format cannot seek): decode from the start."""


def decode_picks(path: Path, container: av.container.InputContainer, stream: av.stream.Stream, timeline: Timeline,
                  wanted: set[int], config: DecodeConfig, seek: bool,
                  at_start: bool = True) -> tuple[dict[int, np.ndarray], Orientation]:
    """The RGB frames at frame_size whose pts are in `wanted`, decoding only what they need. Without seek:
    from the start (or, when the container is not `at_start`, from the first keyframe needed, sought) up
    to the last frame wanted. With seek: each group of wanted frames from the keyframe it is decoded from,
    jumping there when that keyframe lies past where decoding is. A seek that lands anywhere but on that
    keyframe, or an earlier one, raises SeekMissed. Frames come out as a linear decode gives them:
    decoding starts at a keyframe, where the decoder holds no state."""
    index = {p: i for i, p in enumerate(timeline.pts)}
    gop = timeline.gop_start()
    by_key: dict[int, set[int]] = {}
    for p in wanted:
        by_key.setdefault(gop[index[p]], set()).add(p)
    remaining = set(wanted)
    picks: dict[int, np.ndarray] = {}
    orientation: Orientation | None = None
    reformatter = VideoReformatter()  # reuses one scaler context across frames
    size = config.frame_size
    codec = stream.codec_context
    position, fed = -1, 0  # decode index of the last packet fed; packets fed

    def take(frames) -> None:
        nonlocal orientation
        for frame in frames:
            if orientation is None:
                orientation = orientation_of(path, frame)
            if frame.pts in remaining:
                picks[frame.pts] = reformatter.reformat(frame, width=size, height=size, format="rgb24").to_ndarray()
                remaining.discard(frame.pts)

    def feed(packets, key: int, check_landing: bool) -> bool:
        """Decode until the frames wanted from `key` are out; True when the stream ended."""
        nonlocal position, fed
        for packet in packets:
            if packet.pts is None and packet.size == 0:
                continue  # end-of-stream marker
            at = index.get(packet.pts)
            if check_landing:
                check_landing = False
                if at is None or at > key or not timeline.keyframe[at]:
                    raise SeekMissed
            position = position if at is None else at
            take(codec.decode(packet))
            fed += 1
            if not by_key[key] & remaining:
                return False
        take(codec.decode(None))  # what the decoder still holds (B-frame delay) at the end of the stream
        return True

    try:
        packets, ended = None, False
        for key in sorted(by_key):
            if ended or not remaining:
                break
            if not by_key[key] & remaining:
                continue  # came out while decoding an earlier group
            jump = (seek and key > position) if packets is not None else (not at_start or (seek and key > 0))
            if jump:
                try:
                    container.seek(timeline.pts[key], stream=stream, backward=True)
                except FFMPEG_ERRORS:
                    raise SeekMissed from None
            if jump or packets is None:
                packets = container.demux(stream)
            ended = feed(packets, key, jump)
    except FFMPEG_ERRORS as exc:
        if not fed:
            raise MediaError(path, f"video stream does not decode: {exc}") from None
        at = float((timeline.pts[max(position, 0)] - timeline.start) * timeline.time_base)
        raise MediaError(path, f"video decoding fails at {at:.2f} s, after {fed} packets (truncated?): {exc}") from None
    if remaining:
        missing = sorted(float((p - timeline.start) * timeline.time_base) for p in remaining)
        raise MediaError(path, f"video frames at {', '.join(f'{s:.2f}' for s in missing[:4])} s of the stream do "
                               "not decode (truncated or corrupt)")
    return picks, orientation or UPRIGHT


def pick_frames(path: Path, container: av.container.InputContainer, stream: av.stream.Stream, timeline: Timeline,
           wanted: set[int], config: DecodeConfig, seek: bool) -> tuple[dict[int, np.ndarray], Orientation]:
    """decode_picks in an open container wherever it stands (after the packet pass, say), each start a
    seek; where a seek misses, in a fresh container from the start of the file."""
    try:
        return decode_picks(path, container, stream, timeline, wanted, config, seek, at_start=False)
    except SeekMissed:
        with open_container(path) as fresh:
            return decode_picks(path, fresh, fresh.streams[stream.index], timeline, wanted, config, seek=False)
