"""Media decoding with PyAV: uniformly sampled RGB frames and 16 kHz mono log-mel audio.

    decode_video(path)  -> uint8 (N, H, W, 3): N frames as a player shows them: the frame on screen at N
                           times spread uniformly over the clip (by presentation time, so variable frame
                           rates too), turned and mirrored as the display matrix says (a portrait phone
                           clip comes out upright), resized to H x W. Each is decoded from its keyframe
                           (seeking), or, where a seek misses, by decoding from the start.
    decode_audio(path)  -> (float32 (S,), has_audio): mono waveform at `sample_rate` on the video's
                           timeline (audio that starts late begins with silence), padded or cropped
                           to `audio_seconds`. A file with no audio track gives silence and
                           has_audio=False (a video-only clip is legal input; the flag lets callers
                           mask the modality or reject the clip, as the caller decides).
    inspect_video(path) -> VideoFacts: size as shown, whether the first and last frames decode, and
                           whether the stream stops short of its declared duration (validation's probe).
    log_mel(waveform)   -> float32 (n_mels, frames): log(mel power + 1e-6), computed with torch
    decode_clip(...)    -> Clip: the three above for one record (or frames and the waveform itself)

Every failure is a MediaError (or MediaLimitError) naming the file and the problem, raised before
a decoder is ever handed something it could choke on: missing or empty files, files over the size
limit, containers that do not open (truncated, not media), missing streams, resolution and duration
limits, and clips that stop far short of their declared duration.

Cover art (a stream with the attached_pic disposition, as in an mp3) is not video: such a file is
audio-only. Times come from a pass over the video's packets, which needs no index, so MPEG-TS,
fragmented mp4 and webm without a duration are timed, sampled and checked like an indexed mp4.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter
import numpy as np
import torch

from model.errors import MediaError, MediaLimitError

_FFMPEG_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError, EOFError)


@dataclass(frozen=True)
class MediaLimits:
    """Refuse media over these bounds before decoding it."""

    max_file_bytes: int = 64 * 1024 * 1024  # one clip file
    max_seconds: float = 60.0  # declared or decoded duration
    max_width: int = 3840
    max_height: int = 2160
    min_decoded_fraction: float = 0.5  # decoded span / declared duration below this = truncated


@dataclass(frozen=True)
class DecodeConfig:
    """How a clip becomes model input. Part of the feature-cache key: change one, miss the cache."""

    num_frames: int = 8  # frames sampled uniformly over the whole clip
    frame_size: int = 64  # frames are resized (not cropped) to frame_size x frame_size
    sample_rate: int = 16_000  # audio is resampled to this rate, mono
    audio_seconds: float = 4.0  # audio is padded with silence or cropped to this length
    n_fft: int = 400  # 25 ms window at 16 kHz
    hop_length: int = 320  # 20 ms hop: 4 s -> 201 mel frames
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8_000.0  # Nyquist at 16 kHz

    def __post_init__(self) -> None:
        checks = {
            "num_frames": self.num_frames >= 1,
            "frame_size": 8 <= self.frame_size <= 1024,
            "sample_rate": 1_000 <= self.sample_rate <= 96_000,
            "audio_seconds": 0 < self.audio_seconds <= 600,
            "n_fft": self.n_fft >= 16,
            "hop_length": self.hop_length >= 1,
            "n_mels": 1 <= self.n_mels <= self.n_fft // 2 + 1,
            "f_max": 0 <= self.f_min < self.f_max <= self.sample_rate / 2,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"DecodeConfig: invalid {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.audio_seconds))

    @property
    def num_mel_frames(self) -> int:
        return 1 + self.num_samples // self.hop_length

    def fingerprint(self) -> str:
        """A stable digest of every field (used in cache keys)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Clip:
    """Decoded model input for one record."""

    frames: np.ndarray  # uint8 (N, H, W, 3)
    mel: np.ndarray  # float32 (n_mels, num_mel_frames); (num_samples,) waveform with audio_input="waveform"
    has_audio: bool
    meta: dict = field(default_factory=dict)


def check_file(path: str | Path, limits: MediaLimits) -> Path:
    """Existence, type and size checks every decode starts with."""
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file not found")
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise MediaLimitError(path, f"file is {size} bytes, over the limit of {limits.max_file_bytes} bytes")
    return path


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except _FFMPEG_ERRORS as exc:
        raise MediaError(path, f"cannot open as a media container (truncated or not a media file): {exc}") from None


