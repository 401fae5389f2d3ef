"""The video benchmark importers (msrvtt, msrvtt-full, msvd, didemo, vatex): each reads a tiny release tree
written here in its public layout, and the dataset it writes holds every caption in order, null audio where
the benchmark has none, and a reported skip for each row it cannot use; it validates and evaluates."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from dataset.importers import FORMATS, ImportFormatError, ImportOptions, import_dataset
from dataset.importers.didemo import candidates
from dataset.importers.msvd import read_msvd
from dataset.importers.locate import first_file
from dataset.mp4 import rgb_to_yuv420p, write_mp4
from tests.conftest import FPS, SAMPLE_RATE, tone


def frames(level: int) -> np.ndarray:
    """24 frames (2 s at 12 fps) of 64 x 64, a brightness ramp starting at `level`."""
    return np.broadcast_to(np.linspace(level, level + 60, 24).astype(np.uint8)[:, None, None, None], (24, 64, 64, 3)).copy()


def clip(path: Path, level: int) -> None:
    """An mp4 with video and 2 s of tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, frames(level), tone(2.0, hz=300.0 + level), FPS, SAMPLE_RATE)


def avi(path: Path, level: int) -> None:
    """A real AVI (MPEG-4 part 2 video, no audio), as MSVD's YouTubeClips are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i, planes in enumerate(rgb_to_yuv420p(frames(level))):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def caps(vid: str, n: int) -> list[str]:
    return [f"{vid} caption {i}" for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Release trees, each in its public layout
# ----------------------------------------------------------------------------------------------

def msrvtt_tree(root: Path) -> None:
    """CLIP4Clip's msrvtt_data.zip beside the clips: video7 under MSRVTT_Videos/, video9 under videos/all/."""
    write(root / "MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id,sentence\n"
                                             "ret0,msr7,video7,a cat plays the piano\n"
                                             "ret1,msr9,video9,  people  dance outside\n"
                                             "ret2,msr11,video11,a clip that is not there\n"
                                             "ret3,msr12,video12,\n")
    write(root / "MSRVTT_train.9k.csv", "video_id\nvideo3\n")
    sentences = [("video7", "a kitten on a keyboard"), ("video7", "a cat plays the piano"), ("video7", "music"),
                 ("video9", "a party"), ("video3", "a car drives"), ("video3", "a road"), ("video5", "a lecture"),
                 ("video11", "lost"), ("video9", "", )]
    videos = [("video7", "test"), ("video9", "test"), ("video3", "train"), ("video5", "validate"), ("video11", "test")]
    write(root / "MSRVTT_data.json", json.dumps({
        "info": {"year": "2016"},
        "videos": [{"id": i, "video_id": v, "split": s, "category": 0, "url": "u"} for i, (v, s) in enumerate(videos)],
        "sentences": [{"sen_id": i, "video_id": v, "caption": c} for i, (v, c) in enumerate(sentences)]}))
    clip(root / "MSRVTT_Videos" / "video7.mp4", 20)
    clip(root / "videos" / "all" / "video9.mp4", 60)
    clip(root / "MSRVTT_Videos" / "video3.mp4", 100)
    clip(root / "MSRVTT_Videos" / "video5.mp4", 140)


MSVD_CLIPS = {"-4wsuPCjDBc_5_15": 4, "abc_1_9": 3, "xyz_3_8": 2, "q_t-Z_0_2": 2, "lonely_0_4": 2}


def msvd_tree(root: Path) -> None:
    """The UT Austin release (YouTubeClips/*.avi, AllVideoDescriptions.txt) and the three split lists."""
    lines = ["# Each line is a clip id and one English description", "#", ""]
    for clip_id, n in MSVD_CLIPS.items():
        lines += [f"{clip_id} {c}" for c in caps(clip_id, n)]
    lines.insert(5, "abc_1_9   ")  # an id without its caption
    write(root / "AllVideoDescriptions.txt", "\n".join(lines) + "\n")
    write(root / "train_list.txt", "abc_1_9\n")
    write(root / "val_list.txt", "xyz_3_8\n")
    write(root / "test_list.txt", "-4wsuPCjDBc_5_15\nnocap_2_3\nq_t-Z_0_2\n")
    avi(root / "YouTubeClips" / "-4wsuPCjDBc_5_15.avi", 30)
    avi(root / "YouTubeClips" / "q_t-Z_0_2.avi", 150)
    avi(root / "YouTubeClips" / "abc_1_9.avi", 90)


