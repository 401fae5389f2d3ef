import json
import os

import pytest

from model.errors import ManifestError, PathEscapeError
from model.manifest import MAX_ALT_TEXTS, Record, manifest_path, read_manifest, read_split, resolve_media, scan_manifest, write_manifest

GOOD = {"id": "a", "text": "a red ball bounces", "video": "videos/a.mp4", "audio": "videos/a.mp4"}


def write_lines(path, lines: list[bytes | str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines))
    return path


def test_round_trip(tmp_path):
    records = [Record(f"id-{i}", f"caption {i} — ünïcode", f"videos/{i}.mp4", f"videos/{i}.mp4") for i in range(5)]
    write_manifest(manifest_path(tmp_path, "train"), records)
    assert read_split(tmp_path, "train") == records
    assert not [p for p in (tmp_path / "manifests").iterdir() if p.name.startswith(".")]  # no temp file left


def test_alt_texts_round_trip_and_are_left_out_when_empty(tmp_path):
    records = [Record("a", "a red ball", "videos/a.mp4", "videos/a.mp4", ("a ball, red", "the red sphere")),
               Record("b", "a box", "videos/b.mp4", "videos/b.mp4")]
    path = write_manifest(manifest_path(tmp_path, "train"), records)
    assert read_split(tmp_path, "train") == records
    first, second = (json.loads(x) for x in path.read_text().splitlines())
    assert first["alt_texts"] == ["a ball, red", "the red sphere"] and "alt_texts" not in second
    assert records[0].captions == ("a red ball", "a ball, red", "the red sphere") and records[1].captions == ("a box",)


@pytest.mark.parametrize(
    "line,reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "audio"}), "missing field(s) audio"),
        (json.dumps({**GOOD, "text": ""}), "caption) is empty"),
        (json.dumps({**GOOD, "text": "  \t "}), "caption) is empty"),
        (json.dumps({**GOOD, "video": 3}), "'video' must be a path (a string), or null for an item without it, got int"),
        (json.dumps({**GOOD, "audio": ""}), "'audio' is empty (write null for an item without audio)"),
        (json.dumps({**GOOD, "video": None, "audio": None}), "'video' and 'audio' are both null"),
        (json.dumps({**GOOD, "text": None}), "'text' must be a string, got NoneType"),
        (json.dumps({**GOOD, "id": " "}), "'id' is empty"),
        (json.dumps({**GOOD, "alt_texts": "one caption"}), "'alt_texts' must be a list of strings, got str"),
        (json.dumps({**GOOD, "alt_texts": ["fine", 7]}), "alt_texts[1] must be a string, got int"),
        (json.dumps({**GOOD, "alt_texts": ["fine", " "]}), "alt_texts[1] is empty"),
        (json.dumps({**GOOD, "alt_texts": ["x"] * (MAX_ALT_TEXTS + 1)}), f"over the limit of {MAX_ALT_TEXTS}"),
    ],
)
def test_bad_lines_name_file_line_and_reason(tmp_path, line, reason):
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert err.value.line == 2
    assert f"{path}:2" in str(err.value) and reason in str(err.value)


def test_non_utf8_line_is_an_error_and_the_rest_still_read(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(GOOD), b'{"id": "\xff\xfe"}', json.dumps({**GOOD, "id": "b"})])
    scanned = list(scan_manifest(path))
    assert [s.line for s in scanned] == [1, 2, 3]
    assert scanned[1].error is not None and "not UTF-8" in str(scanned[1].error)
    assert scanned[0].record.id == "a" and scanned[2].record.id == "b"


def test_duplicate_ids_are_refused(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(GOOD), json.dumps(GOOD)])
    with pytest.raises(ManifestError, match="duplicate id .first seen on line 1"):
        read_manifest(path)


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(GOOD), "", "{bad"])
    with pytest.raises(ManifestError, match=r"m.jsonl:3"):
        read_manifest(path)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="cannot open manifest"):
        read_split(tmp_path, "test")


@pytest.mark.parametrize("split", ["", "../x", "a/b", ".hidden"])
def test_split_names_are_plain(tmp_path, split):
    with pytest.raises(ValueError, match="split name"):
        manifest_path(tmp_path, split)


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "a.mp4").write_bytes(b"x")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "videos" / "link_out.mp4")
    os.symlink(root / "videos" / "a.mp4", root / "videos" / "link_in.mp4")
    return root


@pytest.mark.parametrize("rel", ["videos/a.mp4", "./videos/a.mp4", "videos/link_in.mp4", "videos/not_yet.mp4"])
def test_paths_inside_the_root_resolve(data_root, rel):
    assert resolve_media(data_root, rel).is_relative_to(data_root.resolve())


@pytest.mark.parametrize(
    "rel,reason",
    [
        ("../outside.mp4", "'..' components"),
        ("videos/../../outside.mp4", "'..' components"),
        ("/etc/passwd", "absolute paths"),
        ("videos/link_out.mp4", "outside the data root"),
        ("", "empty"),
        ("videos/a\x00.mp4", "NUL"),
    ],
)
def test_paths_escaping_the_root_are_refused(data_root, rel, reason):
    with pytest.raises(PathEscapeError, match=reason):
        resolve_media(data_root, rel)


def test_errors_survive_pickling_for_worker_processes(tmp_path):
    import pickle

    from model.errors import MediaError, MediaLimitError

    for err in (ManifestError("m.jsonl", 3, "bad", "id1"), PathEscapeError("../x", tmp_path, "no"),
                MediaError("/x.mp4", "file not found"), MediaLimitError("/x.mp4", "too big")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)


def test_an_item_without_video_or_audio_writes_null_and_reads_back(tmp_path):
    audio_only = Record("a", "a dog barks", None, "audio/a.wav")
    video_only = Record("v", "a silent film", "videos/v.mp4", None)
    path = write_manifest(tmp_path / "m.jsonl", [audio_only, video_only])
    assert json.loads(path.read_text().splitlines()[0])["video"] is None
    assert read_manifest(path) == [audio_only, video_only]
    assert audio_only.modalities == ("T", "A") and video_only.modalities == ("T", "V")
    assert Record("b", "both", "videos/b.mp4", "videos/b.mp4").modalities == ("T", "V", "A")
