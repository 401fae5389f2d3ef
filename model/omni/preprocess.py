"""The Qwen2.5-Omni towers' input, computed here: Qwen2_5OmniProcessor cannot be built without torchvision.

    frame_size(h, w)          -> (H, W) multiples of patch*merge (28) near h x w: Qwen2-VL's smart_resize
    resize_frames(frames, H, W)  uint8 (T, h, w, 3) -> uint8 (T, H, W, 3), PIL bicubic like the HF image processor
    video_patches(frames)     uint8 (or float in [0, 255]) (B, F, H, W, 3) -> pixel values (B, t*gh*gw, 3*tp*p*p)
                              float32 and the grid (t, gh, gw) in patches: rescaled by 1/255, CLIP mean/std
                              normalised, in the Qwen2-VL patch layout; F is padded to a multiple of tp
                              by repeating the last frame
    video_token_count(grid)   t*gh*gw / merge^2 placeholders (one per merged 2x2 patch group)
    audio_features(waves)     16 kHz mono waveforms -> Whisper log-mel features (B, 128, Fr) float32 and
                              a mask (B, Fr) of the valid frames: each clip alone, Fr = samples // 160
    audio_token_count(frames) ((frames - 1) // 2 + 1 - 2) // 2 + 1 placeholders (the audio tower's conv with
                              stride 2, then its average pool of 2: 25 tokens a second)

Frames and images agree with transformers' Qwen2VLImageProcessor (its PIL path, no torchvision) to the
bit: the same resize, the same float64 rescale then float32 normalisation, the same layout.
Computing features for each clip alone makes a clip's features independent of its batch (the HF
extractor pads a batch first, and then counts a partly padded frame as valid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, what Qwen2-VL's vision tower was trained with
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH, MERGE, TEMPORAL = 14, 2, 2  # Qwen2.5-Omni's vision tower (its vision_config holds the same)
SAMPLE_RATE, HOP = 16_000, 160  # Whisper features: 16 kHz, 10 ms hop
WHISPER_MELS = 128  # Qwen2.5-Omni's audio tower takes 128 mel bins


def frame_size(height: int, width: int, factor: int = PATCH * MERGE, min_pixels: int = 56 * 56,
               max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """The size Qwen2-VL resizes an h x w frame to: multiples of `factor`, aspect kept, pixels in range."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"frame {height}x{width}: aspect ratio over 200 is not supported")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(factor, math.floor(height / beta / factor) * factor), max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (T, h, w, 3) -> uint8 (T, height, width, 3), bicubic (PIL), each frame alone."""
    from PIL import Image

    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC)) for f in frames])


def video_patches(frames: torch.Tensor, patch: int = PATCH, merge: int = MERGE, temporal: int = TEMPORAL
                  ) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(B, F, H, W, 3) frames in [0, 255] -> (pixel values (B, t*gh*gw, 3*temporal*patch^2), (t, gh, gw))."""
    B, F_, H, W, C = frames.shape
    factor = patch * merge
    if H % factor or W % factor:
        raise ValueError(f"video frames are {H}x{W}: both sides must be multiples of {factor} "
                         f"(patch {patch} x merge {merge}); resize them first (resize_frames)")
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=frames.device)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=frames.device)
    x = (frames.to(torch.float64) * (1 / 255)).to(torch.float32)  # rescaled in float64 first, as HF does
    x = (x - mean) / std  # (B, F, H, W, C)
    if pad := -F_ % temporal:
        x = torch.cat([x, x[:, -1:].expand(B, pad, H, W, C)], dim=1)
    t, gh, gw = x.shape[1] // temporal, H // patch, W // patch
    x = x.permute(0, 1, 4, 2, 3).reshape(B, t, temporal, C, gh // merge, merge, patch, gw // merge, merge, patch)
    # -> (B, t, gh/m, gw/m, m, m, C, temporal, patch, patch): merged groups contiguous, as the tower expects
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(B, t * gh * gw, C * temporal * patch * patch)
    return x, (t, gh, gw)


def video_token_count(grid: tuple[int, int, int], merge: int = MERGE) -> int:
    t, gh, gw = grid
    return t * gh * gw // (merge * merge)


def audio_token_count(frames: int) -> int:
    """Placeholders for `frames` Whisper frames: the tower's output length (0 below 3 frames)."""
    return max(0, ((frames - 1) // 2 + 1 - 2) // 2 + 1)


@lru_cache(maxsize=4)
def _extractor(n_mels: int):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE, hop_length=HOP)


def audio_features(waves: Sequence[np.ndarray], n_mels: int = WHISPER_MELS) -> tuple[torch.Tensor, torch.Tensor]:
    """16 kHz mono waveforms -> (features float32 (B, n_mels, Fr), valid bool (B, Fr)), right-padded with zeros."""
    extractor = _extractor(n_mels)
    feats = []
    for wave in waves:
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if wave.size < HOP:
            feats.append(np.zeros((n_mels, 0), np.float32))
            continue
        out = extractor(wave, sampling_rate=SAMPLE_RATE, padding="longest", truncation=False, return_tensors="np")
        feats.append(out["input_features"][0].astype(np.float32, copy=False))
    frames = max((f.shape[1] for f in feats), default=0)
    out = torch.zeros(len(feats), n_mels, frames)
    valid = torch.zeros(len(feats), frames, dtype=torch.bool)
    for i, f in enumerate(feats):
        out[i, :, : f.shape[1]] = torch.from_numpy(f)
        valid[i, : f.shape[1]] = True
    return out, valid
