"""Triple validation: probe every manifest record into a table, run the Great Expectations suite over it.

    validate(DATA, REPORT, split=None, max_rejected=0.0) -> ValidationResult

1. Every line of DATA/manifests/<split>.jsonl (every split when split is None) becomes one row,
   lines that fail to parse included: they carry the parse failure in `manifest_error`.
2. The probe (a process pool, with a progress bar) fills each row's media columns: paths inside
   the data root, files present, size, container opens, video and audio streams, first and last
   frame decode, audio decodes, duration, fps, resolution, sample rate, audio RMS. A stage that
   fails records why and leaves the later stages null, so each problem is reported once.
3. The suite (model/expectations.py) runs over the table with result_format COMPLETE and
   unexpected_index_column_names ["where", "id"], so each failing row is named ("train:17").
4. REPORT/ receives summary.json (counts and ids per failed expectation), validated.jsonl (clean
   records), rejected.jsonl (each rejected record as it was, with its "reasons") and the GX Data
   Docs under data_docs/ (index.html). Every record lands in exactly one of the two manifests.
   The report is built beside REPORT and moved in at the end: a failure leaves the old one intact.

Exit semantics for the CLI: passed is False when the rejected fraction exceeds max_rejected or an
expectation itself errored; an unreadable manifest raises ManifestError instead.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from model.errors import ManifestError, MediaError, PathEscapeError
from model.manifest import FIELDS, manifest_path, parse_alt_texts, resolve_media, scan_manifest
from model.media import DecodeConfig, MediaLimits, decode_audio, probe

ROW_KEYS = ["where", "id"]  # unexpected_index_column_names: "<split>:<line>" names every row, id when known
MAX_DECODE_SECONDS = 600.0  # the probe decodes audio up to this long to measure its level
SUITE_NAME = "omniretriever_triples"
SITE_NAME = "report"
OK = "ok"  # what a probe stage column holds when the stage passed; otherwise it holds the failure

# The probe's columns, in stage order. A stage column reads OK or says what failed; null means an
# earlier stage failed (and that one says why), so each problem is reported once.
MEDIA_COLUMNS: tuple[str, ...] = (
    "probe_error", "paths_inside_root", "files_exist", "file_bytes", "containers_open", "has_video_stream",
    "has_audio_stream", "first_frame_decodes", "last_frame_decodes", "audio_decodes", "duration", "fps",
    "width", "height", "sample_rate", "audio_rms",
)
# columns whose failing value is itself the explanation
MESSAGE_COLUMNS = frozenset({"manifest_error", "probe_error", "paths_inside_root", "files_exist", "containers_open",
                             "has_video_stream", "has_audio_stream", "first_frame_decodes", "last_frame_decodes",
                             "audio_decodes"})


# control characters other than tab, newline and carriage return (C0, DEL, C1), lone surrogates, and
# U+FFFD, the replacement character that bad decoding leaves behind
BAD_CAPTION_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffd]"
_BAD_CAPTION = re.compile(BAD_CAPTION_CHARS)


@dataclass(frozen=True)
class Thresholds:
    """What a valid triple looks like. The defaults accept the default dataset (2-4 s, 96x96, 12 fps, 16 kHz)."""

    min_seconds: float = 1.0
    max_seconds: float = 30.0
    min_fps: float = 5.0
    max_fps: float = 60.0
    min_side: int = 32  # smallest width and height, pixels
    max_width: int = 3840
    max_height: int = 2160
    min_sample_rate: int = 8_000
    max_sample_rate: int = 48_000
    min_audio_rms: float = 1e-3  # RMS of the mono waveform (full scale 1.0) below this is silence (-60 dBFS)
    max_caption_chars: int = 500
    max_file_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        pairs = {"seconds": (self.min_seconds, self.max_seconds), "fps": (self.min_fps, self.max_fps),
                 "sample_rate": (self.min_sample_rate, self.max_sample_rate)}
        bad = [f"min_{k}={lo!r} > max_{k}={hi!r}" for k, (lo, hi) in pairs.items() if not 0 <= lo <= hi]
        bad += [f"{k}={getattr(self, k)!r} must be positive" for k in
                ("min_side", "max_width", "max_height", "max_caption_chars", "max_file_bytes") if getattr(self, k) <= 0]
        if self.min_audio_rms < 0:
            bad.append(f"min_audio_rms={self.min_audio_rms!r} must be >= 0")
        if bad:
            raise ValueError(f"Thresholds: {'; '.join(bad)}")

    def media_limits(self) -> MediaLimits:
        """Decoding limits for the probe: the size limit is ours; duration is measured, not refused."""
        return MediaLimits(max_file_bytes=self.max_file_bytes, max_seconds=MAX_DECODE_SECONDS)


@dataclass(frozen=True)
class ValidationResult:
    """What validate() found and where it wrote it."""

    total: int
    validated: int
    rejected: int
    rejected_fraction: float
    passed: bool
    failed_expectations: dict[str, dict[str, Any]]  # check -> {expectation, reason, count, ids, rows[, error]}
    summary: Path
    validated_manifest: Path
    rejected_manifest: Path
    data_docs: Path  # index.html
    errors: dict[str, str] = field(default_factory=dict)  # check -> exception message, for expectations that errored


@dataclass
class Line:
    """One manifest line as the table sees it."""

    split: str
    line: int
    raw: str
    fields: dict[str, Any] | None  # the JSON object when the line is a record (four string fields), else None
    manifest_error: str | None  # why the line is not a record (None: it is one, maybe with bad content)

    @property
    def where(self) -> str:
        return f"{self.split}:{self.line}"


def validate(data: str | Path, report: str | Path, split: str | None = None, max_rejected: float = 0.0, *,
             thresholds: Thresholds = Thresholds(), workers: int | None = None,
             progress: bool = True) -> ValidationResult:
    """Probe and validate the triples of one split (or all), write the report; see the module docstring."""
    if not 0.0 <= max_rejected <= 1.0:
        raise ValueError(f"max_rejected must be a fraction in [0, 1], got {max_rejected!r}")
    data, report = Path(data), Path(report)
    lines = read_lines(data, split)
    started = time.perf_counter()
    table = probe_table(data, lines, thresholds, workers=workers, progress=progress)
    probe_seconds = time.perf_counter() - started
    staging = report.parent / f".{report.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        started = time.perf_counter()
        outcome = run_suite(table, thresholds, staging / "data_docs", progress=progress)
        suite_seconds = time.perf_counter() - started
        result = write_report(staging, report, data, lines, outcome, max_rejected, thresholds,
                              {"probe": probe_seconds, "suite": suite_seconds})
        _move_into_place(staging, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


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
    """The line's JSON object if it holds the four fields as strings (content is the suite's business)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not all(isinstance(obj.get(f), str) for f in FIELDS):
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