def _declared_seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _check_duration(path: Path, seconds: float | None, limits: MediaLimits) -> None:
    if seconds is not None and seconds > limits.max_seconds:
        raise MediaLimitError(path, f"duration {seconds:.2f} s is over the limit of {limits.max_seconds:g} s")


def _check_complete(path: Path, what: str, decoded: float, declared: float | None, limits: MediaLimits) -> None:
    if declared and declared > 0 and decoded < limits.min_decoded_fraction * declared:
        raise MediaError(path, f"truncated: decoded {decoded:.2f} s of {what} out of a declared {declared:.2f} s")


def uniform_indices(n_available: int, n_wanted: int) -> list[int]:
    """Indices of n_wanted frames spread uniformly (segment centres) over n_available frames."""
    return [min(n_available - 1, int((i + 0.5) * n_available / n_wanted)) for i in range(n_wanted)]


# ----------------------------------------------------------------------------------------------
# Which streams count, and how a picture is shown (the display matrix)
# ----------------------------------------------------------------------------------------------


def is_attached_picture(stream: av.stream.Stream) -> bool:
    """A still image stored as a video stream (an mp3's or m4a's cover art): not video."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def video_streams(container: av.container.InputContainer) -> list[av.stream.Stream]:
    """The container's video streams, cover art left out."""
    return [s for s in container.streams.video if not is_attached_picture(s)]


def stream_kinds(container: av.container.InputContainer) -> list[str]:
    """Each stream's kind, in order: video, audio, ... and "attached picture" for cover art."""
    return ["attached picture" if s.type == "video" and is_attached_picture(s) else s.type for s in container.streams]


@dataclass(frozen=True)
class Orientation:
    """How a player turns the stored picture into the shown one, from the stream's display matrix:
    transpose (swap rows and columns) first, then mirror the columns and/or the rows."""

    transpose: bool = False
    flip_columns: bool = False
    flip_rows: bool = False

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_columns or self.flip_rows)

    def apply(self, picture: np.ndarray) -> np.ndarray:
        """The shown (H', W', ...) picture of a stored (H, W, ...) one."""
        if self.identity:
            return picture
        out = picture.swapaxes(0, 1) if self.transpose else picture
        if self.flip_columns:
            out = out[:, ::-1]
        if self.flip_rows:
            out = out[::-1]
        return np.ascontiguousarray(out)

    def shown_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.transpose else (width, height)

    def describe(self) -> str:
        return "upright" if self.identity else ", ".join(
            name for name, on in (("transpose", self.transpose), ("mirror columns", self.flip_columns),
                                  ("mirror rows", self.flip_rows)) if on)


UPRIGHT = Orientation()


def orientation_of(path: Path, frame: av.VideoFrame) -> Orientation:
    """The Orientation a decoded frame's display matrix asks for (upright when it carries none).

    FFmpeg's matrix [a b u; c d v; x y w] (16.16 fixed point) maps a stored pixel (x, y), y downwards,
    to the shown (a x + c y, b x + d y) (plus a shift); so, e.g., a -90 degree rotation (the matrix of a
    phone held upright, b = 1, c = -1) turns the picture clockwise. Rotations other than multiples of
    90 degrees (or shears) are refused, naming the file."""
    try:
        raw = frame.side_data[av.sidedata.sidedata.Type.DISPLAYMATRIX]
    except (KeyError, IndexError):
        return UPRIGHT
    m = np.frombuffer(bytes(raw), dtype="<i4")
    if m.size != 9:
        raise MediaError(path, f"display matrix has {m.size} entries, expected 9")
    a, b, c, d = (int(np.sign(v)) if abs(int(v)) > 1 << 8 else 0 for v in (m[0], m[1], m[3], m[4]))
    if b == c == 0 and a and d:
        return Orientation(False, a < 0, d < 0)
    if a == d == 0 and b and c:
        return Orientation(True, c < 0, b < 0)
    degrees = float(np.degrees(np.arctan2(float(m[1]), float(m[0]))))
    raise MediaError(path, f"display matrix {m[:2].tolist() + m[3:5].tolist()} (a {-degrees:.1f} degree rotation) is "
                           "not a multiple of 90 degrees, which is all the decoder turns")


