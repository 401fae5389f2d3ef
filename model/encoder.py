"""The unified audio-video-text encoder: any non-empty subset of {T, V, A} -> one embedding.

    tokens_T = Embed(text ids) + pos_T + type_T          (B, Lt, D)
    tokens_V = PatchStem(frames) + pos_V + type_V         (B, Lv, D)  small patches -> MLP -> tubelets
    tokens_A = PatchStem(log-mel) + pos_A + type_A        (B, La, D)  small patches -> MLP -> patches
    (a training view may keep a subset of the V and A tokens; the stem then runs on those alone)
    h = Trunk(concat of the present modalities' tokens)   one shared transformer, one joint forward
    z = normalize(Head(Pool(h)))                          (B, E)  pooled over valid tokens (max by default)

`tokenize` and `fuse` are the two halves of forward: training tokenises a batch once and fuses
several views (T, V, A, TVA, hard negatives) from the same tokens.

Absent modalities are either left out of the sequence (a view such as "tv" for the whole batch)
or, with a per-row presence mask (B, 3), kept in the sequence and masked: masked tokens are never
attended to and never pooled. Text padding is masked the same way.

The backbone is behind `Trunk`: anything mapping (tokens (B, L, D), valid (B, L)) -> (B, L, D)
can replace it (for instance a pretrained omni LLM with adapters) without touching the tokenisers,
losses or evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from model.config import EncoderConfig
from model.modalities import MODALITIES, A, T, V

Batch = Mapping[str, torch.Tensor]  # keys: text_ids, text_mask, video, audio (any subset)


class TextTokens(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(cfg.max_text_len, cfg.dim))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = batch["text_ids"], batch["text_mask"]  # (B, L), (B, L)
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, L, D)
        return x, mask


class PatchStem(nn.Module):
    """Small patches -> a per-patch MLP (Linear, GELU, Linear, GELU) -> the `merge` patches of a token
    concatenated -> Linear to the trunk width. With hidden == 0 it is a plain linear patch embedding
    (ViT). All matrix products: far cheaper on CPU than convolution stems of the same depth."""

    def __init__(self, patch_dim: int, hidden: int, merge: int, dim: int):
        super().__init__()
        self.mlp = (nn.Sequential(nn.Linear(patch_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
                    if hidden else nn.Identity())
        self.proj = nn.Linear((hidden or patch_dim) * merge, dim)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """groups (B, L, merge, patch_dim): each token's patches -> (B, L, D)."""
        return self.proj(self.mlp(groups).flatten(-2))