def _raw_bytes(path: Path, wanted: set[int]) -> dict[int, bytes]:
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    columns = (TextColumn("probe"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    out: list[dict[str, Any]] = []
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("records", total=len(jobs))
        for row in _map(probe_job, jobs, workers):
            out.append(row)
            bar.advance(task)
    return out


def _map(fn: Callable, jobs: list, workers: int) -> Iterator:
    if workers <= 1:
        yield from map(fn, jobs)
        return
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        yield from pool.imap(fn, jobs, chunksize=max(1, min(16, len(jobs) // (workers * 8))))


def probe_job(job: tuple[str, dict[str, Any], Thresholds]) -> dict[str, Any]:
    """probe_record for a pool: (root, fields, thresholds)."""
    root, fields, thresholds = job
    return probe_record(Path(root), fields, thresholds)


def probe_record(root: Path, fields: dict[str, Any], thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The MEDIA_COLUMNS of one record. Never raises: an unexpected failure is reported in `probe_error`."""
    row: dict[str, Any] = dict.fromkeys(MEDIA_COLUMNS)
    try:
        _probe_stages(root, fields, thresholds.media_limits(), row)
    except Exception as exc:  # noqa: BLE001 - a record must be reported, whatever the decoder raised
        row["probe_error"] = f"{type(exc).__name__}: {exc}"
    return row


def _probe_stages(root: Path, fields: dict[str, Any], limits: MediaLimits, row: dict[str, Any]) -> None:
    """Fill row stage by stage: a stage column reads OK or says what failed; after a failure, stop."""
    paths = _resolve(root, fields, row)
    if paths is None:
        return
    rel = {p: fields[role] for role, p in reversed(paths.items())}  # file -> its manifest path
    if not _files_present(rel, limits, row):
        return
    infos = _open_all(rel, limits, row)
    if infos is None:
        return
    video, audio = infos[paths["video"]], infos[paths["audio"]]
    row["duration"] = video.get("duration")
    row["has_video_stream"] = _has_stream(video, "video", fields["video"])
    row["has_audio_stream"] = _has_stream(audio, "audio", fields["audio"])
    if row["has_video_stream"] == OK:
        _probe_video(paths["video"], fields["video"], video, row)
    if row["has_audio_stream"] == OK:
        _probe_audio(paths["audio"], fields["audio"], audio, limits, row)


def _resolve(root: Path, fields: dict[str, Any], row: dict[str, Any]) -> dict[str, Path] | None:
    paths: dict[str, Path] = {}
    for role in ("video", "audio"):
        try:
            paths[role] = resolve_media(root, fields[role])
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
            infos[path] = probe(path, limits)
        except MediaError as exc:
            row["containers_open"] = f"{name}: {exc.reason}"
            return None
    row["containers_open"] = OK
    return infos


def _has_stream(info: dict, kind: str, name: str) -> str:
    if kind in info["streams"]:
        return OK
    return f"{name} has no {kind} stream (streams: {', '.join(info['streams']) or 'none'})"


def _probe_video(path: Path, name: str, info: dict, row: dict[str, Any]) -> None:
    row.update(width=info.get("width"), height=info.get("height"), fps=info.get("fps") or 0.0)
    first, last, end, declared = _edge_frames(path)
    row["first_frame_decodes"] = OK if first is None else f"{name}: {first}"
    if first is None:
        row["last_frame_decodes"] = OK if last is None else f"{name}: {last}"
    if row["duration"] is None:
        row["duration"] = declared or end


def _edge_frames(path: Path) -> tuple[str | None, str | None, float, float | None]:
    """(why the first frame fails or None, why the last fails or None, decoded end time, declared duration)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        step = 1.0 / fps if fps else 0.0
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        try:
            if next(container.decode(stream), None) is None:
                return "no frame decodes", None, 0.0, declared
        except av.error.FFmpegError as exc:
            return f"does not decode: {exc}", None, 0.0, declared
        end = 0.0
        try:
            if declared and declared > 1.0:  # jump to the keyframe before the last second
                start = stream.start_time or 0
                container.seek(start + int((declared - 1.0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is not None:
                    end = max(end, float(frame.time) + step)
        except av.error.FFmpegError as exc:
            return None, f"decoding stops at {end:.2f} s: {exc}", end, declared
    if declared and end < declared - 2 * step - 0.1:
        return None, f"the last decodable frame ends at {end:.2f} s of a declared {declared:.2f} s", end, declared
    return None, None, end, declared


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


# ----------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------


@dataclass
class SuiteOutcome:
    """Per-row reasons and per-check failures of one suite run over the probe table."""

    table: Any  # the probe DataFrame
    reasons: dict[str, list[str]]  # where -> reasons, in suite order
    failed: dict[str, dict[str, Any]]  # check -> {expectation, reason, count, ids, rows[, error]}
    errors: dict[str, str]  # check -> exception message
    expectations: int


def run_suite(table, thresholds: Thresholds, docs_dir: Path, *, progress: bool = True) -> SuiteOutcome:
    """Run the suite over the probe table in an ephemeral GX context; Data Docs go to docs_dir."""
    from model.expectations import build_checks

    checks = build_checks(thresholds)
    results = _gx_run(table, [c.expectation for c in checks], docs_dir, progress)
    by_name = {c.name: c for c in checks}
    reasons: dict[str, dict[str, str]] = {}
    failed: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for res in results:
        check = by_name[res.expectation_config.meta["check"]]
        error = exception_message(res.exception_info)
        if res.success and error is None:
            continue
        entry: dict[str, Any] = {"expectation": res.expectation_config.type, "reason": check.reason,
                                 "count": 0, "ids": [], "rows": []}
        failed[check.name] = entry
        if error is not None or "unexpected_index_list" not in res.result:
            errors[check.name] = entry["error"] = error or "failed without naming the failing rows"
            continue
        column = res.expectation_config.kwargs.get("column")
        for hit in res.result["unexpected_index_list"]:
            where = hit["where"]
            entry["rows"].append(where)
            if isinstance(hit.get("id"), str):
                entry["ids"].append(hit["id"])
            reasons.setdefault(where, {})[check.name] = _reason(check.reason, column, hit.get(column))
        entry["count"] = len(entry["rows"])
    order = list(by_name)
    ordered = {w: [r[k] for k in sorted(r, key=order.index)] for w, r in reasons.items()}
    return SuiteOutcome(table, ordered, failed, errors, len(checks))


def _reason(reason: str, column: str | None, value: Any) -> str:
    """The check's reason with what this row held: the stage's message, or the measured value."""
    if column in MESSAGE_COLUMNS and isinstance(value, str):
        return f"{reason}: {value}"
    if isinstance(value, float):
        value = round(value, 6)
    if isinstance(value, str) and len(value) > 80:
        return f"{reason} (got {len(value)} characters)"
    return f"{reason} (got {value!r})"


def exception_message(info: Any) -> str | None:
    """The message of an expectation that raised, from GX's exception_info (flat or keyed by metric)."""
    if not isinstance(info, dict) or not info:
        return None
    if "raised_exception" in info:
        return (info.get("exception_message") or "expectation raised") if info["raised_exception"] else None
    messages = [m for m in (exception_message(v) for v in info.values()) if m]
    return "; ".join(dict.fromkeys(messages)) or None


def _gx_run(table, expectations: list, docs_dir: Path, progress: bool) -> list:
    """Validate `table` against the expectations with a checkpoint that also builds the Data Docs."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from rich.console import Console

    context = _context(docs_dir)
    batch = (context.data_sources.add_pandas("probe").add_dataframe_asset("triples")
             .add_batch_definition_whole_dataframe("all records"))
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="triples", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="validate", validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ROW_KEYS}))
    status = f"running {len(expectations)} expectations over {len(table)} rows"
    with Console(stderr=True, quiet=not progress).status(status):
        outcome = checkpoint.run(batch_parameters={"dataframe": table})
    return [r for run in outcome.run_results.values() for r in run.results]


def _context(docs_dir: Path):
    """An in-memory GX context, no analytics or progress bars, whose one Data Docs site is docs_dir."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults, \
        ProgressBarsConfig

    site = {"class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.absolute())}}
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                               analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False),
                               data_docs_sites={SITE_NAME: site})
    return gx.get_context(mode="ephemeral", project_config=config)


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------


def write_report(staging: Path, report: Path, data: Path, lines: list[Line], outcome: SuiteOutcome,
                 max_rejected: float, thresholds: Thresholds, seconds: dict[str, float]) -> ValidationResult:
    """validated.jsonl, rejected.jsonl and summary.json in staging; paths in the result point at `report`."""
    several = len({ln.split for ln in lines}) > 1
    validated = [ln for ln in lines if ln.where not in outcome.reasons]
    rejected = [ln for ln in lines if ln.where in outcome.reasons]
    _write_lines(staging / "validated.jsonl", (_validated_line(ln, several) for ln in validated))
    _write_lines(staging / "rejected.jsonl", _rejected_lines(data, rejected, outcome.reasons))
    fraction = len(rejected) / len(lines)
    passed = not outcome.errors and fraction <= max_rejected
    summary = {
        "data": str(data), "passed": passed, "total": len(lines), "validated": len(validated),
        "rejected": len(rejected), "rejected_fraction": fraction, "max_rejected": max_rejected,
        "splits": _per_split(lines, outcome.reasons), "failed_expectations": outcome.failed,
        "errored_expectations": outcome.errors, "suite": {"name": SUITE_NAME, "expectations": outcome.expectations},
        "thresholds": asdict(thresholds), "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    (staging / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return ValidationResult(total=len(lines), validated=len(validated), rejected=len(rejected),
                            rejected_fraction=fraction, passed=passed, failed_expectations=outcome.failed,
                            summary=report / "summary.json", validated_manifest=report / "validated.jsonl",
                            rejected_manifest=report / "rejected.jsonl",
                            data_docs=report / "data_docs" / "index.html", errors=dict(outcome.errors))


def _validated_line(ln: Line, several: bool) -> str:
    """The clean record as it was; with several splits it gains a "split" key saying where it came from."""
    if not several:
        return ln.raw
    return json.dumps({**(ln.fields or {}), "split": ln.split}, ensure_ascii=False)


def _rejected_lines(data: Path, rejected: list[Line], reasons: dict[str, list[str]]) -> Iterator[str]:
    """{"split", "line", "record" (as it was) or "raw" (+ "raw_base64" for non-UTF-8 bytes), "reasons"}."""
    undecodable: dict[str, set[int]] = {}
    for ln in rejected:
        if ln.fields is None and "\ufffd" in ln.raw:
            undecodable.setdefault(ln.split, set()).add(ln.line)
    exact = {split: _raw_bytes(manifest_path(data, split), wanted) for split, wanted in undecodable.items()}
    for ln in rejected:
        entry: dict[str, Any] = {"split": ln.split, "line": ln.line}
        if ln.fields is not None:
            entry["record"] = ln.fields
        else:
            entry["raw"] = ln.raw
            if ln.line in exact.get(ln.split, {}):
                entry["raw_base64"] = base64.b64encode(exact[ln.split][ln.line]).decode("ascii")
        entry["reasons"] = reasons[ln.where]
        yield json.dumps(entry, ensure_ascii=False)


def _per_split(lines: list[Line], reasons: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for ln in lines:
        counts = out.setdefault(ln.split, {"total": 0, "validated": 0, "rejected": 0})
        counts["total"] += 1
        counts["rejected" if ln.where in reasons else "validated"] += 1
    return out


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line + "\n")


def _move_into_place(staging: Path, report: Path) -> None:
    """Put the finished report at `report`, replacing the files of an earlier report (other files are kept)."""
    report.mkdir(parents=True, exist_ok=True)
    for item in sorted(staging.iterdir()):
        target = report / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(item, target)