# ----------------------------------------------------------------------------------------------
# Video: a timeline from the packets, frames picked by presentation time
# ----------------------------------------------------------------------------------------------


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

    def sample(self, n: int) -> list[int]:
        """The pts of the frame shown at each of n times spread uniformly (segment centres) over [start, end):
        the frame with the largest pts at or before the time. Constant and variable frame rates alike."""
        shown = sorted(p for p, on in zip(self.pts, self.shown) if on)
        span = self.end - self.start
        picks = []
        for i in range(n):
            at = self.start + Fraction((2 * i + 1) * span, 2 * n)
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
    except _FFMPEG_ERRORS as exc:
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


class _SeekMissed(Exception):
    """A seek did not land on the keyframe it aimed at (or the format cannot seek): decode from the start."""


def _decode_picks(path: Path, container: av.container.InputContainer, stream: av.stream.Stream, timeline: Timeline,
                  wanted: set[int], config: DecodeConfig, seek: bool,
                  at_start: bool = True) -> tuple[dict[int, np.ndarray], Orientation]:
    """The RGB frames at frame_size whose pts are in `wanted`, decoding only what they need. Without seek:
    from the start (or, when the container is not `at_start`, from the first keyframe needed, sought) up
    to the last frame wanted. With seek: each group of wanted frames from the keyframe it is decoded from,
    jumping there when that keyframe lies past where decoding is. A seek that lands anywhere but on that
    keyframe, or an earlier one, raises _SeekMissed. Frames come out as a linear decode gives them:
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
                    raise _SeekMissed
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
                except _FFMPEG_ERRORS:
                    raise _SeekMissed from None
            if jump or packets is None:
                packets = container.demux(stream)
            ended = feed(packets, key, jump)
    except _FFMPEG_ERRORS as exc:
        if not fed:
            raise MediaError(path, f"video stream does not decode: {exc}") from None
        at = float((timeline.pts[max(position, 0)] - timeline.start) * timeline.time_base)
        raise MediaError(path, f"video decoding fails at {at:.2f} s, after {fed} packets (truncated?): {exc}") from None
    if remaining:
        missing = sorted(float((p - timeline.start) * timeline.time_base) for p in remaining)
        raise MediaError(path, f"video frames at {', '.join(f'{s:.2f}' for s in missing[:4])} s of the stream do "
                               "not decode (truncated or corrupt)")
    return picks, orientation or UPRIGHT


def _picks(path: Path, container: av.container.InputContainer, stream: av.stream.Stream, timeline: Timeline,
           wanted: set[int], config: DecodeConfig, seek: bool) -> tuple[dict[int, np.ndarray], Orientation]:
    """_decode_picks in an open container wherever it stands (after the packet pass, say), each start a
    seek; where a seek misses, in a fresh container from the start of the file."""
    try:
        return _decode_picks(path, container, stream, timeline, wanted, config, seek, at_start=False)
    except _SeekMissed:
        with _open(path) as fresh:
            return _decode_picks(path, fresh, fresh.streams[stream.index], timeline, wanted, config, seek=False)


def _video_stream(path: Path, container: av.container.InputContainer) -> av.stream.Stream:
    streams = video_streams(container)
    if not streams:
        kinds = ", ".join(sorted(set(stream_kinds(container)))) or "none"
        raise MediaError(path, f"no video stream (streams present: {kinds}); an audio-only file given as video?")
    return streams[0]


def decode_video(path: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits(),
                 *, seek: bool = True) -> np.ndarray:
    """uint8 (num_frames, frame_size, frame_size, 3) RGB frames as a player shows them: the frame on screen at
    num_frames times spread uniformly over the clip (by presentation time, so variable frame rates are
    sampled evenly too), turned as the stream's display matrix says.

    With seek (the default) each frame is decoded from its keyframe, jumping past the rest, so the cost
    stays about flat in clip length; where a seek misses, the clip is decoded from the start instead
    (seek=False always does that). Both give the same frames."""
    path = check_file(path, limits)
    with _open(path) as container:
        stream = _video_stream(path, container)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width > limits.max_width or height > limits.max_height:
            raise MediaLimitError(path, f"resolution {width}x{height} is over the limit of {limits.max_width}x{limits.max_height}")
        declared = _declared_seconds(container, stream)
        _check_duration(path, declared, limits)
        index = stream.index
        timeline = read_timeline(path, container, stream, limits)
        if timeline is None:
            return _decode_by_count(path, index, config, limits, declared)
        _check_duration(path, timeline.seconds, limits)
        _check_complete(path, "video", timeline.seconds, declared, limits)
        times = timeline.sample(config.num_frames)
        picks, orientation = _picks(path, container, stream, timeline, set(times), config, seek)
    return np.stack([orientation.apply(picks[p]) for p in times])  # (N, H, W, 3)


def _decode_by_count(path: Path, index: int, config: DecodeConfig, limits: MediaLimits,
                     declared: float | None) -> np.ndarray:
    """For a stream whose packets carry no presentation times: every frame decoded, picks by position."""
    reformatter = VideoReformatter()
    size = config.frame_size
    frames: list[np.ndarray] = []
    orientation: Orientation | None = None
    last_time, step = 0.0, 0.0
    with _open(path) as container:
        stream = container.streams[index]
        step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        try:
            for frame in container.decode(stream):
                if orientation is None:
                    orientation = orientation_of(path, frame)
                if frame.time is not None:
                    last_time = float(frame.time)
                    _check_duration(path, last_time, limits)
                frames.append(reformatter.reformat(frame, width=size, height=size, format="rgb24").to_ndarray())
        except _FFMPEG_ERRORS as exc:
            if not frames:
                raise MediaError(path, f"video stream does not decode: {exc}") from None
            raise MediaError(path, f"video decoding failed after {len(frames)} frames (truncated?): {exc}") from None
    if not frames:
        raise MediaError(path, "video stream has no decodable frames (truncated or corrupt)")
    _check_complete(path, "video", last_time + step, declared, limits)
    return np.stack([orientation.apply(frames[i]) for i in uniform_indices(len(frames), config.num_frames)])


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
    with _open(path) as container:
        stream = _video_stream(path, container)
        index, stored = stream.index, (stream.codec_context.width, stream.codec_context.height)
        fps = float(stream.average_rate) if stream.average_rate else None
        declared = _declared_seconds(container, stream)
        try:
            timeline, read_error = read_timeline(path, container, stream, limits), None
        except MediaError as exc:
            timeline, read_error = None, exc.reason
        facts = VideoFacts(stored[0], stored[1], UPRIGHT.describe(), fps, declared,
                           timeline.seconds if timeline else None, None, read_error)
        if timeline is not None:
            try:
                _, orientation = _picks(path, container, stream, timeline, {timeline.start}, config, False)
            except MediaError as exc:
                facts.first_error = exc.reason
                return facts
            facts.width, facts.height = orientation.shown_size(*stored)
            facts.orientation = orientation.describe()
            try:
                _picks(path, container, stream, timeline, {timeline.last}, config, True)
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
        with _open(path) as container:
            if next(container.decode(container.streams[index]), None) is None:
                return "no frame decodes"
    except MediaError as exc:
        return exc.reason
    except _FFMPEG_ERRORS as exc:
        return f"does not decode: {exc}"
    return None


# ----------------------------------------------------------------------------------------------
# Audio: on the video's timeline
# ----------------------------------------------------------------------------------------------


def _start_seconds(stream: av.stream.Stream) -> float | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def decode_audio(path: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits()) -> tuple[np.ndarray, bool]:
    """(float32 (num_samples,) mono waveform at sample_rate, has_audio). No audio track: silence, False.

    The waveform is on the clip's timeline: sample 0 is the moment the file's first video frame is shown
    (in an audio-only file, the audio's own start). Audio that starts later is preceded by silence, audio
    that ends early is followed by it, and audio before the first video frame is left out."""
    path = check_file(path, limits)
    with _open(path) as container:
        if not container.streams.audio:
            if not video_streams(container):
                kinds = ", ".join(sorted(set(stream_kinds(container)))) or "none"
                raise MediaError(path, f"no audio and no video stream (streams present: {kinds})")
            return np.zeros(config.num_samples, dtype=np.float32), False
        stream = container.streams.audio[0]
        videos = video_streams(container)
        origin = _start_seconds(videos[0]) if videos else None
        declared = _declared_seconds(container, stream)
        _check_duration(path, declared, limits)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=config.sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        first_time: float | None = None
        max_samples = int(limits.max_seconds * config.sample_rate) + config.sample_rate
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total > max_samples:
                    raise MediaLimitError(path, f"decoded audio is over the limit of {limits.max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except _FFMPEG_ERRORS as exc:
            raise MediaError(path, f"audio decoding failed (truncated?): {exc}") from None
        start = first_time if first_time is not None else _start_seconds(stream)
    wave = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise MediaError(path, "audio stream has no decodable samples (truncated or corrupt)")
    _check_complete(path, "audio", wave.size / config.sample_rate, declared, limits)
    shift = 0 if origin is None or start is None else int(round((start - origin) * config.sample_rate))
    if shift > 0:
        wave = np.concatenate([np.zeros(min(shift, config.num_samples), np.float32), wave])
    elif shift < 0:
        wave = wave[-shift:]
    return fit_length(wave, config.num_samples), True


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop to the first n samples or pad the end with silence."""
    if wave.size >= n:
        return np.ascontiguousarray(wave[:n])
    return np.pad(wave, (0, n - wave.size))


def _hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular HTK-mel filters, float32 (n_fft // 2 + 1, n_mels), each normalised to unit area (Slaney)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    mel_pts = torch.linspace(float(_hz_to_mel(f_min)), float(_hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    hz_pts = _mel_to_hz(mel_pts)  # (M + 2,)
    lower, centre, upper = hz_pts[:-2], hz_pts[1:-1], hz_pts[2:]  # (M,) each
    up = (freqs[:, None] - lower) / (centre - lower)  # (F, M)
    down = (upper - freqs[:, None]) / (upper - centre)  # (F, M)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (upper - lower))  # equal area per filter
    return fb.to(torch.float32)


def log_mel(wave: np.ndarray | torch.Tensor, config: DecodeConfig = DecodeConfig()) -> torch.Tensor:
    """float32 (..., n_mels, frames) log mel power spectrogram of (..., samples) waveforms."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    window = torch.hann_window(config.n_fft, dtype=torch.float32)
    spec = torch.stft(x, config.n_fft, config.hop_length, window=window, center=True, return_complex=True)
    power = spec.abs().pow(2)  # (..., F, frames)
    fb = mel_filterbank(config.n_fft, config.n_mels, config.sample_rate, config.f_min, config.f_max)
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)  # (..., n_mels, frames), a transposed view
    # contiguous: a decoded clip must have the layout of one read back from the feature cache, or the
    # encoder's kernels, which follow the strides, round differently and a fresh run drifts from a cached one
    return torch.log(mel + 1e-6).contiguous()


def probe(path: str | Path, limits: MediaLimits = MediaLimits()) -> dict:
    """Stream facts of a file without decoding it: duration, fps, resolution (as stored: inspect_video gives
    it as shown), sample rate, channels. Cover art is listed as "attached picture", not as video."""
    path = check_file(path, limits)
    with _open(path) as container:
        info: dict = {"bytes": path.stat().st_size, "streams": stream_kinds(container)}
        info["duration"] = container.duration / 1_000_000 if container.duration is not None else None
        if video_streams(container):
            v = video_streams(container)[0]
            info.update(width=v.codec_context.width, height=v.codec_context.height,
                        fps=float(v.average_rate) if v.average_rate else None, video_codec=v.codec_context.name)
        if container.streams.audio:
            a = container.streams.audio[0]
            info.update(sample_rate=a.codec_context.sample_rate, channels=a.codec_context.channels,
                        audio_codec=a.codec_context.name)
    return info


AUDIO_INPUTS = ("log_mel", "waveform")  # what Clip.mel holds: the tiny encoder's log-mel, or the waveform itself


def decode_clip(video: str | Path, audio: str | Path, config: DecodeConfig = DecodeConfig(),
                limits: MediaLimits = MediaLimits(), audio_input: str = "log_mel") -> Clip:
    """Frames from `video`, log-mel (or, with audio_input="waveform", the (num_samples,) waveform, for a
    backbone that computes its own features) from `audio` (often the same mp4)."""
    if audio_input not in AUDIO_INPUTS:
        raise ValueError(f"audio_input must be one of {', '.join(AUDIO_INPUTS)}, got {audio_input!r}")
    frames = decode_video(video, config, limits)
    wave, has_audio = decode_audio(audio, config, limits)
    mel = wave if audio_input == "waveform" else log_mel(wave, config).numpy()
    return Clip(frames=frames, mel=mel, has_audio=has_audio)

