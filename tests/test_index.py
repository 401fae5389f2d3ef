"""Gallery indexes, request parsing and search options: the pure parts of serving, without servers."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from tritonclient.grpc import service_pb2
from typer.testing import CliRunner

from model.inference import Embedder
from model.manifest import read_split, resolve_media
from omniretriever.cli import app
from serving.client import split_url
from serving.index import load_index, save_index
from serving.limits import ServingLimits
from serving.requests import RequestError, Tensor, rows_from_tensors, search_options


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_index_round_trip_and_search_order(tmp_path):
    gallery = unit_rows(6, 8, 0)
    path = save_index(tmp_path / "g.safetensors", [f"id{i}" for i in range(6)], {"av": gallery, "t": gallery[::-1]},
                      "a" * 64, {"split": "test"})
    index = load_index(path)
    assert index.views == ("av", "t") and len(index) == 6 and index.dim == 8 and index.meta == {"split": "test"}
    ids, scores = index.search(gallery[[2, 4]], "av", 3)
    assert ids[:, 0].tolist() == ["id2", "id4"] and np.allclose(scores[:, 0], 1.0, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()
    ids, _ = index.search(gallery[:1], "t", 100)  # k is capped at the gallery size
    assert ids.shape == (1, 6) and ids[0, 0] == "id5"


def test_equal_scores_keep_gallery_order(tmp_path):
    index = load_index(save_index(tmp_path / "g.safetensors", ["a", "b", "c"], {"v": np.ones((3, 4), np.float32) / 2},
                                  "a" * 64))
    assert index.search(np.ones((1, 4), np.float32) / 2, "v", 3)[0].tolist() == [["a", "b", "c"]]


@pytest.mark.parametrize("content,message", [
    (b"not safetensors at all", "cannot be read"),
    (None, "format None"),
])
def test_a_file_that_is_not_an_index_is_refused(tmp_path, content, message):
    path = tmp_path / "x.safetensors"
    if content is None:
        save_file({"w": np.zeros(2, np.float32)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_index(path)


def test_index_build_command_embeds_the_split_like_the_pytorch_model(tiny_run, tiny_data, tmp_path):
    out = tmp_path / "test.safetensors"
    res = CliRunner().invoke(app, ["index", "build", "--model", str(tiny_run), "--data", str(tiny_data), "--split", "test",
                                   "--view", "av", "--view", "vt", "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    index = load_index(out)
    recs = read_split(tiny_data, "test")
    assert index.views == ("av", "tv") and index.ids == [r.id for r in recs]
    rows = [{"text": r.text, "video": str(resolve_media(tiny_data, r.video))} for r in recs[:3]]
    np.testing.assert_allclose(index.embeddings["tv"][:3], Embedder(tiny_run).embed(rows), atol=1e-5)
    bad = CliRunner().invoke(app, ["index", "build", "--model", str(tiny_run), "--data", str(tiny_data),
                                   "--view", "xyz", "--out", str(tmp_path / "bad.safetensors")])
    assert bad.exit_code == 2 and "unknown view 'xyz'" in bad.output and not (tmp_path / "bad.safetensors").exists()


@pytest.fixture
def flawed_data(tiny_data, tmp_path) -> Path:
    """tiny_data's test split (videos and manifest only) with test-000003.mp4 truncated to 500 bytes and a
    malformed line (invalid JSON) inserted as line 6, and a record whose path leaves the root as line 8."""
    data = tmp_path / "data"
    (data / "manifests").mkdir(parents=True)
    shutil.copytree(tiny_data / "videos", data / "videos", ignore=lambda d, names: [n for n in names if "test-" not in n])
    victim = data / "videos" / "test-000003.mp4"
    victim.write_bytes(victim.read_bytes()[:500])
    lines = (tiny_data / "manifests" / "test.jsonl").read_text().splitlines()
    lines.insert(5, '{"id": "broken", "text": "no closing brace"')
    lines.insert(7, json.dumps({"id": "escape", "text": "out of the root", "video": "../outside.mp4",
                                "audio": "videos/test-000000.mp4"}))
    (data / "manifests" / "test.jsonl").write_text("\n".join(lines) + "\n")
    return data


def build_args(run, data, out, *extra):
    return ["index", "build", "--model", str(run), "--data", str(data), "--view", "av", "--out", str(out),
            "--workers", "2", *extra]


def test_index_build_leaves_bad_records_out_and_lists_them(tiny_run, tiny_data, flawed_data, tmp_path):
    out = tmp_path / "gallery.safetensors"
    res = CliRunner().invoke(app, build_args(tiny_run, flawed_data, out))
    assert res.exit_code == 3, res.output
    good = [r.id for r in read_split(tiny_data, "test") if r.id != "test-000003"]
    index = load_index(out)
    assert index.ids == good and index.meta["skipped"] == 3
    rejects = [json.loads(line) for line in (tmp_path / "gallery.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["id"], r["field"], r["error"]) for r in rejects] == [
        (4, "test-000003", "video", "MediaError"), (6, None, None, "ManifestError"),
        (8, "escape", "video", "PathEscapeError")]
    assert "not valid JSON" in rejects[1]["reason"] and "'..'" in rejects[2]["reason"]
    assert "skipped 3 of 26 records" in res.output and "gallery.rejects.jsonl" in res.output

    # --strict: the manifest is read whole before any decoding, so its malformed line stops the build first
    strict = tmp_path / "strict.safetensors"
    res = CliRunner().invoke(app, build_args(tiny_run, flawed_data, strict, "--strict"))
    assert res.exit_code == 2 and "test.jsonl:6: not valid JSON" in res.output and not strict.exists()
    head = tmp_path / "head.jsonl"  # the first five lines: the corrupt clip is line 4
    head.write_text("".join((flawed_data / "manifests" / "test.jsonl").read_text().splitlines(keepends=True)[:5]))
    res = CliRunner().invoke(app, build_args(tiny_run, flawed_data, strict, "--strict", "--manifest", str(head)))
    assert res.exit_code == 2 and "test-000003.mp4" in res.output, res.output
    assert "head.jsonl:4, id 'test-000003'" in res.output and not strict.exists()


def test_index_build_from_a_validated_manifest_and_with_nothing_indexable(tiny_run, tiny_data, flawed_data, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    recs = read_split(tiny_data, "test")[:4]
    (report / "validated.jsonl").write_text("".join(json.dumps({**json.loads(r.to_json()), "split": "test"}) + "\n"
                                                    for r in recs))
    out = tmp_path / "v.safetensors"
    res = CliRunner().invoke(app, build_args(tiny_run, tiny_data, out, "--manifest", str(report)))
    assert res.exit_code == 0, res.output
    assert load_index(out).ids == [r.id for r in recs] and (tmp_path / "v.rejects.jsonl").read_text() == ""
    assert "4 items of" in res.output and "validated.jsonl" in res.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"\n' + json.dumps({"id": "b", "text": "t", "video": "/etc/passwd", "audio": "x"}) + "\n")
    res = CliRunner().invoke(app, build_args(tiny_run, flawed_data, tmp_path / "n.safetensors", "--manifest", str(bad)))
    assert res.exit_code == 2 and "nothing to load: all 2 records were rejected" in res.output
    assert not (tmp_path / "n.safetensors").exists() and len((tmp_path / "n.rejects.jsonl").read_text().splitlines()) == 2
    res = CliRunner().invoke(app, build_args(tiny_run, tiny_data, tmp_path / "m.safetensors", "--manifest",
                                             str(tmp_path / "missing")))
    assert res.exit_code == 2 and "does not exist" in res.output


def test_load_bank_skips_only_when_asked(tiny_data, flawed_data):
    from model.data import load_bank
    from model.errors import ManifestError
    from model.media import DecodeConfig

    with pytest.raises(ManifestError, match=r"test.jsonl:6: not valid JSON"):
        load_bank(flawed_data, "test", DecodeConfig(), workers=1, progress=False)
    bank = load_bank(flawed_data, "test", DecodeConfig(), workers=1, progress=False, on_error="skip", limit=5)
    # limit: the first 5 records that parse (lines 1-5), of which the corrupt clip's is left out
    assert bank.ids == [f"test-00000{i}" for i in (0, 1, 2, 4)]
    assert [(r.line, r.id) for r in bank.rejects] == [(4, "test-000003"), (6, None)]
    other = flawed_data / "audio.jsonl"  # a separate audio file that is missing is the audio field's fault
    other.write_text(json.dumps({"id": "x", "text": "t", "video": "videos/test-000000.mp4", "audio": "videos/none.wav"})
                     + "\n" + (flawed_data / "manifests" / "test.jsonl").read_text().splitlines()[0] + "\n")
    bank = load_bank(flawed_data, "test", DecodeConfig(), workers=1, progress=False, on_error="skip", manifest=other)
    assert bank.ids == ["test-000000"] and [(r.line, r.id, r.field) for r in bank.rejects] == [(1, "x", "audio")]
    assert "file not found" in bank.rejects[0].reason


def tensor(name, values, shape=None, datatype="BYTES"):
    values = np.array(values, dtype=object)
    return Tensor(name, datatype, tuple(shape or values.shape), values)


def test_rows_take_element_i_of_each_input_and_empty_means_absent():
    rows = rows_from_tensors([tensor("TEXT", [b"a dog", b"", "a cat"]), tensor("VIDEO", [b"", b"\x00mp4", b"\x01"])], 8)
    assert rows == [{"text": "a dog"}, {"video": b"\x00mp4"}, {"text": "a cat", "video": b"\x01"}]
    assert rows_from_tensors([tensor("AUDIO", [[b"x"], [b"y"]], shape=(2, 1))], 8) == [{"audio": b"x"}, {"audio": b"y"}]


@pytest.mark.parametrize("tensors,message", [
    ([], "no inputs"),
    ([tensor("TEXT", [b"a"]), tensor("TEXT", [b"b"])], "more than once"),
    ([tensor("TEXT", [], shape=(0,))], "0 rows"),
    ([tensor("TEXT", [b"a", b"b"], shape=(3,))], "does not match its shape"),
    ([tensor("TEXT", [3])], "expected bytes, got int"),
])
def test_malformed_inputs_are_named(tensors, message):
    with pytest.raises(RequestError, match=message):
        rows_from_tensors(tensors, 8)


def test_search_options_from_http_and_grpc_parameters():
    views = ("av", "t")
    assert search_options(None, views, 10, 100) == search_options({}, views, 10, 100)
    assert search_options({}, views, 10, 100).gallery == "av"
    assert search_options({"top_k": 3, "gallery": "T"}, views, 10, 100).top_k == 3
    grpc = {"top_k": service_pb2.InferParameter(int64_param=7), "gallery": service_pb2.InferParameter(string_param="va")}
    options = search_options(grpc, views, 10, 100)
    assert (options.top_k, options.gallery) == (7, "av")
    for params, message in (({"top_k": True}, "top_k"), ({"top_k": "5"}, "top_k"), ({"gallery": "q"}, "unknown view")):
        with pytest.raises(RequestError, match=message):
            search_options(params, views, 10, 100)


@pytest.mark.parametrize("url,protocol,want", [
    ("http://127.0.0.1:8080/", "grpc", ("http", "127.0.0.1:8080")),
    ("grpc://localhost:8081", "http", ("grpc", "localhost:8081")),
    ("127.0.0.1:9", "grpc", ("grpc", "127.0.0.1:9")),
])
def test_split_url(url, protocol, want):
    assert split_url(url, protocol) == want


def test_serving_limits_are_checked_and_become_transformer_flags():
    with pytest.raises(ValueError, match="max_rows=65"):
        ServingLimits(max_rows=65)
    with pytest.raises(ValueError, match="max_media_seconds=0"):
        ServingLimits(max_media_seconds=0)
    args = ServingLimits(max_top_k=7).to_args()
    assert args[args.index("--max_top_k") + 1] == "7" and len(args) == 2 * len(fields(ServingLimits))
