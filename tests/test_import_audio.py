"""The public-benchmark importers (clotho, sounddescs, audiocaps, omniretriever-bench) on tiny release trees
written here in each release's layout: every item in its split with all its captions in order and null for
what it lacks, the same bytes from every import, reported skips, and a dataset that validates and evaluates."""

from __future__ import annotations

import csv
import json
import pickle
import re
import shutil
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset.importers import FORMATS, ImportFormatError, import_dataset
from dataset.mp4 import write_mp4
from dataset.rules import Thresholds
from dataset.validation import validate
from model.evaluate import evaluate
from model.manifest import read_split
from model.modalities import DIRECTION_NAMES
from omniretriever.cli import app
from tests.conftest import FPS, SAMPLE_RATE, ramp_frames, tone

SECONDS = 2.0


def write_wav(path: Path, hz: float) -> Path:
    """A mono 16-bit PCM wav of a tone (the stdlib writer: no encoder involved)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.round(tone(SECONDS, hz) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return path


def write_clip(path: Path, hz: float, video: bool = True) -> Path:
    """A 64x64 12 fps mp4 with a tone, with or without its video stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = ramp_frames(int(SECONDS * FPS), 64) if video else None
    return Path(write_mp4(path, frames, tone(SECONDS, hz), FPS, SAMPLE_RATE))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])


@dataclass(frozen=True)
class Expected:
    id: str
    captions: list[str]
    video: bool = False  # the item keeps a video path (else "video": null)


@dataclass(frozen=True)
class Release:
    fmt: str
    make: Callable[[Path], None]  # writes the release tree into the directory given
    items: dict[str, list[Expected]]  # split -> its items in manifest order
    damage: Callable[[Path], None]  # removes files from a copy of the tree...
    skipped: list[tuple[str, str | None]]  # ... after which these (where, id) are reported skipped, in order
    eval_split: str
    scored: tuple[str, ...] = ("t2a", "a2t")  # the directions evaluation scores on eval_split


def caps(stem: str, n: int) -> list[str]:
    return [f"{stem} caption {i}" for i in range(1, n + 1)]


# --- clotho: three caption CSVs, wavs in development/ validation/ evaluation/ ---------------------------

def make_clotho(src: Path) -> None:
    header = ["file_name", *(f"caption_{i}" for i in range(1, 6))]
    splits = {"development": ["Santa Motor.wav", "dog_bark.wav"], "validation": ["rain, heavy.wav"],
              "evaluation": ["door.wav", "birds.wav"]}
    for n, (folder, names) in enumerate(splits.items()):
        rows = [[name, *caps(name[:-4], 5)] for name in names]
        write_csv(src / f"clotho_captions_{folder}.csv", header, rows)
        for i, name in enumerate(names):
            write_wav(src / folder / name, 300 + 100 * n + 30 * i)


def damage_clotho(src: Path) -> None:
    (src / "clotho_captions_validation.csv").unlink()
    (src / "evaluation" / "birds.wav").unlink()


CLOTHO = Release(
    "clotho", make_clotho,
    {"train": [Expected("Santa Motor", caps("Santa Motor", 5)), Expected("dog_bark", caps("dog_bark", 5))],
     "val": [Expected("rain, heavy", caps("rain, heavy", 5))],
     "test": [Expected("door", caps("door", 5)), Expected("birds", caps("birds", 5))]},
    damage_clotho, [("clotho_captions_validation.csv", None), ("clotho_captions_evaluation.csv:3", "birds")],
    "test")


# --- sounddescs: descriptions.json (the converted pickle), split lists, audios/ ----------------------------

SOUNDDESCS = {"07033137": "Footsteps on gravel, slow.", "nhu05091190": "Seagulls calling, harbour ambience.",
              "07070057": "Car door slams.", "nhu05072165": "Thunder, distant rumble.",
              "07074038": "Church bells ringing."}


