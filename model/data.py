"""Decoded splits held in memory (ClipBank) and the batches the encoder takes.

A split is decoded once through the FeatureCache (in parallel, with a progress bar) into tensors:
frames uint8 (N, F, H, W, 3), mel float32 (N, M, Fr), has_audio bool (N,), plus ids and captions
(each clip's main caption, and every caption it has when its record carries alt_texts).
Batches are dicts with the keys the encoder reads: text_ids, text_mask, video, audio.

For the Qwen2.5-Omni backbone (audio_input "waveform") `mel` holds 16 kHz waveforms (N, S) instead, and
make_batch computes their Whisper features per batch (audio (B, 128, Fr), plus audio_mask (B, Fr)), so
the L_T positive's audio can be augmented as a waveform before its features are computed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from model.cache import FeatureCache
from model.manifest import Record, read_split, resolve_media
from model.media import DecodeConfig, MediaLimits
from model.parallel import map_with_progress
from model.text import TextTokenizer

if TYPE_CHECKING:
    from model.config import AnyConfig
    from model.omni.text import OmniTokenizer



def default_cache_dir() -> Path:
    """$OMNIRETRIEVER_CACHE/features, or .cache/omniretriever/features under the working directory."""
    return Path(os.environ.get("OMNIRETRIEVER_CACHE", ".cache/omniretriever")) / "features"


@dataclass
class ClipBank:
    ids: list[str]
    texts: list[str]  # the main caption of each clip (the one evaluation queries with)
    frames: torch.Tensor  # uint8 (N, F, H, W, 3)
    mel: torch.Tensor  # float32 (N, M, Fr)
    has_audio: torch.Tensor  # bool (N,)
    captions: list[tuple[str, ...]] | None = None  # every caption of each clip, main first; None: texts only
    audio_input: str = "log_mel"  # "waveform": mel holds float32 (N, S) 16 kHz waveforms (model.media.decode_clip)

    def __len__(self) -> int:
        return len(self.ids)

    def all_texts(self) -> list[str]:
        """Every caption in the bank (what a tokenizer is trained on)."""
        return self.texts if self.captions is None else [t for caps in self.captions for t in caps]

    def sample_texts(self, idx: torch.Tensor, gen: torch.Generator) -> list[str]:
        """One caption per row of `idx`, drawn uniformly from the clip's captions with `gen`
        (the main caption when the bank has no others; `gen` is then left untouched)."""
        rows = idx.tolist()
        if self.captions is None:
            return [self.texts[i] for i in rows]
        draw = torch.rand(len(rows), generator=gen).tolist()
        return [self.captions[i][min(int(u * len(self.captions[i])), len(self.captions[i]) - 1)]
                for i, u in zip(rows, draw)]


_worker_cache: FeatureCache | None = None


def _init_worker(cache_dir: str, config: DecodeConfig, limits: MediaLimits, audio_input: str = "log_mel") -> None:
    global _worker_cache
    torch.set_num_threads(1)
    _worker_cache = FeatureCache(cache_dir, config, limits, audio_input)


def _decode_one(paths: tuple[str, str]) -> tuple[np.ndarray, np.ndarray, bool]:
    assert _worker_cache is not None
    clip = _worker_cache.get(*paths)
    return clip.frames, clip.mel, clip.has_audio


def load_bank(data_root: str | Path, split: str, config: DecodeConfig | AnyConfig, *,
              cache_dir: str | Path | None = None, limits: MediaLimits = MediaLimits(), workers: int | None = None,
              limit: int | None = None, progress: bool = True) -> ClipBank:
    """Decode (or read from the cache) every record of a split for the encoder `config`: its decode settings
    and the audio it takes (log-mel, or waveforms for a backbone that computes its own audio features). Bare
    DecodeConfig settings mean log-mel audio (the tiny encoder's).

    A bad record stops the load with its typed error (ManifestError, PathEscapeError, MediaError),
    which names the manifest line or the media file; nothing is skipped silently."""
    decode, audio_input = (config, "log_mel") if isinstance(config, DecodeConfig) else (config.decode, config.audio_input)
    cache_dir = cache_dir or default_cache_dir()
    records: list[Record] = read_split(data_root, split)[:limit]
    paths = [(str(resolve_media(data_root, r.video)), str(resolve_media(data_root, r.audio))) for r in records]
    workers = workers or min(os.cpu_count() or 1, 8)
    frames, mels, flags = [], [], []
    decoded = map_with_progress(_decode_one, paths, workers=workers, label=f"decoding {split}", progress=progress,
                                transient=True, context=None, initializer=_init_worker,
                                initargs=(str(cache_dir), decode, limits, audio_input))
    for f, m, h in decoded:
        frames.append(f)
        mels.append(m)
        flags.append(h)
    captions = [r.captions for r in records] if any(r.alt_texts for r in records) else None
    # C-contiguous whatever the arrays came from (a decoder or the cache): the layout decides the rounding
    return ClipBank(ids=[r.id for r in records], texts=[r.text for r in records],
                    frames=torch.from_numpy(np.ascontiguousarray(np.stack(frames))),
                    mel=torch.from_numpy(np.ascontiguousarray(np.stack(mels))),
                    has_audio=torch.tensor(flags, dtype=torch.bool), captions=captions, audio_input=audio_input)


def make_batch(bank: ClipBank, idx: torch.Tensor | list[int], tokenizer: TextTokenizer | OmniTokenizer,
               texts: list[str] | None = None, waves: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The encoder's input for rows `idx` of the bank (captions replaced by `texts` when given). A waveform
    bank's batch holds the Whisper features of its waveforms (of `waves` (B, S) when given: augmented ones)
    and their audio_mask, the OmniBatch of model.omni.backbone."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    ids, mask = tokenizer(texts if texts is not None else [bank.texts[i] for i in idx.tolist()])
    if bank.audio_input != "waveform":
        return {"text_ids": ids, "text_mask": mask, "video": bank.frames[idx], "audio": bank.mel[idx]}
    from model.omni.preprocess import audio_features

    features, valid = audio_features(list((bank.mel[idx] if waves is None else waves).numpy()))
    return {"text_ids": ids, "text_mask": mask, "video": bank.frames[idx], "audio": features, "audio_mask": valid}


def swap_slot(per_modality: Mapping[str, tuple[torch.Tensor, ...]], slot: str,
              partner: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    """Hard-negative tuples: row i keeps its own modalities except `slot`, whose tensors come from row partner[i].

    Works on anything keyed by modality with row-aligned tensors, e.g. the encoder's tokens
    {m: (tokens (B, Lm, D), valid (B, Lm))}, so hard negatives reuse the batch's tokenisation.
    """
    out = dict(per_modality)
    out[slot] = tuple(t[partner] for t in per_modality[slot])
    return out


def concat_tokens(a: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                  b: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Stack two token sets row-wise, padding the shorter sequence (text) with masked positions."""
    out = {}
    for m in a:
        (xa, va), (xb, vb) = a[m], b[m]
        width = max(xa.shape[1], xb.shape[1])
        pad = lambda x, v: (F.pad(x, (0, 0, 0, width - x.shape[1])), F.pad(v, (0, width - v.shape[1])))  # noqa: E731
        (xa, va), (xb, vb) = pad(xa, va), pad(xb, vb)
        out[m] = (torch.cat([xa, xb]), torch.cat([va, vb]))
    return out
