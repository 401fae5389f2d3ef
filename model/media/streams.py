"""Opening a media file and telling its streams apart: the file checks every decode starts with, duration and
completeness checks, which streams are video (cover art is not), and how a picture is shown (the display
matrix, `orientation_of`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from model.errors import MediaError, MediaLimitError
from model.media.settings import MediaLimits

FFMPEG_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError, EOFError)


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


def open_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except FFMPEG_ERRORS as exc:
        raise MediaError(path, f"cannot open as a media container (truncated or not a media file): {exc}") from None


def declared_seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def check_duration(path: Path, seconds: float | None, limits: MediaLimits) -> None:
    if seconds is not None and seconds > limits.max_seconds:
        raise MediaLimitError(path, f"duration {seconds:.2f} s is over the limit of {limits.max_seconds:g} s")


def check_complete(path: Path, what: str, decoded: float, declared: float | None, limits: MediaLimits) -> None:
    if declared and declared > 0 and decoded < limits.min_decoded_fraction * declared:
        raise MediaError(path, f"truncated: decoded {decoded:.2f} s of {what} out of a declared {declared:.2f} s")


def uniform_indices(n_available: int, n_wanted: int) -> list[int]:
    """Indices of n_wanted frames spread uniformly (segment centres) over n_available frames."""
    return [min(n_available - 1, int((i + 0.5) * n_available / n_wanted)) for i in range(n_wanted)]




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