def make_sounddescs(src: Path) -> None:
    (src / "descriptions.json").write_text(json.dumps(SOUNDDESCS))
    (src / "train_list.txt").write_text("07033137\nnhu05091190\n")
    (src / "val_list.txt").write_text("07070057\n")
    (src / "data" / "SoundDescs").mkdir(parents=True)  # where the benchmark repository keeps its lists
    (src / "data" / "SoundDescs" / "test_list.txt").write_text("nhu05072165\r\n07074038\r\n")
    for i, rid in enumerate(SOUNDDESCS):
        nested = rid == "07070057"  # as the download tool's unzip step leaves it
        write_wav(src / "audios" / (f"{rid}/{rid}.wav" if nested else f"{rid}.wav"), 250 + 50 * i)
    (src / "categories.pkl").write_bytes(pickle.dumps({"07033137": ["Footsteps"]}))  # holds no captions: not read


def damage_sounddescs(src: Path) -> None:
    (src / "audios" / "nhu05091190.wav").unlink()
    with open(src / "val_list.txt", "a") as fh:
        fh.write("99999999\n")  # no description


def sd(rid: str) -> Expected:
    return Expected(rid, [SOUNDDESCS[rid]])


SOUNDDESCS_RELEASE = Release(
    "sounddescs", make_sounddescs,
    {"train": [sd("07033137"), sd("nhu05091190")], "val": [sd("07070057")], "test": [sd("nhu05072165"), sd("07074038")]},
    damage_sounddescs, [("train_list.txt:2", "nhu05091190"), ("val_list.txt:2", "99999999")], "test")


# --- audiocaps: train/val/test.csv, several captions a clip, media as different download tools name it --------

AUDIOCAPS_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]


def make_audiocaps(src: Path) -> None:
    write_csv(src / "train.csv", AUDIOCAPS_HEADER, [["91139", "r1nicOVtvkQ", "130", "A woman talks and a baby whispers"],
                                                    ["58146", "UDGBjjwyaqE", "20", "A power tool drills"]])
    write_csv(src / "val.csv", AUDIOCAPS_HEADER, [  # two clips, their rows interleaved
        ["97151", "--0w1YA1Hm4", "30", "A vehicle engine revving"],
        ["97152", "-AheI8Epim4", "30", "A man speaks over wind"],
        ["97153", "--0w1YA1Hm4", "30", "An engine idles then revs"],
        ["97154", "-AheI8Epim4", "30", "Wind blows as a man talks"],
        ["97155", "--0w1YA1Hm4", "30", "A car engine accelerates"]])
    write_csv(src / "test.csv", AUDIOCAPS_HEADER, [
        ["103549", "-1nilez17Dg", "10", "People cheer at a stadium"],
        ["103548", "-1nilez17Dg", "10", "A crowd applauds"],
        ["103550", "-3Kv4fdm7Uk", "30.0", "Water trickles"],
        ["103551", "-3Kv4fdm7Uk", "30.0", "A stream flows gently"]])
    write_wav(src / "audio" / "train" / "r1nicOVtvkQ_130.wav", 300)  # aac-datasets' name, in audio/<split>/
    write_wav(src / "train" / "58146.wav", 320)  # audiocaps-download: <split>/<audiocap_id>.wav
    write_wav(src / "audio_32000Hz" / "val" / "--0w1YA1Hm4_30.wav", 340)  # aac-datasets' own folder
    write_wav(src / "val" / "Y-AheI8Epim4.wav", 360)  # AudioSet's Y prefix
    write_clip(src / "video" / "test" / "-1nilez17Dg_10.mp4", 380)  # a video download: keeps its video
    write_wav(src / "test" / "-3Kv4fdm7Uk_30000_40000.wav", 400)  # audiocaps-dl: <ytid>_<start ms>_<end ms>


def damage_audiocaps(src: Path) -> None:
    (src / "train" / "58146.wav").unlink()


