"""Decoded splits held in memory (ClipBank) and the batches the encoder takes.

A split is decoded once through the FeatureCache (in parallel, with a progress bar) into tensors:
frames uint8 (N, F, H, W, 3), mel float32 (N, M, Fr), has_video and has_audio bool (N,), plus ids and
captions (each clip's main caption, and every caption it has when its record carries alt_texts).
Batches are dicts with the keys the encoder reads: text_ids, text_mask, video, audio.

An item without video or without audio (null in the manifest, or a file without that stream) holds
zeros there and False in has_video / has_audio; `ClipBank.has(view)` says which rows may be embedded
in a view, and nothing downstream embeds the zeros. With a Windowing, a long clip becomes one row per
window (its id repeated, `spans` saying where each lies); without one, a row is a record.

For the Qwen2.5-Omni backbone (audio_input "waveform") `mel` holds 16 kHz waveforms (N, S) instead, and
make_batch computes their Whisper features per batch (audio (B, 128, Fr), plus audio_mask (B, Fr)), so
the L_T positive's audio can be augmented as a waveform before its features are computed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from model.cache import FeatureCache
from model.errors import ManifestError, MediaError, OmniRetrieverError, PathEscapeError
from model.manifest import Record, manifest_path, resolve_media, scan_manifest
from model.media import DecodeConfig, MediaLimits, WindowedClip, Windowing
from model.modalities import A, T, V, VIEWS
from model.parallel import fork_safe_context, map_with_progress
from model.text import TextTokenizer

if TYPE_CHECKING:
    from model.config import AnyConfig
    from model.omni.text import OmniTokenizer



def default_cache_dir() -> Path:
    """$OMNIRETRIEVER_CACHE/features, or .cache/omniretriever/features under the working directory."""
    return Path(os.environ.get("OMNIRETRIEVER_CACHE", ".cache/omniretriever")) / "features"


@dataclass(frozen=True)
class Reject:
    """A record load_bank left out (on_error="skip"): its manifest line, its id (None when the line does not
    say), the field at fault ("video" or "audio"; None when it is the line as a whole), why, and the kind
    of error (ManifestError, PathEscapeError, MediaError)."""

    line: int | None
    id: str | None
    field: str | None
    reason: str
    error: str

    def to_dict(self) -> dict:
        return {"line": self.line, "id": self.id, "field": self.field, "reason": self.reason, "error": self.error}


class NoRecordsError(ManifestError):
    """A manifest with no record left to load: empty, or every record rejected (`rejects` says why)."""

    def __init__(self, source: str | Path, reason: str, rejects: list[Reject] | None = None):
        super().__init__(source, None, reason)
        self.rejects = list(rejects or [])

    def __reduce__(self):
        return (type(self), (self.source, self.reason, self.rejects))


@dataclass
class ClipBank:
    ids: list[str]
    texts: list[str]  # the main caption of each clip (the one evaluation queries with)
    frames: torch.Tensor  # uint8 (N, F, H, W, 3)
    mel: torch.Tensor  # float32 (N, M, Fr)
    has_audio: torch.Tensor  # bool (N,)
    captions: list[tuple[str, ...]] | None = None  # every caption of each clip, main first; None: texts only
    audio_input: str = "log_mel"  # "waveform": mel holds float32 (N, S) 16 kHz waveforms (model.media.decode_clip)
    rejects: list[Reject] = field(default_factory=list)  # records left out by load_bank(on_error="skip")
    has_video: torch.Tensor | None = None  # bool (N,); None: every row has video
    spans: list[tuple[float, float]] | None = None  # each row's (start, end) seconds in its item; None: whole clips
    seconds: list[float] | None = None  # each row's item's length, seconds (None when not recorded)

    def __post_init__(self) -> None:
        if self.has_video is None:
            self.has_video = torch.ones(len(self.ids), dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.ids)

    def has(self, modalities: str | tuple[str, ...]) -> torch.Tensor:
        """bool (N,): the rows that hold every one of `modalities` (a view name such as "av", or a tuple
        of modalities). Captions are always there; video and audio not always."""
        mods = VIEWS[modalities] if isinstance(modalities, str) else modalities
        flags = {T: torch.ones(len(self.ids), dtype=torch.bool), V: self.has_video, A: self.has_audio}
        out = torch.ones(len(self.ids), dtype=torch.bool)
        for m in mods:
            out &= flags[m]
        return out

    @property
    def complete(self) -> bool:
        """Whether every row holds video and audio (every dataset of the benchmark's own format does)."""
        return bool(self.has_video.all() and self.has_audio.all())

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


_worker_windowing: Windowing | None = None


def _init_worker(cache_dir: str, config: DecodeConfig, limits: MediaLimits, audio_input: str = "log_mel",
                 windowing: Windowing | None = None) -> None:
    global _worker_cache, _worker_windowing
    torch.set_num_threads(1)
    _worker_cache = FeatureCache(cache_dir, config, limits, audio_input)
    _worker_windowing = windowing


def _decode_one(paths: tuple[str | None, str | None]) -> WindowedClip | OmniRetrieverError:
    """In a worker: _decode_with the worker's cache and windowing."""
    assert _worker_cache is not None
    return _decode_with(_worker_cache, _worker_windowing, paths)


def _decode_with(cache: FeatureCache, windowing: Windowing | None,
                 paths: tuple[str | None, str | None]) -> WindowedClip | OmniRetrieverError:
    """A record's windows (one, the whole clip, without a Windowing), or the typed error its media raised
    (returned, so the caller can say which record it was)."""
    try:
        return cache.get_windows(*paths, windowing)
    except OmniRetrieverError as exc:
        return exc


def _located(exc: OmniRetrieverError, source: Path, line: int, rid: str) -> OmniRetrieverError:
    """The same error with the manifest line and the record's id added to its reason."""
    where = f"manifest {source}:{line}, id {rid!r}"
    if isinstance(exc, PathEscapeError):
        return PathEscapeError(exc.path, exc.root, f"{exc.reason} ({where})")
    if isinstance(exc, MediaError):
        return type(exc)(exc.path, f"{exc.reason} ({where})")
    return exc


def _media_field(exc: OmniRetrieverError, paths: tuple[str | None, str | None]) -> str:
    """Which of the record's media fields an error is about: the audio path when it names that one (or the
    record has no video), else video."""
    if paths[0] is None or (isinstance(exc, MediaError) and paths[1] is not None and paths[1] != paths[0]
                            and Path(exc.path) == Path(paths[1])):
        return "audio"
    return "video"


@dataclass(frozen=True)
class ManifestEntry:
    """A usable record of a manifest: its line, the line's text, the Record and its media paths resolved
    inside the data root (None for a modality it does not have)."""

    line: int
    raw: str
    record: Record
    paths: tuple[str | None, str | None]  # video, audio


def manifest_entries(source: Path, data_root: str | Path,
                     reject: Callable[[int | None, str | None, str | None, OmniRetrieverError], None], *,
                     limit: int | None = None,
                     check: Callable[[Record], None] | None = None) -> list[ManifestEntry]:
    """The records of manifest `source` that can be decoded: every line is read first (an unreadable
    manifest raises ManifestError), then the first `limit` records that parse are checked. `reject(line, id,
    field, error)` is told of each that cannot be used, and may raise to stop: a malformed line or a
    repeated id (ManifestError, field None), a record `check` refuses (its error, field None), a media path
    leaving the data root (PathEscapeError, the field)."""
    parsed: list[tuple[int, str, Record]] = []
    seen: dict[str, int] = {}
    for item in scan_manifest(source):
        err = item.error
        if err is None and item.record.id in seen:
            err = ManifestError(source, item.line, f"duplicate id (first seen on line {seen[item.record.id]})",
                                item.record.id)
        if err is not None:
            reject(item.line, err.record_id, None, err)
            continue
        seen[item.record.id] = item.line
        parsed.append((item.line, item.raw, item.record))
    out: list[ManifestEntry] = []
    for line, raw, rec in parsed[:limit]:
        if check is not None:
            try:
                check(rec)
            except OmniRetrieverError as exc:
                reject(line, rec.id, None, exc)
                continue
        try:
            resolved: list[str | None] = []
            for fld in ("video", "audio"):
                rel = getattr(rec, fld)
                resolved.append(None if rel is None else str(resolve_media(data_root, rel)))
        except PathEscapeError as exc:
            reject(line, rec.id, fld, exc)
            continue
        out.append(ManifestEntry(line, raw, rec, (resolved[0], resolved[1])))
    return out


def load_bank(data_root: str | Path, split: str, config: DecodeConfig | AnyConfig, *,
              cache_dir: str | Path | None = None, limits: MediaLimits = MediaLimits(), workers: int | None = None,
              limit: int | None = None, progress: bool = True, manifest: str | Path | None = None,
              on_error: Literal["raise", "skip"] = "raise", windowing: Windowing | None = None) -> ClipBank:
    """Decode (or read from the cache) every record of a split for the encoder `config`: its decode settings
    and the audio it takes (log-mel, or waveforms for a backbone that computes its own audio features). Bare
    DecodeConfig settings mean log-mel audio (the tiny encoder's).

    The records are DATA/manifests/<split>.jsonl's, or those of `manifest` when given (a validation
    report's validated.jsonl, say); their media paths are relative to `data_root` and confined to it.

    on_error="raise" (the default, for training and evaluation): a bad record stops the load with its
    typed error (ManifestError, PathEscapeError, MediaError), which names the manifest line and the
    record's id (and the media file). on_error="skip": a bad record is left out and listed in the bank's
    `rejects` (line, id, field, reason); a manifest with nothing left raises NoRecordsError carrying them.
    Nothing is skipped silently. `limit` keeps the first `limit` records that parse, as
    the manifest orders them (their media are checked after).

    A record without video or audio loads with has_video / has_audio False (see ClipBank.has). With
    `windowing`, a clip longer than its window loads as one row per window (index build's long media);
    training and evaluation load whole clips."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    decode, audio_input = (config, "log_mel") if isinstance(config, DecodeConfig) else (config.decode, config.audio_input)
    cache_dir = cache_dir or default_cache_dir()
    source = Path(manifest) if manifest is not None else manifest_path(data_root, split)
    rejects: list[Reject] = []

    def reject(line: int | None, rid: str | None, fld: str | None, exc: OmniRetrieverError) -> None:
        if on_error == "raise":
            raise (_located(exc, source, line, rid) if isinstance(exc, PathEscapeError) else exc) from None
        rejects.append(Reject(line, rid, fld, getattr(exc, "reason", str(exc)), type(exc).__name__))

    jobs = [(e.line, e.record, e.paths) for e in manifest_entries(source, data_root, reject, limit=limit)]

    workers = workers or min(os.cpu_count() or 1, 8)
    frames, mels, rows = [], [], []
    label = f"decoding {source.stem if manifest is not None else split}"
    if workers <= 1:  # in this process (no fork), on one op thread as a worker decodes: the same features
        local = FeatureCache(cache_dir, decode, limits, audio_input)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            decoded = list(map_with_progress(partial(_decode_with, local, windowing), [paths for _, _, paths in jobs],
                                             workers=1, label=label, progress=progress, transient=True))
        finally:
            torch.set_num_threads(threads)
    else:
        decoded = map_with_progress(_decode_one, [paths for _, _, paths in jobs], workers=workers, label=label,
                                    progress=progress, transient=True, context=fork_safe_context(),
                                    initializer=_init_worker,
                                    initargs=(str(cache_dir), decode, limits, audio_input, windowing))
    for (line, rec, paths), out in zip(jobs, decoded):
        if isinstance(out, OmniRetrieverError):
            if on_error == "raise":
                raise _located(out, source, line, rec.id) from None
            reject(line, rec.id, _media_field(out, paths), out)
            continue
        frames.append(out.frames)
        mels.append(out.mel)
        rows += [(rec, span, out) for span in out.spans]
    rejects.sort(key=lambda r: (r.line is None, r.line or 0))
    if not rows:
        why = f"all {len(rejects)} records were rejected" if rejects else "it holds no record"
        raise NoRecordsError(source, f"nothing to load: {why}", rejects)
    records = [rec for rec, _, _ in rows]
    captions = [r.captions for r in records] if any(r.alt_texts for r in records) else None
    # C-contiguous whatever the arrays came from (a decoder or the cache): the layout decides the rounding
    return ClipBank(ids=[r.id for r in records], texts=[r.text for r in records],
                    frames=torch.from_numpy(np.ascontiguousarray(np.concatenate(frames))),
                    mel=torch.from_numpy(np.ascontiguousarray(np.concatenate(mels))),
                    has_audio=torch.tensor([c.has_audio for _, _, c in rows], dtype=torch.bool), captions=captions,
                    audio_input=audio_input, rejects=rejects,
                    has_video=torch.tensor([c.has_video for _, _, c in rows], dtype=torch.bool),
                    spans=[span for _, span, _ in rows], seconds=[c.seconds for _, _, c in rows])


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
