"""The Qwen2.5-Omni backbone on tiny RANDOM thinkers built here (both checkpoint layouts); nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.config import config_dict, load_config
from model.data import concat_tokens, swap_slot
from model.errors import CheckpointError, PlaceholderMismatch
from model.losses import info_nce
from model.media import DecodeConfig
from model.modalities import VIEWS, A, T, V
from model.omni.checkpoint import find_checkpoint
from model.omni.config import OmniBackboneConfig
from model.train import param_groups
from tests.conftest import loaded_by_import

CAPTIONS = ["w1 w2 w3", "w5", "w7 w8 w9 w10 w11"]
SAMPLES = (64_000, 41_000, 64_000)  # 4 s, 2.56 s (not a multiple of a token), 4 s
DECODE = DecodeConfig(num_frames=4, frame_size=56, audio_seconds=4.0)  # 2 x 2 x 2 = 8 video tokens a clip
CFG = OmniBackboneConfig(dtype="float32", head_hidden=32, embed_dim=16, decode=DECODE)


@pytest.fixture(scope="session")
def omni_dir(thinker_dir, tmp_path_factory) -> Path:
    """The same thinker in the full Qwen2.5-Omni layout: thinker.* keys in two shards, talker and token2wav beside."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("qwen_omni")
    thinker = json.loads((thinker_dir / "config.json").read_text())
    config = {"model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniForConditionalGeneration"],
              "thinker_config": thinker, "talker_config": {"model_type": "qwen2_5_omni_talker"},
              "token2wav_config": {"model_type": "qwen2_5_omni_token2wav"}, "enable_audio_output": True}
    (root / "config.json").write_text(json.dumps(config))
    weights = {f"thinker.{k}": v for k, v in load_file(thinker_dir / "model.safetensors").items()}
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": {k: weights[k] for k in keys[::2]},
              "model-00002-of-00002.safetensors": {k: weights[k] for k in keys[1::2]}}
    shards["model-00001-of-00002.safetensors"]["talker.codec_head.weight"] = torch.randn(4, 4)
    shards["model-00002-of-00002.safetensors"]["token2wav.code2wav_dit_model.w"] = torch.randn(3)
    for name, tensors in shards.items():
        save_file(tensors, root / name, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, tensors in shards.items() for k in tensors}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(thinker_dir / "tokenizer.json", root / "tokenizer.json")
    return root


def build(path: Path, cfg: OmniBackboneConfig = CFG, seed: int = 0):
    from model.omni.backbone import QwenOmniEncoder

    torch.manual_seed(seed)  # the head's initialisation
    return QwenOmniEncoder.from_checkpoint(path, cfg).eval()


@pytest.fixture(scope="session")
def encoder(thinker_dir):
    return build(thinker_dir)


def make_batch(enc, captions=CAPTIONS, samples=SAMPLES, seed: int = 1) -> dict:
    from model.omni.preprocess import audio_features

    rng = np.random.default_rng(seed)
    ids, mask = enc.tokenizer(captions)
    features, valid = audio_features([0.1 * rng.standard_normal(n).astype(np.float32) for n in samples])
    frames = rng.integers(0, 256, (len(captions), DECODE.num_frames, DECODE.frame_size, DECODE.frame_size, 3), dtype=np.uint8)
    return {"text_ids": ids, "text_mask": mask, "video": torch.from_numpy(frames), "audio": features, "audio_mask": valid}


def rows(batch: dict, index: list[int]) -> dict:
    return {k: v[index] for k, v in batch.items()}


def test_importing_the_package_loads_neither_transformers_nor_peft():
    modules = ("model", "model.omni", "model.omni.backbone", "model.omni.checkpoint", "model.omni.config",
               "model.omni.layout", "model.omni.preprocess", "model.omni.random_checkpoint", "model.omni.text")
    assert loaded_by_import(modules, ("transformers", "peft", "accelerate")) == []


@pytest.mark.parametrize("view", list(VIEWS))
def test_each_view_embeds_to_finite_unit_vectors(encoder, view):
    with torch.no_grad():
        z = encoder(make_batch(encoder), VIEWS[view])
    assert z.shape == (len(CAPTIONS), CFG.embed_dim)
    assert torch.isfinite(z).all()
    assert torch.allclose(z.norm(dim=-1), torch.ones(len(CAPTIONS)), atol=1e-5)


