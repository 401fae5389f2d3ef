"""OmniBackboneConfig: the pretrained omni backbone's settings, a small JSON file parsed into a dataclass.

    model.config.load_config(NAME or PATH)   a config.json whose "backbone" is "qwen2_5_omni" (unknown fields
                                             are refused)

The checkpoint itself (which thinker, its sizes and token ids) is not part of it: it is a directory
given at run time, validated by model.omni.checkpoint, and identified by its weights' digest.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from model.config import config_fields
from model.media import DecodeConfig

POOLINGS = ("last_all_layers", "mean")
ATTENTIONS = ("causal", "bidirectional")
HEADS = ("mlp", "none")
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # what from_pretrained is given for the thinker; both run on the CPU
AUTOCASTS = ("bf16", "none")


def _qwen_decode() -> DecodeConfig:
    # the authors' recipe: 8 frames of 224 x 224 (multiples of 28: 4 temporal x 8 x 8 = 256 video tokens) and
    # 8 s of 16 kHz audio (200 audio tokens). The mel fields are the tiny encoder's: this backbone computes
    # Whisper features from the waveform (model.omni.preprocess.audio_features).
    return DecodeConfig(num_frames=8, frame_size=224, sample_rate=16_000, audio_seconds=8.0)


@dataclass(frozen=True)
class OmniBackboneConfig:
    """A Qwen2.5-Omni thinker, frozen, with LoRA on its LLM and a projection head."""

    backbone: ClassVar[str] = "qwen2_5_omni"  # a config.json's "backbone" (model.config.config_from_dict)
    audio_input: ClassVar[str] = "waveform"  # the feature cache holds 16 kHz waveforms; Whisper features per batch

    name: str = "qwen2_5_omni"
    lora_rank: int = 16
    lora_alpha: int = 32  # LoRA scale = alpha / rank
    lora_dropout: float = 0.05
    # full match against module names; anchored on language_model: a bare q_proj suffix also matches the audio tower
    lora_targets: str = r".*language_model\.layers\.\d+\.self_attn\.(q|k|v)_proj"
    # last_all_layers: the last token's state after every decoder layer, concatenated (left padding puts
    # every row's last token at the end); mean: the masked mean of the last layer's states
    pooling: str = "last_all_layers"
    attention: str = "causal"  # causal (as pretrained) | bidirectional (every valid token sees every other)
    head: str = "mlp"  # mlp: Linear-GELU-Linear to embed_dim | none: the pooled vector itself (mean pooling's width)
    head_hidden: int = 1024
    embed_dim: int = 1024
    # prompts before a row's tokens. Embeddings here have no query/passage role (a gallery embedding serves
    # every direction), so the prompt follows the row's modalities: text_prompt for text-only rows,
    # media_prompt for rows with video or audio ("query: " / "passage: " for Nemotron-style checkpoints)
    text_prompt: str = ""
    media_prompt: str = ""
    interleave_seconds: int = 2  # video and audio alternate in chunks of this many seconds (TVA, AV)
    max_text_len: int = 64  # caption tokens, longer captions are cut
    dtype: str = "bfloat16"  # the backbone's weights; LoRA and the head train in float32
    attn_implementation: str = "sdpa"  # sdpa (torch's fused attention) | eager (the reference matmul-softmax)
    # recompute the LLM's decoder layers in the backward instead of keeping their activations (non-reentrant
    # torch.utils.checkpoint; the same loss and gradients, less memory, one more LLM forward a step)
    gradient_checkpointing: bool = False
    # bf16: on CUDA, training's forward runs under torch.autocast(bfloat16); the head, the embeddings and the
    # loss stay float32. On the CPU autocast is never used (float32 weights stay float32 exactly). none: off
    autocast: str = "bf16"
    decode: DecodeConfig = field(default_factory=_qwen_decode)

    def __post_init__(self) -> None:
        rules = [
            ("lora_rank", self.lora_rank >= 1, f"must be >= 1, got {self.lora_rank}"),
            ("lora_alpha", self.lora_alpha > 0, f"must be > 0, got {self.lora_alpha}"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, f"must be in [0, 1), got {self.lora_dropout}"),
            ("lora_targets", _compiles(self.lora_targets), f"is not a valid regular expression: {self.lora_targets!r}"),
            ("pooling", self.pooling in POOLINGS, f"must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"),
            ("attention", self.attention in ATTENTIONS, f"must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}"),
            ("head", self.head in HEADS, f"must be one of {', '.join(HEADS)}, got {self.head!r}"),
            ("head_hidden", self.head_hidden >= 1, f"must be >= 1, got {self.head_hidden}"),
            ("embed_dim", self.embed_dim >= 1, f"must be >= 1, got {self.embed_dim}"),
            ("interleave_seconds", isinstance(self.interleave_seconds, int) and self.interleave_seconds >= 1,
             f"must be a whole number of seconds >= 1 (the thinker's seconds_per_chunk), got {self.interleave_seconds!r}"),
            ("max_text_len", self.max_text_len >= 1, f"must be >= 1, got {self.max_text_len}"),
            ("dtype", self.dtype in DTYPES, f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}"),
            ("attn_implementation", self.attn_implementation in ATTN_IMPLEMENTATIONS,
             f"must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {self.attn_implementation!r}"),
            ("gradient_checkpointing", isinstance(self.gradient_checkpointing, bool),
             f"must be true or false, got {self.gradient_checkpointing!r}"),
            ("autocast", self.autocast in AUTOCASTS, f"must be one of {', '.join(AUTOCASTS)}, got {self.autocast!r}"),
            ("decode.sample_rate", self.decode.sample_rate == 16_000,
             f"must be 16000 (Whisper features), got {self.decode.sample_rate}"),
        ]
        bad = [f"{name} {msg}" for name, ok, msg in rules if not ok]
        if bad:
            raise ValueError(f"omni backbone config {self.name!r}: " + "; ".join(bad))

    @property
    def frames_per_second(self) -> float:
        """The rate frames are sampled at, for video positions: num_frames spread over the clip's audio_seconds."""
        return self.decode.num_frames / self.decode.audio_seconds

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> "OmniBackboneConfig":
        return cls(**config_fields(cls, raw, source, "omni backbone", _qwen_decode()))


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True
