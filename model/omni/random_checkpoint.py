"""RANDOM Qwen2.5-Omni thinkers at three sizes, for tests and benchmarks (no weights exist here, nothing is
downloaded): the architecture of a real checkpoint, its weights drawn at random.

    write_random_thinker(root, "tiny")      a checkpoint directory as save_pretrained writes it, with a
                                            word-level tokenizer.json (the tests' `thinker_dir`)
    random_thinker("7b", "cuda", "bfloat16")   the Qwen2_5OmniThinkerModel itself, built on the device in
                                            that dtype, no file written ("meta": shapes only, no memory)
    random_encoder("3b", cfg, workdir, ...)    a QwenOmniEncoder (LoRA + head) over random_thinker's model;
                                            only the tokenizer.json is written, to workdir

The sizes (`thinker_config(size)`):

    tiny   2-layer 64-wide LLM, 2-block 32-wide vision tower, 2-layer 32-wide audio tower, vocabulary 256:
           CPU-sized, what every test trains on
    7b     Qwen2.5-Omni-7B's thinker. Text: hidden 3584, 28 layers, 28 heads, 4 KV heads, intermediate
           18944, vocabulary 152064 (transformers' Qwen2_5OmniTextConfig defaults, which are the 7B's).
           Audio: 32 layers, d_model 1280, 20 heads, ffn 5120, output_dim 3584 (Qwen2_5OmniAudioEncoderConfig
           defaults: Whisper-large-v3's encoder). Vision: 32 blocks, intermediate 3420, 16 heads, out_hidden_size
           3584, full attention at blocks 7/15/23/31 (Qwen2_5OmniVisionEncoderConfig defaults) but hidden 1280,
           not that class's default of 3584: 1280 is the Qwen2.5-VL ViT's width (transformers 4.x named it
           embed_dim, default 1280), and only 1280 gives the 675M-parameter vision encoder of the Qwen2.5-Omni
           technical report (3584 would make it ~3B)
    3b     Qwen2.5-Omni-3B's thinker: text hidden 2048, 36 layers, 16 heads, 2 KV heads, intermediate 11008,
           vocabulary 151936 (Qwen2.5-3B's, as the 3B's config.json gives it); the same towers with
           out_hidden_size / output_dim 2048

Both large sizes use the released checkpoints' special token ids (<|AUDIO|> 151646 ... <|vision_eos|>
151653), head_dim 128 with mrope_section [16, 24, 24] and rope_theta 1e6. Their parameter counts
(Qwen2_5OmniThinkerModel, no lm_head) are EXPECTED_PARAMS, checked by the tests on the meta device.

transformers is imported only when a function here is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from model.omni.checkpoint import TOKENIZER, OmniCheckpoint, unsaved_checkpoint
from model.omni.config import OmniBackboneConfig

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerModel

    from model.omni.backbone import QwenOmniEncoder

SIZES = ("tiny", "3b", "7b")
TINY_VOCAB = 256
# name in config.json -> id; the tiny vocabulary's, then the released checkpoints'
TINY_SPECIAL = {"audio_token_index": 250, "image_token_index": 251, "video_token_index": 252,
                "audio_start_token_id": 253, "audio_end_token_id": 254, "vision_start_token_id": 245,
                "vision_end_token_id": 246}
QWEN_SPECIAL = {"audio_token_index": 151646, "image_token_index": 151655, "video_token_index": 151656,
                "audio_start_token_id": 151647, "audio_end_token_id": 151648, "vision_start_token_id": 151652,
                "vision_end_token_id": 151653}
TOKEN_TEXT = {"audio_token_index": "<|AUDIO|>", "image_token_index": "<|IMAGE|>", "video_token_index": "<|VIDEO|>",
              "audio_start_token_id": "<|audio_bos|>", "audio_end_token_id": "<|audio_eos|>",
              "vision_start_token_id": "<|vision_bos|>", "vision_end_token_id": "<|vision_eos|>"}
# (text hidden, layers, heads, KV heads, intermediate, vocabulary) of the two released LLMs
_LLM = {"3b": (2048, 36, 16, 2, 11008, 151936), "7b": (3584, 28, 28, 4, 18944, 152064)}
# Qwen2_5OmniThinkerModel's parameters by part, in millions, from the sources (thinker_config builds each
# within 1% of them): the LLMs are Qwen2.5-3B (3.09B, embeddings tied) and Qwen2.5-7B (7.61B less its untied
# 545M lm_head), the vision tower is the report's 675M, the audio tower Whisper-large-v3's encoder (~635M)
EXPECTED_PARAMS = {
    "3b": {"language model": 3090, "vision tower": 675, "audio tower": 635},
    "7b": {"language model": 7070, "vision tower": 675, "audio tower": 635},
}


def thinker_config(size: str = "tiny") -> Qwen2_5OmniThinkerConfig:
    """The Qwen2_5OmniThinkerConfig of a size (see the module docstring)."""
    from transformers import Qwen2_5OmniThinkerConfig

    if size == "tiny":
        text = dict(vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=0,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      fullatt_block_indexes=[1], window_size=56)
        audio = dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                     output_dim=64, n_window=50, max_source_positions=200)
        return Qwen2_5OmniThinkerConfig(text_config=text, vision_config=vision, audio_config=audio, **TINY_SPECIAL)
    if size not in _LLM:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    hidden, layers, heads, kv_heads, intermediate, vocab = _LLM[size]
    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=32768,
                pad_token_id=151643, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=hidden,
                  fullatt_block_indexes=[7, 15, 23, 31], window_size=112)
    audio = dict(num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, d_model=1280,
                 output_dim=hidden, n_window=100, max_source_positions=1500)
    return Qwen2_5OmniThinkerConfig(text_config=text, vision_config=vision, audio_config=audio, **QWEN_SPECIAL)


def write_tokenizer(path: Path, size: str = "tiny") -> Path:
    """A word-level tokenizer.json: w1..w199, a few prompt words and the size's special tokens at its ids
    (other words are <pad>, id 0). Its ids fit every size's vocabulary."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    special = {TOKEN_TEXT[k]: i for k, i in (TINY_SPECIAL if size == "tiny" else QWEN_SPECIAL).items()}
    vocab = {"<pad>": 0} | {f"w{i}": i for i in range(1, 200)} | {"query": 200, "passage": 201, ":": 202}
    tok = Tokenizer(models.WordLevel(vocab=vocab | special, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in special])
    tok.save(str(path))
    return path


