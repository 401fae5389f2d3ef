"""Tests of the synthetic benchmark generator (dataset/): layout, determinism, media, captions, safety."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from rich.console import Console

from dataset import captions, config, mp4, synth, vocabulary
from dataset.audio import render_audio
from dataset.scenes import Scene, sample_scene
from dataset.summary import near_duplicate_stats, print_summary, summarize
from model.manifest import read_split, resolve_media

TINY = config.SynthConfig(train=6, val=2, test=6, seed=3)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def generate(out: Path, config: config.SynthConfig = TINY, **kwargs) -> Path:
    synth.synthesize(out, config, progress=False, **kwargs)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny dataset shared by the read-only tests, made with two workers."""
    return generate(tmp_path_factory.mktemp("synth") / "data", workers=2)


@pytest.fixture(scope="module")
def scenes(tiny: Path) -> dict[str, list[dict]]:
    return {s: [json.loads(x) for x in (tiny / "scenes" / f"{s}.jsonl").read_text().splitlines()] for s in config.SPLITS}


# --- determinism ---------------------------------------------------------------------------------


def test_same_config_is_byte_identical_whatever_the_worker_count(tiny: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", workers=1)
    assert tree_bytes(again) == tree_bytes(tiny)


def test_a_clip_does_not_depend_on_split_sizes(tiny: Path, tmp_path: Path) -> None:
    small = generate(tmp_path / "small", replace(TINY, train=2, val=1, test=1), workers=1)
    for name in ("train-000001.mp4", "val-000000.mp4", "test-000000.mp4"):
        assert (small / "videos" / name).read_bytes() == (tiny / "videos" / name).read_bytes()


def test_another_seed_gives_other_files(tiny: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "other", replace(TINY, seed=4, train=2, val=1, test=1), workers=1)
    for path in sorted((other / "videos").iterdir()):
        assert path.read_bytes() != (tiny / "videos" / path.name).read_bytes()
    assert (other / "manifests" / "train.jsonl").read_bytes() != (tiny / "manifests" / "train.jsonl").read_bytes()


# --- layout and media ----------------------------------------------------------------------------


@pytest.mark.parametrize("split", config.SPLITS)
def test_manifests_are_readable_and_paths_resolve(tiny: Path, split: str) -> None:
    records = read_split(tiny, split)
    assert len(records) == TINY.split_sizes()[split]
    for i, rec in enumerate(records):
        assert rec.id == f"{split}-{i:06d}"
        assert rec.video == rec.audio == f"videos/{rec.id}.mp4"
        assert resolve_media(tiny, rec.video).is_file()
        assert rec.text.strip() and rec.text[0].isupper() and rec.text.endswith(".")


def test_training_clips_have_several_captions_and_the_others_one(tiny: Path, scenes: dict[str, list[dict]]) -> None:
    for split in config.SPLITS:
        for rec, scene in zip(read_split(tiny, split), scenes[split]):
            want = TINY.train_captions if split == "train" else 1
            assert len(rec.captions) == want and rec.captions[0] == rec.text == scene["caption"]
            assert list(rec.alt_texts) == scene["alt_captions"]
            assert len(set(rec.captions)) == want  # different descriptions, not copies
            for alt in rec.alt_texts:  # each names the kind, in a template the training split may use
                assert any(noun in alt.lower() for noun in vocabulary.NOUNS[scene["kind"]]) and alt.endswith(".")
    plain = [json.loads(x) for x in (tiny / "manifests" / "test.jsonl").read_text().splitlines()]
    assert all(set(obj) == {"id", "text", "video", "audio"} for obj in plain)  # the released format, unchanged


def test_further_captions_change_nothing_else(tiny: Path, tmp_path: Path) -> None:
    """The clips, their main captions and the val/test files are the same whatever train_captions is."""
    one = tree_bytes(generate(tmp_path / "one", replace(TINY, train_captions=1), workers=1))
    six = tree_bytes(tiny)
    changed = {k for k in six if one.get(k) != six[k]}
    assert changed == {"manifests/train.jsonl", "scenes/train.jsonl", "dataset.json"}
    assert [r.text for r in read_split(tmp_path / "one", "train")] == [r.text for r in read_split(tiny, "train")]
    assert all(not r.alt_texts for r in read_split(tmp_path / "one", "train"))


def test_dataset_json_records_version_and_config(tiny: Path) -> None:
    meta = json.loads((tiny / "dataset.json").read_text())
    assert meta["generator_version"] == synth.GENERATOR_VERSION
    assert meta["splits"] == TINY.split_sizes()
    assert meta["config"]["seed"] == TINY.seed
    assert meta["media"]["sample_rate"] == 16000


def _decode_audio(container: av.container.InputContainer) -> np.ndarray:
    return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def test_every_mp4_has_h264_video_and_16k_mono_aac(tiny: Path, scenes: dict[str, list[dict]]) -> None:
    for scene in (s for rows in scenes.values() for s in rows):
        with av.open(str(tiny / "videos" / f"{scene['id']}.mp4")) as container:
            assert [s.type for s in container.streams] == ["video", "audio"]
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert (video.codec_context.name, video.format.name) == ("h264", "yuv420p")
            assert (video.width, video.height) == (TINY.width, TINY.height)
            assert (audio.codec_context.name, audio.rate, audio.layout.nb_channels) == ("aac", 16000, 1)
            assert 2.0 - 1e-6 <= float(video.duration * video.time_base) <= 4.0 + 1e-6
            assert 2.0 <= container.duration / av.time_base <= 4.1
            assert sum(1 for _ in container.decode(video=0)) == scene["n_frames"]
        with av.open(str(tiny / "videos" / f"{scene['id']}.mp4")) as container:
            samples = _decode_audio(container)
        assert float(np.sqrt(np.mean(samples**2))) > 0.02, f"{scene['id']} audio is (nearly) silent"


def test_scenes_hold_valid_attributes(scenes: dict[str, list[dict]]) -> None:
    for split, rows in scenes.items():
        assert [s["id"] for s in rows] == [f"{split}-{i:06d}" for i in range(TINY.split_sizes()[split])]
        for s in rows:
            assert all(s[a] in vocabulary.VOCAB[a] for a in vocabulary.ATTRIBUTES)
            assert len(s["event_times"]) == s["n_events"]
            assert all(0 < t and t + vocabulary.EVENT_SECONDS <= s["duration"] for t in s["event_times"])
            assert np.all(np.diff(s["event_times"]) >= vocabulary.EVENT_GAP - 1e-3)


# --- rendering -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=range(5), ids=lambda i: f"clip{i}")
def rendered(request: pytest.FixtureRequest) -> tuple[Scene, np.ndarray, np.ndarray]:
    scene = sample_scene("train", request.param, config.SynthConfig())
    return (scene, *synth.render_clip(scene, config.SynthConfig()))


def test_render_clip_shapes(rendered: tuple[Scene, np.ndarray, np.ndarray]) -> None:
    scene, frames, audio = rendered
    assert frames.shape == (scene.n_frames, 96, 96, 3) and frames.dtype == np.uint8
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == round(scene.n_frames / 12 * 16000)
    assert np.abs(audio).max() <= 1.0


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_sound_events_line_up_with_visible_events(rendered: tuple[Scene, np.ndarray, np.ndarray]) -> None:
    """The notes are what the clip adds to its sound bed, and they sit at the visible events' onsets."""
    scene, frames, audio = rendered
    sr, fps = 16000, 12
    assert _rms(audio[: int(0.1 * sr)]) > 0.01  # before any onset: the ambient bed alone, audible
    bed = render_audio(replace(scene, event_times=()), config.SynthConfig())
    in_note = np.zeros(len(audio), bool)
    for onset in scene.event_times:
        in_note[round(onset * sr): round((onset + vocabulary.NOTE_SECONDS) * sr)] = True
    scale = float(audio[~in_note] @ bed[~in_note] / (bed[~in_note] @ bed[~in_note]))  # the peak normalisation
    notes = audio - scale * bed  # outside the notes: only the hiss, drawn after them, differs
    still = frames[0].astype(float)
    for onset in scene.event_times:
        assert _rms(notes[round(onset * sr): round((onset + 0.1) * sr)]) > 10 * _rms(notes[~in_note])
        peak = min(int(np.ceil((onset + 0.1) * fps)), scene.n_frames - 1)
        # the object is bigger and haloed mid-event: far more pixels differ from the background
        assert (np.abs(frames[peak].astype(float) - still).sum(-1) > 60).sum() > 20


# --- captions ------------------------------------------------------------------------------------


def test_enough_templates_and_held_out_ones() -> None:
    assert len(vocabulary.TEMPLATES) - len(vocabulary.TEST_ONLY_TEMPLATES) >= 20
    assert len(vocabulary.TEST_ONLY_TEMPLATES) >= 4
    assert set(captions.templates_for("test")) == set(range(len(vocabulary.TEMPLATES)))


@pytest.mark.parametrize("split", config.SPLITS)
def test_held_out_templates_appear_only_in_test(split: str) -> None:
    cfg = config.SynthConfig()
    used = {sample_scene(split, i, cfg).template for i in range(400)}
    held_out = used & set(vocabulary.TEST_ONLY_TEMPLATES)
    assert held_out == (set(vocabulary.TEST_ONLY_TEMPLATES) if split == "test" else set())


def test_tiny_dataset_train_val_use_no_held_out_template(scenes: dict[str, list[dict]]) -> None:
    assert not {s["template"] for sp in ("train", "val") for s in scenes[sp]} & set(vocabulary.TEST_ONLY_TEMPLATES)


def test_captions_name_the_object_and_what_they_mention() -> None:
    cfg = config.SynthConfig()
    for i in range(300):
        s = sample_scene("test", i, cfg)
        text = s.caption.lower()
        assert any(re.search(rf"\b{noun}\b", text) for noun in vocabulary.NOUNS[s.kind]), s.caption
        assert 2 <= len(s.mentioned) <= 5
        if "n_events" in s.mentioned:
            assert any(w in text for w in vocabulary.COUNT_WORDS[s.n_events]), s.caption
        if "ambient" in s.mentioned:
            assert any(w in text for w in vocabulary.AMBIENT_WORDS[s.ambient]), s.caption
        assert "  " not in s.caption and "{" not in s.caption and "[" not in s.caption


def test_fill_template_drops_groups_with_empty_slots() -> None:
    slots = {"s": "a ball", "vp": "moves", "bg": "", "amb": "rain"}
    assert captions.fill_template("[{bg}, ]{s} {vp}[ over {amb}].", slots) == "A ball moves over rain."


# --- config validation and safety ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"train": -1}, "train"),
        ({"train": 0, "val": 0, "test": 0}, "train/val/test"),
        ({"width": 33}, "width"),
        ({"height": 16}, "height"),
        ({"width": 3000, "height": 3000}, "width"),  # a short side over the shared media limit
        ({"max_seconds": 61.0}, "max_seconds"),  # longer than the shared media limit
        ({"fps": 0}, "fps"),
        ({"fps": 61}, "fps"),
        ({"sample_rate": 44000}, "sample_rate"),
        ({"seed": -1}, "seed"),
        ({"min_seconds": 0.5}, "min_seconds"),
        ({"min_seconds": 5.0}, "max_seconds"),
        ({"test": 2.5}, "test"),
        ({"train_captions": 0}, "train_captions"),
        ({"train_captions": 102}, "train_captions"),
    ],
)
def test_bad_config_is_refused_naming_field_and_value(tmp_path: Path, changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"SynthConfig.{field} must be")) as info:
        synth.synthesize(tmp_path / "out", replace(TINY, **changes), progress=False)
    assert "got" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    one = replace(TINY, train=1, val=0, test=0)
    with pytest.raises(FileExistsError, match="overwrite") as info:
        generate(out, one)
    assert str(out) in str(info.value)
    assert (out / "keep.txt").exists()
    generate(out, one, overwrite=True)
    assert not (out / "keep.txt").exists() and synth.is_up_to_date(out, one)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_output_dir_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    generate(tmp_path / "out", replace(TINY, train=1, val=0, test=0))
    assert (tmp_path / "out" / "dataset.json").is_file()


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "overwrite"])
def test_a_failure_leaves_no_partial_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool) -> None:
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("old")
    real_writer, calls = mp4.write_mp4, []

    def failing_writer(*args, **kwargs):  # writes the first clip, fails on the second
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_writer(*args, **kwargs)

    monkeypatch.setattr(synth, "write_mp4", failing_writer)
    with pytest.raises(OSError, match="disk full"):
        generate(out, replace(TINY, train=3, val=0, test=0), workers=1, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_is_up_to_date(tiny: Path, tmp_path: Path) -> None:
    assert synth.is_up_to_date(tiny, TINY)
    assert not synth.is_up_to_date(tiny, replace(TINY, seed=4))
    assert not synth.is_up_to_date(tmp_path / "missing", TINY)


# --- summary and writers -------------------------------------------------------------------------


def test_summary_counts_and_prints(tiny: Path) -> None:
    summary = summarize(tiny)
    assert summary["splits"] == TINY.split_sizes() and summary["total"] == 14
    assert summary["attribute_combinations"] > 10**4
    assert sum(summary["attributes"]["kind"].values()) == 14
    assert summary["captions"]["held_out_in_train_val"] == 0
    gallery = summary["test_gallery"]
    assert gallery["n"] == 6 and 1 <= gallery["mean_clips_matching_caption"] <= 6
    buffer = io.StringIO()
    print_summary(summary, Console(file=buffer, width=120))
    assert "test gallery" in buffer.getvalue() and "train" in buffer.getvalue()


def test_near_duplicate_stats_on_a_hand_made_gallery() -> None:
    base = {"kind": "ball", "size": "small", "n_events": 1, "bg_colour": "navy", "pattern": "plain",
            "obj_colour": "red", "motion": "upward", "ambient": "rain", "mentioned": ["size"]}
    gallery = [base, {**base, "ambient": "wind"}, {**base, "kind": "box", "size": "large", "motion": "downward"}]
    stats = near_duplicate_stats(gallery)
    assert stats["mean_sharing_kind_size_count"] == round(2 / 3, 4)
    assert stats["frac_with_one_attribute_neighbour"] == round(2 / 3, 4)
    assert stats["frac_exact_attribute_duplicate"] == 0
    assert stats["mean_clips_matching_caption"] == round((2 + 2 + 1) / 3, 4)


@pytest.mark.parametrize("kind", ["video", "audio", "both"])
def test_write_mp4_with_one_or_both_streams(tmp_path: Path, kind: str) -> None:
    scene = sample_scene("val", 0, TINY)
    frames, audio = synth.render_clip(scene, TINY)
    path = tmp_path / f"{kind}.mp4"
    if kind == "video":
        mp4.write_video_only(path, frames)
    elif kind == "audio":
        mp4.write_audio_only(path, audio)
    else:
        mp4.write_mp4(path, frames, audio)
    with av.open(str(path)) as container:
        types = [s.type for s in container.streams]
    assert types == {"video": ["video"], "audio": ["audio"], "both": ["video", "audio"]}[kind]


def test_write_mp4_refuses_nothing_and_odd_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither"):
        mp4.write_mp4(tmp_path / "x.mp4", None, None)
    with pytest.raises(ValueError, match="even"):
        mp4.write_mp4(tmp_path / "x.mp4", np.zeros((2, 33, 32, 3), np.uint8), None)
