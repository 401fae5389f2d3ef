"""The Great Expectations suite for manifest triples, as code versioned with the project.

The probe (model/validation.py) turns every manifest line into one row of a table: a column for
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import great_expectations.expectations as gxe

from model.validation import BAD_CAPTION_CHARS, OK

if TYPE_CHECKING:
    from model.validation import Thresholds


class ExpectCheckToPass(gxe.ExpectColumnValuesToBeInSet):
    """A probe stage column reads "ok" for every row (else it holds the stage's error; null: not reached)."""


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

    def __post_init__(self) -> None:
        self.expectation.meta = {"check": self.name, "reason": self.reason}


def build_checks(t: Thresholds) -> list[Check]:
    """The suite's expectations, in the order a record's reasons are listed."""
    def passes(column: str) -> gxe.Expectation:
        return ExpectCheckToPass(column=column, value_set=[OK])

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
        Check("video_stream", "no video stream", passes("has_video_stream")),
        Check("audio_stream", "no audio stream", passes("has_audio_stream")),
        Check("first_frame", "first video frame does not decode", passes("first_frame_decodes")),
        Check("last_frame", "last video frame does not decode (truncated?)", passes("last_frame_decodes")),
        Check("audio_decodes", "audio does not decode", passes("audio_decodes")),
        # the measured values
        Check("duration", f"duration is outside {t.min_seconds:g}-{t.max_seconds:g} s",
              between("duration", t.min_seconds, t.max_seconds)),
        Check("fps", f"frame rate is outside {t.min_fps:g}-{t.max_fps:g} fps", between("fps", t.min_fps, t.max_fps)),
        Check("width", f"width is outside {t.min_side}-{t.max_width} px", between("width", t.min_side, t.max_width)),
        Check("height", f"height is outside {t.min_side}-{t.max_height} px",
              between("height", t.min_side, t.max_height)),
        Check("sample_rate", f"audio sample rate is outside {t.min_sample_rate}-{t.max_sample_rate} Hz",
              between("sample_rate", t.min_sample_rate, t.max_sample_rate)),
        Check("audio_silent", f"audio is silent (RMS below {t.min_audio_rms:g})",
              ExpectAudioNotSilent(column="audio_rms", min_value=t.min_audio_rms)),
    ]
