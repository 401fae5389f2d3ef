"""Preprocessing and embedding of requests: any subset of modalities per row, paths or bytes, bad rows refused."""

import numpy as np
import pytest
import torch

from model.errors import InputError
from model.inference import INPUTS, Embedder, input_shapes
from model.manifest import read_split, resolve_media
from model.media import MediaLimits, decode_clip
from model.modalities import VIEWS


@pytest.fixture(scope="module")
def embedder(tiny_run) -> Embedder:
    return Embedder(tiny_run)


@pytest.fixture(scope="module")
def records(tiny_data):
    return [(r.text, resolve_media(tiny_data, r.video), resolve_media(tiny_data, r.audio)) for r in read_split(tiny_data, "test")[:4]]


def test_arrays_have_the_declared_names_shapes_and_dtypes(embedder, records):
    text, video, audio = records[0]
    arrays = embedder.preprocess([{"text": text}, {"video": str(video), "audio": str(audio)}])
    assert tuple(arrays) == INPUTS
    for name, (shape, dtype) in input_shapes(embedder.loaded.config).items():
        assert arrays[name].shape == (2, *shape[1:]) and arrays[name].dtype == np.dtype(dtype), name
    assert arrays["present"].tolist() == [[True, False, False], [False, True, True]]
    assert not arrays["text_mask"][1].any() and not arrays["video"][0].any()


@pytest.mark.parametrize("view", VIEWS)
def test_each_view_matches_a_forward_of_that_subset(embedder, records, view):
    """A mixed batch with per-row presence gives what a forward over just that subset gives."""
    mods = VIEWS[view]
    rows = [{k: v for k, v in zip(("text", "video", "audio"), (t, str(vp), str(ap))) if k[0] in view} for t, vp, ap in records]
    got = embedder.embed(rows)
    loaded = embedder.loaded
    clips = [decode_clip(vp, ap, loaded.config.decode) for _, vp, ap in records]
    ids, mask = loaded.tokenizer([t for t, _, _ in records])
    batch = {"text_ids": ids, "text_mask": mask, "video": torch.from_numpy(np.stack([c.frames for c in clips])),
             "audio": torch.from_numpy(np.stack([c.mel for c in clips]))}
    with torch.inference_mode():
        want = loaded.encoder(batch, mods).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_bytes_and_paths_embed_identically(embedder, records):
    text, video, audio = records[1]
    by_path = embedder.embed([{"video": str(video), "audio": str(audio)}])
    by_bytes = embedder.embed([{"video": video.read_bytes(), "audio": audio.read_bytes()}])
    np.testing.assert_array_equal(by_path, by_bytes)


def test_rows_of_a_long_request_are_batched_without_changing_results(tiny_run, records):
    rows = [{"text": t, "video": str(v)} for t, v, _ in records] * 3
    whole = Embedder(tiny_run, batch_size=64).embed(rows)
    chunked = Embedder(tiny_run, batch_size=5).embed(rows)
    np.testing.assert_allclose(whole, chunked, atol=1e-5)


@pytest.mark.parametrize("row,field,reason", [
    ({}, None, "no modality"),
    ({"text": None, "video": None}, None, "no modality"),
    ({"txt": "a dog"}, None, "unknown field"),
    ({"text": 3}, "text", "expected a string"),
    ({"text": "   "}, "text", "empty or whitespace"),
    ({"text": "x" * 5000}, "text", "over the limit"),
    ({"video": b""}, "video", "empty"),
    ({"video": b"not a media file" * 10}, "video", "cannot open"),
    ({"video": 12}, "video", "expected a path or media bytes"),
])
def test_bad_rows_name_the_row_the_field_and_the_reason(embedder, records, row, field, reason):
    rows = [{"text": records[0][0]}, row]
    with pytest.raises(InputError) as info:
        embedder.embed(rows)
    assert info.value.row == 1 and info.value.field == field and reason in info.value.reason


def test_media_errors_in_a_request(embedder, media):
    with pytest.raises(InputError, match="row 0, audio: .*no audio stream"):
        embedder.embed([{"audio": str(media.video_only)}])
    with pytest.raises(InputError, match="row 0, video: .*no video stream"):
        embedder.embed([{"video": media.audio_only.read_bytes()}])
    with pytest.raises(InputError, match="truncated"):
        embedder.embed([{"video": media.truncated.read_bytes()}])
    small = Embedder(embedder.loaded, limits=MediaLimits(max_file_bytes=1000))
    with pytest.raises(InputError, match="over the limit of 1000 bytes"):
        small.embed([{"video": media.good.read_bytes()}])


def test_row_index_counts_across_batches(tiny_run, records):
    rows = [{"text": records[0][0]}] * 7 + [{}]
    with pytest.raises(InputError, match="row 7"):
        Embedder(tiny_run, batch_size=3).embed(rows)