def didemo_tree(root: Path) -> None:
    """LocalizingMoments' json files; clips named as fetched: converted (.mov -> .mp4), as named, AWS (<name>.mp4)."""
    def moment(video: str, description, times) -> dict:
        return {"annotation_id": len(video), "description": description, "video": video, "times": times,
                "dl_link": "https://www.flickr.com/x", "num_segments": 6}

    write(root / "test_data.json", json.dumps([
        moment("111@N00_1_aa.mov", "the dog jumps into the water", [[3, 3], [3, 4], [4, 4]]),
        moment("222@N00_2_bb.mp4", "a red kite", [[0, 1]]),
        moment("111@N00_1_aa.mov", "a man walks in", [[0, 0], [0, 1]]),
        moment("111@N00_1_aa.mov", "", [[1, 1]]),
        moment("111@N00_1_aa.mov", "he sits down", [[1, 2], [2, 2]]),
        moment("333@N00_3_cc.avi", "nobody has this clip", [[0, 0]]),
        moment("222@N00_2_bb.mp4", "the kite falls", "soon"),
    ]))
    write(root / "val_data.json", json.dumps([moment("444@N00_4_dd.wmv", "a bus passes", [[0, 1]])]))
    clip(root / "videos" / "111@N00_1_aa.mp4", 40)
    clip(root / "videos" / "222@N00_2_bb.mp4", 80)
    clip(root / "videos" / "444@N00_4_dd.wmv.mp4", 120)


def vatex_tree(root: Path) -> None:
    """The VATEX json files; clips under videos/ (one in SRC itself, as some downloaders leave them)."""
    def entry(vid: str, english) -> dict:
        return {"videoID": vid, "enCap": english, "chCap": [f"中文 {i}" for i in range(10)]}

    write(root / "vatex_training_v1.0.json", json.dumps([entry("Ptf_2VRj-V0_000122_000132", caps("Ptf", 10)),
                                                         entry("nocap-V0_000001_000011", [])]))
    write(root / "vatex_validation_v1.0.json", json.dumps([entry("val_aaaaaa_000010_000020", caps("val", 10))]))
    write(root / "vatex_public_test_english_v1.1.json", json.dumps([
        entry("tst_bbbbbb_000005_000015", caps("tst", 10)), entry("gone_cccccc_000000_000010", caps("gone", 10))],
        ensure_ascii=False))
    clip(root / "videos" / "Ptf_2VRj-V0_000122_000132.mp4", 50)
    clip(root / "val_aaaaaa_000010_000020.mp4", 110)
    clip(root / "videos" / "tst_bbbbbb_000005_000015.mp4", 170)


@dataclass(frozen=True)
class Case:
    fmt: str
    tree: object  # the function writing the release
    items: dict[str, list[tuple[str, tuple[str, ...], str]]]  # split -> [(id, captions, video in SRC)]
    skips: list[tuple[str, str | None, str]]  # (where, id, a part of the reason)
    audio: bool  # whether the items keep the clip's audio

    def __str__(self) -> str:
        return self.fmt


