"""What the transformer refuses, in one place: request size, rows, media size and duration, top-k.

The defaults here are also the `serve` command's, so this module imports nothing heavy (the decoder's
MediaLimits only when asked for).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.media import MediaLimits

MiB = 1024 * 1024
MAX_BATCH_SIZE = 64  # rows per Triton request (config.pbtxt max_batch_size) and per transformer request


@dataclass(frozen=True)
class ServingLimits:
    """Bounds on one request. Over any of them the request gets a 4xx naming the limit and the value."""

    max_request_bytes: int = 64 * MiB  # whole HTTP body / gRPC message
    max_media_bytes: int = 16 * MiB  # one VIDEO or AUDIO element
    max_media_seconds: float = 30.0  # declared or decoded duration of one clip
    max_rows: int = MAX_BATCH_SIZE  # rows per request (Triton's max_batch_size)
    max_top_k: int = 100  # search results per row

    def __post_init__(self) -> None:
        bad = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if not getattr(self, f.name) > 0]
        if self.max_rows > MAX_BATCH_SIZE:
            bad.append(f"max_rows={self.max_rows} (at most Triton's max_batch_size {MAX_BATCH_SIZE})")
        if bad:
            raise ValueError(f"invalid serving limit(s): {', '.join(bad)}; every limit must be positive")

    def media(self) -> MediaLimits:
        """The decoder's limits for request media."""
        from model.media import MediaLimits  # torch and PyAV: only where media is decoded

        return MediaLimits(max_file_bytes=self.max_media_bytes, max_seconds=self.max_media_seconds)

    def to_args(self) -> list[str]:
        """Command-line flags of serving.transformer that reproduce these limits."""
        return [arg for name, value in asdict(self).items() for arg in (f"--{name}", str(value))]
