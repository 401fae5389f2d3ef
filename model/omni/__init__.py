"""Pretrained omni backbones behind the encoder interface: a Qwen2.5-Omni thinker with LoRA on its LLM.

    checkpoint   find and validate a local checkpoint (thinker-only or the full Qwen2.5-Omni), its digest
    preprocess   frames -> Qwen2-VL patches, 16 kHz audio -> Whisper features, placeholder counts
    text         the checkpoint's tokenizer for captions and prompts
    config       OmniBackboneConfig (LoRA, pooling, attention, prompts, interleave), from JSON
    layout       one view's token sequence per row: placeholders, interleave, left padding, positions
    backbone     QwenOmniEncoder: towers once per batch, any view fused from them, LoRA + head
    random_checkpoint  RANDOM thinkers of the tiny, 3B and 7B sizes (tests, benchmarks; nothing downloaded)

Importing this package (or any module in it) imports neither transformers nor peft: they are imported
when a checkpoint is loaded or features are computed, so the tiny encoder's users never pay for them.
"""
