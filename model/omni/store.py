"""A trained Qwen2.5-Omni backbone on disk: its LoRA and head, never a copy of the frozen base.

    RUN/model/
        model.safetensors   trainable_state_dict() (LoRA + head) and the logit scale: megabytes, not gigabytes
        config.json         OmniBackboneConfig with "backbone": "qwen2_5_omni" (model.config.config_dict)
        base.json           the base checkpoint's identity: absolute path, weights digest, layout
        tokenizer.json      the base's tokenizer, copied (small; the preprocessing reads it from here)

Loading re-reads the base from `base` (the caller's), else $OMNIRETRIEVER_OMNI_CHECKPOINT, else the
recorded path, validates it (model.omni.checkpoint) and refuses weights whose digest is not the recorded
one, naming both. The digest reads every weights file once (a 7B thinker: about 15 GB).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.config import config_dict
from model.errors import CheckpointError
from model.omni.backbone import QwenOmniEncoder
from model.omni.checkpoint import find_checkpoint, read_json
from model.omni.config import OmniBackboneConfig

BASE_FILE = "base.json"
BASE_ENV = "OMNIRETRIEVER_OMNI_CHECKPOINT"  # where the base lies when it has moved since training


def write_omni_model(tmp: Path, encoder: QwenOmniEncoder, extra: dict[str, torch.Tensor]) -> None:
    """Write the files above into the (empty) directory `tmp`."""
    state = {k: v.contiguous() for k, v in encoder.trainable_state_dict().items()}
    state.update({k: v.detach().contiguous() for k, v in extra.items()})
    save_file(state, tmp / "model.safetensors", metadata={"format": "omniretriever-omni-adapter-v1"})
    (tmp / "config.json").write_text(json.dumps(config_dict(encoder.cfg), indent=2) + "\n")
    (tmp / BASE_FILE).write_text(json.dumps(encoder.checkpoint.identity(), indent=2) + "\n")
    shutil.copyfile(encoder.checkpoint.tokenizer_path, tmp / "tokenizer.json")


def read_base_identity(model_dir: str | Path) -> dict | None:
    """The identity a saved model's base.json records (OmniCheckpoint.identity(): path, digest, layout), or
    None when the model has no base.json (the tiny encoder, which needs no base checkpoint)."""
    path = Path(model_dir) / BASE_FILE
    if not path.is_file():
        return None
    recorded = read_json(path, "the base checkpoint's identity")
    for field in ("path", "digest"):
        if not isinstance(recorded.get(field), str) or not recorded[field]:
            raise CheckpointError(path, field, f"expected a non-empty string, got {recorded.get(field)!r}")
    return recorded


def base_path(recorded: dict, base: str | Path | None = None) -> Path:
    """The base checkpoint to load: `base`, else $OMNIRETRIEVER_OMNI_CHECKPOINT, else the recorded path."""
    return Path(base or os.environ.get(BASE_ENV) or recorded["path"])


def load_omni_encoder(path: Path, raw_config: dict, base: str | Path | None = None) -> QwenOmniEncoder:
    """The saved backbone in `path` (a model directory) over its base, in eval mode."""
    cfg = OmniBackboneConfig.from_dict({k: v for k, v in raw_config.items() if k != "backbone"}, str(path / "config.json"))
    recorded = read_base_identity(path)
    if recorded is None:
        raise FileNotFoundError(f"{path} is not a saved model: missing {BASE_FILE} (the base checkpoint's identity)")
    checkpoint = find_checkpoint(base_path(recorded, base))
    checkpoint.check_identity(recorded, path)
    encoder = QwenOmniEncoder.from_checkpoint(checkpoint.root, cfg)
    state = load_file(path / "model.safetensors")
    encoder.load_trainable_state_dict({k: v for k, v in state.items() if not k.startswith("logit_scale.")})
    return encoder.eval()
