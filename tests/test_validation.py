"""Triple validation (dataset/probe.py, dataset/expectations.py, dataset/validation.py): every corrupt input caught with its reason."""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset import probe, rules, validation
from model.errors import ManifestError
from dataset.mp4 import write_mp4
from omniretriever.cli import app
from tests.conftest import FPS, SAMPLE_RATE, loaded_by_import, ramp_frames, tone

runner = CliRunner()
GOOD_SPLIT = "val"  # tiny_data's val split: 4 clean clips


@dataclass(frozen=True)
class Case:
    name: str  # also the record's id where it has one
    line: bytes  # the manifest line as written
    check: str | None  # the one check that must reject it (None: must be validated)


def record(rid: str, text: str = "a small red ball bounces", media: str = "videos/good.mp4", **extra) -> bytes:
    return json.dumps({"id": rid, "text": text, "video": media, "audio": media, **extra}, ensure_ascii=False).encode()


def corrupt_cases() -> list[Case]:
    """Each corrupt input of the issue, plus two clean records for contrast."""
    return [
        Case("clean-1", record("clean-1"), None),
        Case("missing-file", record("missing-file", media="videos/missing.mp4"), "file_exists"),
        Case("zero-byte", record("zero-byte", media="videos/empty.mp4"), "file_size"),
        Case("truncated", record("truncated", media="videos/truncated.mp4"), "container_opens"),
        Case("video-only", record("video-only", media="videos/video_only.mp4"), "audio_stream"),
        Case("audio-only", record("audio-only", media="videos/audio_only.mp4"), "video_stream"),
        Case("too-short", record("too-short", media="videos/short.mp4"), "duration"),
        Case("silent", record("silent", media="videos/silent.mp4"), "audio_silent"),
        Case("empty-caption", record("empty-caption", text=""), "caption_present"),
        Case("blank-caption", record("blank-caption", text=" \t  "), "caption_present"),
        Case("long-caption", record("long-caption", text="word " * 101), "caption_length"),
        Case("control-char", record("control-char", text="a bell \x07 rings"), "caption_characters"),
        Case("dup-first", record("dup"), "id_unique"),
        Case("dup-second", record("dup", text="another caption"), "id_unique"),
        Case("dotdot", record("dotdot", media="../outside.mp4"), "path_inside_root"),
        Case("symlink-out", record("symlink-out", media="videos/link_out.mp4"), "path_inside_root"),
        Case("non-utf8", b'{"id": "non-utf8", "text": "caf\xe9 \xff", "video": "videos/good.mp4", "audio": "videos/good.mp4"}',
             "manifest_line"),
        Case("not-json", b'{"id": "not-json", "text": "unterminated', "manifest_line"),
        Case("alt-not-list", record("alt-not-list", alt_texts="a ball"), "alt_texts"),
        Case("alt-empty", record("alt-empty", alt_texts=["a red ball", ""]), "alt_texts"),
        Case("alt-long", record("alt-long", alt_texts=["word " * 101]), "alt_texts"),
        Case("alt-control", record("alt-control", alt_texts=["a bell \x07 rings"]), "alt_texts"),
        Case("clean-alt", record("clean-alt", alt_texts=["a ball that is red", "the little red ball"]), None),
        Case("clean-2", record("clean-2", extra_field=1), None),
    ]


CASES = corrupt_cases()


