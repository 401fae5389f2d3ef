"""Validation of datasets that hold items without video or without audio (Thresholds.allow_partial,
`data validate --allow-partial`): refused with the reason without it, validated for what they hold with it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataset import probe, rules, validation
from dataset.mp4 import write_mp4
from omniretriever.cli import app
from tests.conftest import FPS, SAMPLE_RATE, tone

NULL_VIDEO = "video is null (an item without video): pass --allow-partial if this dataset holds such items"
NULL_AUDIO = "audio is null (an item without audio): pass --allow-partial if this dataset holds such items"


@dataclass(frozen=True)
class Item:
    id: str
    video: str | None
    audio: str | None
    strict: str | None  # a reason it is rejected with without allow_partial (None: validated)
    partial: str | None  # ... and with it
    view: str  # the modalities it has ("tva", "tv", "at")

    @property
    def line(self) -> str:
        return json.dumps({"id": self.id, "text": f"the {self.id} clip", "video": self.video, "audio": self.audio})


V, AV, AUD, SHORT = "videos/video_only.mp4", "videos/good.mp4", "audio/audio_only.mp4", "audio/short.mp4"
ITEMS = [
    Item("whole", AV, AV, None, None, "tva"),
    Item("audio-only", None, AUD, f"no video stream: {NULL_VIDEO}", None, "at"),
    Item("video-only", V, None, f"no audio stream: {NULL_AUDIO}", None, "tv"),
    Item("video-only-mp4", V, V, f"no audio stream: {V} has no audio stream (streams: video)", None, "tv"),
    Item("audio-only-mp4", AUD, AUD, f"no video stream: {AUD} has no video stream (streams: audio)", None, "at"),
    Item("short-audio-only", None, SHORT, f"no video stream: {NULL_VIDEO}", "duration is outside", "at"),
    Item("neither", AUD, V, "no video stream", "no video stream", "t"),
]


@pytest.fixture(scope="module")
def partial_data(tmp_path_factory, media) -> Path:
    root = tmp_path_factory.mktemp("partial") / "data"
    for folder in ("videos", "audio", "manifests"):
        (root / folder).mkdir(parents=True)
    shutil.copyfile(media.good, root / AV)
    shutil.copyfile(media.video_only, root / V)
    shutil.copyfile(media.audio_only, root / AUD)
    write_mp4(root / SHORT, None, tone(0.5), FPS, SAMPLE_RATE)
    (root / "manifests" / "val.jsonl").write_text("".join(item.line + "\n" for item in ITEMS))
    return root


def run(data: Path, report: Path, allow_partial: bool) -> tuple[validation.ValidationResult, dict[str, list[str]]]:
    result = validation.validate(data, report, split="val", workers=2, progress=False,
                                 thresholds=rules.Thresholds(allow_partial=allow_partial))
    rejected = [json.loads(x) for x in result.rejected_manifest.read_text().splitlines()]
    return result, {e["record"]["id"]: e["reasons"] for e in rejected}


@pytest.fixture(scope="module")
def strict(partial_data, tmp_path_factory):
    return run(partial_data, tmp_path_factory.mktemp("strict") / "r", allow_partial=False)


@pytest.fixture(scope="module")
def lenient(partial_data, tmp_path_factory):
    return run(partial_data, tmp_path_factory.mktemp("lenient") / "r", allow_partial=True)


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.id)
def test_without_allow_partial_an_item_lacking_a_modality_is_rejected_with_the_reason(strict, item):
    _, reasons = strict
    if item.strict is None:
        assert item.id not in reasons
    else:
        assert reasons[item.id][0].startswith(item.strict), reasons[item.id]
        assert len(reasons[item.id]) == (2 if item.id in ("neither", "short-audio-only") else 1), reasons[item.id]


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.id)
def test_with_allow_partial_an_item_is_validated_for_what_it_has(lenient, item):
    _, reasons = lenient
    if item.partial is None:
        assert item.id not in reasons
    else:
        assert reasons[item.id][0].startswith(item.partial), reasons[item.id]


def test_an_item_with_neither_stream_names_both_files(lenient):
    _, reasons = lenient
    assert reasons["neither"] == [f"no video stream: {AUD} has no video stream (streams: audio)",
                                  f"no audio stream: {V} has no audio stream (streams: video)"]


def test_validated_jsonl_writes_null_for_what_an_item_lacks(lenient):
    result, _ = lenient
    written = result.validated_manifest.read_text().splitlines()
    by_id = {json.loads(x)["id"]: x for x in written}
    lines = {item.id: item.line for item in ITEMS}
    for rid in ("whole", "audio-only", "video-only"):
        assert by_id[rid] == lines[rid]  # as it was, byte for byte
    assert json.loads(by_id["video-only-mp4"]) == {**json.loads(lines["video-only-mp4"]), "audio": None}
    assert json.loads(by_id["audio-only-mp4"]) == {**json.loads(lines["audio-only-mp4"]), "video": None}


def test_the_summary_counts_video_only_and_audio_only_items(lenient, strict):
    result, _ = lenient
    summary = json.loads(result.summary.read_text())
    assert summary["modalities"] == result.modalities == {"tva": 1, "tv": 2, "at": 2}
    assert summary["thresholds"]["allow_partial"] is True and result.validated == 5
    assert strict[0].modalities == {"tva": 1}


def test_the_probe_records_each_items_modalities_and_times_audio_only_items_by_their_audio(partial_data):
    thresholds = rules.Thresholds(allow_partial=True)
    rows = {item.id: probe.probe_record(partial_data, json.loads(item.line), thresholds) for item in ITEMS}
    assert {rid: row["modalities"] for rid, row in rows.items()} == {item.id: item.view for item in ITEMS}
    assert rows["audio-only"]["duration"] == pytest.approx(3.0, abs=0.1)
    assert rows["short-audio-only"]["duration"] == pytest.approx(0.5, abs=0.1)
    assert rows["audio-only"]["has_video_stream"] == rules.ABSENT and rows["audio-only"]["fps"] is None
    assert rows["video-only-mp4"]["has_audio_stream"] == rules.ABSENT and rows["video-only-mp4"]["audio_rms"] is None


def test_a_null_field_is_read_as_a_record_and_both_null_is_not(tmp_path):
    (tmp_path / "manifests").mkdir()
    lines = [json.dumps({"id": "a", "text": "a clip", "video": None, "audio": "a.wav"}),
             json.dumps({"id": "b", "text": "a clip", "video": None, "audio": None})]
    (tmp_path / "manifests" / "val.jsonl").write_text("\n".join(lines) + "\n")
    audio_only, neither = probe.read_lines(tmp_path, "val")
    assert audio_only.fields == json.loads(lines[0]) and audio_only.manifest_error is None
    assert neither.fields is None and "both null" in neither.manifest_error


def test_cli_allow_partial(partial_data, tmp_path):
    args = ["data", "validate", str(partial_data), "--split", "val", "--report", str(tmp_path / "r"), "--workers", "1"]
    res = CliRunner().invoke(app, args + ["--allow-partial", "--max-rejected", "0.5"])
    assert res.exit_code == 0, res.output
    assert "validated: 1 with video and audio, 2 video-only, 2 audio-only" in res.output
    res = CliRunner().invoke(app, args + ["--max-rejected", "0.5"])
    assert res.exit_code == 1 and "video_stream" in res.output, res.output
