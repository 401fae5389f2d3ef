"""Architectures as small JSON configs (model/configs/<name>.json) parsed into dataclasses.

    load_config("tiny")            a packaged config by name
    load_config("path/to.json")    any file with the same fields

A config's "backbone" field names the encoder it configures: absent or "tiny", the from-scratch
OmniEncoder (EncoderConfig); "qwen2_5_omni", the pretrained Qwen2.5-Omni thinker + LoRA
(model.omni.config.OmniBackboneConfig, whose base checkpoint is a directory given at run time).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Union

from model.media import DecodeConfig

if TYPE_CHECKING:
    from model.omni.config import OmniBackboneConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BACKBONES = ("tiny", "qwen2_5_omni")  # what a config's "backbone" field may name ("tiny" when absent)


@dataclass(frozen=True)
class EncoderConfig:
    """The unified AVT encoder. Token counts: video (F/tt)*(S/ps)^2, audio (mels/af)*(frames/at), text <= max_text_len."""

    backbone: ClassVar[str] = "tiny"  # not a field: a tiny config.json has no "backbone"
    audio_input: ClassVar[str] = "log_mel"  # what the feature cache holds for audio (model.media.decode_clip)

    name: str = "tiny"
    dim: int = 128  # trunk width
    depth: int = 2  # shared transformer blocks
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    embed_dim: int = 128  # output embedding size (after the projection head)
    vocab_size: int = 2048  # upper bound for the trained text tokenizer
    max_text_len: int = 32  # tokens, longer captions are cut
    tubelet_frames: int = 2  # video tubelet: frames x pixels x pixels
    tubelet_size: int = 16
    audio_patch_mels: int = 32  # audio patch: mel bins x mel frames
    audio_patch_frames: int = 16
    stem_patch: int = 8  # first-level patches (pixels; mel bins x frames) fed to the per-patch MLP
    stem_dim: int = 64  # hidden width of the per-patch MLP; 0 = plain linear patch embedding (ViT)
    pooling: str = "max"  # mean | max | attn, over the valid tokens of the joint sequence
    text_projection: bool = True  # False: text-only views skip the head (reference-code variant; needs dim == embed_dim)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        d = self.decode
        rules = [
            ("dim", self.dim % self.heads == 0, f"dim={self.dim} must be divisible by heads={self.heads}"),
            ("tubelet_frames", d.num_frames % self.tubelet_frames == 0,
             f"decode.num_frames={d.num_frames} must be divisible by tubelet_frames={self.tubelet_frames}"),
            ("tubelet_size", d.frame_size % self.tubelet_size == 0,
             f"decode.frame_size={d.frame_size} must be divisible by tubelet_size={self.tubelet_size}"),
            ("audio_patch_mels", d.n_mels % self.audio_patch_mels == 0,
             f"decode.n_mels={d.n_mels} must be divisible by audio_patch_mels={self.audio_patch_mels}"),
            ("audio_patch_frames", 1 <= self.audio_patch_frames <= d.num_mel_frames,
             f"audio_patch_frames={self.audio_patch_frames} must be in [1, {d.num_mel_frames}]"),
            ("text_projection", self.text_projection or self.dim == self.embed_dim,
             f"text_projection=false needs dim == embed_dim, got {self.dim} and {self.embed_dim}"),
            ("depth", self.depth >= 1, f"depth must be >= 1, got {self.depth}"),
            ("stem_patch", self.tubelet_size % self.stem_patch == 0 and d.frame_size % self.stem_patch == 0
             and self.audio_patch_mels % self.stem_patch == 0 and self.audio_patch_frames % self.stem_patch == 0,
             f"stem_patch={self.stem_patch} must divide tubelet_size={self.tubelet_size}, decode.frame_size={d.frame_size}, "
             f"audio_patch_mels={self.audio_patch_mels} and audio_patch_frames={self.audio_patch_frames}"),
        ]
        bad = [msg for _, ok, msg in rules if not ok]
        if bad:
            raise ValueError(f"encoder config {self.name!r}: " + "; ".join(bad))

    @property
    def video_tokens(self) -> int:
        d = self.decode
        return (d.num_frames // self.tubelet_frames) * (d.frame_size // self.tubelet_size) ** 2

    @property
    def audio_tokens(self) -> int:
        d = self.decode
        return (d.n_mels // self.audio_patch_mels) * (d.num_mel_frames // self.audio_patch_frames)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> "EncoderConfig":
        return cls(**config_fields(cls, raw, source, "encoder config"))


def config_fields(cls: type, raw: dict, source: str, what: str, decode: DecodeConfig = DecodeConfig()) -> dict:
    """The fields of dataclass `cls` in `raw` (a "comment" is ignored, an unknown field refused naming `source`),
    with "decode" parsed into a DecodeConfig whose fields not given keep those of `decode`."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known - {"comment"})
    if unknown:
        raise ValueError(f"{source}: unknown {what} field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {k: v for k, v in raw.items() if k in known}
    if "decode" in values:
        dunknown = sorted(set(values["decode"]) - {f.name for f in fields(DecodeConfig)})
        if dunknown:
            raise ValueError(f"{source}: unknown decode field(s) {', '.join(dunknown)}")
        values["decode"] = replace(decode, **values["decode"])
    return values


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


AnyConfig = Union[EncoderConfig, "OmniBackboneConfig"]


def config_from_dict(raw: dict, source: str = "<dict>") -> AnyConfig:
    """The config of the backbone `raw["backbone"]` names (the tiny encoder's when absent)."""
    backbone = raw.get("backbone", "tiny")
    if backbone not in BACKBONES:
        raise ValueError(f"{source}: unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    values = {k: v for k, v in raw.items() if k != "backbone"}
    if backbone == "tiny":
        return EncoderConfig.from_dict(values, source)
    from model.omni.config import OmniBackboneConfig

    return OmniBackboneConfig.from_dict(values, source)


def config_dict(cfg: AnyConfig) -> dict:
    """What a config.json holds: the fields, and "backbone" for any backbone but the tiny one (whose files
    stay as they always were)."""
    return cfg.to_dict() if cfg.backbone == "tiny" else {"backbone": cfg.backbone, **cfg.to_dict()}


def load_config(name_or_path: str | Path) -> AnyConfig:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise ValueError(f"unknown config {str(name_or_path)!r}: packaged configs are {', '.join(available_configs())}")
    return config_from_dict(read_json_object(path, "encoder config"), str(path))


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in `path`; ValueError naming `what` and the file if it cannot be read or is not one."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return raw