AUDIOCAPS = Release(
    "audiocaps", make_audiocaps,
    {"train": [Expected("r1nicOVtvkQ_130", ["A woman talks and a baby whispers"]),
               Expected("UDGBjjwyaqE_20", ["A power tool drills"])],
     "val": [Expected("--0w1YA1Hm4_30", ["A vehicle engine revving", "An engine idles then revs", "A car engine accelerates"]),
             Expected("-AheI8Epim4_30", ["A man speaks over wind", "Wind blows as a man talks"])],
     "test": [Expected("-1nilez17Dg_10", ["People cheer at a stadium", "A crowd applauds"], video=True),
              Expected("-3Kv4fdm7Uk_30", ["Water trickles", "A stream flows gently"])]},
    damage_audiocaps, [("train.csv:3", "UDGBjjwyaqE_20")], "val")


# --- omniretriever-bench: manifests/ + videos/ + annotations/ ------------------------------------------------

def bench_line(rid: str, text: str, alts: list[str] | None = None, video: bool = True) -> str:
    obj = {"id": rid, "text": text, "video": f"videos/{rid}.mp4" if video else None, "audio": f"videos/{rid}.mp4"}
    return json.dumps(obj | ({"alt_texts": alts} if alts else {}))


def make_bench(src: Path) -> None:
    (src / "manifests").mkdir(parents=True)
    (src / "annotations").mkdir()
    (src / "manifests" / "train.jsonl").write_text(
        bench_line("tr-0", "a red ball bounces", ["a red sphere hops"]) + "\n" + bench_line("tr-1", "a box slides") + "\n")
    (src / "manifests" / "test.jsonl").write_text(
        bench_line("te-0", "a star spins", ["a star turns"]) + "\n" + bench_line("te-1", "a ring falls") + "\n")
    (src / "annotations" / "test.jsonl").write_text(
        json.dumps({"id": "te-0", "captions": ["a star twirls", "a star spins"]}) + "\n"  # the repeat is kept once
        + json.dumps({"id": "te-1", "caption": "a hoop drops"}) + "\n"
        + json.dumps({"id": "te-9", "captions": ["not in the manifest"]}) + "\n")
    for i, rid in enumerate(("tr-0", "tr-1", "te-0", "te-1")):
        write_clip(src / "videos" / f"{rid}.mp4", 300 + 40 * i)


def damage_bench(src: Path) -> None:
    (src / "videos" / "tr-1.mp4").unlink()


BENCH = Release(
    "omniretriever-bench", make_bench,
    {"train": [Expected("tr-0", ["a red ball bounces", "a red sphere hops"], True), Expected("tr-1", ["a box slides"], True)],
     "test": [Expected("te-0", ["a star spins", "a star turns", "a star twirls"], True),
              Expected("te-1", ["a ring falls", "a hoop drops"], True)]},
    damage_bench, [("manifests/train.jsonl:2", "tr-1"), ("annotations/test.jsonl:3", "te-9")], "test",
    scored=DIRECTION_NAMES)

RELEASES = [CLOTHO, SOUNDDESCS_RELEASE, AUDIOCAPS, BENCH]
UNDAMAGED_SKIPS = {"omniretriever-bench": [("annotations/test.jsonl:3", "te-9")]}  # what the intact trees report


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: r.fmt)
def release(request, tmp_path_factory) -> tuple[Release, Path, Path]:
    """(the release, its tree, the dataset imported from it)."""
    rel: Release = request.param
    root = tmp_path_factory.mktemp(rel.fmt)
    src = root / "release"
    src.mkdir()
    rel.make(src)
    import_dataset(rel.fmt, src, root / "out")
    return rel, src, root / "out"


def manifest_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted([*(out / "manifests").glob("*.jsonl"), out / "import.json"])}