@pytest.mark.parametrize("cfg", [CFG, OmniBackboneConfig(dtype="float32", pooling="mean", attention="bidirectional", head="none",
                                                         text_prompt="query :", media_prompt="passage :", decode=DECODE)],
                         ids=["last_all_layers-causal", "mean-bidirectional-prompts"])
def test_a_batch_embeds_each_row_as_that_row_alone(thinker_dir, encoder, cfg):
    enc = encoder if cfg is CFG else build(thinker_dir, cfg)
    batch = make_batch(enc)
    with torch.no_grad():
        tokens = enc.tokenize(batch, (T, V, A))
        for view in ("tva", "tv", "a", "t"):
            together = enc.fuse(tokens, VIEWS[view])
            alone = torch.cat([enc(rows(batch, [i]), VIEWS[view]) for i in range(len(CAPTIONS))])
            assert torch.allclose(together, alone, atol=1e-5), view


def test_a_presence_mask_lays_each_row_out_as_its_smaller_view(encoder):
    batch = make_batch(encoder)
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        masked = encoder(batch, (T, V, A), present)
        expected = [encoder(rows(batch, [0]), (T, V, A)), encoder(rows(batch, [1]), (T, A)), encoder(rows(batch, [2]), (V,))]
    assert torch.allclose(masked, torch.cat(expected), atol=1e-5)
    with pytest.raises(ValueError, match="row 0 has no modality"):
        encoder(batch, (T,), present[[2, 0, 1]])


def test_a_row_without_audio_frames_is_laid_out_without_audio(encoder):
    batch = make_batch(encoder)
    batch["audio_mask"][2] = False  # e.g. a clip with no audio track
    with torch.no_grad():
        z = encoder(batch, (T, V, A))
        assert torch.allclose(z[2:], encoder(rows(batch, [2]), (T, V)), atol=1e-5)
        assert torch.allclose(z[:2], encoder(rows(batch, [0, 1]), (T, V, A)), atol=1e-5)


def test_prompts_follow_each_rows_modalities(thinker_dir):
    enc = build(thinker_dir, OmniBackboneConfig(dtype="float32", text_prompt="query :", media_prompt="passage :", decode=DECODE))
    present = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        seq = enc.sequences(enc.tokenize(make_batch(enc), (T, V, A)), (T, V, A), present)
    starts = [seq.ids[i][seq.mask[i]][:2].tolist() for i in range(3)]
    assert starts == [[200, 202], [201, 202], [201, 202]]  # "query :" for text alone, "passage :" with media


def _processor_ids(enc, view: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input_ids the way Qwen2.5-Omni's processor expands a chat: its own placeholder code, as text."""
    from transformers import Qwen2_5OmniProcessor

    from model.omni.preprocess import audio_token_count

    spec = enc.spec
    ns = SimpleNamespace(audio_bos_token="<|audio_bos|>", audio_eos_token="<|audio_eos|>", video_token="<|VIDEO|>",
                         audio_token="<|AUDIO|>", video_processor=SimpleNamespace(merge_size=spec.merge))
    ns.get_chunked_index = lambda idx, n: Qwen2_5OmniProcessor.get_chunked_index(ns, idx, n)
    videos = {"video_grid_thw": [list(spec.grid)], "video_second_per_grid": [spec.seconds_per_grid]}
    texts = []
    for i, caption in enumerate(CAPTIONS):
        audio = {"num_audio_tokens": [audio_token_count(int(batch["audio_mask"][i].sum()))]}
        if "v" in view and "a" in view:
            media = "<|vision_bos|>" + Qwen2_5OmniProcessor.replace_video_with_audio_token(
                ns, videos, 0, audio, 0, position_id_per_seconds=spec.position_id_per_seconds,
                seconds_per_chunk=spec.seconds_per_chunk) + "<|vision_eos|>"
        elif "v" in view:
            media = "<|vision_bos|>" + "<|VIDEO|>" * (np.prod(spec.grid) // spec.merge ** 2) + "<|vision_eos|>"
        elif "a" in view:
            media = "<|audio_bos|>" + "<|AUDIO|>" * audio["num_audio_tokens"][0] + "<|audio_eos|>"
        else:
            media = ""
        texts.append(media + (" " + caption if "t" in view else ""))
    from tokenizers import Tokenizer

    encoded = [e.ids for e in Tokenizer.from_file(str(enc.checkpoint.tokenizer_path)).encode_batch(texts)]
    width = max(map(len, encoded))
    ids = torch.tensor([[0] * (width - len(e)) + e for e in encoded])
    return ids, torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])


