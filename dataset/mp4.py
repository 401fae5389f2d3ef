"""Writing mp4 files: H.264 (libx264, yuv420p) and/or AAC mono, byte-identical for identical input
on every x86-64 CPU (the encoders run their portable C code; dataset/ffmpeg_cpu.py)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from dataset.ffmpeg_cpu import portable_cpu_paths

# One encoder thread keeps x264 output byte-identical from run to run, and asm=0 from CPU to CPU: its
# SSSE3 and newer code takes another intra-analysis path (x9 mode search) than its SSE2 and C code,
# so without it a CPU lacking SSSE3 encodes other bytes. C is about 1.5x the encoding time of SIMD
# here, 8 ms per clip. "fast" AAC coding is ~3x faster than the default.
X264_OPTIONS: dict[str, str] = {"threads": "1", "preset": "superfast", "crf": "26", "x264-params": "asm=0"}
AAC_OPTIONS: dict[str, str] = {"aac_coder": "fast"}


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3H/2, W) packed yuv420p planes, BT.601 limited range.

    Integer arithmetic as in libswscale, done here rather than by PyAV's reformatter, whose
    RGB->YUV output fed to the encoder was found to vary from run to run (breaking byte identity).
    """
    n, h, w, _ = frames.shape
    f = frames.astype(np.uint16)
    y = (66 * f[..., 0] + 129 * f[..., 1] + 25 * f[..., 2] + 128 >> 8) + 16
    s = f[:, 0::2] + f[:, 1::2]
    s = (s[:, :, 0::2] + s[:, :, 1::2] + 2 >> 2).astype(np.int16)  # 2x2 mean
    r, g, b = s[..., 0], s[..., 1], s[..., 2]
    u = (-38 * r - 74 * g + 112 * b + 128 >> 8) + 128
    v = (112 * r - 94 * g - 18 * b + 128 >> 8) + 128
    planes = np.concatenate([y.reshape(n, -1), u.reshape(n, -1), v.reshape(n, -1)], axis=1)
    return planes.astype(np.uint8).reshape(n, h * 3 // 2, w)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a uint8 array (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2 or 0 in frames.shape[1:3]:
        raise ValueError(f"frame height and width must be even and non-zero for yuv420p, got {frames.shape[1:3]}")
    return frames


def _encode_video(container: av.container.OutputContainer, stream: av.VideoStream, frames: np.ndarray) -> None:
    for i, planes in enumerate(rgb_to_yuv420p(frames) if len(frames) else []):
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _encode_audio(container: av.container.OutputContainer, stream: av.AudioStream, audio: np.ndarray) -> None:
    if len(audio):
        frame = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1)[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = stream.rate, 0
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_mp4(path: str | Path, frames: np.ndarray | None, audio: np.ndarray | None,
              fps: int = 12, sample_rate: int = 16000) -> Path:
    """Write an mp4 (H.264 yuv420p video and/or AAC mono audio), byte-identical for identical input.

    frames: (N, H, W, 3) uint8 RGB, or None for an audio-only file. audio: float32 mono in [-1, 1]
    (shape (n,) or (1, n)), or None for a video-only file. Zero-length inputs give a stream with no
    packets (handy for edge-case tests).
    """
    if frames is None and audio is None:
        raise ValueError("write_mp4 needs frames, audio or both; got neither")
    frames = None if frames is None else _check_frames(frames)
    audio = None if audio is None else np.asarray(audio, np.float32).reshape(-1)
    path = Path(path)
    with portable_cpu_paths(), av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        # every stream must exist before the first packet is muxed
        if frames is not None:
            video = container.add_stream("libx264", rate=fps, options=X264_OPTIONS)
            video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate, layout="mono", options=AAC_OPTIONS)
        if frames is not None:
            _encode_video(container, video, frames)
        if audio is not None:
            _encode_audio(container, sound, audio)
    return path


def write_video_only(path: str | Path, frames: np.ndarray, fps: int = 12) -> Path:
    """An mp4 with one H.264 video stream and no audio stream."""
    return write_mp4(path, frames, None, fps=fps)


def write_audio_only(path: str | Path, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """An mp4 with one AAC mono audio stream and no video stream."""
    return write_mp4(path, None, audio, sample_rate=sample_rate)
