import numpy as np
import pytest

from model.errors import MediaError, MediaLimitError
from model.media import DecodeConfig, MediaLimits, decode_audio, decode_clip, decode_video, log_mel, probe, uniform_indices

CFG = DecodeConfig()


def test_good_clip_decodes_to_the_model_shapes(media):
    clip = decode_clip(media.good, media.good)
    assert clip.frames.shape == (8, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.mel.shape == (CFG.n_mels, CFG.num_mel_frames) and clip.mel.dtype == np.float32
    assert clip.has_audio and np.isfinite(clip.mel).all()


def test_frames_are_sampled_uniformly_over_the_whole_clip(media):
    brightness = decode_video(media.good).mean(axis=(1, 2, 3))  # ramp clip: brightness grows with time
    assert np.all(np.diff(brightness) > 0)
    assert brightness[0] < 50 and brightness[-1] > 200  # first and last segments, not the first 8 frames


@pytest.mark.parametrize("n_frames", [1, 4, 16, 48])
def test_any_frame_count(media, n_frames):
    assert decode_video(media.good, DecodeConfig(num_frames=n_frames)).shape[0] == n_frames


def test_audio_is_16k_mono_padded_to_fixed_length(media):
    wave, has_audio = decode_audio(media.good)
    assert has_audio and wave.shape == (CFG.num_samples,)  # 3 s clip padded to 4 s
    sr = CFG.sample_rate
    assert np.abs(wave[: 2 * sr]).max() > 0.2 and np.abs(wave[-sr // 2:]).max() == 0.0


def test_audio_is_cropped_to_fixed_length(media):
    wave, _ = decode_audio(media.good, DecodeConfig(audio_seconds=1.0))
    assert wave.shape == (16_000,)


def test_log_mel_puts_a_tone_in_the_right_band():
    sr = 16_000
    t = np.arange(sr) / sr
    lo, hi = (log_mel(np.sin(2 * np.pi * f * t).astype(np.float32)) for f in (300.0, 3000.0))
    assert lo.shape == (64, 1 + sr // CFG.hop_length)
    assert lo.mean(dim=1).argmax() < hi.mean(dim=1).argmax()


def test_log_mel_is_batched():
    x = np.random.default_rng(0).standard_normal((3, 8000)).astype(np.float32)
    batched = log_mel(x)
    assert batched.shape[0] == 3
    assert np.allclose(batched[1].numpy(), log_mel(x[1]).numpy(), atol=1e-5)


def test_video_without_audio_gives_silence_and_a_flag(media):
    clip = decode_clip(media.video_only, media.video_only)
    assert not clip.has_audio
    wave, has_audio = decode_audio(media.video_only)
    assert not has_audio and not wave.any()


@pytest.mark.parametrize(
    "name,reason",
    [
        ("missing", "file not found"),
        ("empty", "file is empty"),
        ("truncated", "truncated"),
        ("not_media", "cannot open as a media container"),
        ("audio_only", "no video stream"),
    ],
)
def test_bad_video_inputs_raise_a_typed_error_naming_the_file(media, name, reason):
    path = getattr(media, name)
    with pytest.raises(MediaError) as err:
        decode_video(path)
    assert str(path) in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize("name", ["missing", "empty", "truncated", "not_media"])
def test_bad_audio_inputs_raise_a_typed_error(media, name):
    with pytest.raises(MediaError, match=str(getattr(media, name))):
        decode_audio(getattr(media, name))


def test_directory_is_not_media(media):
    with pytest.raises(MediaError, match="not a regular file"):
        decode_video(media.root)


@pytest.mark.parametrize(
    "limits,reason",
    [
        (MediaLimits(max_file_bytes=100), "over the limit of 100 bytes"),
        (MediaLimits(max_seconds=1.0), "duration 3.00 s is over the limit of 1 s"),
        (MediaLimits(max_long_side=32, max_short_side=32),
         "resolution 96x96 is over the limit: long side 96 > 32 px and short side 96 > 32 px"),
    ],
)
def test_limits(media, limits, reason):
    with pytest.raises(MediaLimitError, match=reason):
        decode_clip(media.good, media.good, limits=limits)


def test_probe_reports_stream_facts(media):
    info = probe(media.good)
    assert info["streams"] == ["video", "audio"]
    assert (info["width"], info["height"], info["sample_rate"], info["channels"]) == (96, 96, 16_000, 1)
    assert info["duration"] == pytest.approx(3.0, abs=0.1) and info["fps"] == pytest.approx(12.0)


@pytest.mark.parametrize("field,value", [("num_frames", 0), ("frame_size", 4), ("audio_seconds", 0.0), ("n_mels", 500)])
def test_decode_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        DecodeConfig(**{field: value})


@pytest.mark.parametrize("available,wanted", [(36, 8), (5, 8), (1, 3), (100, 1)])
def test_uniform_indices(available, wanted):
    idx = uniform_indices(available, wanted)
    assert len(idx) == wanted and idx == sorted(idx) and 0 <= idx[0] and idx[-1] < available
