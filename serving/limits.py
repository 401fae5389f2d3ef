"""What the transformer refuses and how long it waits, in one place: request size and shape, media, top-k,
worker pools, queueing deadline and the HTTP server's timeouts.

Media follow the one set of media limits (model/media_limits.py: the same duration and resolution as
validation, the Embedder and index build), with one documented tightening: max_media_bytes, 16 MiB per VIDEO
or AUDIO element where a file may have 64 MiB, so that a request of several clips fits the 64 MiB body.

The defaults here are also the `serve` command's, so this module imports nothing heavy (MediaLimits is
declared in a standard-library-only module).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from model.media_limits import MediaLimits

MiB = 1024 * 1024
MAX_BATCH_SIZE = 64  # rows per Triton request (config.pbtxt max_batch_size) and per transformer request
REQUEST_INPUTS = 3  # TEXT, VIDEO, AUDIO: the most inputs one request can carry
SLOW_CLIENT_BYTES_PER_SECOND = 1 * MiB  # the upload rate (8 Mbit/s) the default body timeout still admits


@dataclass(frozen=True)
class ServingLimits:
    """Bounds on one request and on the time spent waiting for it. Over any size limit the request gets a
    4xx naming the limit and the value; past a wait it gets 503 (HTTP, with Retry-After) / UNAVAILABLE (gRPC),
    or its connection is closed (a body or headers that never finish). Media limits are the shared MediaLimits'
    (media()) but for max_media_bytes, a tighter subset (see the module docstring)."""

    max_request_bytes: int = 64 * MiB  # whole HTTP body / gRPC message
    max_media_bytes: int = 16 * MiB  # one VIDEO or AUDIO element: a subset of MediaLimits' 64 MiB a file
    max_media_seconds: float = MediaLimits().max_seconds  # declared or decoded duration of one clip: the shared limit
    max_rows: int = MAX_BATCH_SIZE  # rows per request (Triton's max_batch_size)
    max_top_k: int = 100  # search results per row
    max_elements: int = REQUEST_INPUTS * MAX_BATCH_SIZE  # tensor elements per request, empty ones included
    max_json_bytes: int = 2 * MiB  # a JSON request body, or the JSON header of a binary one
    text_workers: int = 2  # threads preprocessing caption-only requests
    media_workers: int = 2  # threads decoding requests that carry video or audio
    queue_timeout_seconds: float = 10.0  # longest wait for a free worker before the request gets 503
    header_timeout_seconds: float = 10.0  # HTTP: from a request's first byte to the end of its headers
    body_timeout_seconds: float = 64 * MiB / SLOW_CLIENT_BYTES_PER_SECOND + 6.0  # HTTP: end of headers to end of body
    idle_timeout_seconds: float = 65.0  # HTTP: a connection with no request in progress (keep-alive)

    def __post_init__(self) -> None:
        bad = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if not getattr(self, f.name) > 0]
        if self.max_rows > MAX_BATCH_SIZE:
            bad.append(f"max_rows={self.max_rows} (at most Triton's max_batch_size {MAX_BATCH_SIZE})")
        if bad:
            raise ValueError(f"invalid serving limit(s): {', '.join(bad)}; every limit must be positive")

    def media(self) -> MediaLimits:
        """The decoder's limits for request media: the shared MediaLimits with this element size and duration."""
        return replace(MediaLimits(), max_file_bytes=self.max_media_bytes, max_seconds=self.max_media_seconds)

    def to_args(self) -> list[str]:
        """Command-line flags of serving.transformer that reproduce these limits."""
        return [arg for name, value in asdict(self).items() for arg in (f"--{name}", str(value))]
