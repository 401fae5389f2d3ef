"""Training the Qwen2.5-Omni backbone end to end on a tiny RANDOM thinker (model/omni/random_checkpoint.py):
`omniretriever train --config <qwen json> --checkpoint DIR`, the saved run (LoRA + head and the base's
identity only), loading it over its base, `omniretriever evaluate`, exact resume (in process and after kill -9),
and the precision a step's forward runs at."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from model.cli import app
from model.config import load_config
from model.errors import CheckpointError
from model.modalities import DIRECTION_NAMES
from model.store import load_model
from model.train import TrainConfig, train
from tests.conftest import Interrupted, StopAtFirstCheckpoint, omni_train_args as train_args

def test_training_ends_with_finite_losses_and_changes_only_lora_and_head(omni_run, thinker_dir, omni_config):
    from model.omni.backbone import QwenOmniEncoder

    final = json.loads((omni_run / "train_summary.json").read_text())["final"]
    assert {"pairwise_loss", "distill_loss", "tuple_loss"} <= set(final)
    assert all(math.isfinite(v) for v in final.values())
    trained = load_model(omni_run).encoder.state_dict()
    fresh = QwenOmniEncoder.from_checkpoint(thinker_dir, load_config(omni_config)).state_dict()
    changed = {k for k in fresh if not torch.equal(fresh[k], trained[k])}
    assert changed and all("lora_" in k or k.startswith("head.") for k in changed)
    assert any("lora_B" in k for k in changed) and any(k.startswith("head.") for k in changed)


def test_the_run_holds_lora_head_and_the_bases_identity_not_its_weights(omni_run, thinker_dir):
    from model.omni.checkpoint import find_checkpoint

    base_bytes = (thinker_dir / "model.safetensors").stat().st_size
    for weights in (omni_run / "model" / "model.safetensors", *omni_run.glob("checkpoints/step-*/model.safetensors")):
        assert weights.stat().st_size < base_bytes / 10, weights
        assert all("lora_" in k or "head." in k or "logit_scale" in k for k in load_file(weights)), weights
    identity = json.loads((omni_run / "model" / "base.json").read_text())
    assert identity == {"path": str(thinker_dir.resolve()), "digest": find_checkpoint(thinker_dir).digest,
                        "layout": "thinker"}
    assert json.loads((omni_run / "model" / "config.json").read_text())["backbone"] == "qwen2_5_omni"
    state = json.loads(next(omni_run.glob("checkpoints/step-*/state.json")).read_text())
    assert state["base"] == identity


def test_a_base_with_other_weights_is_refused_naming_both_digests(omni_run, thinker_dir, tmp_path, monkeypatch):
    from model.omni.checkpoint import find_checkpoint

    changed = tmp_path / "changed"
    shutil.copytree(thinker_dir, changed)
    weights = load_file(changed / "model.safetensors")
    key = next(k for k in sorted(weights) if k.startswith("model.layers.0"))
    weights[key] = weights[key] + 1
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    recorded, found = find_checkpoint(thinker_dir).digest, find_checkpoint(changed).digest
    with pytest.raises(CheckpointError, match=f"digest {found}.*digest {recorded}"):
        load_model(omni_run, base=changed)
    monkeypatch.setenv("OMNIRETRIEVER_OMNI_CHECKPOINT", str(changed))
    with pytest.raises(CheckpointError, match=recorded):
        load_model(omni_run)
    moved = tmp_path / "moved"  # the same weights elsewhere are accepted
    shutil.copytree(thinker_dir, moved)
    monkeypatch.setenv("OMNIRETRIEVER_OMNI_CHECKPOINT", str(moved))
    assert load_model(omni_run).encoder.checkpoint.root == moved


def test_evaluate_scores_the_twelve_directions(omni_run, tiny_data):
    out = omni_run / "eval" / "results.json"
    res = CliRunner().invoke(app, ["evaluate", "--model", str(omni_run), "--data", str(tiny_data), "--split", "test",
                                   "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())
    assert set(results["directions"]) == set(DIRECTION_NAMES) and results["n_items"] == 24
    assert all(n == 0 for n in results["nonfinite_rows"].values())


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_data, thinker_dir, omni_config, tmp_path):
    def cfg(out: Path) -> TrainConfig:
        return TrainConfig(data=tiny_data, out=out, config=str(omni_config), checkpoint=thinker_dir, steps=4,
                           batch_size=4, warmup_steps=1, checkpoint_every=2, workers=1, token_keep=1.0)
    train(cfg(tmp_path / "a"), progress=False)
    with pytest.raises(Interrupted):
        train(cfg(tmp_path / "b"), callbacks=[StopAtFirstCheckpoint()], progress=False)
    train(cfg(tmp_path / "b"), resume=True, progress=False)
    a, b = load_file(tmp_path / "a" / "model" / "model.safetensors"), load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # about 55 s on 2 cores: two trainings as subprocesses, one killed with SIGKILL, then resumed
def test_killed_run_resumes_to_identical_weights(tiny_data, thinker_dir, omni_config, tmp_path):
    """kill -9 after the first checkpoint, rerun with --resume: the same LoRA and head as an uninterrupted run."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    def args(out: Path) -> list[str]:
        cli = train_args(tiny_data, out, omni_config, thinker_dir)
        for flag, value in {"--steps": "5", "--checkpoint-every": "2"}.items():
            cli[cli.index(flag) + 1] = value
        return [sys.executable, "-m", "model.cli", *cli]

    subprocess.run(args(straight), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(args(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step-000002" / "state.json").exists():
        assert time.time() < deadline and proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model").exists()
    resumed = subprocess.run(args(killed) + ["--resume"], check=True, capture_output=True, text=True, timeout=300)
    assert json.loads((killed / "train_summary.json").read_text())["resumed_from"] >= 2, resumed.stdout
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line)["step"] for line in (killed / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 6))


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # autocast("cuda") is built, never entered, here
def test_a_steps_forward_autocasts_only_the_pretrained_backbone_on_cuda(omni_config):
    from contextlib import nullcontext
    from dataclasses import replace

    from model.config import EncoderConfig
    from model.train import forward_autocast

    omni, cuda, cpu = load_config(omni_config), torch.device("cuda"), torch.device("cpu")
    ctx = forward_autocast(omni, cuda)
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    for enc_cfg, device in ((omni, cpu), (replace(omni, autocast="none"), cuda), (EncoderConfig(), cuda)):
        assert isinstance(forward_autocast(enc_cfg, device), nullcontext), (enc_cfg.name, device)


@pytest.mark.parametrize("change,message", [
    ({"--token-keep": "0.5"}, "--token-keep=0.5 is not supported by the qwen2_5_omni backbone"),
    ({"--checkpoint": None}, "give its base checkpoint directory with --checkpoint DIR"),
    ({"--config": "tiny"}, "is for a pretrained backbone"),
    ({"--checkpoint": "/nonexistent/qwen"}, "checkpoint directory not found"),
])
def test_bad_backbone_options_fail_before_decoding(tiny_data, thinker_dir, omni_config, tmp_path, monkeypatch, change,
                                                   message):
    import model.train

    monkeypatch.setattr(model.train, "load_bank", lambda *a, **k: pytest.fail("decoded before checking"))
    args = train_args(tiny_data, tmp_path / "run", omni_config, thinker_dir)
    for flag, value in change.items():
        i = args.index(flag)
        args[i + 1: i + 2] = [value] if value is not None else []
        if value is None:
            del args[i]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


def test_waveform_features_are_cached_apart_from_the_tiny_log_mel(media, tmp_path):
    from model.cache import FeatureCache

    tiny = FeatureCache(tmp_path)
    assert tiny.key(media.good, media.good) == FeatureCache(tmp_path, audio_input="log_mel").key(media.good, media.good)
    waves = FeatureCache(tmp_path, audio_input="waveform")
    assert waves.key(media.good, media.good) != tiny.key(media.good, media.good)
    clip = waves.get(media.good, media.good)
    assert clip.mel.shape == (tiny.config.num_samples,) and waves.get(media.good, media.good).mel.shape == clip.mel.shape
    assert waves.stats.hits == 1


def test_waveform_augmentation_is_seeded_and_keeps_the_shape():
    from model.augment import augment_waveform
    from model.train_config import AugmentConfig

    wave = torch.randn(3, 32_000)
    a = augment_waveform(wave, AugmentConfig(), torch.Generator().manual_seed(5))
    assert a.shape == wave.shape and torch.isfinite(a).all() and not torch.equal(a, wave)
    assert torch.equal(a, augment_waveform(wave, AugmentConfig(), torch.Generator().manual_seed(5)))


def test_requests_embed_as_evaluation_does(omni_run, tiny_data):
    from model.data import load_bank
    from model.evaluate import embed_views
    from model.inference import Embedder
    from model.manifest import read_split, resolve_media

    embedder = Embedder(omni_run)
    records = read_split(tiny_data, "test")[:3]
    bank = load_bank(tiny_data, "test", embedder.loaded.config, limit=3, workers=1, progress=False)
    views = embed_views(embedder.loaded, bank, ("t", "tva", "a"))
    media = [str(resolve_media(tiny_data, r.video)) for r in records]
    rows = ([{"text": r.text} for r in records] + [{"text": r.text, "video": m, "audio": m} for r, m in zip(records, media)]
            + [{"audio": m} for m in media])
    z = torch.from_numpy(embedder.embed(rows))
    assert torch.allclose(z, torch.cat([views["t"], views["tva"], views["a"]]), atol=1e-5)
