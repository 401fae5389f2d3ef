import shutil

import numpy as np
import pytest

from model.cache import FeatureCache
from model.media import DecodeConfig, decode_clip
from dataset.mp4 import write_mp4
from tests.conftest import FPS, SAMPLE_RATE, ramp_frames, tone


@pytest.fixture
def clip_file(media, tmp_path):
    path = tmp_path / "clip.mp4"
    shutil.copy(media.good, path)
    return path


def test_second_read_is_a_hit_with_identical_features(clip_file, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    first, second = cache.get(clip_file, clip_file), cache.get(clip_file, clip_file)
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    direct = decode_clip(clip_file, clip_file)
    for clip in (first, second):
        assert np.array_equal(clip.frames, direct.frames) and np.array_equal(clip.mel, direct.mel)
        assert clip.has_audio


def test_changed_file_is_never_served_stale(clip_file, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    before = cache.get(clip_file, clip_file)
    write_mp4(clip_file, 255 - ramp_frames(3 * FPS), tone(3.0, hz=300.0), FPS, SAMPLE_RATE)  # same name, new bytes
    after = cache.get(clip_file, clip_file)
    assert cache.stats.misses == 2 and cache.stats.hits == 0
    assert not np.array_equal(before.frames, after.frames)
    assert np.array_equal(after.frames, decode_clip(clip_file, clip_file).frames)


@pytest.mark.parametrize("change", [{"num_frames": 4}, {"frame_size": 32}, {"n_mels": 32}, {"hop_length": 160}])
def test_changed_decoding_settings_miss(clip_file, tmp_path, change):
    FeatureCache(tmp_path / "cache").get(clip_file, clip_file)
    other = FeatureCache(tmp_path / "cache", DecodeConfig(**change))
    clip = other.get(clip_file, clip_file)
    assert other.stats.misses == 1 and other.stats.hits == 0
    assert clip.frames.shape[0] == DecodeConfig(**change).num_frames


def test_corrupt_entry_is_rewritten(clip_file, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    good = cache.get(clip_file, clip_file)
    entry = cache.path_for(cache.key(clip_file, clip_file))
    entry.write_bytes(entry.read_bytes()[:50])
    again = cache.get(clip_file, clip_file)
    assert cache.stats.rewrites == 1 and np.array_equal(again.mel, good.mel)
    assert cache.get(clip_file, clip_file) is not None and cache.stats.hits == 1


def test_no_temp_files_left_and_no_pickle(clip_file, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    cache.get(clip_file, clip_file)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".safetensors"


def test_missing_audio_flag_survives_the_cache(media, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    cache.get(media.video_only, media.video_only)
    assert not cache.get(media.video_only, media.video_only).has_audio and cache.stats.hits == 1