@pytest.mark.parametrize("view", ["tva", "av", "tv", "at", "v", "a", "t"])
def test_spliced_towers_equal_the_thinkers_own_forward(encoder, view):
    from model.omni.preprocess import video_patches

    batch = make_batch(encoder)
    ids, attention = _processor_ids(encoder, view, batch)
    pixels, grid = video_patches(batch["video"])
    kwargs = {}
    if "v" in view:
        kwargs.update(pixel_values_videos=pixels.flatten(0, 1), video_grid_thw=torch.tensor([grid] * len(CAPTIONS)),
                      video_second_per_grid=torch.tensor([encoder.spec.seconds_per_grid] * len(CAPTIONS)))
    if "a" in view:
        kwargs.update(input_features=batch["audio"], feature_attention_mask=batch["audio_mask"].long())
    with torch.no_grad():
        reference = encoder.thinker(input_ids=ids, attention_mask=attention, use_audio_in_video="v" in view and "a" in view,
                                    **kwargs).last_hidden_state
        tokens = encoder.tokenize(batch, VIEWS[view])
        seq = encoder.sequences(tokens, VIEWS[view])
        ours = encoder.hidden(encoder.inputs_embeds(tokens, seq), seq).last_hidden_state
    caption = torch.zeros_like(ids, dtype=torch.bool) if "t" not in view else (seq.ids == 0) & seq.mask
    assert torch.equal(seq.ids[~caption], ids[~caption]) and torch.equal(seq.mask, attention.bool())
    assert torch.equal(ours[seq.mask], reference[seq.mask])  # not merely close: the same numbers


def test_hard_negatives_and_the_positive_pass_reuse_the_batch_tokens(encoder):
    batch = make_batch(encoder)
    partner = torch.tensor([1, 2, 0])
    with torch.no_grad():
        tokens = encoder.tokenize(batch, (T, V, A))
        hard = swap_slot(tokens, V, partner)
        swapped = encoder(dict(batch, video=batch["video"][partner]), (T, V, A))
        assert torch.allclose(encoder.fuse(hard, (T, V, A)), swapped, atol=1e-5)
        both = encoder.fuse(concat_tokens(tokens, swap_slot(tokens, A, partner)), (T, V, A))  # (2B, E) in one pass
        alone = encoder.fuse(swap_slot(tokens, A, partner), (T, V, A))
    assert both.shape == (6, CFG.embed_dim) and torch.allclose(both[3:], alone, atol=1e-5)


def test_one_training_step_changes_only_lora_and_head(thinker_dir):
    enc = build(thinker_dir, seed=3).train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    optimizer = torch.optim.AdamW(param_groups([enc], 0.01), lr=1e-2)
    tokens = enc.tokenize(make_batch(enc), (T, V, A))
    loss = info_nce(enc.fuse(tokens, (T,)), enc.fuse(tokens, (T, V, A)), torch.tensor(10.0))
    loss.backward()
    optimizer.step()
    changed = {k for k, v in enc.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k or k.startswith("head.") for k in changed), sorted(changed)
    assert any("lora_B" in k for k in changed) and any(k.startswith("head.") for k in changed)
    assert set(enc.trainable_state_dict()) == {k for k in before if "lora_" in k or k.startswith("head.")}


def test_lora_sits_on_the_llm_attention_only(thinker_dir, encoder):
    assert encoder.lora_modules == tuple(f"language_model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkv")
    lora = {n.split(".lora_")[0] for n, _ in encoder.named_parameters() if "lora_" in n}
    assert lora == {f"thinker.{m}" for m in encoder.lora_modules}
    assert [n for n, _ in encoder.thinker.audio_tower.named_modules() if n.endswith("q_proj")]  # a bare suffix would hit these
    with pytest.raises(ValueError, match=r"outside the language model \(audio_tower\.layers\.0\.self_attn\.q_proj"):
        build(thinker_dir, OmniBackboneConfig(dtype="float32", lora_targets=r".*q_proj", decode=DECODE))


