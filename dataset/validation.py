"""Triple validation: probe every manifest record into a table, run the Great Expectations suite over it.

    validate(DATA, REPORT, split=None, max_rejected=0.0) -> ValidationResult

1. Every line of DATA/manifests/<split>.jsonl (every split when split is None) becomes one row,
   lines that fail to parse included: they carry the parse failure in `manifest_error`.
2. The probe (dataset/probe.py: a process pool, with a progress bar) fills each row's media columns: paths inside
   the data root, files present, size, container opens, video and audio streams, first and last
   frame decode, audio decodes, duration, fps, resolution, sample rate, audio RMS. A stage that
   fails records why and leaves the later stages null, so each problem is reported once.
3. The suite (dataset/expectations.py) runs over the table with result_format COMPLETE and
   unexpected_index_column_names ["where", "id"], so each failing row is named ("train:17").
4. REPORT/ receives summary.json (counts and ids per failed expectation, and how many validated items
   have each view: "tva", "tv" video-only, "at" audio-only), validated.jsonl (clean records), rejected.jsonl
   (each rejected record as it was, with its "reasons") and the GX Data Docs under data_docs/ (index.html).
   Every record lands in exactly one of the two manifests. The report is built beside REPORT and moved in
   at the end: a failure leaves the old one intact.

Items without video or without audio ("video": null, or a declared file without that stream) are refused
unless thresholds.allow_partial (CLI --allow-partial). With it they are validated for the modality they
have; a validated item whose declared file lacks a stream is written to validated.jsonl with null in that
field, so downstream tools see what it holds. Other clean records are written as they were.

Exit semantics for the CLI: passed is False when the rejected fraction exceeds max_rejected or an
expectation itself errored; an unreadable manifest raises ManifestError instead.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataset.probe import Line, probe_table, raw_bytes, read_lines
from dataset.rules import Thresholds
from model.manifest import manifest_path
from model.modalities import A, V, VIEWS

if TYPE_CHECKING:
    from dataset.expectations import SuiteOutcome


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
    modalities: dict[str, int] = field(default_factory=dict)  # view ("tva", "tv", "at") -> validated items with it



def validate(data: str | Path, report: str | Path, split: str | None = None, max_rejected: float = 0.0, *,
             thresholds: Thresholds = Thresholds(), workers: int | None = None,
             progress: bool = True) -> ValidationResult:
    """Probe and validate the triples of one split (or all), write the report; see the module docstring."""
    from dataset.expectations import run_suite  # imports great_expectations: seconds

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
# The report
# ----------------------------------------------------------------------------------------------


def write_report(staging: Path, report: Path, data: Path, lines: list[Line], outcome: SuiteOutcome,
                 max_rejected: float, thresholds: Thresholds, seconds: dict[str, float]) -> ValidationResult:
    """validated.jsonl, rejected.jsonl and summary.json in staging; paths in the result point at `report`."""
    from dataset.expectations import SUITE_NAME

    several = len({ln.split for ln in lines}) > 1
    validated = [ln for ln in lines if ln.where not in outcome.reasons]
    rejected = [ln for ln in lines if ln.where in outcome.reasons]
    views = dict(zip(outcome.table["where"], outcome.table["modalities"]))
    _write_lines(staging / "validated.jsonl", (_validated_line(ln, several, views[ln.where]) for ln in validated))
    modalities = _count_views(views[ln.where] for ln in validated)
    _write_lines(staging / "rejected.jsonl", _rejected_lines(data, rejected, outcome.reasons))
    fraction = len(rejected) / len(lines)
    passed = not outcome.errors and fraction <= max_rejected
    summary = {
        "data": str(data), "passed": passed, "total": len(lines), "validated": len(validated),
        "rejected": len(rejected), "rejected_fraction": fraction, "max_rejected": max_rejected,
        "splits": _per_split(lines, outcome.reasons), "modalities": modalities, "failed_expectations": outcome.failed,
        "errored_expectations": outcome.errors, "suite": {"name": SUITE_NAME, "expectations": outcome.expectations},
        "thresholds": asdict(thresholds), "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    (staging / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return ValidationResult(total=len(lines), validated=len(validated), rejected=len(rejected),
                            rejected_fraction=fraction, passed=passed, failed_expectations=outcome.failed,
                            summary=report / "summary.json", validated_manifest=report / "validated.jsonl",
                            rejected_manifest=report / "rejected.jsonl",
                            data_docs=report / "data_docs" / "index.html", errors=dict(outcome.errors),
                            modalities=modalities)


def _validated_line(ln: Line, several: bool, view: str | None) -> str:
    """The clean record as it was; with several splits it gains a "split" key saying where it came from, and a
    media field naming a file without that stream (an item validated as partial) becomes null."""
    fields = ln.fields or {}
    has = VIEWS[view] if isinstance(view, str) else (V, A)  # not probed that far: leave the record as it was
    lacking = {role: None for role, m in (("video", V), ("audio", A)) if fields.get(role) is not None and m not in has}
    if not several and not lacking:
        return ln.raw
    return json.dumps({**fields, **lacking, **({"split": ln.split} if several else {})}, ensure_ascii=False)


def _count_views(views: Iterable[Any]) -> dict[str, int]:
    """How many validated items have each view, the whole ones first ("tva", then "tv", "at")."""
    counts = {name: 0 for name in sorted(VIEWS, key=lambda name: -len(VIEWS[name]))}
    for view in views:
        if isinstance(view, str):
            counts[view] += 1
    return {name: n for name, n in counts.items() if n}


def _rejected_lines(data: Path, rejected: list[Line], reasons: dict[str, list[str]]) -> Iterator[str]:
    """{"split", "line", "record" (as it was) or "raw" (+ "raw_base64" for non-UTF-8 bytes), "reasons"}."""
    undecodable: dict[str, set[int]] = {}
    for ln in rejected:
        if ln.fields is None and "\ufffd" in ln.raw:
            undecodable.setdefault(ln.split, set()).add(ln.line)
    exact = {split: raw_bytes(manifest_path(data, split), wanted) for split, wanted in undecodable.items()}
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