MISSING = "no such file"
CASES = [
    Case("msrvtt", msrvtt_tree, {
        "test": [("video7", ("a cat plays the piano", "a kitten on a keyboard", "music"), "MSRVTT_Videos/video7.mp4"),
                 ("video9", ("people dance outside", "a party"), "videos/all/video9.mp4")],
        "train": [("video3", ("a car drives", "a road"), "MSRVTT_Videos/video3.mp4")]},
        [('MSRVTT_data.json["sentences"][8]', "video9", "needs a 'video_id' and a 'caption'"),
         ("MSRVTT_JSFUSION_test.csv:4", "video11", MISSING),
         ("MSRVTT_JSFUSION_test.csv:5", "video12", "no sentence")], True),
    Case("msrvtt-full", msrvtt_tree, {
        "test": [("video7", ("a kitten on a keyboard", "a cat plays the piano", "music"), "MSRVTT_Videos/video7.mp4"),
                 ("video9", ("a party",), "videos/all/video9.mp4")],
        "train": [("video3", ("a car drives", "a road"), "MSRVTT_Videos/video3.mp4")],
        "val": [("video5", ("a lecture",), "MSRVTT_Videos/video5.mp4")]},
        [('MSRVTT_data.json["sentences"][8]', "video9", "needs a 'video_id' and a 'caption'"),
         ('MSRVTT_data.json["videos"][4]', "video11", MISSING)], True),
    Case("msvd", msvd_tree, {
        "train": [("abc_1_9", tuple(caps("abc_1_9", 3)), "YouTubeClips/abc_1_9.avi")],
        "test": [("-4wsuPCjDBc_5_15", tuple(caps("-4wsuPCjDBc_5_15", 4)), "YouTubeClips/-4wsuPCjDBc_5_15.avi"),
                 ("q_t-Z_0_2", tuple(caps("q_t-Z_0_2", 2)), "YouTubeClips/q_t-Z_0_2.avi")]},
        [("AllVideoDescriptions.txt:6", "abc_1_9", "no caption after the clip id"),
         ("val_list.txt:1", "xyz_3_8", MISSING),
         ("test_list.txt:2", "nocap_2_3", "no caption for it in AllVideoDescriptions.txt"),
         ("AllVideoDescriptions.txt:16", "lonely_0_4", "in none of train_list.txt, val_list.txt, test_list.txt")],
        False),
    Case("didemo", didemo_tree, {
        "val": [("444@N00_4_dd", ("a bus passes",), "videos/444@N00_4_dd.wmv.mp4")],
        "test": [("111@N00_1_aa", ("a man walks in he sits down the dog jumps into the water",),
                  "videos/111@N00_1_aa.mp4"),
                 ("222@N00_2_bb", ("a red kite",), "videos/222@N00_2_bb.mp4")]},
        [("test_data.json[3]", "111@N00_1_aa", "no description"),
         ("test_data.json[6]", "222@N00_2_bb", "'times' is not a list of [start, end] chunk pairs"),
         ("test_data.json[5]", "333@N00_3_cc", MISSING)], True),
    Case("vatex", vatex_tree, {
        "train": [("Ptf_2VRj-V0_000122_000132", tuple(caps("Ptf", 10)), "videos/Ptf_2VRj-V0_000122_000132.mp4")],
        "val": [("val_aaaaaa_000010_000020", tuple(caps("val", 10)), "val_aaaaaa_000010_000020.mp4")],
        "test": [("tst_bbbbbb_000005_000015", tuple(caps("tst", 10)), "videos/tst_bbbbbb_000005_000015.mp4")]},
        [("vatex_training_v1.0.json[1]", "nocap-V0_000001_000011", "no English caption"),
         ("vatex_public_test_english_v1.1.json[1]", "gone_cccccc_000000_000010", MISSING)], True),
]
BY_FORMAT = {case.fmt: case for case in CASES}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """Each release tree, written once (msrvtt and msrvtt-full read the same one)."""
    out = {}
    for case in CASES:
        if case.tree not in out:
            root = tmp_path_factory.mktemp(case.tree.__name__)
            case.tree(root)
            out[case.tree] = root
    return {case.fmt: out[case.tree] for case in CASES}


@pytest.fixture(scope="module")
def imported(trees, tmp_path_factory) -> dict[str, Path]:
    """Each format imported once: OUT per format."""
    base = tmp_path_factory.mktemp("imported")
    for case in CASES:
        import_dataset(case.fmt, trees[case.fmt], base / case.fmt)
    return {case.fmt: base / case.fmt for case in CASES}


