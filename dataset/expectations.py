"""The Great Expectations suite for manifest triples, as code versioned with the project.

The probe (dataset/probe.py) turns every manifest line into one row of a table: a column for
each stage a record must pass (path inside the root, file present, container opens, streams
present, first and last frame decode, audio decodes) that reads "ok" or says what went wrong,
and the measured values (size, duration, fps, resolution, sample rate, audio RMS, caption).
The suite holds one expectation per check. Where the built-in expectation reads badly for a check,
a small subclass gives it a name (GX registers each subclass under its snake_case name, so Data
Docs show `expect_audio_not_silent`). The subclasses declare no default arguments on purpose: GX
leaves arguments equal to a field's default out of the configuration it renders, and Data Docs
would then say "no regular expression was specified".

Each expectation carries meta {"check": name, "reason": text}: the name keys summary.json and the
reason (with the failing row's value) goes into that record's "reasons" in rejected.jsonl.

Importing this module imports great_expectations (several seconds): import it inside functions.
`run_suite` runs the suite over the probe table in an ephemeral GX context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe

from dataset.probe import MESSAGE_COLUMNS
from dataset.rules import ABSENT, BAD_CAPTION_CHARS, OK, Thresholds

ROW_KEYS = ["where", "id"]  # unexpected_index_column_names: "<split>:<line>" names every row, id when known
SUITE_NAME = "omniretriever_triples"
SITE_NAME = "report"


class ExpectCheckToPass(gxe.ExpectColumnValuesToBeInSet):
    """A probe stage column reads "ok" for every row (else it holds the stage's error; null: not reached).
    A stream stage of a dataset that may hold partial items also accepts "absent"."""


class ExpectManifestLineToParse(gxe.ExpectColumnValuesToBeNull):
    """Every manifest line is UTF-8 JSON holding the four string fields id, text, video, audio."""


class ExpectProbeToComplete(gxe.ExpectColumnValuesToBeNull):
    """The probe finished every record (an unexpected decoder exception is recorded, not raised)."""


class ExpectTextToHaveContent(gxe.ExpectColumnValuesToMatchRegex):
    """A string column has at least one non-whitespace character."""


class ExpectCaptionCharactersToBeClean(gxe.ExpectColumnValuesToNotMatchRegex):
    """A caption holds no control characters, lone surrogates or U+FFFD."""


class ExpectAltTextsToBeClean(gxe.ExpectColumnValuesToBeNull):
    """A record's further captions (alt_texts, optional) are a list of clean, non-empty captions within
    the length limit; the column holds what is wrong, naming the caption by index."""


class ExpectAudioNotSilent(gxe.ExpectColumnValuesToBeBetween):
    """The audio track's RMS level (full scale 1.0) is at least the silence threshold."""


@dataclass(frozen=True)
class Check:
    """One expectation of the suite with the name and reason it reports under."""

    name: str  # key in summary.json
    reason: str  # what a failing record is told
    expectation: gxe.Expectation
    explain: Callable[[Any], str | None] | None = None  # a failing row (a pandas Series) -> its own reason, or None

    def __post_init__(self) -> None:
        self.expectation.meta = {"check": self.name, "reason": self.reason}


def build_checks(t: Thresholds) -> list[Check]:
    """The suite's expectations, in the order a record's reasons are listed."""
    partial = [ABSENT] if t.allow_partial else []
    limits = t.limits()

    def too_big(row) -> str | None:  # the decoder's own message (MediaLimits.check_size) for a row over a limit
        return limits.check_size(int(row["width"]), int(row["height"]))

    def passes(column: str, *also: str) -> gxe.Expectation:
        return ExpectCheckToPass(column=column, value_set=[OK, *also])

    def between(column: str, lo: float | None, hi: float | None) -> gxe.Expectation:
        return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi)

    return [
        # the manifest line and its text fields
        Check("manifest_line", "manifest line is not a readable record",
              ExpectManifestLineToParse(column="manifest_error")),
        Check("id_present", "id is empty", ExpectTextToHaveContent(column="id", regex=r"\S")),
        Check("id_unique", "id is not unique", gxe.ExpectColumnValuesToBeUnique(column="id")),
        Check("caption_present", "caption is empty or only whitespace",
              ExpectTextToHaveContent(column="text", regex=r"\S")),
        Check("caption_length", f"caption is longer than {t.max_caption_chars} characters",
              gxe.ExpectColumnValueLengthsToBeBetween(column="text", max_value=t.max_caption_chars)),
        Check("caption_characters", "caption has control or invalid characters",
              ExpectCaptionCharactersToBeClean(column="text", regex=BAD_CAPTION_CHARS)),
        Check("alt_texts", "a further caption (alt_texts) is malformed, empty, too long or has invalid characters",
              ExpectAltTextsToBeClean(column="alt_texts_issue")),
        # the probe's stages, in order
        Check("probe", "the probe failed on this record", ExpectProbeToComplete(column="probe_error")),
        Check("path_inside_root", "media path is outside the data root", passes("paths_inside_root")),
        Check("file_exists", "media file is missing", passes("files_exist")),
        Check("file_size", f"media file is empty or over {t.max_file_bytes} bytes",
              between("file_bytes", 1, t.max_file_bytes)),
        Check("container_opens", "media container does not open (truncated or not media)",
              passes("containers_open")),
        Check("video_stream", "no video stream", passes("has_video_stream", *partial)),
        Check("audio_stream", "no audio stream", passes("has_audio_stream", *partial)),
        Check("first_frame", "first video frame does not decode", passes("first_frame_decodes")),
        Check("last_frame", "last video frame does not decode (truncated?)", passes("last_frame_decodes")),
        Check("audio_decodes", "audio does not decode", passes("audio_decodes")),
        # the measured values
        Check("duration", f"duration is outside {t.min_seconds:g}-{t.max_seconds:g} s",
              between("duration", t.min_seconds, t.max_seconds)),
        Check("fps", f"frame rate is outside {t.min_fps:g}-{t.max_fps:g} fps", between("fps", t.min_fps, t.max_fps)),
        Check("long_side", f"resolution is over the limit: long side over {t.max_long_side} px",
              between("long_side", None, t.max_long_side), explain=too_big),
        Check("short_side", f"short side (the smaller of width and height) is outside {t.min_side}-"
              f"{t.max_short_side} px", between("short_side", t.min_side, t.max_short_side),
              explain=lambda row: too_big(row) if row["long_side"] <= t.max_long_side else None),
        Check("sample_rate", f"audio sample rate is outside {t.min_sample_rate}-{t.max_sample_rate} Hz",
              between("sample_rate", t.min_sample_rate, t.max_sample_rate)),
        Check("audio_silent", f"audio is silent (RMS below {t.min_audio_rms:g})",
              ExpectAudioNotSilent(column="audio_rms", min_value=t.min_audio_rms)),
    ]


# Running the suite


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
    checks = build_checks(thresholds)
    results = _gx_run(table, [c.expectation for c in checks], docs_dir, progress)
    by_name = {c.name: c for c in checks}
    rows = table.set_index("where", drop=False)
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
            own = check.explain(rows.loc[where]) if check.explain else None
            reasons.setdefault(where, {})[check.name] = own or _reason(check.reason, column, hit.get(column))
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
