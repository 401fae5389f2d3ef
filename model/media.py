"""Media decoding with PyAV: uniformly sampled RGB frames and 16 kHz mono log-mel audio.

    decode_video(path)  -> uint8 (N, H, W, 3): N frames sampled uniformly over the clip, resized to H x W
    decode_audio(path)  -> (float32 (S,), has_audio): mono waveform at `sample_rate`, padded or cropped
                           to `audio_seconds`. A file with no audio track gives silence and
                           has_audio=False (a video-only clip is legal input; the flag lets callers
                           mask the modality or reject the clip, as the caller decides).
    log_mel(waveform)   -> float32 (n_mels, frames): log(mel power + 1e-6), computed with torch
    decode_clip(...)    -> Clip: the three above for one record (or frames and the waveform itself)

Every failure is a MediaError (or MediaLimitError) naming the file and the problem, raised before
a decoder is ever handed something it could choke on: missing or empty files, files over the size
limit, containers that do not open (truncated, not media), missing streams, resolution and duration
limits, and clips that stop far short of their declared duration.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
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


def decode_video(path: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits()) -> np.ndarray:
    """uint8 (num_frames, frame_size, frame_size, 3) RGB frames sampled uniformly over the clip."""
    path = check_file(path, limits)
    with _open(path) as container:
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise MediaError(path, f"no video stream (streams present: {kinds}); an audio-only file given as video?")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width > limits.max_width or height > limits.max_height:
            raise MediaLimitError(path, f"resolution {width}x{height} is over the limit of {limits.max_width}x{limits.max_height}")
        declared = _declared_seconds(container, stream)
        _check_duration(path, declared, limits)
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        # Convert only the frames we keep when the container states its frame count (mp4 does);
        # if the count turns out wrong, decode again converting every frame.
        counted = stream.frames if stream.frames and stream.frames > 0 else None
        frames, n_decoded, last_time = _decode_frames(path, container, stream, config, limits, counted)
    if counted is not None and n_decoded != counted:
        with _open(path) as container:
            frames, n_decoded, last_time = _decode_frames(path, container, container.streams.video[0], config, limits, None)
    if not frames:
        raise MediaError(path, "video stream has no decodable frames (truncated or corrupt)")
    _check_complete(path, "video", last_time + (1.0 / fps if fps else 0.0), declared, limits)
    if counted is None or n_decoded != counted:
        frames = [frames[i] for i in uniform_indices(len(frames), config.num_frames)]
    return np.stack(frames)  # (N, H, W, 3)


def _decode_frames(path: Path, container: av.container.InputContainer, stream: av.stream.Stream,
                   config: DecodeConfig, limits: MediaLimits, counted: int | None) -> tuple[list[np.ndarray], int, float]:
    """RGB frames at frame_size: the uniform picks among `counted` frames, or every frame if counted is None."""
    wanted = uniform_indices(counted, config.num_frames) if counted else None
    reformatter = VideoReformatter()  # reuses one scaler context across frames
    size = config.frame_size
    frames: list[np.ndarray] = []
    n_decoded, last_time = 0, 0.0
    try:
        for frame in container.decode(stream):
            if frame.time is not None:
                last_time = float(frame.time)
                _check_duration(path, last_time, limits)
            if wanted is None or n_decoded in wanted:
                rgb = reformatter.reformat(frame, width=size, height=size, format="rgb24").to_ndarray()  # (H, W, 3)
                frames.extend([rgb] * (wanted.count(n_decoded) if wanted else 1))
            n_decoded += 1
    except _FFMPEG_ERRORS as exc:
        if not n_decoded:
            raise MediaError(path, f"video stream does not decode: {exc}") from None
        raise MediaError(path, f"video decoding failed after {n_decoded} frames (truncated?): {exc}") from None
    return frames, n_decoded, last_time


def decode_audio(path: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits()) -> tuple[np.ndarray, bool]:
    """(float32 (num_samples,) mono waveform at sample_rate, has_audio). No audio track: silence, False."""
    path = check_file(path, limits)
    with _open(path) as container:
        if not container.streams.audio:
            if not container.streams.video:
                raise MediaError(path, "no audio and no video stream")
            return np.zeros(config.num_samples, dtype=np.float32), False
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        _check_duration(path, declared, limits)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=config.sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        max_samples = int(limits.max_seconds * config.sample_rate) + config.sample_rate
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total > max_samples:
                    raise MediaLimitError(path, f"decoded audio is over the limit of {limits.max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except _FFMPEG_ERRORS as exc:
            raise MediaError(path, f"audio decoding failed (truncated?): {exc}") from None
    wave = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise MediaError(path, "audio stream has no decodable samples (truncated or corrupt)")
    _check_complete(path, "audio", wave.size / config.sample_rate, declared, limits)
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
    """Stream facts of a file without decoding it: duration, fps, resolution, sample rate, channels."""
    path = check_file(path, limits)
    with _open(path) as container:
        info: dict = {"bytes": path.stat().st_size, "streams": [s.type for s in container.streams]}
        info["duration"] = container.duration / 1_000_000 if container.duration is not None else None
        if container.streams.video:
            v = container.streams.video[0]
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

