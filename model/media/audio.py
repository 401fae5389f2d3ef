"""Audio on the video's timeline (`decode_audio`: 16 kHz mono, a late start is silence first) and its
log-mel features (`log_mel`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import torch

from model.errors import MediaError, MediaLimitError
from model.media.settings import DecodeConfig, MediaLimits
from model.media.streams import (FFMPEG_ERRORS, check_complete, check_duration, check_file, declared_seconds,
                                 open_container, stream_kinds, video_streams)


def _start_seconds(stream: av.stream.Stream) -> float | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def decode_audio(path: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits()) -> tuple[np.ndarray, bool]:
    """(float32 (num_samples,) mono waveform at sample_rate, has_audio). No audio track: silence, False.

    The waveform is on the clip's timeline: sample 0 is the moment the file's first video frame is shown
    (in an audio-only file, the audio's own start). Audio that starts later is preceded by silence, audio
    that ends early is followed by it, and audio before the first video frame is left out."""
    wave, has_audio = audio_track(path, config, limits)
    return fit_length(wave, config.num_samples), has_audio


def audio_track(path: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits()
                ) -> tuple[np.ndarray, bool]:
    """(float32 (S,) the whole mono waveform at sample_rate on the clip's timeline, as decode_audio places it,
    has_audio); no audio track: an empty waveform and False. decode_audio is its first num_samples."""
    path = check_file(path, limits)
    with open_container(path) as container:
        if not container.streams.audio:
            if not video_streams(container):
                kinds = ", ".join(sorted(set(stream_kinds(container)))) or "none"
                raise MediaError(path, f"no audio and no video stream (streams present: {kinds})")
            return np.zeros(0, dtype=np.float32), False
        stream = container.streams.audio[0]
        videos = video_streams(container)
        origin = _start_seconds(videos[0]) if videos else None
        declared = declared_seconds(container, stream)
        check_duration(path, declared, limits)
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
        except FFMPEG_ERRORS as exc:
            raise MediaError(path, f"audio decoding failed (truncated?): {exc}") from None
        start = first_time if first_time is not None else _start_seconds(stream)
    wave = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise MediaError(path, "audio stream has no decodable samples (truncated or corrupt)")
    check_complete(path, "audio", wave.size / config.sample_rate, declared, limits)
    shift = 0 if origin is None or start is None else int(round((start - origin) * config.sample_rate))
    if shift > 0:
        lead = min(shift, int(limits.max_seconds * config.sample_rate))  # what the limit lets the timeline hold
        wave = np.concatenate([np.zeros(lead, np.float32), wave])
    elif shift < 0:
        wave = wave[-shift:]
    return wave, True


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

