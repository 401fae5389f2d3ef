"""Augmented views for the Tuple-InfoNCE positive (T', V', A'), and the hard-negative tuples.

Every function takes an explicit torch.Generator so a training step's randomness depends only on
(seed, step): an interrupted run resumed from a checkpoint draws exactly the same augmentations.

Defaults keep the caption true of the augmented clip: colour jitter changes brightness and contrast
but not hue (captions name colours), and horizontal flip is off because the default dataset's captions
name the direction of motion (`flip_prob` turns it on for data where left/right carries no meaning).
"""

from __future__ import annotations

import torch

from model.train_config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment_video(frames: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, F, H, W, 3) uint8/float in [0, 255] -> float32 augmented frames, same shape."""
    B, F_ = frames.shape[:2]
    x = frames.float()
    if cfg.frame_shift:
        shift = torch.randint(-cfg.frame_shift, cfg.frame_shift + 1, (B,), generator=gen)  # (B,)
        idx = (torch.arange(F_)[None, :] + shift[:, None]).clamp(0, F_ - 1)  # (B, F) edge-replicated shift
        x = x[torch.arange(B)[:, None], idx]
    if cfg.flip_prob > 0:
        flip = torch.rand(B, generator=gen) < cfg.flip_prob
        x = torch.where(flip[:, None, None, None, None], x.flip(3), x)
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    c = _uniform(B, 1 - cfg.contrast, 1 + cfg.contrast, gen).view(B, 1, 1, 1, 1)
    b = _uniform(B, 1 - cfg.brightness, 1 + cfg.brightness, gen).view(B, 1, 1, 1, 1)
    return (((x - mean) * c + mean) * b).clamp(0, 255)


def augment_audio(mel: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, M, Fr) log-mel -> augmented log-mel: gain, additive noise floor, circular time shift."""
    B = mel.shape[0]
    gain = _uniform(B, -cfg.gain_db, cfg.gain_db, gen) * (torch.log(torch.tensor(10.0)) / 10)  # dB -> ln power
    x = mel + gain.view(B, 1, 1)
    level = torch.logsumexp(x.flatten(1), dim=1) - torch.log(torch.tensor(float(x[0].numel())))  # ln mean power
    noise = level + cfg.noise_db * torch.log(torch.tensor(10.0)) / 10 + torch.log(torch.rand(B, generator=gen) + 1e-6)
    x = torch.logaddexp(x, noise.view(B, 1, 1) + 0.5 * torch.randn(x.shape, generator=gen))
    if cfg.time_shift:
        shifts = torch.randint(-cfg.time_shift, cfg.time_shift + 1, (B,), generator=gen).tolist()
        x = torch.stack([row.roll(s, dims=-1) for row, s in zip(x, shifts)])
    return x


def augment_waveform(wave: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, hop: int = 320) -> torch.Tensor:
    """(B, S) waveforms -> augmented waveforms, for a backbone that computes its own features (Whisper):
    augment_audio's three changes made before the features instead of on a log-mel. Gain in U(-g, g) dB,
    Gaussian noise `noise_db` below the clip's mean power (scaled by U(0, 1)), and a circular shift by up
    to time_shift hops of `hop` samples (time_shift counts the tiny log-mel's 20 ms frames)."""
    B = wave.shape[0]
    x = wave.float() * (10 ** (_uniform(B, -cfg.gain_db, cfg.gain_db, gen) / 20)).view(B, 1)
    power = x.pow(2).mean(1, keepdim=True)  # (B, 1)
    scale = (power * 10 ** (cfg.noise_db / 10) * torch.rand(B, 1, generator=gen)).sqrt()
    x = x + scale * torch.randn(x.shape, generator=gen)
    if cfg.time_shift:
        shifts = torch.randint(-cfg.time_shift, cfg.time_shift + 1, (B,), generator=gen).tolist()
        x = torch.stack([row.roll(s * hop) for row, s in zip(x, shifts)])
    return x


def augment_text(text: str, cfg: AugmentConfig, gen: torch.Generator) -> str:
    """Word dropout (keeps at least one word) and one adjacent swap with probability word_swap_prob."""
    words = text.split()
    keep = [w for w, r in zip(words, torch.rand(len(words), generator=gen).tolist()) if r >= cfg.word_dropout]
    words = keep or words[:1]
    if len(words) > 1 and torch.rand(1, generator=gen).item() < cfg.word_swap_prob:
        i = int(torch.randint(0, len(words) - 1, (1,), generator=gen))
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)