def _step_with_checkpointing(thinker_dir: Path, on: bool) -> tuple[float, dict[str, torch.Tensor], int, bool]:
    """(loss, the trained weights' gradients, q_proj calls of layer 0, whether the tokens require grad) of one
    training-mode step (LoRA dropout on, seeded) with gradient checkpointing `on`."""
    enc = build(thinker_dir, replace(CFG, gradient_checkpointing=on), seed=3).train()
    calls = []
    enc.thinker.language_model.layers[0].self_attn.q_proj.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(7)  # dropout
    tokens = enc.tokenize(make_batch(enc), (T, V, A))
    loss = info_nce(enc.fuse(tokens, (T,)), enc.fuse(tokens, (T, V, A)), torch.tensor(10.0))
    loss.backward()
    grads = {n: p.grad for n, p in enc.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads, len(calls), any(x.requires_grad for x, _ in tokens.values())


def test_gradient_checkpointing_recomputes_the_llm_with_the_same_loss_and_gradients(thinker_dir):
    loss, grads, calls, _ = _step_with_checkpointing(thinker_dir, False)
    loss_ckpt, grads_ckpt, calls_ckpt, tokens_grad = _step_with_checkpointing(thinker_dir, True)
    assert (calls, calls_ckpt) == (2, 4), "two views forward; with checkpointing each is run again in the backward"
    assert not tokens_grad, "the embeddings stay without gradient (transformers' input hook is removed)"
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == grads_ckpt.keys() and any("lora_A" in k for k in grads)
    for k in grads:
        assert torch.allclose(grads[k], grads_ckpt[k], rtol=1e-5, atol=1e-7), k


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_eager_attention_embeds_as_sdpa(thinker_dir, attention):
    z = {}
    for impl in ("sdpa", "eager"):
        enc = build(thinker_dir, replace(CFG, attn_implementation=impl, attention=attention))
        assert enc.thinker.language_model.config._attn_implementation == impl
        with torch.no_grad():
            z[impl] = enc(make_batch(enc), VIEWS["tva"])
    assert torch.allclose(z["sdpa"], z["eager"], atol=1e-5)


def test_the_head_and_embeddings_stay_float32_under_autocast(encoder):
    """Training's bfloat16 autocast (CUDA; the CPU's here) reaches the LLM's matmuls, not the head."""
    tokens = encoder.tokenize(make_batch(encoder), (T, V, A))
    dtypes = []
    hook = encoder.thinker.language_model.layers[0].mlp.down_proj.register_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype))
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            seq = encoder.sequences(tokens, (T, V, A))
            pooled = encoder.pool(encoder.hidden(encoder.inputs_embeds(tokens, seq), seq), seq)
            z = encoder.fuse(tokens, (T, V, A))
    finally:
        hook.remove()
    assert dtypes == [torch.bfloat16] * 2, "the LLM ran under autocast"
    assert z.dtype == torch.float32
    with torch.no_grad():  # the head in float32 on the pooled states (in bfloat16 it would be ~1e-2 off)
        assert torch.allclose(z, torch.nn.functional.normalize(encoder.head(pooled.float()), dim=-1), atol=1e-6)


@pytest.mark.parametrize("field,value,message", [
    ("attn_implementation", "flash_attention_2", "attn_implementation must be one of sdpa, eager, got 'flash_attention_2'"),
    ("gradient_checkpointing", "yes", "gradient_checkpointing must be true or false, got 'yes'"),
    ("autocast", "fp16", "autocast must be one of bf16, none, got 'fp16'"),
])
def test_bad_gpu_training_options_are_named(tmp_path, field, value, message):
    path = tmp_path / "omni.json"
    path.write_text(json.dumps({"backbone": "qwen2_5_omni", field: value}))
    with pytest.raises(ValueError, match=message):
        load_config(path)


def _rewrite_config(edit):
    def mutate(root: Path) -> None:
        config = json.loads((root / "config.json").read_text())
        edit(config)
        (root / "config.json").write_text(json.dumps(config))
    return mutate


