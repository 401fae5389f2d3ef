"""The probe: every manifest line becomes one row of media facts, filled in a process pool.

Each record's row says, stage by stage, whether its paths stay inside the data root, its files exist,
its containers open, it has video and audio streams, its first and last frames and its audio decode,
and what its duration, fps, resolution (as shown, and as long and short side), sample rate and audio RMS
are. A stage column reads OK or says what failed; null means an earlier stage failed (and that one says
why), so each problem is reported once. Lines that are not records carry why in `manifest_error`.

An item without video or without audio ("video": null, or a file without that stream) is refused unless
Thresholds.allow_partial: then the missing modality's stream column reads ABSENT, its later stages stay
null, and `modalities` names the view the item really has ("tva", "tv" video-only, "at" audio-only).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataset.rules import ABSENT, BAD_CAPTION_CHARS, MAX_DECODE_SECONDS, OK, Thresholds
from model.errors import ManifestError, MediaError, PathEscapeError
from model.manifest import FIELDS, MEDIA_FIELDS, manifest_path, parse_alt_texts, resolve_media, scan_manifest
from model import media
from model.media import DecodeConfig, MediaLimits, decode_audio
from model.modalities import A, T, V, VIEWS
from model.parallel import map_with_progress

# The probe's columns, in stage order. A stage column reads OK or says what failed; null means an
# earlier stage failed (and that one says why), so each problem is reported once.
MEDIA_COLUMNS: tuple[str, ...] = (
    "probe_error", "paths_inside_root", "files_exist", "file_bytes", "containers_open", "has_video_stream",
    "has_audio_stream", "first_frame_decodes", "last_frame_decodes", "audio_decodes", "duration", "fps",
    "width", "height", "long_side", "short_side", "sample_rate", "audio_rms", "modalities",
)
# columns whose failing value is itself the explanation
MESSAGE_COLUMNS = frozenset({"manifest_error", "probe_error", "paths_inside_root", "files_exist", "containers_open",
                             "has_video_stream", "has_audio_stream", "first_frame_decodes", "last_frame_decodes",
                             "audio_decodes"})

_BAD_CAPTION = re.compile(BAD_CAPTION_CHARS)


@dataclass
class Line:
    """One manifest line as the table sees it."""

    split: str
    line: int
    raw: str
    fields: dict[str, Any] | None  # the JSON object when the line is a record (see _fields), else None
    manifest_error: str | None  # why the line is not a record (None: it is one, maybe with bad content)

    @property
    def where(self) -> str:
        return f"{self.split}:{self.line}"



# ----------------------------------------------------------------------------------------------
# Reading the manifests: every line, good or bad
# ----------------------------------------------------------------------------------------------


def splits_of(data: Path, split: str | None) -> list[str]:
    """The split named, or every manifests/*.jsonl (train, val, test first). Raises ManifestError if none."""
    if split is not None:
        manifest_path(data, split)  # refuses names that are not plain
        return [split]
    found = sorted(p.stem for p in (data / "manifests").glob("*.jsonl") if p.is_file())
    if not found:
        raise ManifestError(data / "manifests", None, "no manifests/*.jsonl to validate (is this a dataset root?)")
    order = {name: i for i, name in enumerate(("train", "val", "test"))}
    return sorted(found, key=lambda s: (order.get(s, len(order)), s))


def read_lines(data: Path, split: str | None) -> list[Line]:
    """Every non-blank line of the chosen manifests. ManifestError if a manifest cannot be read or none has a line."""
    lines: list[Line] = []
    for name in splits_of(data, split):
        for scanned in scan_manifest(manifest_path(data, name)):
            fields = _fields(scanned.raw)
            error = _manifest_error(scanned, fields)
            lines.append(Line(name, scanned.line, scanned.raw, None if error else fields, error))
    if not lines:
        raise ManifestError(data / "manifests", None, f"no records in {', '.join(splits_of(data, split))}")
    return lines


def _fields(raw: str) -> dict[str, Any] | None:
    """The line's JSON object if it holds id and text as strings and video and audio as strings or null, at
    least one a string (content is the suite's business)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not all(isinstance(obj.get(f), str) for f in FIELDS if f not in MEDIA_FIELDS):
        return None
    paths = [obj.get(f, 0) for f in MEDIA_FIELDS]  # 0: the field is missing
    if not all(p is None or isinstance(p, str) for p in paths) or not any(isinstance(p, str) for p in paths):
        return None
    return obj


def _manifest_error(scanned, fields: dict[str, Any] | None) -> str | None:
    """Why a line is not a record. Content errors (empty caption, id or path) are left to the expectations,
    which name them; an undecodable line (U+FFFD from non-UTF-8 bytes) or a malformed one keeps its error."""
    if scanned.error is None:
        return None
    if fields is None or "\ufffd" in scanned.raw:
        return scanned.error.reason
    return None


def raw_bytes(path: Path, wanted: set[int]) -> dict[int, bytes]:
    """The exact bytes of some lines (numbered as scan_manifest numbers them), without the newline."""
    found: dict[int, bytes] = {}
    with open(path, "rb") as fh:
        for lineno, rawb in enumerate(fh, start=1):
            if lineno in wanted:
                found[lineno] = rawb.rstrip(b"\r\n")
    return found


# ----------------------------------------------------------------------------------------------
# The probe: one row of media facts per record, in a process pool
# ----------------------------------------------------------------------------------------------


def probe_table(data: Path, lines: list[Line], thresholds: Thresholds, *, workers: int | None = None,
                progress: bool = True):
    """A pandas DataFrame, one row per line: where, split, line, id, text, video, audio, manifest_error
    and the MEDIA_COLUMNS (all null for a line that is not a record)."""
    import pandas as pd

    jobs = [(str(data.resolve()), ln.fields, thresholds) for ln in lines if ln.fields is not None]
    media = iter(_run_probes(jobs, workers, progress))
    rows = []
    for ln in lines:
        row: dict[str, Any] = {"where": ln.where, "split": ln.split, "line": ln.line}
        row.update({f: (ln.fields or {}).get(f) for f in FIELDS})
        row["manifest_error"] = ln.manifest_error
        row["alt_texts_issue"] = alt_texts_issue(ln.fields, thresholds) if ln.fields is not None else None
        row.update(next(media) if ln.fields is not None else dict.fromkeys(MEDIA_COLUMNS))
        rows.append(row)
    return pd.DataFrame(rows)


def alt_texts_issue(fields: dict[str, Any], thresholds: Thresholds) -> str | None:
    """What is wrong with a record's optional alt_texts (its further captions), or None when nothing is:
    the same rules as the main caption (content, length, characters), naming the caption by index."""
    try:
        alts = parse_alt_texts(fields)
    except ManifestError as exc:
        return exc.reason
    for i, alt in enumerate(alts):
        if len(alt) > thresholds.max_caption_chars:
            return f"alt_texts[{i}] is {len(alt)} characters, over {thresholds.max_caption_chars}"
        if _BAD_CAPTION.search(alt):
            return f"alt_texts[{i}] has control or invalid characters"
    return None


def _run_probes(jobs: list[tuple], workers: int | None, progress: bool) -> list[dict[str, Any]]:
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    return list(map_with_progress(probe_job, jobs, workers=workers, label="probe", progress=progress))


def probe_job(job: tuple[str, dict[str, Any], Thresholds]) -> dict[str, Any]:
    """probe_record for a pool: (root, fields, thresholds)."""
    root, fields, thresholds = job
    return probe_record(Path(root), fields, thresholds)


def probe_record(root: Path, fields: dict[str, Any], thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The MEDIA_COLUMNS of one record. Never raises: an unexpected failure is reported in `probe_error`."""
    row: dict[str, Any] = dict.fromkeys(MEDIA_COLUMNS)
    try:
        _probe_stages(root, fields, thresholds, row)
    except Exception as exc:  # noqa: BLE001 - a record must be reported, whatever the decoder raised
        row["probe_error"] = f"{type(exc).__name__}: {exc}"
    return row


def _probe_stages(root: Path, fields: dict[str, Any], thresholds: Thresholds, row: dict[str, Any]) -> None:
    """Fill row stage by stage: a stage column reads OK or says what failed; after a failure, stop."""
    limits = thresholds.media_limits()
    declared = {role: fields[role] for role in MEDIA_FIELDS if fields.get(role) is not None}
    paths = _resolve(root, declared, row)
    if paths is None:
        return
    rel = {p: declared[role] for role, p in reversed(paths.items())}  # file -> its manifest path
    if not _files_present(rel, limits, row):
        return
    infos = _open_all(rel, limits, row)
    if infos is None:
        return
    found = {role: _has_stream(infos[paths[role]], role, declared[role]) if role in declared else None
             for role in MEDIA_FIELDS}
    for role in MEDIA_FIELDS:
        row[f"has_{role}_stream"] = _stream_stage(role, found, thresholds.allow_partial)
    present = [role for role in MEDIA_FIELDS if found[role] == OK]
    row["modalities"] = _view(present)
    timed = paths[present[0] if present else next(iter(declared))]  # the duration is the video's, else the audio's
    row["duration"] = infos[timed].get("duration")
    if found["video"] == OK:
        _probe_video(paths["video"], fields["video"], infos[paths["video"]], limits, row)
    if found["audio"] == OK:
        _probe_audio(paths["audio"], fields["audio"], infos[paths["audio"]], limits, row)


def _stream_stage(role: str, found: dict[str, str | None], allow_partial: bool) -> str:
    """A stream stage's column: OK, ABSENT (a modality the item may lack) or why the item fails it. found holds,
    per role, OK, why its file lacks the stream, or None for a null field."""
    if found[role] == OK:
        return OK
    if not allow_partial:
        return found[role] or (f"{role} is null (an item without {role}): pass --allow-partial if this dataset "
                               "holds such items")
    if OK in found.values() or found[role] is None:
        return ABSENT
    return found[role]  # neither modality is there: the declared file's own reason


def _view(roles: list[str]) -> str:
    """The VIEWS key of text plus these media roles: "tva", "tv", "at" or "t"."""
    mods = (T,) + tuple(m for role, m in (("video", V), ("audio", A)) if role in roles)
    return next(name for name, view in VIEWS.items() if view == mods)


def _resolve(root: Path, declared: dict[str, str], row: dict[str, Any]) -> dict[str, Path] | None:
    paths: dict[str, Path] = {}
    for role, name in declared.items():
        try:
            paths[role] = resolve_media(root, name)
        except PathEscapeError as exc:
            row["paths_inside_root"] = f"{role}: {exc}"
            return None
    row["paths_inside_root"] = OK
    return paths


def _files_present(rel: dict[Path, str], limits: MediaLimits, row: dict[str, Any]) -> bool:
    """Every file exists and is a regular file; file_bytes is the smallest size (the suite checks the range)."""
    for path, name in rel.items():
        if not path.is_file():
            row["files_exist"] = f"{name}: {'not a regular file' if path.exists() else 'file not found'}"
            return False
    row["files_exist"] = OK
    sizes = [path.stat().st_size for path in rel]
    bad = [size for size in sizes if not 0 < size <= limits.max_file_bytes]
    row["file_bytes"] = bad[0] if bad else min(sizes)
    return not bad


def _open_all(rel: dict[Path, str], limits: MediaLimits, row: dict[str, Any]) -> dict[Path, dict] | None:
    infos: dict[Path, dict] = {}
    for path, name in rel.items():
        try:
            infos[path] = media.probe(path, limits)
        except MediaError as exc:
            row["containers_open"] = f"{name}: {exc.reason}"
            return None
    row["containers_open"] = OK
    return infos


def _has_stream(info: dict, kind: str, name: str) -> str:
    if kind in info["streams"]:
        return OK
    return f"{name} has no {kind} stream (streams: {', '.join(info['streams']) or 'none'})"


def _probe_video(path: Path, name: str, info: dict, limits: MediaLimits, row: dict[str, Any]) -> None:
    """First and last frame, and the size as a player shows it (a portrait phone clip stored 1920x1080 with
    a -90 degree display matrix is 1080x1920). Works without an index (MPEG-TS, fragmented mp4, webm)."""
    row["fps"] = info.get("fps") or 0.0
    _size(row, info.get("width"), info.get("height"))
    try:
        facts = media.inspect_video(path, limits)
    except MediaError as exc:
        row["first_frame_decodes"] = f"{name}: {exc.reason}"
        return
    _size(row, facts.width, facts.height)
    row["first_frame_decodes"] = OK if facts.first_error is None else f"{name}: {facts.first_error}"
    if facts.first_error is None:
        row["last_frame_decodes"] = OK if facts.last_error is None else f"{name}: {facts.last_error}"
    if row["duration"] is None:
        row["duration"] = facts.declared or facts.seconds


def _size(row: dict[str, Any], width: int | None, height: int | None) -> None:
    """width and height, and the same as long and short side (what the resolution limits bound)."""
    row.update(width=width, height=height)
    if width is not None and height is not None:
        row.update(long_side=max(width, height), short_side=min(width, height))


def _probe_audio(path: Path, name: str, info: dict, limits: MediaLimits, row: dict[str, Any]) -> None:
    row["sample_rate"] = info.get("sample_rate")
    seconds = min(max(row["duration"] or 1.0, 0.1), MAX_DECODE_SECONDS)
    try:
        wave, _ = decode_audio(path, DecodeConfig(audio_seconds=seconds), limits)
    except MediaError as exc:
        row["audio_decodes"] = f"{name}: {exc.reason}"
        return
    row["audio_decodes"] = OK
    row["audio_rms"] = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
