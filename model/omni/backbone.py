"""QwenOmniEncoder: a pretrained Qwen2.5-Omni thinker behind the encoder interface, LoRA on its LLM.

    towers = vision(frames), audio(Whisper features)     frozen, computed ONCE per batch (tokenize)
    h      = LLM(spliced sequence of a view)              frozen + LoRA on q/k/v; one forward per view (fuse)
    z      = normalize(Head(Pool(h)))                     (B, E); Head = Linear-GELU-Linear (trained)

The structure mirrors model.encoder.OmniEncoder: `tokenize(batch, modalities, keep)` -> {m: (x (B, Lm, H),
valid (B, Lm))} (the caption's embeddings, the towers' outputs), `fuse(tokens, modalities, present)` ->
(B, E) unit vectors, `forward = fuse(tokenize(...))`. The tokens have the tiny encoder's shape, so
model.data.swap_slot (hard negatives) and concat_tokens (positive + hard in one pass) work on them
unchanged. fuse lays each row out with model.omni.layout (prompt, placeholders, A/V interleave,
caption; left padding; the thinker's rotary positions) and splices the cached tokens into the
placeholders, after checking every count (PlaceholderMismatch names the modality and both counts).

The batch (`OmniBatch`) keeps the tiny batch's keys with this backbone's contents:
    text_ids    int64 (B, Lt)      caption ids from OmniTokenizer (the checkpoint's tokenizer), no prompt
    text_mask   bool (B, Lt)
    video       uint8 or float in [0, 255] (B, F, S, S, 3)   decode.num_frames frames of decode.frame_size
                (a multiple of 28; 224 by default), normalised and patchified here, on the model's device
    audio       float32 (B, 128, Fr)   Whisper features of 16 kHz audio (preprocess.audio_features)
    audio_mask  bool (B, Fr)          valid frames, a prefix of each row (none: the row has no audio)

How training uses it (model/train.py, model/data.py, model/store.py, model/omni/store.py):
  - the bank holds frames at decode.frame_size and 16 kHz waveforms (config.audio_input "waveform");
    make_batch computes their Whisper features and tokenizes with OmniTokenizer (an OmniBatch)
  - the L_T positive's audio is augmented as a waveform (augment_waveform) before its features;
    augment_video's float frames are accepted as they are
  - token_keep must stay 1.0 (train refuses anything else): positions follow the full grid
  - build() makes QwenOmniEncoder.from_checkpoint(--checkpoint, cfg); param_groups skips frozen weights
  - checkpoints and the saved model hold trainable_state_dict() (LoRA + head) and checkpoint.identity(),
    never the frozen base; loading and --resume check the base's digest (OmniCheckpoint.check_identity)
  - on a GPU: attn_implementation goes to from_pretrained, gradient_checkpointing recomputes the LLM's layers
    (set_gradient_checkpointing), and under training's bfloat16 autocast (model.train.forward_autocast) the
    head runs in float32 (fuse), so embeddings and the loss are float32
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from model.errors import PlaceholderMismatch
from model.modalities import A, T, V
from model.omni.checkpoint import OmniCheckpoint, find_checkpoint, load_thinker
from model.omni.config import OmniBackboneConfig
from model.omni.layout import LayoutSpec, Sequences, build_sequences
from model.omni.preprocess import audio_token_count, video_patches, video_token_count
from model.omni.text import OmniTokenizer

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniThinkerModel
    from transformers.modeling_outputs import BaseModelOutputWithPast

Tokens = Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (x (B, Lm, H), valid (B, Lm))


class OmniBatch(TypedDict, total=False):
    """This backbone's batch (see the module docstring); a view reads only its modalities' keys."""

    text_ids: torch.Tensor  # int64 (B, Lt)
    text_mask: torch.Tensor  # bool (B, Lt)
    video: torch.Tensor  # uint8 or float (B, F, S, S, 3)
    audio: torch.Tensor  # float32 (B, 128, Fr) Whisper features
    audio_mask: torch.Tensor  # bool (B, Fr)


class QwenOmniEncoder(nn.Module):
    """forward(batch, modalities, present=None) -> L2-normalised embeddings (B, embed_dim)."""

    def __init__(self, thinker: Qwen2_5OmniThinkerModel, cfg: OmniBackboneConfig, checkpoint: OmniCheckpoint,
                 tokenizer: OmniTokenizer):
        super().__init__()
        self.cfg, self.checkpoint, self.tokenizer = cfg, checkpoint, tokenizer
        self.thinker = thinker
        text = thinker.config.text_config
        if cfg.attention == "bidirectional" and "sliding_attention" in text.layer_types:
            raise ValueError("attention='bidirectional' is not supported with sliding-window layers")
        self.spec = self._layout_spec()
        self._layouts: dict = {}  # row layouts by (modalities, counts): pure functions of the spec, kept across batches
        self.lora_modules = self._add_lora()
        width = text.hidden_size * (text.num_hidden_layers if cfg.pooling == "last_all_layers" else 1)
        self.head = (nn.Sequential(nn.Linear(width, cfg.head_hidden), nn.GELU(), nn.Linear(cfg.head_hidden, cfg.embed_dim))
                     if cfg.head == "mlp" else nn.Identity())
        self.embed_dim = cfg.embed_dim if cfg.head == "mlp" else width
        self.set_gradient_checkpointing(cfg.gradient_checkpointing)

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: OmniBackboneConfig = OmniBackboneConfig()) -> "QwenOmniEncoder":
        """Validate and load a local checkpoint (either layout), then add LoRA and the head."""
        checkpoint = find_checkpoint(path)
        thinker = load_thinker(checkpoint, cfg.dtype, cfg.interleave_seconds, cfg.attn_implementation)
        tokenizer = OmniTokenizer.load(checkpoint.tokenizer_path, cfg.max_text_len, checkpoint.pad_token_id)
        return cls(thinker, cfg, checkpoint, tokenizer)

    def _layout_spec(self) -> LayoutSpec:
        cfg, config, ids = self.cfg, self.thinker.config, self.checkpoint.special_ids
        vision = config.vision_config
        factor = vision.patch_size * vision.spatial_merge_size
        if cfg.decode.frame_size % factor:
            raise ValueError(f"decode.frame_size={cfg.decode.frame_size} must be a multiple of {factor} "
                             f"(the vision tower's patch_size x spatial_merge_size)")
        side = cfg.decode.frame_size // vision.patch_size
        grid = (-(-cfg.decode.num_frames // vision.temporal_patch_size), side, side)
        return LayoutSpec(
            video_id=ids["video_token_id"], audio_id=ids["audio_token_id"], vision_bos=ids["vision_start_token_id"],
            vision_eos=ids["vision_end_token_id"], audio_bos=ids["audio_start_token_id"],
            audio_eos=ids["audio_end_token_id"], pad_id=self.checkpoint.pad_token_id, grid=grid,
            merge=vision.spatial_merge_size, seconds_per_grid=vision.temporal_patch_size / cfg.frames_per_second,
            position_id_per_seconds=config.position_id_per_seconds, seconds_per_chunk=config.seconds_per_chunk,
            text_prompt=tuple(self.tokenizer.encode(cfg.text_prompt)),
            media_prompt=tuple(self.tokenizer.encode(cfg.media_prompt)))

    def _add_lora(self) -> tuple[str, ...]:
        """Freeze the thinker, then add LoRA to the LLM modules lora_targets names (and only those)."""
        from peft import LoraConfig, inject_adapter_in_model

        cfg = self.cfg
        self.thinker.requires_grad_(False)
        targets = [n for n, _ in self.thinker.named_modules() if re.fullmatch(cfg.lora_targets, n)]  # peft's rule for a str
        outside = [n for n in targets if not n.startswith("language_model.")]
        if not targets or outside:
            found = f"modules outside the language model ({', '.join(outside[:3])})" if outside else "no module"
            raise ValueError(f"lora_targets={cfg.lora_targets!r} matches {found}: LoRA goes on the LLM only, "
                             f"the towers are frozen and computed once per batch")
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_targets, bias="none")
        inject_adapter_in_model(lora, self.thinker)
        for name, p in self.thinker.named_parameters():
            p.requires_grad_("lora_" in name)
            if "lora_" in name and p.dtype != torch.float32:
                p.data = p.data.float()  # adapters train in float32 over a bfloat16 base
        return tuple(targets)

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Recompute the LLM's decoder layers in the backward instead of keeping their activations (in training
        mode only; the towers run without gradients anyway). Non-reentrant torch.utils.checkpoint reaches LoRA
        inside a frozen layer without its input requiring grad, so the hook transformers adds for that is removed:
        this backbone's input embeddings are computed without gradient, and must stay so."""
        llm = self.thinker.language_model
        if on and not llm.is_activation_checkpointing:
            llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            llm.disable_input_require_grads()
        elif not on and llm.is_activation_checkpointing:
            llm.activation_checkpointing_disable()

    def train(self, mode: bool = True) -> "QwenOmniEncoder":
        """The towers stay in eval mode: they are frozen and their outputs shared by every view."""
        super().train(mode)
        self.thinker.visual.eval()
        self.thinker.audio_tower.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights training changes: LoRA's and the head's."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load LoRA's and the head's weights (what trainable_state_dict gave), exactly those: a missing or
        unexpected key is an error naming it."""
        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"trainable weights do not match this backbone's LoRA and head: "
                             f"missing {missing[:3]} ({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)})")
        result = self.load_state_dict(dict(state), strict=False)
        assert not result.unexpected_keys, result.unexpected_keys

    # --- tokenize: the batch's caption embeddings and tower outputs, once ---

    def tokenize(self, batch: OmniBatch, modalities: tuple[str, ...], keep: Mapping[str, torch.Tensor] | None = None
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """modality -> (x (B, Lm, H), valid (B, Lm)); every view of the batch is fused from these."""
        if keep:
            raise ValueError("token dropping (keep, token_keep < 1) is not supported by the Qwen2.5-Omni backbone: "
                             "its positions follow the full video grid and audio length")
        out = {}
        with torch.no_grad():
            if T in modalities:
                out[T] = self._text(batch)
            if V in modalities:
                out[V] = self._video(batch["video"])
            if A in modalities:
                out[A] = self._audio(batch["audio"], batch["audio_mask"])
        return out

    def _text(self, batch: OmniBatch) -> tuple[torch.Tensor, torch.Tensor]:
        embed = self.thinker.get_input_embeddings()
        ids, mask = batch["text_ids"].to(embed.weight.device), batch["text_mask"].to(embed.weight.device).bool()
        reserved = torch.tensor(sorted(self.checkpoint.special_ids.values()), device=ids.device)
        bad = mask & ((ids < 0) | (ids >= self.checkpoint.vocab_size) | torch.isin(ids, reserved))
        if bool(bad.any()):
            row, col = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"text_ids row {row}, position {col}: id {int(ids[row, col])} is outside the vocabulary "
                             f"[0, {self.checkpoint.vocab_size}) or a placeholder/boundary token; "
                             f"tokenize captions with OmniTokenizer")
        return embed(ids.masked_fill(~mask, self.spec.pad_id)), mask

    def _video(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vision, device = self.thinker.config.vision_config, self.thinker.visual.patch_embed.proj.weight.device
        d = self.cfg.decode
        if tuple(frames.shape[1:]) != (d.num_frames, d.frame_size, d.frame_size, 3):
            raise ValueError(f"video: expected frames (B, {d.num_frames}, {d.frame_size}, {d.frame_size}, 3) "
                             f"(decode.num_frames, decode.frame_size), got {tuple(frames.shape)}")
        pixels, grid = video_patches(frames.to(device), vision.patch_size, vision.spatial_merge_size,
                                     vision.temporal_patch_size)
        B = pixels.shape[0]
        thw = torch.tensor([grid] * B, device=device)
        out = self.thinker.get_video_features(pixels.reshape(B * pixels.shape[1], -1), thw, return_dict=True).pooler_output
        expected = video_token_count(grid, vision.spatial_merge_size)
        for row, feats in enumerate(out):
            if feats.shape[0] != expected:
                raise PlaceholderMismatch("video", expected, feats.shape[0], row=row)
        x = torch.stack(out)  # (B, Lv, H)
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)

    def _audio(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.thinker.audio_tower.conv1.weight.device
        features, mask = features.to(device), mask.to(device).bool()
        lengths = mask.sum(1)  # (B,)
        prefix = torch.arange(mask.shape[1], device=device)[None, :] < lengths[:, None]
        if not torch.equal(mask, prefix):
            raise ValueError("audio_mask: each row's valid frames must be a prefix (features right-padded)")
        counts = [audio_token_count(int(n)) for n in lengths.tolist()]
        short = [i for i, (n, c) in enumerate(zip(lengths.tolist(), counts)) if n and not c]
        if short:
            raise ValueError(f"audio row {short[0]}: {int(lengths[short[0]])} frames are too short for one audio token "
                             f"(3 frames, 30 ms)")
        rows = lengths > 0
        width = max(counts, default=0)
        x = torch.zeros(len(counts), width, self.thinker.config.text_config.hidden_size, device=device,
                        dtype=self.thinker.audio_tower.proj.weight.dtype)
        valid = torch.arange(width, device=device)[None, :] < torch.tensor(counts, device=device)[:, None]
        if bool(rows.any()):
            out = self.thinker.get_audio_features(features[rows], feature_attention_mask=mask[rows].long(),
                                                  return_dict=True).last_hidden_state  # (sum of counts, H)
            if out.shape[0] != sum(counts):
                raise PlaceholderMismatch("audio", sum(counts), out.shape[0])
            x[valid] = out.to(x.dtype)
        return x, valid

    # --- fuse: one view's sequences through the LLM ---

    def fuse(self, tokens: Tokens, modalities: tuple[str, ...], present: torch.Tensor | None = None) -> torch.Tensor:
        """One LLM forward over each row's sequence of `modalities` -> (B, E) unit vectors."""
        if not modalities:
            raise ValueError("at least one modality is needed")
        seq = self.sequences(tokens, modalities, present)
        pooled = self.pool(self.hidden(self.inputs_embeds(tokens, seq), seq), seq)
        with torch.autocast(pooled.device.type, enabled=False):  # float32 under training's autocast too
            return F.normalize(self.head(pooled.float()), dim=-1)

    def forward(self, batch: OmniBatch, modalities: tuple[str, ...], present: torch.Tensor | None = None) -> torch.Tensor:
        """Embed `modalities` of every row; `present` (B, 3) bool (order T, V, A) drops a modality per row."""
        return self.fuse(self.tokenize(batch, modalities), modalities, present)

    def sequences(self, tokens: Tokens, modalities: tuple[str, ...], present: torch.Tensor | None = None) -> Sequences:
        present = None if present is None else present.cpu()
        return build_sequences({m: tokens[m][1] for m in modalities}, modalities, present, self.spec, self.thinker,
                               self._layouts)

    def inputs_embeds(self, tokens: Tokens, seq: Sequences) -> torch.Tensor:
        """(B, L, H): the ids' embeddings with the tokens spliced into caption and placeholder positions."""
        embed = self.thinker.get_input_embeddings()
        device = embed.weight.device
        with torch.no_grad():
            x = embed(seq.ids.to(device))
        B, L, H = x.shape
        flat = x.reshape(B * L, H)
        for m, (dst, src) in seq.splice.items():
            flat = flat.index_copy(0, dst.to(device), tokens[m][0].reshape(-1, H)[src.to(device)].to(flat.dtype))
        return flat.view(B, L, H)

    def hidden(self, embeds: torch.Tensor, seq: Sequences) -> BaseModelOutputWithPast:
        """The LLM's output (last_hidden_state, and hidden_states for last_all_layers) over `embeds`."""
        mask = seq.mask.to(embeds.device)
        if self.cfg.attention == "causal":
            attention = mask.long()
        else:  # every valid token sees every other; a pad row sees itself only (never all-masked: no NaN)
            L = mask.shape[1]
            allowed = (mask[:, None, :, None] & mask[:, None, None, :]) | torch.eye(L, dtype=torch.bool, device=mask.device)
            if self.thinker.language_model.config._attn_implementation == "eager":  # it adds the mask to the scores
                allowed = torch.zeros(allowed.shape, dtype=embeds.dtype, device=mask.device).masked_fill(
                    ~allowed, torch.finfo(embeds.dtype).min)
            attention = {kind: allowed for kind in set(self.thinker.config.text_config.layer_types)}
        return self.thinker.language_model(inputs_embeds=embeds, attention_mask=attention,
                                           position_ids=seq.positions.to(embeds.device), use_cache=False,
                                           output_hidden_states=self.cfg.pooling == "last_all_layers", return_dict=True)

    def pool(self, out: BaseModelOutputWithPast, seq: Sequences) -> torch.Tensor:
        """last_all_layers: (B, layers*H), the last position after each decoder layer (the final one normed);
        mean: (B, H), the masked mean of the last layer."""
        if self.cfg.pooling == "last_all_layers":
            return torch.cat([h[:, -1] for h in out.hidden_states[1:]], dim=-1)
        w = seq.mask.to(out.last_hidden_state.device).unsqueeze(-1).to(out.last_hidden_state.dtype)  # (B, L, 1)
        return (out.last_hidden_state * w).sum(1) / w.sum(1)