def _drop_weights(prefix: str):
    def mutate(root: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(root / "model.safetensors")
        save_file({k: v for k, v in tensors.items() if not k.startswith(prefix)}, root / "model.safetensors")
    return mutate


BAD_CHECKPOINTS = {  # case -> (layout, mutation, file named, field or phrase named)
    "no directory": ("thinker", lambda r: shutil.rmtree(r), "", "checkpoint directory not found"),
    "no config": ("thinker", lambda r: (r / "config.json").unlink(), "config.json", "not found"),
    "config not json": ("thinker", lambda r: (r / "config.json").write_text("{"), "config.json", "cannot read"),
    "wrong model_type": ("thinker", _rewrite_config(lambda c: c.update(model_type="llama")), "config.json", "model_type"),
    "special id missing": ("thinker", _rewrite_config(lambda c: c.pop("vision_start_token_id")), "config.json", "vision_start_token_id: missing"),
    "special id outside vocab": ("thinker", _rewrite_config(lambda c: c.update(audio_token_index=999)), "config.json", "audio_token_index"),
    "special ids collide": ("thinker", _rewrite_config(lambda c: c.update(video_token_index=250)), "config.json", "video_token_index"),
    "hidden sizes differ": ("thinker", _rewrite_config(lambda c: c["vision_config"].update(out_hidden_size=32)), "config.json",
                            "vision_config.out_hidden_size"),
    "mrope section": ("thinker", _rewrite_config(lambda c: c["text_config"]["rope_parameters"].update(mrope_section=[2, 2, 2])),
                      "config.json", "mrope_section"),
    "no weights": ("thinker", lambda r: (r / "model.safetensors").unlink(), "", "no weights"),
    "weights truncated": ("thinker", lambda r: (r / "model.safetensors").write_bytes(b"\x10\x00"), "model.safetensors", "safetensors"),
    "no audio tower": ("thinker", _drop_weights("audio_tower."), "model.safetensors", "audio tower"),
    "no tokenizer": ("thinker", lambda r: (r / "tokenizer.json").unlink(), "tokenizer.json", "tokenizer is missing"),
    "omni without thinker_config": ("omni", _rewrite_config(lambda c: c.pop("thinker_config")), "config.json", "thinker_config"),
    "omni special id missing": ("omni", _rewrite_config(lambda c: c["thinker_config"].pop("audio_end_token_id")), "config.json",
                                "thinker_config.audio_end_token_id"),
    "index names a missing shard": ("omni", lambda r: (r / "model-00002-of-00002.safetensors").unlink(),
                                    "model.safetensors.index.json", "model-00002-of-00002.safetensors"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_refused_naming_file_and_field(thinker_dir, omni_dir, tmp_path, case):
    layout, mutate, file, field = BAD_CHECKPOINTS[case]
    root = tmp_path / "ckpt"
    shutil.copytree(thinker_dir if layout == "thinker" else omni_dir, root)
    mutate(root)
    with pytest.raises(CheckpointError) as err:
        find_checkpoint(root)
    assert str(err.value).startswith(str(root / file)) and field in str(err.value), str(err.value)


def test_weights_the_model_needs_but_the_files_lack_are_refused_at_load(thinker_dir, tmp_path):
    root = tmp_path / "ckpt"
    shutil.copytree(thinker_dir, root)
    _drop_weights("model.norm.")(root)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: language_model\.norm\.weight"):
        build(root)


def test_the_digest_names_the_weights_wherever_they_lie(thinker_dir, omni_dir, tmp_path):
    digest = find_checkpoint(thinker_dir).digest
    assert len(digest) == 64 and find_checkpoint(thinker_dir).digest == digest
    copy = tmp_path / "elsewhere"
    shutil.copytree(thinker_dir, copy)
    assert find_checkpoint(copy).digest == digest
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")  # not a weights file
    assert find_checkpoint(copy).digest == digest
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert find_checkpoint(copy).digest != digest
    assert find_checkpoint(omni_dir).digest not in (digest, find_checkpoint(copy).digest)
    assert [p.name for p in find_checkpoint(omni_dir).weight_files][0] == "model.safetensors.index.json"


def test_the_official_layout_embeds_as_the_thinker_only_layout(encoder, omni_dir):
    official = build(omni_dir)
    assert official.checkpoint.layout == "omni" and encoder.checkpoint.layout == "thinker"
    for enc in (official, encoder):  # what get_rope_index reads
        assert enc.thinker.config.vision_start_token_id == 245 and enc.thinker.config.seconds_per_chunk == 2
    batch = make_batch(encoder)
    with torch.no_grad():
        assert torch.equal(official(batch, (T, V, A)), encoder(batch, (T, V, A)))


@pytest.mark.parametrize("size", [(56, 56), (100, 150), (30, 40), (97, 333)])
def test_frames_equal_the_hf_image_processor_on_stills(size):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from model.omni.preprocess import frame_size, resize_frames, video_patches

    still = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    reference = Qwen2VLImageProcessorPil()(images=[still], return_tensors="np")
    pixels, grid = video_patches(torch.from_numpy(resize_frames(still[None], *frame_size(*size))[None]))
    assert [list(grid)] == reference["image_grid_thw"].tolist()
    assert np.array_equal(pixels[0].numpy(), reference["pixel_values"])  # bit for bit


def test_audio_features_and_token_counts_follow_the_tower(encoder):
    from model.omni.preprocess import audio_features, audio_token_count

    lengths = torch.arange(0, 700)
    _, tower = encoder.thinker.audio_tower._get_feat_extract_output_lengths(lengths)
    assert [audio_token_count(n) for n in lengths.tolist()] == tower.clamp(min=0).tolist()
    waves = [np.random.default_rng(n).standard_normal(n).astype(np.float32) for n in SAMPLES]
    features, valid = audio_features(waves)
    assert features.shape == (3, 128, 400) and valid.sum(1).tolist() == [n // 160 for n in SAMPLES]
    alone, _ = audio_features(waves[1:2])
    assert torch.equal(alone[0], features[1, :, : alone.shape[-1]])
    assert audio_token_count(400) == 100  # 25 tokens a second


def test_a_count_that_disagrees_with_the_features_is_named(encoder, monkeypatch):
    batch = make_batch(encoder)
    with torch.no_grad():
        tokens = encoder.tokenize(batch, (T, V, A))
        x, valid = tokens[V]
        with pytest.raises(PlaceholderMismatch, match="row 0: video: 8 placeholder tokens for 6 feature vectors"):
            encoder.fuse({**tokens, V: (x[:, :6], valid[:, :6])}, (V, A))
        monkeypatch.setattr("model.omni.backbone.audio_token_count", lambda n: n // 4 + 1)
        with pytest.raises(PlaceholderMismatch, match="audio: 267 placeholder tokens for 264 feature vectors"):
            encoder.tokenize(batch, (A,))


def test_captions_cannot_insert_placeholders(encoder):
    ids, mask = encoder.tokenizer(["w1 <|AUDIO|> w2"])
    assert 250 not in ids[mask].tolist()
    batch = make_batch(encoder)
    batch["text_ids"][1, 0] = 250
    with pytest.raises(ValueError, match="text_ids row 1, position 0: id 250"):
        encoder.tokenize(batch, (T,))


def test_the_config_round_trips_through_json_and_names_bad_fields(thinker_dir, tmp_path):
    path = tmp_path / "omni.json"
    decode = {"num_frames": 4, "frame_size": 56, "audio_seconds": 4.0}
    path.write_text(json.dumps({**config_dict(CFG), "decode": decode}))
    assert load_config(path) == CFG  # decode fields not given keep this backbone's defaults
    path.write_text(json.dumps({"backbone": "qwen2_5_omni", "lora_rnak": 8}))
    with pytest.raises(ValueError, match="unknown omni backbone field.*lora_rnak"):
        load_config(path)
    with pytest.raises(ValueError, match="pooling must be one of last_all_layers, mean, got 'max'"):
        OmniBackboneConfig(pooling="max")
    with pytest.raises(ValueError, match="decode.frame_size=64 must be a multiple of 28"):
        build(thinker_dir, OmniBackboneConfig(dtype="float32", decode=DecodeConfig(num_frames=4, frame_size=64)))


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_the_large_random_sizes_have_the_released_thinkers_parameter_counts(size):
    from model.omni.random_checkpoint import EXPECTED_PARAMS, part_params, random_thinker

    counts = part_params(random_thinker(size, "meta"))  # shapes only: no memory, well under a second
    for part, millions in EXPECTED_PARAMS[size].items():
        assert counts[part] == pytest.approx(millions * 1e6, rel=0.05), part


def test_an_in_memory_random_encoder_has_the_written_checkpoints_ids_and_embeds(encoder, tmp_path):
    from model.omni.random_checkpoint import random_encoder

    enc = random_encoder("tiny", CFG, tmp_path).eval()  # no weights file: only its tokenizer.json is written
    assert enc.checkpoint.special_ids == encoder.checkpoint.special_ids
    assert enc.checkpoint.pad_token_id == encoder.checkpoint.pad_token_id
    batch = make_batch(encoder)
    with torch.no_grad():
        z = enc(batch, VIEWS["tva"])
    assert z.shape == (len(CAPTIONS), CFG.embed_dim) and torch.isfinite(z).all()
