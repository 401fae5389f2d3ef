"""Typed errors for bad input. Each names what was wrong and where (file, line, field)."""

from __future__ import annotations

from pathlib import Path


class OmniRetrieverError(Exception):
    """Base class of every error this project raises on bad input."""


class ManifestError(OmniRetrieverError, ValueError):
    """A manifest line that cannot be used: invalid JSON, a missing field, an empty caption, ..."""

    def __init__(self, source: str | Path, line: int | None, reason: str, record_id: str | None = None):
        self.source = str(source)
        self.line = line
        self.reason = reason
        self.record_id = record_id
        where = self.source if line is None else f"{self.source}:{line}"
        who = f" (id {record_id!r})" if record_id else ""
        super().__init__(f"{where}{who}: {reason}")

    def __reduce__(self):  # survives pickling (worker processes)
        return (type(self), (self.source, self.line, self.reason, self.record_id))


class PathEscapeError(OmniRetrieverError, ValueError):
    """A media path that would resolve outside the data root (../, absolute, or a symlink out)."""

    def __init__(self, path: str, root: Path, reason: str):
        self.path = path
        self.root = root
        self.reason = reason
        super().__init__(f"media path {path!r} is not allowed: {reason} (data root {root})")

    def __reduce__(self):
        return (type(self), (self.path, self.root, self.reason))


class MediaError(OmniRetrieverError, ValueError):
    """A media file that cannot be decoded: missing, empty, truncated, wrong streams, ..."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class MediaLimitError(MediaError):
    """A media file over a configured limit (file size, duration, resolution)."""


class InputError(OmniRetrieverError, ValueError):
    """One row of an embedding request that cannot be used: no modality, a wrong type, undecodable media."""

    def __init__(self, row: int, field: str | None, reason: str):
        self.row = row
        self.field = field
        self.reason = reason
        where = f"row {row}" + (f", {field}" if field else "")
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (type(self), (self.row, self.field, self.reason))


class VersioningError(OmniRetrieverError):
    """A dataset that cannot be versioned, pushed or pulled: no DVC project, no .dvc file, a hash mismatch, ..."""


class ExportError(OmniRetrieverError, RuntimeError):
    """An ONNX export that cannot be trusted: its outputs differ from the PyTorch model's."""


class TrainingDiverged(OmniRetrieverError, RuntimeError):
    """Training met a non-finite loss term or gradient norm and stopped before stepping the optimizer on it.

    `step` is the 1-based step (as in train_log.jsonl), `reason` what was not finite, `checkpoint` the
    last checkpoint written before it (None when there is none); that checkpoint and the run's log stay."""

    def __init__(self, step: int, reason: str, checkpoint: str | Path | None = None):
        self.step = step
        self.reason = reason
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        last = f"the last good checkpoint is {self.checkpoint}" if self.checkpoint else "no checkpoint was written"
        super().__init__(f"training diverged at step {step}: {reason}; {last}")

    def __reduce__(self):
        return (type(self), (self.step, self.reason, self.checkpoint))


class RankLost(OmniRetrieverError, RuntimeError):
    """A distributed run lost one or more of its ranks (a process or a whole node gone): a collective with them
    failed on this rank. `lost` are the ranks that did not answer the roll call after the failure."""

    def __init__(self, lost: list[int], size: int, rank: int, detail: str):
        self.lost = list(lost)
        self.size = size
        self.rank = rank
        self.detail = detail
        who = ", ".join(str(r) for r in self.lost) if self.lost else "an unknown rank"
        super().__init__(f"lost rank {who} of {size} (seen from rank {rank}): {detail}")

    def __reduce__(self):
        return (type(self), (self.lost, self.size, self.rank, self.detail))


class CheckpointError(OmniRetrieverError, ValueError):
    """A pretrained checkpoint directory that cannot be used: a missing file, a bad or missing field,
    incomplete weights. `path` is the file (or directory) at fault, `field` the config field or weight
    key concerned (None when the whole file is)."""

    def __init__(self, path: str | Path, field: str | None, reason: str):
        self.path = str(path)
        self.field = field
        self.reason = reason
        where = self.path if field is None else f"{self.path}: {field}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.field, self.reason))


class PlaceholderMismatch(OmniRetrieverError, ValueError):
    """Placeholder tokens that disagree with the features meant for them. Checked before splicing,
    because a masked scatter would truncate or leave placeholders silently."""

    def __init__(self, modality: str, placeholders: int, features: int, row: int | None = None):
        self.modality = modality
        self.placeholders = placeholders
        self.features = features
        self.row = row
        where = "" if row is None else f"row {row}: "
        super().__init__(f"{where}{modality}: {placeholders} placeholder tokens for {features} feature vectors")

    def __reduce__(self):
        return (type(self), (self.modality, self.placeholders, self.features, self.row))