def manifests(out: Path) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((out / "manifests").glob("*.jsonl"))}


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_caption_is_kept_in_order_and_each_unusable_row_is_a_reported_skip(case, imported):
    out = imported[case.fmt]
    written = manifests(out)
    assert sorted(written) == sorted(case.items)
    for split, expected in case.items.items():
        rows = written[split]
        assert [r["id"] for r in rows] == [vid for vid, _, _ in expected]  # annotation order
        for row, (vid, captions, video) in zip(rows, expected):
            assert (row["text"], *row.get("alt_texts", [])) == captions, vid
            assert ("alt_texts" in row) == (len(captions) > 1)
            assert row["video"] == f"media/{video}" and (out / row["video"]).is_file()
            assert row["audio"] == (row["video"] if case.audio else None)
    report = json.loads((out / "import.json").read_text())
    assert report["format"] == case.fmt
    got = [(s["where"], s["id"], s["reason"]) for s in report["skipped"]]
    assert [(w, i) for w, i, _ in got] == [(w, i) for w, i, _ in case.skips]
    for (_, _, reason), (_, _, part) in zip(got, case.skips):
        assert part in reason, reason
    assert report["items"] == {s: len(v) for s, v in sorted(case.items.items())}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_importing_twice_gives_the_same_bytes(case, trees, imported, tmp_path):
    first = snapshot(imported[case.fmt])
    import_dataset(case.fmt, trees[case.fmt], tmp_path / "again")
    assert snapshot(tmp_path / "again") == first
    import_dataset(case.fmt, trees[case.fmt], imported[case.fmt])  # over the earlier import
    assert snapshot(imported[case.fmt]) == first


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_imported_dataset_validates(case, imported, tmp_path):
    from dataset.rules import Thresholds
    from dataset.validation import validate

    result = validate(imported[case.fmt], tmp_path / "report", thresholds=Thresholds(allow_partial=True), workers=1,
                      progress=False)
    assert result.passed and result.rejected == 0, result.failed_expectations
    assert result.validated == sum(len(v) for v in case.items.values())
    assert result.modalities == {("tva" if case.audio else "tv"): result.validated}


@pytest.mark.parametrize("fmt", ["msrvtt", "msvd", "didemo", "vatex"])
def test_a_trained_model_evaluates_on_the_imported_test_split(fmt, imported, tiny_run):
    from model.evaluate import evaluate

    from model.manifest import read_split

    results = evaluate(tiny_run, imported[fmt], "test", workers=1, progress=False, n_boot=10, benchmark=fmt)
    records = read_split(imported[fmt], "test")
    assert results["n_items"] == len(BY_FORMAT[fmt].items["test"]) == len(records)
    # the benchmark's protocol: MSR-VTT 1k-A asks with one sentence a video, the others with every caption
    every = sum(len(r.captions) for r in records)
    assert results["directions"]["t2v"]["n"] == (results["n_items"] if fmt == "msrvtt" else every)
    assert results["protocol"]["benchmark"] == fmt and results["directions"]["v2t"]["n"] == results["n_items"]
    if not BY_FORMAT[fmt].audio:
        assert results["protocol"]["with_audio"] == 0 and results["protocol"]["with_video"] == results["n_items"]
        assert "t2a" in results["unscored"]


def test_a_raw_captions_pickle_is_refused_with_how_to_convert_it(tmp_path):
    write(tmp_path / "test_list.txt", "abc_1_9\n")
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"abc_1_9": [["a", "cat"]]}))
    with pytest.raises(ImportFormatError, match=r"raw-captions\.pkl: is a Python pickle.*Convert it once"):
        import_dataset("msvd", tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_converted_raw_captions_json_is_read_word_lists_joined(tmp_path):
    write(tmp_path / "test_list.txt", "abc_1_9\n")
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({}))  # the original beside its conversion: not read
    write(tmp_path / "raw-captions.json", json.dumps({"abc_1_9": [["a", "cat", "sits"], "a  cat  naps", []]}))
    records = list(read_msvd(tmp_path, ImportOptions()))
    assert [(r.id, r.captions, r.video, r.audio) for r in records if hasattr(r, "captions")] == [
        ("abc_1_9", ("a cat sits", "a cat naps"), "YouTubeClips/abc_1_9.avi", None)]
    assert [(s.where, s.reason) for s in records if hasattr(s, "reason")] == [
        ('raw-captions.json["abc_1_9"][2]', "a caption must be text or a list of words, not empty")]


