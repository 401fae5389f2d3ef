"""The one set of media limits (MediaLimits): how large, how long and how big a picture any media file may be.

Declared once, here, and applied by everything that opens media: the decoder (model.media, which
re-exports MediaLimits), validation (dataset.rules.Thresholds takes its maxima from it), the Embedder and
index build (MediaLimits() by default) and the server (serving.limits.ServingLimits, which keeps a tighter
per-element byte limit as a documented subset). This module imports nothing but the standard library, so
the server's option parsing can read the defaults without loading torch or PyAV.

Resolution is orientation-free: a long side and a short side, so a portrait phone clip (2160x3840) passes
wherever its landscape twin (3840x2160) does, and DCI 4K (4096x2160) passes too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class MediaLimits:
    """Refuse media over these bounds before decoding it."""

    max_file_bytes: int = 64 * 1024 * 1024  # one clip file
    max_seconds: float = 60.0  # declared or decoded duration of one clip (a query, a training or evaluation item)
    max_windowed_seconds: float = 3600.0  # the longest item index build takes, cut into windows of the model's length
    max_long_side: int = 4096  # the larger of width and height, px (DCI 4K 4096x2160, either way up)
    max_short_side: int = 2304  # the smaller of width and height, px (4096x2304 is 16:9 at the long side's limit)
    min_decoded_fraction: float = 0.5  # decoded span / declared duration below this = truncated

    def __post_init__(self) -> None:
        bad = [f"{f.name}={getattr(self, f.name)!r} (must be positive)" for f in fields(self)
               if isinstance(getattr(self, f.name), bool) or not getattr(self, f.name) > 0]
        if self.min_decoded_fraction > 1:
            bad.append(f"min_decoded_fraction={self.min_decoded_fraction!r} (must be at most 1)")
        if not bad and self.max_windowed_seconds < self.max_seconds:
            bad.append(f"max_windowed_seconds={self.max_windowed_seconds!r} is under max_seconds={self.max_seconds!r}")
        if not bad and self.max_short_side > self.max_long_side:
            bad.append(f"max_short_side={self.max_short_side} is over max_long_side={self.max_long_side}")
        if bad:
            raise ValueError(f"MediaLimits: invalid {'; '.join(bad)}")

    def windowed(self) -> "MediaLimits":
        """These limits for media cut into windows (index build, index add): an item may last
        max_windowed_seconds, each window being far shorter."""
        return replace(self, max_seconds=self.max_windowed_seconds)

    def check_size(self, width: int, height: int) -> str | None:
        """Why a width x height picture (either way up) is over the limits, naming each side over, or None."""
        long_side, short_side = max(width, height), min(width, height)
        over = [f"{name} side {side} > {limit} px" for name, side, limit in
                (("long", long_side, self.max_long_side), ("short", short_side, self.max_short_side)) if side > limit]
        return f"resolution {width}x{height} is over the limit: {' and '.join(over)}" if over else None