def test_every_format_names_the_public_source_it_follows():
    for fmt, (_, version) in FORMATS.items():
        assert fmt == "folder" or re.search(r"[a-z0-9-]+\.(com|org|io|edu)/|arXiv \d", version), (fmt, version)


def test_each_item_is_in_its_split_with_every_caption_in_order(release):
    rel, src, out = release
    assert sorted(p.stem for p in (out / "manifests").glob("*.jsonl")) == sorted(rel.items)
    for split, expected in rel.items.items():
        records = read_split(out, split)
        assert [r.id for r in records] == [e.id for e in expected]
        assert [list(r.captions) for r in records] == [e.captions for e in expected]
        for rec, exp in zip(records, expected):
            assert rec.audio is not None and (out / rec.audio).is_file() and rec.audio.startswith("media/")
            assert (rec.video is not None) == exp.video, rec
    report = json.loads((out / "import.json").read_text())
    assert report["format"] == rel.fmt
    assert [(s["where"], s["id"]) for s in report["skipped"]] == UNDAMAGED_SKIPS.get(rel.fmt, [])
    assert report["items"] == {s: len(e) for s, e in sorted(rel.items.items())}


def test_audio_only_items_write_null_video_in_the_manifest(release):
    rel, _, out = release
    for split, expected in rel.items.items():
        lines = [json.loads(x) for x in (out / "manifests" / f"{split}.jsonl").read_text().splitlines()]
        assert [x["video"] is None for x in lines] == [not e.video for e in expected]
        assert all(set(x) <= {"id", "text", "video", "audio", "alt_texts"} for x in lines)
        assert all(("alt_texts" in x) == (len(e.captions) > 1) for x, e in zip(lines, expected))


def test_importing_again_gives_the_same_bytes(release, tmp_path):
    rel, src, out = release
    import_dataset(rel.fmt, src, tmp_path / "again")
    assert manifest_bytes(tmp_path / "again") == manifest_bytes(out)
    import_dataset(rel.fmt, src, tmp_path / "again")  # into the same OUT: replaced, same bytes
    assert manifest_bytes(tmp_path / "again") == manifest_bytes(out)


def test_what_cannot_be_imported_is_reported_not_dropped(release, tmp_path):
    rel, src, _ = release
    damaged = tmp_path / "damaged"
    shutil.copytree(src, damaged)
    rel.damage(damaged)
    report = import_dataset(rel.fmt, damaged, tmp_path / "out")
    assert [(s.where, s.id) for s in report.skipped] == rel.skipped
    assert all(s.reason for s in report.skipped)
    written = {r.id for split in report.items for r in read_split(tmp_path / "out", split)}
    assert not written & {rid for _, rid in rel.skipped}
    elsewhere = Path(shutil.copytree(damaged, tmp_path / "elsewhere" / "release"))  # reasons name no path of SRC
    import_dataset(rel.fmt, elsewhere, tmp_path / "out2")
    assert manifest_bytes(tmp_path / "out2") == manifest_bytes(tmp_path / "out")


def test_the_imported_dataset_validates(release, tmp_path):
    _, _, out = release
    result = validate(out, tmp_path / "report", thresholds=Thresholds(allow_partial=True), workers=1, progress=False)
    assert result.passed and result.rejected == 0, result.failed_expectations


def test_the_imported_dataset_evaluates_in_the_directions_it_can(release, tiny_run):
    rel, _, out = release
    results = evaluate(tiny_run, out, rel.eval_split, workers=1, progress=False, n_boot=10)
    assert results["n_items"] == len(rel.items[rel.eval_split])
    assert tuple(results["directions"]) == tuple(d for d in DIRECTION_NAMES if d in rel.scored)
    if rel.scored != DIRECTION_NAMES:
        assert results["unscored"] == [d for d in DIRECTION_NAMES if d not in rel.scored]
    else:
        assert "unscored" not in results


