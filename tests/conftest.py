"""Shared fixtures: small media files, good and broken, written once per test session; ports and waits."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from dataset.mp4 import write_mp4

FPS = 12
SAMPLE_RATE = 16_000
T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on (free when asked; a server started right after takes it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout: float, message: str | Callable[[], str],
               interval: float = 0.2) -> T:
    """Call `condition` until it returns something true, and return that; AssertionError(`message`, or what
    it returns when callable) once `timeout` seconds have passed. An exception from `condition` (a server
    that exited) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)


def http_ok(url: str) -> bool:
    """Whether a GET of `url` answers 200 within 2 s (a refused connection or an error status is False)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # urllib.error.URLError and HTTPError are OSErrors
        return False


def ramp_frames(n: int, size: int = 96) -> np.ndarray:
    """uint8 (n, size, size, 3) frames whose brightness grows with the frame index."""
    levels = np.linspace(16, 235, n).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, size, size, 3)).copy()


def tone(seconds: float, hz: float = 1000.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def loaded_by_import(modules: tuple[str, ...], heavy: tuple[str, ...]) -> list[str]:
    """Which of `heavy` a fresh interpreter has loaded after importing `modules` (to keep imports light)."""
    code = (f"import sys, {', '.join(modules)}; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return out.split(",") if out else []


class Interrupted(Exception):
    """What StopAtFirstCheckpoint raises: a training run stopped right after its first checkpoint."""


class StopAtFirstCheckpoint:
    """A training callback that interrupts the run at its first checkpoint (to test --resume in-process)."""

    def on_checkpoint(self, step, path):
        raise Interrupted


@dataclass(frozen=True)
class MediaFiles:
    root: Path
    good: Path  # 3 s, video + audio (1 kHz tone)
    video_only: Path  # 3 s, no audio track
    audio_only: Path  # 3 s, audio track only
    truncated: Path  # first half of good.mp4's bytes
    empty: Path  # 0 bytes
    not_media: Path  # text with an .mp4 name
    missing: Path  # does not exist


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    root = tmp_path_factory.mktemp("media")
    frames, audio = ramp_frames(3 * FPS), tone(3.0)
    good = write_mp4(root / "good.mp4", frames, audio, FPS, SAMPLE_RATE)
    video_only = write_mp4(root / "video_only.mp4", frames, None, FPS, SAMPLE_RATE)
    audio_only = write_mp4(root / "audio_only.mp4", None, audio, FPS, SAMPLE_RATE)
    data = Path(good).read_bytes()
    truncated = root / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    not_media = root / "not_media.mp4"
    not_media.write_text("this is not a video\n" * 50)
    return MediaFiles(root, Path(good), Path(video_only), Path(audio_only), truncated, empty, not_media,
                      root / "missing.mp4")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated dataset in the OmniRetriever-Bench layout: 48 train, 4 val, 24 test clips."""
    from dataset.config import SynthConfig
    from dataset.synth import synthesize

    root = tmp_path_factory.mktemp("tiny") / "data"
    synthesize(root, SynthConfig(train=48, val=4, test=24, seed=11), workers=2, progress=False)
    return root


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests decode into a cache of their own, never the working tree's."""
    import os

    os.environ["OMNIRETRIEVER_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory (RUN/model/...) trained briefly on tiny_data: a real saved model for serving and registry tests."""
    from model.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    train(TrainConfig(data=tiny_data, out=out, steps=12, batch_size=8, warmup_steps=2, checkpoint_every=12, workers=1),
          progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_repo(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Triton model repository (production/ and local/) exported from tiny_run."""
    from serving.repository import build_repository

    return build_repository(tiny_run, tmp_path_factory.mktemp("serving") / "repo")


@pytest.fixture(autouse=True, scope="session")
def _mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tracking and the registry write to a store of the test session's own, never the repository's .mlflow/."""
    import os

    root = tmp_path_factory.mktemp("mlflow")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["OMNIRETRIEVER_MLFLOW_DIR"] = str(root / "embedded")


@pytest.fixture(scope="session")
def tracked_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`omniretriever train` (3 steps, tracking on, --tracking-uri given) then `omniretriever evaluate` on the
    test split, into the session's MLflow store: (RUN, the MLflow run id)."""
    import os
    import re

    from typer.testing import CliRunner

    from omniretriever.cli import app

    out, uri, runner = tmp_path_factory.mktemp("tracked-run") / "run", os.environ["MLFLOW_TRACKING_URI"], CliRunner()
    res = runner.invoke(app, ["train", "--data", str(tiny_data), "--out", str(out), "--batch-size", "8", "--steps", "3",
                              "--checkpoint-every", "3", "--warmup-steps", "1", "--workers", "1", "--tracking-uri", uri,
                              "--pipeline-run-id", "pipe-42"])
    assert res.exit_code == 0, res.output
    run_id = re.search(r"mlflow run: (\w+)", res.output).group(1)
    assert "mlflow ui --backend-store-uri" in res.output
    res = runner.invoke(app, ["evaluate", "--model", str(out), "--data", str(tiny_data), "--split", "test", "--workers", "1"])
    assert res.exit_code == 0 and f"mlflow run: {run_id}" in res.output, res.output  # found the training run
    return out, run_id


@pytest.fixture(scope="session")
def thinker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-Omni thinker checkpoint (model/omni/random_checkpoint.py)."""
    from model.omni.random_checkpoint import write_random_thinker

    return write_random_thinker(tmp_path_factory.mktemp("qwen_thinker"), "tiny")


# 4 frames of 56 x 56 (8 video tokens) and 2 s of audio (50 audio tokens): a CPU-sized copy of qwen2_5_omni
SMALL = {"dtype": "float32", "lora_rank": 4, "head_hidden": 32, "embed_dim": 16,
         "decode": {"num_frames": 4, "frame_size": 56, "audio_seconds": 2.0}}


@pytest.fixture(scope="session")
def omni_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model/configs/qwen2_5_omni.json made CPU-sized (SMALL), as a config file."""
    raw = json.loads(Path("model/configs/qwen2_5_omni.json").read_text()) | SMALL | {"name": "qwen_small"}
    path = tmp_path_factory.mktemp("omni-config") / "qwen_small.json"
    path.write_text(json.dumps(raw))
    return path


def omni_train_args(data: Path, out: Path, config: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--config", str(config), "--checkpoint", str(checkpoint),
            "--token-keep", "1", "--batch-size", "4", "--steps", "3", "--warmup-steps", "1", "--checkpoint-every", "3",
            "--workers", "1", *extra]


@pytest.fixture(scope="session")
def omni_run(tiny_data: Path, thinker_dir: Path, omni_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained 3 steps on the tiny random thinker: LoRA + head + the base's identity."""
    from typer.testing import CliRunner

    from model.cli import app

    out = tmp_path_factory.mktemp("omni-run") / "run"
    res = CliRunner().invoke(app, omni_train_args(tiny_data, out, omni_config, thinker_dir))
    assert res.exit_code == 0, res.output
    return out