def write_random_thinker(root: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """A random thinker of `size` as save_pretrained writes it (float32, lm_head included), with
    write_tokenizer's tokenizer.json. Meant for "tiny": a large size writes tens of gigabytes."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    root = Path(root)
    torch.manual_seed(seed)
    Qwen2_5OmniThinkerForConditionalGeneration(thinker_config(size)).save_pretrained(root)
    write_tokenizer(root / TOKENIZER, size)
    return root


def random_thinker(size: str = "tiny", device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                   seed: int = 0, attn_implementation: str = "sdpa") -> Qwen2_5OmniThinkerModel:
    """A random Qwen2_5OmniThinkerModel of `size` (no lm_head), its weights created on `device` in `dtype`
    (a large size on the GPU never passes through host memory); device "meta" builds shapes only."""
    from transformers import Qwen2_5OmniThinkerModel

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5OmniThinkerModel._from_config(thinker_config(size), dtype=dtype,
                                                     attn_implementation=attn_implementation)
    return model.eval()


def part_params(thinker: Qwen2_5OmniThinkerModel) -> dict[str, int]:
    """Parameters of the thinker's three parts (the LLM with its embeddings)."""
    parts = {"language model": thinker.language_model, "vision tower": thinker.visual, "audio tower": thinker.audio_tower}
    return {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}


def random_encoder(size: str, cfg: OmniBackboneConfig, workdir: str | Path, device: str | torch.device = "cpu",
                   seed: int = 0, attn_implementation: str = "sdpa") -> QwenOmniEncoder:
    """A QwenOmniEncoder (LoRA on q/k/v, head) over random_thinker(size, device, cfg.dtype): no weights file,
    only write_tokenizer's tokenizer.json in `workdir`. Its checkpoint record has no files (digest of nothing)."""
    from model.omni.backbone import QwenOmniEncoder
    from model.omni.text import OmniTokenizer

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    thinker = random_thinker(size, device, cfg.dtype, seed, attn_implementation)
    thinker.config.seconds_per_chunk = cfg.interleave_seconds
    checkpoint: OmniCheckpoint = unsaved_checkpoint(workdir, thinker.config.to_dict())
    tokenizer = OmniTokenizer.load(write_tokenizer(workdir / TOKENIZER, size), cfg.max_text_len, checkpoint.pad_token_id)
    return QwenOmniEncoder(thinker, cfg, checkpoint, tokenizer).to(device)
