"""Saving and loading models and training checkpoints: safetensors + JSON, no pickle.

    RUN/model/                     the trained model, loadable with one call: load_model(RUN)
        model.safetensors          encoder weights (and the logit scale)
        config.json                EncoderConfig (decode settings included)
        tokenizer.json             the trained text tokenizer
    RUN/checkpoints/step-000200/   a resumable checkpoint, written to a temp dir then renamed
        model.safetensors          encoder + objective parameters (a pretrained backbone's trainable ones only)
        optimizer.pt               AdamW state (tensors only; loaded with weights_only=True)
        rng.pt                     torch / numpy / python RNG states (tensors and ints only)
        state.json                 step, train config (and a pretrained backbone's base identity)

A pretrained backbone (model.omni) saves its LoRA and head and its base checkpoint's identity, never the
base's weights; see model/omni/store.py for its RUN/model/ and how loading finds and checks the base.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model.cache import file_digest
from model.config import AnyConfig, EncoderConfig, config_from_dict
from model.encoder import OmniEncoder
from model.text import TextTokenizer

MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json")


@dataclass
class LoadedModel:
    encoder: OmniEncoder  # or a model.omni QwenOmniEncoder (same tokenize / fuse / forward)
    tokenizer: TextTokenizer  # or its OmniTokenizer (same call)
    config: AnyConfig
    path: Path


def model_dir(path: str | Path) -> Path:
    """RUN or RUN/model -> the directory holding MODEL_FILES."""
    path = Path(path)
    return path / "model" if (path / "model" / "config.json").exists() else path


def save_model(path: str | Path, encoder: OmniEncoder, tokenizer: TextTokenizer, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write MODEL_FILES atomically: into a temp dir, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(encoder, "trainable_state_dict"):  # a pretrained backbone: LoRA + head + its base's identity
        from model.omni.store import write_omni_model

        write_omni_model(tmp, encoder, extra or {})
        replace_dir(tmp, path)
        return path
    state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    state.update({k: v.detach().contiguous() for k, v in (extra or {}).items()})
    save_file(state, tmp / "model.safetensors", metadata={"format": "omniretriever-encoder-v1"})
    (tmp / "config.json").write_text(json.dumps(encoder.cfg.to_dict(), indent=2) + "\n")
    tokenizer.save(tmp / "tokenizer.json")
    replace_dir(tmp, path)
    return path


def replace_dir(tmp: Path, dest: Path) -> None:
    """Swap the finished directory `tmp` in for `dest`; the old contents are removed only after the swap,
    and come back if the swap itself fails."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def weights_digest(model: str | Path) -> str:
    """sha256 of a saved model's weights file: identifies the model an export, an index or a logged model came from."""
    return file_digest(model_dir(model) / "model.safetensors")


def saved_config(path: str | Path) -> AnyConfig:
    """The config of a saved model (a run or model directory), without loading its weights."""
    file = model_dir(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file.parent} is not a saved model: missing config.json")
    return config_from_dict(json.loads(file.read_text()), str(file))


def load_model(path: str | Path, base: str | Path | None = None) -> LoadedModel:
    """The encoder (eval mode), tokenizer and config saved by save_model. Errors name the missing file.
    A pretrained backbone's base checkpoint is `base`, else $OMNIRETRIEVER_OMNI_CHECKPOINT, else the path
    recorded at training; its digest must be the recorded one (model/omni/store.py)."""
    path = model_dir(path)
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a saved model: missing {', '.join(missing)}")
    raw = json.loads((path / "config.json").read_text())
    config = config_from_dict(raw, str(path / "config.json"))
    if not isinstance(config, EncoderConfig):
        from model.omni.store import load_omni_encoder

        encoder = load_omni_encoder(path, raw, base)
        return LoadedModel(encoder, encoder.tokenizer, config, path)
    encoder = OmniEncoder(config)
    state = load_file(path / "model.safetensors")
    encoder_state = {k: v for k, v in state.items() if k in encoder.state_dict()}
    encoder.load_state_dict(encoder_state, strict=True)
    encoder.eval()
    tokenizer = TextTokenizer.load(path / "tokenizer.json", config.max_text_len)
    return LoadedModel(encoder, tokenizer, config, path)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(), "numpy_pos": np.random.get_state()[2],
            "python": list(random.getstate()[1]), "python_version": random.getstate()[0]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def save_checkpoint(run: Path, step: int, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                    meta: dict, keep: int = 2) -> Path:
    """Write checkpoints/step-XXXXXX atomically (temp dir + rename); keep the newest `keep`."""
    root = run / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {f"{name}.{k}": v.detach().contiguous() for name, mod in modules.items() for k, v in module_state(mod).items()}
    save_file(state, tmp / "model.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **meta}, indent=2, default=str) + "\n")
    replace_dir(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def module_state(mod: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of a module: its state, or only what trains of a pretrained backbone."""
    return mod.trainable_state_dict() if hasattr(mod, "trainable_state_dict") else mod.state_dict()


def latest_checkpoint(run: Path) -> Path | None:
    done = sorted(p for p in (run / "checkpoints").glob("step-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint was written after."""
    return int(json.loads((path / "state.json").read_text())["step"])


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> int:
    """Restore modules, optimizer and RNG; returns the step to continue from."""
    state = load_file(path / "model.safetensors")
    for name, mod in modules.items():
        prefix = f"{name}."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if hasattr(mod, "load_trainable_state_dict"):
            mod.load_trainable_state_dict(part)
        else:
            mod.load_state_dict(part, strict=True)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True, map_location="cpu"))
    return checkpoint_step(path)