@pytest.mark.parametrize("fmt, names", [
    ("msrvtt", "MSRVTT_JSFUSION_test.csv"), ("msrvtt-full", "MSRVTT_data.json"),
    ("msvd", "AllVideoDescriptions.txt or raw-captions.json"),
    ("didemo", "train_data.json or val_data.json or test_data.json"),
    ("vatex", "vatex_training_v1.0.json or vatex_validation_v1.0.json or vatex_public_test_english_v1.1.json")])
def test_a_source_without_the_annotations_names_the_files_looked_for(fmt, names, tmp_path):
    with pytest.raises(ImportFormatError, match=f"no {names} "):
        import_dataset(fmt, tmp_path, tmp_path / "out")


def test_msvd_needs_a_split_list(tmp_path):
    write(tmp_path / "AllVideoDescriptions.txt", "abc_1_9 a cat\n")
    with pytest.raises(ImportFormatError, match="no train_list.txt, val_list.txt, test_list.txt"):
        import_dataset("msvd", tmp_path, tmp_path / "out")


def test_the_9k_train_list_without_msrvtt_data_json_is_one_reported_skip(trees, tmp_path):
    src = tmp_path / "src"
    for name in ("MSRVTT_JSFUSION_test.csv", "MSRVTT_train.9k.csv", "MSRVTT_Videos/video7.mp4"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((trees["msrvtt"] / name).read_bytes())
    report = import_dataset("msrvtt", src, tmp_path / "out")
    assert report.items == {"test": 1}
    assert [(s.where, s.id) for s in report.skipped][-1] == ("MSRVTT_train.9k.csv", None)
    assert "MSRVTT_data.json, which is not in the source" in report.skipped[-1].reason
    assert json.loads((tmp_path / "out/manifests/test.jsonl").read_text())["text"] == "a cat plays the piano"


def test_didemo_looks_for_a_clip_in_a_fixed_order(tmp_path):
    assert candidates("1@N00_2_ab.mov")[:4] == ["videos/1@N00_2_ab.mov", "videos/1@N00_2_ab.mov.mp4",
                                                "videos/1@N00_2_ab.mp4", "videos/1@N00_2_ab.avi"]
    for name in ("1@N00_2_ab.avi", "1@N00_2_ab.mp4", "1@N00_2_ab.mov.mp4"):
        write(tmp_path / "videos" / name, "")
    assert first_file(tmp_path, candidates("1@N00_2_ab.mov")) == "videos/1@N00_2_ab.mov.mp4"
    assert first_file(tmp_path, candidates("9@N00_9_zz.mov")) == "videos/9@N00_9_zz.mov"  # none: the first, reported
    assert first_file(tmp_path, ["../outside.mp4", "videos/1@N00_2_ab.avi"]) == "videos/1@N00_2_ab.avi"


def test_each_format_names_the_public_layout_it_follows():
    for fmt in ("msrvtt", "msrvtt-full", "msvd", "didemo", "vatex"):
        _, version = FORMATS[fmt]
        assert any(source in version for source in ("github.com/", "www.", ".github.io/")), (fmt, version)


def test_the_cli_imports_a_benchmark_and_exits_3_when_some_rows_were_skipped(trees, tmp_path):
    from typer.testing import CliRunner

    from omniretriever.cli import app

    res = CliRunner().invoke(app, ["data", "import", "vatex", str(trees["vatex"]), "--out", str(tmp_path / "v")])
    assert res.exit_code == 3, res.output
    assert "imported 3 items (30 captions)" in res.output and "skipped 2 in all" in res.output
