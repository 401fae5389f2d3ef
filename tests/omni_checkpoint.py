"""A tiny RANDOM Qwen2.5-Omni thinker checkpoint, written by the tests (nothing is downloaded): the
`thinker_dir` fixture of tests/conftest.py, shared by the backbone's and its training's tests."""

from __future__ import annotations

from pathlib import Path

VOCAB = 256
SPECIAL = {"audio_token_index": 250, "image_token_index": 251, "video_token_index": 252, "audio_start_token_id": 253,
           "audio_end_token_id": 254, "vision_start_token_id": 245, "vision_end_token_id": 246}
TOKENS = {250: "<|AUDIO|>", 251: "<|IMAGE|>", 252: "<|VIDEO|>", 253: "<|audio_bos|>", 254: "<|audio_eos|>",
          245: "<|vision_bos|>", 246: "<|vision_eos|>"}


def thinker_config():
    from transformers import Qwen2_5OmniThinkerConfig

    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  fullatt_block_indexes=[1], window_size=56)
    audio = dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                 output_dim=64, n_window=50, max_source_positions=200)
    return Qwen2_5OmniThinkerConfig(text_config=text, vision_config=vision, audio_config=audio, **SPECIAL)


def write_tokenizer(path: Path) -> None:
    """A word-level tokenizer.json: w1..w199, a few prompt words, the special tokens (other words are <pad>)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0} | {f"w{i}": i for i in range(1, 200)} | {"query": 200, "passage": 201, ":": 202}
    tok = Tokenizer(models.WordLevel(vocab=vocab | {t: i for i, t in TOKENS.items()}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in TOKENS.values()])
    tok.save(str(path))


def write_thinker(root: Path, seed: int = 0) -> Path:
    """A tiny random thinker as save_pretrained writes it, with write_tokenizer's tokenizer.json."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(seed)
    Qwen2_5OmniThinkerForConditionalGeneration(thinker_config()).save_pretrained(root)
    write_tokenizer(root / "tokenizer.json")
    return root
