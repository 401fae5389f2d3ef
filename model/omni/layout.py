"""One view's token sequence for every row of a batch, laid out for the Qwen2.5-Omni thinker.

A row holds the view's modalities that it has (present, and with at least one valid token), in this order:

    [prompt] [media] [caption]
    media  V     <vision_bos> <VIDEO> x Lv <vision_eos>
           A     <audio_bos> <AUDIO> x La <audio_eos>
           V+A   <vision_bos> <audio_bos> (video chunk j, audio chunk j) ... <audio_eos> <vision_eos>
                 chunks of seconds_per_chunk: what Qwen2.5-Omni's processor writes for a video with its audio
    prompt       text_prompt for a text-only row, media_prompt for any other

So a row whose presence mask drops a modality is laid out exactly as that row alone in the smaller view.
Rows are left-padded to the longest: the last position holds every row's last token. Positions are the
thinker's own 3-D rotary indices (its get_rope_index, called row by row, since rows differ in layout).
Caption positions hold the pad id in `ids`: their embeddings are spliced in from the caption's tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from model.errors import PlaceholderMismatch
from model.modalities import MODALITIES, A, T, V
from model.omni.preprocess import video_token_count

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniThinkerModel

Segment = tuple[str, int, int] | list[int]  # (modality, first, end) of the row's valid tokens, or literal ids
NAMES = {T: "text", V: "video", A: "audio"}


@dataclass(frozen=True)
class LayoutSpec:
    """What a layout needs to know of the checkpoint and the backbone config."""

    video_id: int
    audio_id: int
    vision_bos: int
    vision_eos: int
    audio_bos: int
    audio_eos: int
    pad_id: int
    grid: tuple[int, int, int]  # every video's grid in patches (t, gh, gw)
    merge: int
    seconds_per_grid: float  # seconds one temporal patch spans
    position_id_per_seconds: int
    seconds_per_chunk: int
    text_prompt: tuple[int, ...] = ()
    media_prompt: tuple[int, ...] = ()


@dataclass
class Sequences:
    """A batch's sequences for one view: ids (B, L), mask (B, L), positions (3, B, L), all on the CPU, and
    splice: modality -> (flat destinations in B*L, flat sources in that modality's (B*Lm) tokens)."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    splice: dict[str, tuple[torch.Tensor, torch.Tensor]]


def row_modalities(valid: Mapping[str, torch.Tensor], modalities: tuple[str, ...], present: torch.Tensor | None
                   ) -> list[tuple[str, ...]]:
    """Each row's modalities: those of the view it has, present and with a valid token."""
    counts = {m: valid[m].sum(1).tolist() for m in modalities}
    rows = []
    for i in range(len(next(iter(counts.values())))):
        mods = tuple(m for m in MODALITIES if m in modalities and counts[m][i] > 0
                     and (present is None or bool(present[i, MODALITIES.index(m)])))
        if not mods:
            raise ValueError(f"row {i} has no modality present: every row needs at least one of text, video, audio")
        rows.append(mods)
    return rows


def _video_times(spec: LayoutSpec) -> torch.Tensor:
    """Each video token's temporal position, as get_rope_index computes it (float32 product, then truncated)."""
    t, gh, gw = spec.grid
    seconds = torch.tensor([spec.seconds_per_grid]).float()
    times = (torch.arange(t) * seconds * spec.position_id_per_seconds).long()
    return times.repeat_interleave(gh * gw // (spec.merge * spec.merge))


def row_segments(mods: tuple[str, ...], counts: Mapping[str, int], spec: LayoutSpec, chunked_index) -> list[Segment]:
    """The segments of one row (see the module docstring); `chunked_index` is the thinker's get_chunked_index."""
    segments: list[Segment] = [list(spec.text_prompt if mods == (T,) else spec.media_prompt)]
    if V in mods and A in mods:
        per_chunk = int(spec.position_id_per_seconds * spec.seconds_per_chunk)
        video = chunked_index(_video_times(spec).tolist(), per_chunk, 0)  # lists: its loop is slow on tensors
        audio = chunked_index(list(range(counts[A])), per_chunk, 0)
        segments.append([spec.vision_bos, spec.audio_bos])
        for j in range(max(len(video), len(audio))):
            segments += [(V, *video[j])] if j < len(video) else []
            segments += [(A, *audio[j])] if j < len(audio) else []
        segments.append([spec.audio_eos, spec.vision_eos])
    elif V in mods:
        segments += [[spec.vision_bos], (V, 0, counts[V]), [spec.vision_eos]]
    elif A in mods:
        segments += [[spec.audio_bos], (A, 0, counts[A]), [spec.audio_eos]]
    if T in mods:
        segments.append((T, 0, counts[T]))
    return segments


@dataclass(frozen=True)
class RowLayout:
    """A row's unpadded layout: its segments, ids (L,) and rotary positions (3, L)."""

    segments: list[Segment]
    ids: torch.Tensor
    positions: torch.Tensor


def row_layout(mods: tuple[str, ...], counts: Mapping[str, int], spec: LayoutSpec,
               thinker: Qwen2_5OmniThinkerModel) -> RowLayout:
    """One row's layout; the positions come from the thinker's get_rope_index. Audio lengths go to it in
    frames, which it only turns into token counts with the tower's formula: 4n frames give n tokens."""
    segments = row_segments(mods, counts, spec, thinker.get_chunked_index)
    fill = {T: spec.pad_id, V: spec.video_id, A: spec.audio_id}
    ids = torch.tensor([i for seg in segments
                        for i in (seg if isinstance(seg, list) else [fill[seg[0]]] * (seg[2] - seg[1]))], dtype=torch.long)
    _check_placeholders(ids, counts, spec)
    has_v, has_a = V in mods, A in mods
    positions, _ = thinker.get_rope_index(
        ids[None], None, torch.tensor([spec.grid]) if has_v else None, torch.ones(1, len(ids), dtype=torch.long),
        has_v and has_a, torch.tensor([4 * counts[A]]) if has_a else None,
        torch.tensor([spec.seconds_per_grid]) if has_v else None)
    return RowLayout(segments, ids, positions[:, 0])


def _check_placeholders(ids: torch.Tensor, counts: Mapping[str, int], spec: LayoutSpec) -> None:
    """Each media placeholder count equals the features spliced in (masked_scatter would truncate silently)."""
    for m, token in ((V, spec.video_id), (A, spec.audio_id)):
        placeholders = int((ids == token).sum())
        if placeholders != counts.get(m, 0):
            raise PlaceholderMismatch(NAMES[m], placeholders, counts.get(m, 0))


def build_sequences(valid: Mapping[str, torch.Tensor], modalities: tuple[str, ...], present: torch.Tensor | None,
                    spec: LayoutSpec, thinker: Qwen2_5OmniThinkerModel, cache: dict | None = None) -> Sequences:
    """The view's sequences for a batch whose tokens have these valid masks {m: (B, Lm) bool}. Rows with the
    same modalities and counts share one layout; `cache` (a dict) keeps layouts across calls."""
    valid = {m: v.cpu() for m, v in valid.items() if m in modalities}
    cache = {} if cache is None else cache
    layouts = []
    for i, mods in enumerate(row_modalities(valid, modalities, present)):
        counts = {m: int(valid[m][i].sum()) for m in mods}
        if V in mods and counts[V] != video_token_count(spec.grid, spec.merge):
            raise PlaceholderMismatch(NAMES[V], video_token_count(spec.grid, spec.merge), counts[V], row=i)
        key = (mods, tuple(counts.items()))
        if key not in cache:
            if len(cache) >= 4096:
                cache.clear()
            try:
                cache[key] = row_layout(mods, counts, spec, thinker)
            except PlaceholderMismatch as exc:
                raise PlaceholderMismatch(exc.modality, exc.placeholders, exc.features, row=i) from None
        layouts.append(cache[key])
    B, L = len(layouts), max(len(r.ids) for r in layouts)
    ids = torch.full((B, L), spec.pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.bool)
    positions = torch.ones((3, B, L), dtype=torch.long)  # what get_rope_index gives padding
    dst: dict[str, list[int]] = {m: [] for m in modalities}
    src: dict[str, list[int]] = {m: [] for m in modalities}
    for i, row in enumerate(layouts):
        start = L - len(row.ids)  # left padding
        ids[i, start:], mask[i, start:], positions[:, i, start:] = row.ids, True, row.positions
        where = {m: (valid[m][i].nonzero().squeeze(1) + i * valid[m].shape[1]).tolist() for m in valid}  # flat, in order
        pos = i * L + start
        for seg in row.segments:
            if isinstance(seg, list):
                pos += len(seg)
                continue
            m, a, b = seg
            dst[m] += range(pos, pos + b - a)
            src[m] += where[m][a:b]
            pos += b - a
    splice = {m: (torch.tensor(dst[m], dtype=torch.long), torch.tensor(src[m], dtype=torch.long)) for m in modalities if dst[m]}
    return Sequences(ids, mask, positions, splice)