def _kept(groups: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens a view keeps, before the stem runs: groups (B, L, G, P) and pos (L, D) -> the rows of
    `keep` (B, k) token indices (all of them when keep is None). The stem then only works on those."""
    if keep is None:
        return groups, pos
    B, k = keep.shape
    idx = keep.to(groups.device)
    # gather, not pos[idx]: the backward of advanced indexing accumulates in a nondeterministic order on CPU
    pos = pos.expand(B, *pos.shape).gather(1, idx[:, :, None].expand(B, k, pos.shape[-1]))
    return groups.gather(1, idx[:, :, None, None].expand(B, k, *groups.shape[2:])), pos


class VideoTokens(nn.Module):
    """Frames -> stem_patch^2-pixel patches -> PatchStem merging tubelet_frames x (tubelet_size/stem_patch)^2 patches."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.sp, self.tt, self.m = cfg.stem_patch, cfg.tubelet_frames, cfg.tubelet_size // cfg.stem_patch
        self.stem = PatchStem(3 * self.sp * self.sp, cfg.stem_dim, self.tt * self.m * self.m, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.video_tokens, cfg.dim))

    def forward(self, batch: Batch, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        frames = batch["video"]  # (B, F, H, W, 3) uint8 or float in [0, 255]
        B, F_, H, W, C = frames.shape
        sp, tt, m = self.sp, self.tt, self.m
        h, w = H // sp // m, W // sp // m
        # (B, F/tt, tt, h, m, sp, w, m, sp, C) -> tokens (F/tt, h, w), each of tt*m*m patches of sp*sp*C values
        x = frames.reshape(B, F_ // tt, tt, h, m, sp, w, m, sp, C).permute(0, 1, 3, 6, 2, 4, 7, 5, 8, 9)
        x = x.reshape(B, (F_ // tt) * h * w, tt * m * m, sp * sp * C)
        x, pos = _kept(x, self.pos, keep)  # gathered while still uint8: the cheapest place to drop tokens
        x = self.stem(x.to(self.pos.dtype) / 127.5 - 1.0) + pos  # (B, Lv, D)
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


class AudioTokens(nn.Module):
    """Log-mel -> per-clip standardisation -> stem_patch^2 patches -> PatchStem merging into
    audio_patch_mels x audio_patch_frames tokens."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.sp = cfg.stem_patch
        self.mm, self.mf = cfg.audio_patch_mels // self.sp, cfg.audio_patch_frames // self.sp
        self.frames = (cfg.decode.num_mel_frames // cfg.audio_patch_frames) * cfg.audio_patch_frames
        self.stem = PatchStem(self.sp * self.sp, cfg.stem_dim, self.mm * self.mf, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.audio_tokens, cfg.dim))

    def forward(self, batch: Batch, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mel = batch["audio"][:, :, : self.frames]  # (B, M, Fr) log-mel
        B, M, Fr = mel.shape
        sp, mm, mf = self.sp, self.mm, self.mf
        gm, gf = M // sp // mm, Fr // sp // mf
        mean = mel.mean(dim=(1, 2), keepdim=True)
        std = mel.std(dim=(1, 2), keepdim=True)
        x = (mel - mean) / (std + 1e-3)  # per-clip standardisation (over the whole clip): gain-invariant
        # (B, gm, mm, sp, gf, mf, sp) -> tokens (gm, gf), each of mm*mf patches of sp*sp values
        x = x.reshape(B, gm, mm, sp, gf, mf, sp).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, gm * gf, mm * mf, sp * sp)
        x, pos = _kept(x, self.pos, keep)
        x = self.stem(x) + pos  # (B, La, D)
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


class Block(nn.Module):
    """Pre-norm transformer block; attention never reads masked keys."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)
        self.p_attn = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3x (B, H, L, Dh)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.p_attn if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.mlp(self.norm2(x)))


class Trunk(nn.Module):
    """The shared backbone: (tokens (B, L, D), valid (B, L) bool) -> (B, L, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        attn_mask = valid[:, None, None, :]  # (B, 1, 1, L): True = may be attended
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.norm(x)


class Pool(nn.Module):
    """(h (B, L, D), valid (B, L)) -> (B, D) over valid tokens only.

    mean: masked mean. max: masked channel-wise max (a small salient object is not averaged away).
    attn: softmax attention of a learned query over the tokens."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.pooling not in ("mean", "max", "attn"):
            raise ValueError(f"pooling must be mean, max or attn, got {cfg.pooling!r}")
        self.kind = cfg.pooling
        self.query = nn.Parameter(torch.zeros(cfg.dim)) if cfg.pooling == "attn" else None

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean":
            w = valid.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
            return (h * w).sum(1) / w.sum(1).clamp(min=1.0)
        if self.kind == "max":
            return h.masked_fill(~valid.unsqueeze(-1), torch.finfo(h.dtype).min).amax(1)
        scores = (h @ self.query / h.shape[-1] ** 0.5).masked_fill(~valid, torch.finfo(h.dtype).min)  # (B, L)
        return (scores.softmax(-1).unsqueeze(-1) * h).sum(1)


class OmniEncoder(nn.Module):
    """forward(batch, modalities, present=None) -> L2-normalised embeddings (B, embed_dim)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizers = nn.ModuleDict({T: TextTokens(cfg), V: VideoTokens(cfg), A: AudioTokens(cfg)})
        self.type_embed = nn.ParameterDict({m: nn.Parameter(torch.zeros(cfg.dim)) for m in MODALITIES})
        self.trunk = Trunk(cfg)
        self.head = nn.Linear(cfg.dim, cfg.embed_dim)
        self.pool = Pool(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith(".pos") or name.startswith("type_embed"):
                nn.init.normal_(p, std=0.02)

    def tokenize(self, batch: Batch, modalities: tuple[str, ...], keep: Mapping[str, torch.Tensor] | None = None
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """modality -> (tokens (B, Lm, D) with type embedding, valid (B, Lm)). Views of one batch share these.

        `keep` maps video and/or audio to the token indices (B, k) each row keeps (training's token
        dropping): only those tokens are computed, in that order. Text always keeps every token."""
        keep = keep or {}
        out = {}
        for m in MODALITIES:
            if m in modalities:
                x, ok = self.tokenizers[m](batch, keep[m]) if m in keep else self.tokenizers[m](batch)
                out[m] = self._typed(m, x, ok)
        return out

    def _typed(self, m: str, x: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + self.type_embed[m], ok

    def fuse(self, tokens: Mapping[str, tuple[torch.Tensor, torch.Tensor]], modalities: tuple[str, ...],
             present: torch.Tensor | None = None) -> torch.Tensor:
        """One joint trunk forward over the concatenated tokens of `modalities` -> (B, E) unit vectors."""
        if not modalities:
            raise ValueError("at least one modality is needed")
        xs, valid = [], []
        for m in MODALITIES:
            if m not in modalities:
                continue
            x, ok = tokens[m]
            if present is not None:
                ok = ok & present[:, MODALITIES.index(m), None]
            xs.append(x)
            valid.append(ok)
        x, valid = torch.cat(xs, dim=1), torch.cat(valid, dim=1)  # (B, L, D), (B, L)
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling() and not bool(valid.any(dim=1).all()):
            raise ValueError("a row has no modality present: every row needs at least one of text, video, audio")
        h = self.trunk(x, valid)
        pooled = self.pool(h, valid)  # (B, D)
        projected = F.normalize(self.head(pooled), dim=-1)  # (B, E)
        if self.cfg.text_projection:
            return projected
        # reference-code variant: text-only rows skip the head (dim == embed_dim is enforced by the config)
        text_only = torch.tensor(tuple(m for m in MODALITIES if m in modalities) == (T,)).expand(pooled.shape[0])
        if present is not None and T in modalities:
            text_only = present[:, MODALITIES.index(T)] & ~present[:, [MODALITIES.index(m) for m in modalities if m != T]].any(1)
        return torch.where(text_only[:, None], F.normalize(pooled, dim=-1), projected)

    def forward(self, batch: Batch, modalities: tuple[str, ...], present: torch.Tensor | None = None) -> torch.Tensor:
        """Embed `modalities` of every row; `present` (B, 3) bool (order T, V, A) masks a modality per row."""
        return self.fuse(self.tokenize(batch, modalities), modalities, present)