def test_the_cli_exits_3_when_something_was_skipped(release, tmp_path):
    rel, src, _ = release
    runner = CliRunner()
    res = runner.invoke(app, ["data", "import", rel.fmt, str(src), "--out", str(tmp_path / "out")])
    assert res.exit_code == (3 if rel.fmt in UNDAMAGED_SKIPS else 0), res.output
    assert f"imported {sum(len(e) for e in rel.items.values())} items" in res.output


@pytest.mark.parametrize("fmt, pickled", [
    ("sounddescs", "descriptions.pkl"),
    ("sounddescs", "sounddescs_data/descriptions.pkl"),
    ("omniretriever-bench", "annotations/test.pkl"),
])
def test_a_pickle_is_refused_with_how_to_convert_it(fmt, pickled, tmp_path):
    src = tmp_path / "release"
    src.mkdir()
    {"sounddescs": make_sounddescs, "omniretriever-bench": make_bench}[fmt](src)
    for old in ("descriptions.json", "annotations/test.jsonl"):
        (src / old).unlink(missing_ok=True)
    (src / pickled).parent.mkdir(parents=True, exist_ok=True)
    (src / pickled).write_bytes(pickle.dumps({"07033137": "never loaded"}))
    with pytest.raises(ImportFormatError, match="pickle") as err:
        import_dataset(fmt, src, tmp_path / "out")
    assert "json.dump" in str(err.value) and pickled.split("/")[-1] in str(err.value)
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(app, ["data", "import", fmt, str(src), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "pickle" in res.output and pickled.split("/")[-1] in res.output


@pytest.mark.parametrize("fmt", ["clotho", "sounddescs", "audiocaps", "omniretriever-bench"])
def test_a_directory_that_is_not_the_release_is_an_error_naming_what_was_looked_for(fmt, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFormatError, match="is this the directory the release unpacks to"):
        import_dataset(fmt, tmp_path / "empty", tmp_path / "out")


def test_a_clotho_csv_without_a_caption_column_names_the_columns_it_has(tmp_path):
    src = tmp_path / "release"
    src.mkdir()
    make_clotho(src)
    write_csv(src / "clotho_captions_development.csv", ["file_name", "caption_1"], [["dog_bark.wav", "a dog"]])
    with pytest.raises(ImportFormatError, match="no column 'caption_2'.*its columns: 'file_name', 'caption_1'"):
        import_dataset("clotho", src, tmp_path / "out")


def test_audiocaps_prefers_the_first_folder_and_name_in_its_documented_order(tmp_path):
    src = tmp_path / "release"
    src.mkdir()
    make_audiocaps(src)
    write_wav(src / "audio" / "test" / "-1nilez17Dg_10.wav", 500)  # a wav beside the video download
    write_wav(src / "test" / "103548.wav", 500)  # a later name in a later folder
    import_dataset("audiocaps", src, tmp_path / "out")
    first = read_split(tmp_path / "out", "test")[0]
    assert first.video == first.audio == "media/video/test/-1nilez17Dg_10.mp4"


def test_audiocaps_groups_rows_by_youtube_id_and_start_time(tmp_path):
    src = tmp_path / "release"
    src.mkdir()
    write_csv(src / "test.csv", AUDIOCAPS_HEADER, [["1", "abcdefghijk", "10", "first start"],
                                                   ["2", "abcdefghijk", "30", "second start"],
                                                   ["3", "abcdefghijk", "10.0", "first start again"]])
    for start in (10, 30):
        write_wav(src / "test" / f"abcdefghijk_{start}.wav", 300 + start)
    report = import_dataset("audiocaps", src, tmp_path / "out")
    assert [(s.where, s.id) for s in report.skipped] == [("train.csv", None), ("val.csv", None)]  # splits not there
    assert [(r.id, r.captions) for r in read_split(tmp_path / "out", "test")] == [
        ("abcdefghijk_10", ("first start", "first start again")), ("abcdefghijk_30", ("second start",))]