def write_corrupt_dataset(root: Path, media) -> Path:
    """DATA/manifests/val.jsonl with every case, and the media files they point at."""
    videos = root / "videos"
    videos.mkdir(parents=True)
    for name in ("good", "truncated", "video_only", "audio_only", "empty"):
        shutil.copyfile(getattr(media, name), videos / f"{name}.mp4")
    write_mp4(videos / "short.mp4", ramp_frames(FPS // 2), tone(0.5), FPS, SAMPLE_RATE)
    write_mp4(videos / "silent.mp4", ramp_frames(3 * FPS), np.zeros(3 * SAMPLE_RATE, np.float32), FPS, SAMPLE_RATE)
    shutil.copyfile(media.good, root.parent / "outside.mp4")
    os.symlink(root.parent / "outside.mp4", videos / "link_out.mp4")
    (root / "manifests").mkdir()
    (root / "manifests" / "val.jsonl").write_bytes(b"".join(c.line + b"\n" for c in CASES))
    return root


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory, media) -> Path:
    return write_corrupt_dataset(tmp_path_factory.mktemp("corrupt") / "data", media)


@pytest.fixture(scope="module")
def corrupt_report(corrupt, tmp_path_factory) -> tuple[validation.ValidationResult, Path]:
    report = tmp_path_factory.mktemp("corrupt-report") / "report"
    return validation.validate(corrupt, report, split="val", workers=2, progress=False), report


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def rejected_by_line(report: Path) -> dict[int, dict]:
    return {e["line"]: e for e in read_jsonl(report / "rejected.jsonl")}


@pytest.mark.parametrize("case", [c for c in CASES if c.check], ids=lambda c: c.name)
def test_each_corrupt_input_is_rejected_for_its_reason(corrupt_report, case):
    result, report = corrupt_report
    line = CASES.index(case) + 1
    entry = rejected_by_line(report)[line]
    checks = {c.name: c for c in _checks()}
    assert len(entry["reasons"]) == 1, entry["reasons"]  # one problem, reported once
    assert entry["reasons"][0].startswith(checks[case.check].reason), entry["reasons"]
    assert f"val:{line}" in result.failed_expectations[case.check]["rows"]


def _checks():
    from dataset.expectations import build_checks

    return build_checks(rules.Thresholds())


@pytest.mark.parametrize("case", [c for c in CASES if not c.check], ids=lambda c: c.name)
def test_clean_records_are_validated_as_they_were(corrupt_report, case):
    _, report = corrupt_report
    assert case.line.decode() in (report / "validated.jsonl").read_text(encoding="utf-8").splitlines()


def test_every_record_lands_in_exactly_one_manifest(corrupt_report):
    result, report = corrupt_report
    rejected = rejected_by_line(report)
    validated = (report / "validated.jsonl").read_text(encoding="utf-8").splitlines()
    expected_clean = [c.line.decode() for i, c in enumerate(CASES, 1) if i not in rejected]
    assert validated == expected_clean  # in order, byte for byte
    assert len(rejected) + len(validated) == len(CASES) == result.total
    assert (result.validated, result.rejected) == (len(validated), len(rejected))
    assert result.rejected_fraction == pytest.approx(len(rejected) / len(CASES))
    assert not result.passed  # max_rejected defaults to 0


def test_rejected_records_are_kept_as_they_were(corrupt_report):
    _, report = corrupt_report
    rejected = rejected_by_line(report)
    by_name = {c.name: i for i, c in enumerate(CASES, 1)}
    assert rejected[by_name["long-caption"]]["record"] == json.loads(CASES[by_name["long-caption"] - 1].line)
    assert rejected[by_name["not-json"]]["raw"] == CASES[by_name["not-json"] - 1].line.decode()
    non_utf8 = rejected[by_name["non-utf8"]]
    assert base64.b64decode(non_utf8["raw_base64"]) == CASES[by_name["non-utf8"] - 1].line
    assert "not UTF-8" in non_utf8["reasons"][0]


def test_summary_counts_and_names_failing_ids(corrupt_report):
    result, report = corrupt_report
    summary = json.loads((report / "summary.json").read_text())
    assert summary["total"] == len(CASES) and summary["passed"] is False
    assert summary["splits"]["val"]["rejected"] == result.rejected
    dup = summary["failed_expectations"]["id_unique"]
    assert dup["count"] == 2 and dup["ids"] == ["dup", "dup"]
    assert summary["failed_expectations"]["manifest_line"]["count"] == 2
    assert summary["failed_expectations"] == result.failed_expectations
    assert result.summary == report / "summary.json"


def test_data_docs_are_built(corrupt_report):
    result, report = corrupt_report
    assert result.data_docs == report / "data_docs" / "index.html" and result.data_docs.is_file()
    pages = list((report / "data_docs" / "validations").rglob("*.html"))
    page = pages[0].read_text(encoding="utf-8")
    missing = CASES.index(next(c for c in CASES if c.name == "missing-file")) + 1
    assert len(pages) == 1 and f"val:{missing}" in page and "missing-file" in page  # failing rows are named


def test_the_default_thresholds_accept_a_generated_dataset(tiny_data, tmp_path):
    result = validation.validate(tiny_data, tmp_path / "r", split=GOOD_SPLIT, workers=1, progress=False)
    assert result.passed and result.rejected == 0 and result.validated == result.total == 4
    assert result.modalities == {"tva": 4}  # every item has video and audio
    assert (tmp_path / "r" / "rejected.jsonl").read_text() == ""


def test_all_splits_are_validated_and_ids_are_unique_across_them(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("train.jsonl"))  # val + test: 28 records
    leaked = (data / "manifests" / "val.jsonl").read_text().splitlines()[0]
    with open(data / "manifests" / "test.jsonl", "a") as fh:  # a val record also in test: a leak
        fh.write(leaked + "\n")
    result = validation.validate(data, tmp_path / "r", workers=2, progress=False)
    assert result.total == 29 and result.rejected == 2
    assert result.failed_expectations["id_unique"]["rows"] == ["val:1", "test:25"]
    assert all(json.loads(x)["split"] in ("val", "test") for x in result.validated_manifest.read_text().splitlines())


def test_an_expectation_that_errors_fails_the_validation(tiny_data, tmp_path, monkeypatch):
    import great_expectations.expectations as gxe

    from dataset import expectations

    original = expectations.build_checks

    def with_broken(thresholds):
        broken = expectations.Check("broken", "broken check", gxe.ExpectColumnValuesToNotBeNull(column="no_such_column"))
        return original(thresholds) + [broken]

    monkeypatch.setattr(expectations, "build_checks", with_broken)
    result = validation.validate(tiny_data, tmp_path / "r", split=GOOD_SPLIT, max_rejected=1.0, workers=1, progress=False)
    assert not result.passed and result.rejected == 0
    assert "no_such_column" in result.errors["broken"]
    summary = json.loads(result.summary.read_text())
    assert summary["errored_expectations"]["broken"] and summary["passed"] is False


def test_a_failed_run_leaves_the_previous_report_and_no_partial_one(tiny_data, tmp_path, monkeypatch):
    report = tmp_path / "r"
    report.mkdir()
    (report / "summary.json").write_text("previous")

    def explode(*args, **kwargs):
        raise RuntimeError("suite crashed")

    from dataset import expectations

    monkeypatch.setattr(expectations, "_gx_run", explode)
    with pytest.raises(RuntimeError, match="suite crashed"):
        validation.validate(tiny_data, report, split=GOOD_SPLIT, workers=1, progress=False)
    assert (report / "summary.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging directory left


@pytest.mark.parametrize("make,message", [
    (lambda root: None, "no manifests"),
    (lambda root: (root / "manifests").mkdir(), "no manifests"),
    (lambda root: ((root / "manifests").mkdir(), (root / "manifests" / "val.jsonl").write_text("\n\n")), "no records"),
])
def test_unreadable_or_empty_manifests_raise(tmp_path, make, message):
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    with pytest.raises(ManifestError, match=message):
        validation.validate(root, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_a_manifest_of_only_unreadable_lines_is_all_rejected_without_errors(tmp_path):
    root = tmp_path / "data"
    (root / "manifests").mkdir(parents=True)
    (root / "manifests" / "test.jsonl").write_bytes(b"not json\n[1, 2]\n\xff\xfe\n")
    result = validation.validate(root, tmp_path / "r", workers=1, progress=False)
    assert (result.total, result.rejected, result.errors) == (3, 3, {})
    assert [e["line"] for e in read_jsonl(result.rejected_manifest)] == [1, 2, 3]


def test_probe_never_raises_on_an_unexpected_decoder_error(media, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("decoder blew up")

    import model.media

    monkeypatch.setattr(model.media, "probe", boom)
    row = probe.probe_record(media.root, {"video": "good.mp4", "audio": "good.mp4"})
    assert row["probe_error"] == "RuntimeError: decoder blew up"


@pytest.mark.parametrize("kwargs", [{"min_seconds": 5.0, "max_seconds": 1.0}, {"max_caption_chars": 0},
                                    {"min_audio_rms": -1.0}])
def test_bad_thresholds_are_refused(kwargs):
    with pytest.raises(ValueError, match="Thresholds"):
        rules.Thresholds(**kwargs)


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [["data", "validate"], ["data", "version"], ["data", "pull"]], ids=" ".join)
def test_the_data_commands_have_help(cmd):
    res = runner.invoke(app, cmd + ["--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_dvc_and_great_expectations_are_imported_only_when_used():
    assert loaded_by_import(("omniretriever.cli", "dataset.versioning", "dataset.validation"), ("dvc", "great_expectations")) == []


def test_cli_exit_1_when_too_many_records_are_rejected_and_0_under_the_threshold(corrupt, tmp_path):
    args = ["data", "validate", str(corrupt), "--split", "val", "--report", str(tmp_path / "r"), "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "rejected" in res.output and "file_exists" in res.output
    res = runner.invoke(app, args + ["--max-rejected", "0.95"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "data_docs" / "index.html").is_file()


def test_cli_threshold_options_reach_the_suite(tiny_data, tmp_path):
    args = ["data", "validate", str(tiny_data), "--split", GOOD_SPLIT, "--report", str(tmp_path / "r"), "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, args + ["--min-seconds", "5"])  # every clip is 2-4 s
    assert res.exit_code == 1 and "duration" in res.output


@pytest.mark.parametrize("extra,message", [
    (["--split", "../x"], "split name"),
    (["--split", "nope"], "cannot open manifest"),
    (["--max-rejected", "1.5"], "max_rejected"),
    (["--min-seconds", "9", "--max-seconds", "1"], "Thresholds"),
])
def test_cli_bad_arguments_exit_2(tiny_data, tmp_path, extra, message):
    res = runner.invoke(app, ["data", "validate", str(tiny_data), "--report", str(tmp_path / "r")] + extra)
    assert res.exit_code == 2 and message in res.output, res.output


def test_cli_missing_dataset_exits_2(tmp_path):
    res = runner.invoke(app, ["data", "validate", str(tmp_path / "nowhere"), "--report", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no manifests" in res.output
