"""`omniretriever data import folder`: a media folder and a CSV or JSONL of captions, end to end through the
CLI. What each row becomes, what is skipped and why (exit 3), what is refused outright (exit 2), and how
the dataset lands on disk (copied or hard-linked, replacing an earlier import, never anything else)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset.mp4 import write_mp4
from omniretriever.cli import app
from tests.conftest import FPS, SAMPLE_RATE, ramp_frames, tone

SECONDS = 2.0


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """A media folder: a clip with sound, a silent clip, a wav, and a clip in a subfolder."""
    root = tmp_path_factory.mktemp("library")
    frames, audio = ramp_frames(int(SECONDS * FPS), 64), tone(SECONDS, 440)
    write_mp4(root / "clip.mp4", frames, audio, FPS, SAMPLE_RATE)
    write_mp4(root / "silent.mp4", frames, None, FPS, SAMPLE_RATE)
    (root / "sub").mkdir()
    write_mp4(root / "sub" / "b.mp4", frames, tone(SECONDS, 660), FPS, SAMPLE_RATE)
    with wave.open(str(root / "tone.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.round(tone(SECONDS, 550) * 32767).astype("<i2").tobytes())
    return root


@pytest.fixture
def src(library, tmp_path) -> Path:
    """A copy of the library this test may change."""
    return Path(shutil.copytree(library, tmp_path / "src"))


def run(src: Path, captions: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["data", "import", "folder", str(src), "--captions", str(captions),
                                    "--out", str(out), *extra])


def manifest(out: Path, split: str = "test") -> list[dict]:
    return [json.loads(line) for line in (out / "manifests" / f"{split}.jsonl").read_text().splitlines()]


def skipped(out: Path) -> list[tuple[str, str | None]]:
    return [(s["where"], s["id"]) for s in json.loads((out / "import.json").read_text())["skipped"]]


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_a_csv_with_a_bom_and_windows_line_endings_imports_every_row(src, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_bytes(b"\xef\xbb\xbffile,caption,caption_2,split\r\n"
                         b"clip.mp4,A clip with sound,\"Another, with a comma\",train\r\n"
                         b"sub/b.mp4,A clip in a folder,,\r\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "imported 2 items (3 captions)" in res.output
    assert manifest(tmp_path / "out", "train") == [{"id": "clip", "text": "A clip with sound", "video": "media/clip.mp4",
                                                    "audio": "media/clip.mp4", "alt_texts": ["Another, with a comma"]}]
    assert manifest(tmp_path / "out") == [{"id": "sub_b", "text": "A clip in a folder", "video": "media/sub/b.mp4",
                                           "audio": "media/sub/b.mp4"}]
    assert skipped(tmp_path / "out") == []


def test_a_jsonl_gives_ids_captions_splits_and_a_separate_audio_file(src, tmp_path):
    rows = [{"id": "one", "file": "silent.mp4", "audio": "tone.wav", "captions": ["main", "second"], "alt_texts": ["third"]},
            {"id": 7, "file": "clip.mp4", "caption": "an integer id", "split": "val"}]
    captions = write(tmp_path / "captions.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert manifest(tmp_path / "out") == [{"id": "one", "text": "main", "video": "media/silent.mp4",
                                           "audio": "media/tone.wav", "alt_texts": ["second", "third"]}]
    assert [r["id"] for r in manifest(tmp_path / "out", "val")] == ["7"]


def test_paths_that_leave_the_media_folder_are_skipped(src, tmp_path):
    outside = tmp_path / "outside.mp4"
    shutil.copyfile(src / "clip.mp4", outside)
    (src / "link.mp4").symlink_to(outside)
    captions = write(tmp_path / "captions.csv", "file,caption\n../outside.mp4,up and out\n"
                     f"{outside},absolute\nlink.mp4,a symlink out\nclip.mp4,inside\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 3, res.output
    absolute_id = outside.as_posix()[:-4].replace("/", "_")  # the default id: the path without suffix, "/" as "_"
    assert skipped(tmp_path / "out") == [("captions.csv:2", ".._outside"), ("captions.csv:3", absolute_id),
                                         ("captions.csv:4", "link")]
    reasons = [s["reason"] for s in json.loads((tmp_path / "out" / "import.json").read_text())["skipped"]]
    assert "'..' components are not allowed" in reasons[0] and "absolute paths are not allowed" in reasons[1]
    assert "outside the data root" in reasons[2]
    assert [r["id"] for r in manifest(tmp_path / "out")] == ["clip"]
    assert not (tmp_path / "out" / "media" / "link.mp4").exists()


def test_a_missing_media_file_is_a_reported_skip(src, tmp_path):
    captions = write(tmp_path / "captions.csv", "file,caption\nclip.mp4,here\ngone.mp4,not here\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 3 and "skipped captions.csv:3 (gone)" in res.output, res.output
    report = json.loads((tmp_path / "out" / "import.json").read_text())
    assert report["skipped"][0]["reason"].startswith("video: gone.mp4: no such file")
    assert report["items"] == {"test": 1}


def test_a_repeated_id_is_skipped_naming_where_it_was_first_seen(src, tmp_path):
    captions = write(tmp_path / "captions.csv", "id,file,caption\nx,clip.mp4,first\nx,sub/b.mp4,second\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 3, res.output
    report = json.loads((tmp_path / "out" / "import.json").read_text())
    assert report["skipped"] == [{"where": "captions.csv:3", "id": "x",
                                  "reason": "duplicate id (first seen at captions.csv:2)"}]
    assert manifest(tmp_path / "out")[0]["text"] == "first"


def test_a_missing_caption_column_is_refused_naming_the_columns_it_has(src, tmp_path):
    captions = write(tmp_path / "captions.csv", "file,description\nclip.mp4,a clip\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 2
    assert "has no column 'caption' (its columns: 'file', 'description')" in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["captions.pkl", "captions.csv"])  # by its name, or by its first bytes
def test_a_pickled_captions_file_is_refused_unread(src, tmp_path, name):
    captions = tmp_path / name
    captions.write_bytes(pickle.dumps([{"file": "clip.mp4", "caption": "never loaded"}]))
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 2
    assert "is a Python pickle" in res.output and "json.dump" in res.output
    assert not (tmp_path / "out").exists()


def test_a_row_that_is_not_utf8_is_a_reported_skip_naming_its_line(src, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_bytes(b"file,caption\nclip.mp4,fine\nsilent.mp4,caf\xe9 latin-1\ntone.wav,also fine\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 3, res.output
    report = json.loads((tmp_path / "out" / "import.json").read_text())
    assert report["skipped"] == [{"where": "captions.csv:3", "id": None,
                                  "reason": "not UTF-8 (invalid byte at column 15)"}]
    assert [r["id"] for r in manifest(tmp_path / "out")] == ["clip", "tone"]


def test_a_header_that_is_not_utf8_is_refused(src, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_bytes(b"fil\xe9,caption\nclip.mp4,fine\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 2 and "the header row is not UTF-8" in res.output, res.output


def test_a_caption_spanning_lines_does_not_shift_the_lines_named_after_it(src, tmp_path):
    captions = write(tmp_path / "captions.csv", 'file,caption\nclip.mp4,"two\nlines"\nsilent.mp4,x,extra\n')
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 3
    assert skipped(tmp_path / "out") == [("captions.csv:4", None)]
    assert manifest(tmp_path / "out")[0]["text"] == "two lines"


def test_a_silent_video_is_video_only_and_a_wav_audio_only(src, tmp_path):
    captions = write(tmp_path / "captions.csv", "file,caption\nclip.mp4,both\nsilent.mp4,no sound\ntone.wav,no picture\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert [(r["id"], r["video"], r["audio"]) for r in manifest(tmp_path / "out")] == [
        ("clip", "media/clip.mp4", "media/clip.mp4"), ("silent", "media/silent.mp4", None), ("tone", None, "media/tone.wav")]
    assert json.loads((tmp_path / "out" / "import.json").read_text())["modalities"] == {"at": 1, "tv": 1, "tva": 1}
    assert "modalities at 1, tv 1, tva 1" in res.output


def test_exit_3_when_anything_was_skipped_and_0_when_not(src, tmp_path):
    good = write(tmp_path / "good.csv", "file,caption\nclip.mp4,fine\n")
    bad = write(tmp_path / "bad.csv", "file,caption\nclip.mp4,fine\nclip.mp4,\n")  # an empty caption
    assert run(src, good, tmp_path / "a").exit_code == 0
    res = run(src, bad, tmp_path / "b")
    assert res.exit_code == 3 and "each is listed in" in res.output
    assert json.loads((tmp_path / "b" / "import.json").read_text())["skipped"][0]["reason"] == "every caption is empty"


def test_a_split_that_is_not_a_plain_name_is_skipped_not_fatal(src, tmp_path):
    captions = write(tmp_path / "captions.csv", "file,caption,split\nclip.mp4,a,odd\\split\nsilent.mp4,b,test\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 3, res.output
    assert skipped(tmp_path / "out") == [("captions.csv:2", "clip")]


def test_alt_texts_that_are_not_a_list_are_skipped(src, tmp_path):
    rows = [{"file": "clip.mp4", "caption": "c", "alt_texts": "one string"}, {"file": "silent.mp4", "caption": "ok"}]
    captions = write(tmp_path / "captions.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    res = run(src, captions, tmp_path / "out")
    assert res.exit_code == 3
    assert skipped(tmp_path / "out") == [("captions.jsonl:1", None)]
    assert manifest(tmp_path / "out") == [{"id": "silent", "text": "ok", "video": "media/silent.mp4", "audio": None}]


def test_linked_media_are_hard_links_and_the_manifests_match_a_copy(src, tmp_path):
    captions = write(tmp_path / "captions.csv", "file,caption\nclip.mp4,one\nsub/b.mp4,two\ntone.wav,three\n")
    assert run(src, captions, tmp_path / "copy").exit_code == 0
    res = run(src, captions, tmp_path / "link", "--media", "link")
    assert res.exit_code == 0, res.output
    for rel in ("clip.mp4", "sub/b.mp4", "tone.wav"):
        assert os.stat(tmp_path / "link" / "media" / rel).st_ino == os.stat(src / rel).st_ino
        assert os.stat(tmp_path / "copy" / "media" / rel).st_ino != os.stat(src / rel).st_ino
        assert (tmp_path / "copy" / "media" / rel).read_bytes() == (src / rel).read_bytes()
    for rel in ("manifests/test.jsonl", "import.json"):
        assert (tmp_path / "link" / rel).read_bytes() == (tmp_path / "copy" / rel).read_bytes()


def test_importing_into_an_earlier_import_replaces_it(src, tmp_path):
    first = write(tmp_path / "first.csv", "file,caption,split\nclip.mp4,one,train\nsilent.mp4,two,test\n")
    second = write(tmp_path / "second.csv", "file,caption\ntone.wav,three\n")
    out = tmp_path / "out"
    assert run(src, first, out).exit_code == 0
    assert run(src, second, out).exit_code == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "import.json", "manifests/test.jsonl", "media/tone.wav"]
    assert [r["id"] for r in manifest(out)] == ["tone"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging or old copy left behind


def test_an_existing_out_that_is_not_an_import_is_refused_and_left_alone(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    captions = write(tmp_path / "captions.csv", "file,caption\nclip.mp4,one\n")
    res = run(src, captions, out)
    assert res.exit_code == 2 and "exists and is not an import" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_a_media_folder_inside_the_out_it_would_replace_is_refused(src, tmp_path):
    captions = write(tmp_path / "captions.csv", "file,caption\nclip.mp4,one\n")
    out = tmp_path / "out"
    assert run(src, captions, out).exit_code == 0
    (out / "media" / "mine.txt").write_text("not listed in the captions")
    res = run(out / "media", captions, out)
    assert res.exit_code == 2 and "lies inside" in res.output, res.output
    assert (out / "media" / "mine.txt").is_file()


def test_nothing_importable_exits_2_and_leaves_an_earlier_import_as_it_was(src, tmp_path):
    good = write(tmp_path / "good.csv", "file,caption\nclip.mp4,one\n")
    bad = write(tmp_path / "bad.csv", "file,caption\nmissing.mp4,gone\n../x.mp4,out\n")
    out = tmp_path / "out"
    assert run(src, good, out).exit_code == 0
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = run(src, bad, out)
    assert res.exit_code == 2 and "nothing importable (2 skipped; the first: bad.csv:2" in res.output
    assert f"{out} was not written" in res.output and "skipped bad.csv:3" in res.output
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert run(src, bad, tmp_path / "fresh").exit_code == 2 and not (tmp_path / "fresh").exists()
