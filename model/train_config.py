"""What a training run is configured with: TrainConfig and AugmentConfig, checked when built.

No torch here: the command line reads these defaults for its options, and `omniretriever --help` must
not load torch to show them. The default budget (steps, batch size, token dropping) is model/defaults.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model.defaults import BATCH_SIZE, TOKEN_KEEP, TRAIN_STEPS, UNMASKED_STEPS

OBJECTIVES: tuple[str, ...] = ("pairwise", "distill", "full")  # L_A | L_A + L_D | L_A + L_D + L_T


@dataclass(frozen=True)
class AugmentConfig:
    frame_shift: int = 1  # frames: the sampled frames are shifted in time by up to this many
    flip_prob: float = 0.0  # horizontal flip; off by default (captions name left/right motion)
    brightness: float = 0.2  # frames * U(1 - b, 1 + b)
    contrast: float = 0.2  # around the clip mean, * U(1 - c, 1 + c)
    gain_db: float = 6.0  # audio gain in U(-g, g) dB (log-mel: additive)
    noise_db: float = -30.0  # noise floor this many dB below the clip's mean mel power (scaled by U(0, 1))
    time_shift: int = 4  # mel frames (20 ms each): circular shift by up to this many
    word_dropout: float = 0.1  # each word dropped with this probability (at least one kept)
    word_swap_prob: float = 0.3  # probability of swapping one random pair of adjacent words


@dataclass
class TrainConfig:
    data: Path
    out: Path
    config: str = "tiny"  # packaged config name or a JSON path
    checkpoint: Path | None = None  # a pretrained backbone's base checkpoint directory (qwen2_5_omni configs)
    objective: str = "full"  # pairwise | distill | full
    steps: int = TRAIN_STEPS
    batch_size: int = BATCH_SIZE
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0
    seed: int = 0
    temperature: float = 0.07  # initial value when learnable
    fixed_temperature: bool = False  # reference-code variant: --fixed-temperature --temperature 0.01
    rotate_pairs: bool = False  # reference-code variant: one L_A pair per step
    checkpoint_every: int = 100
    workers: int | None = None
    cache_dir: Path | None = None  # default: $OMNIRETRIEVER_CACHE/features or .cache/omniretriever/features
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    token_keep: float = TOKEN_KEEP  # fraction of video and audio tokens each training view keeps (random per row)
    unmasked_steps: float = UNMASKED_STEPS  # fraction of final steps trained with every token
    alt_texts: bool = True  # draw each step's caption from a clip's text and alt_texts (False: text alone)

    def __post_init__(self) -> None:
        """Refuse bad values at once, naming each bad option, its value and what it must be."""
        positive, non_negative = "a finite number > 0", "a finite number >= 0"
        rules = {"objective": (self.objective in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
                 "steps": (self.steps >= 1, ">= 1"), "batch_size": (self.batch_size >= 2, ">= 2"),
                 "lr": (0 < self.lr < math.inf, positive),
                 "weight_decay": (0 <= self.weight_decay < math.inf, non_negative),
                 "warmup_steps": (self.warmup_steps >= 0, ">= 0"),
                 "grad_clip": (0 < self.grad_clip < math.inf, positive),
                 "temperature": (0 < self.temperature < math.inf, positive), "seed": (self.seed >= 0, ">= 0"),
                 "checkpoint_every": (self.checkpoint_every >= 1, ">= 1"),
                 "workers": (self.workers is None or self.workers >= 1, ">= 1, or unset for all cores"),
                 "token_keep": (0 < self.token_keep <= 1, "in (0, 1]"),
                 "unmasked_steps": (0 <= self.unmasked_steps <= 1, "in [0, 1]")}
        bad = [f"--{k.replace('_', '-')}={getattr(self, k)!r} (must be {rule})"
               for k, (ok, rule) in rules.items() if not ok]
        if bad:
            raise ValueError(f"invalid training option(s): {'; '.join(bad)}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))
