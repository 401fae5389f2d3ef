import itertools
from dataclasses import replace

import pytest
import torch

from model.config import EncoderConfig, available_configs, load_config
from model.encoder import OmniEncoder
from model.store import load_model, save_model
from model.text import TextTokenizer

CAPTIONS = ["a small red ball bounces twice", "a large blue box moves left", "rain falls on a green star",
            "a tiny orb", "the big triangle hums three times over traffic"]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train(CAPTIONS * 3, vocab_size=200, max_len=16)


@pytest.fixture(scope="module")
def encoder(tokenizer) -> OmniEncoder:
    torch.manual_seed(0)
    return OmniEncoder(replace(load_config("tiny"), vocab_size=tokenizer.vocab_size)).eval()


def make_batch(cfg: EncoderConfig, tokenizer: TextTokenizer, texts=CAPTIONS) -> dict:
    g = torch.Generator().manual_seed(1)
    d, n = cfg.decode, len(texts)
    ids, mask = tokenizer(texts)
    return {"text_ids": ids, "text_mask": mask,
            "video": torch.randint(0, 256, (n, d.num_frames, d.frame_size, d.frame_size, 3), generator=g, dtype=torch.uint8),
            "audio": torch.randn(n, d.n_mels, d.num_mel_frames, generator=g) - 5}


SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(("T", "V", "A"), r)]


@pytest.mark.parametrize("mods", SUBSETS)
def test_any_subset_embeds_to_unit_vectors(encoder, tokenizer, mods):
    z = encoder(make_batch(encoder.cfg, tokenizer), mods)
    assert z.shape == (len(CAPTIONS), encoder.cfg.embed_dim)
    assert torch.allclose(z.norm(dim=-1), torch.ones(len(CAPTIONS)), atol=1e-5)


@pytest.mark.parametrize("absent", ["T", "V", "A"])
def test_masked_modality_is_never_attended(encoder, tokenizer, absent):
    batch = make_batch(encoder.cfg, tokenizer)
    rest = tuple(m for m in ("T", "V", "A") if m != absent)
    present = torch.ones(len(CAPTIONS), 3, dtype=torch.bool)
    present[:, "TVA".index(absent)] = False
    masked = encoder(batch, ("T", "V", "A"), present)
    assert torch.allclose(masked, encoder(batch, rest), atol=1e-5)
    # garbage in the masked slot changes nothing
    key = {"T": "text_ids", "V": "video", "A": "audio"}[absent]
    noisy = dict(batch, **{key: batch[key].flip(0)})
    assert torch.allclose(encoder(noisy, ("T", "V", "A"), present), masked, atol=1e-5)


def test_per_row_subsets_in_one_batch(encoder, tokenizer):
    batch = make_batch(encoder.cfg, tokenizer)
    present = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 0, 1]], dtype=torch.bool)
    mixed = encoder(batch, ("T", "V", "A"), present)
    for i, row in enumerate(present.tolist()):
        mods = tuple(m for m, on in zip("TVA", row) if on)
        one = {k: v[i:i + 1] for k, v in batch.items()}
        assert torch.allclose(mixed[i], encoder(one, mods)[0], atol=1e-5), (i, mods)


def test_per_row_subsets_without_a_text_projection(tokenizer):
    """Reference-code variant: text-only rows skip the head, also when mixed with other subsets in one batch."""
    torch.manual_seed(0)
    enc = OmniEncoder(replace(load_config("tiny"), vocab_size=tokenizer.vocab_size, text_projection=False, embed_dim=128)).eval()
    batch = make_batch(enc.cfg, tokenizer)
    present = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.bool)
    mixed = enc(batch, ("T", "V", "A"), present)
    for i, row in enumerate(present.tolist()):
        mods = tuple(m for m, on in zip("TVA", row) if on)
        one = {k: v[i:i + 1] for k, v in batch.items()}
        assert torch.allclose(mixed[i], enc(one, mods)[0], atol=1e-5), (i, mods)


def test_text_padding_changes_nothing(encoder, tokenizer):
    short = make_batch(encoder.cfg, tokenizer, ["a tiny orb"])
    padded = make_batch(encoder.cfg, tokenizer, ["a tiny orb", CAPTIONS[-1]])
    assert padded["text_ids"].shape[1] > short["text_ids"].shape[1]
    assert torch.allclose(encoder(short, ("T",))[0], encoder(padded, ("T",))[0], atol=1e-5)


def test_a_row_with_nothing_present_is_refused(encoder, tokenizer):
    present = torch.ones(len(CAPTIONS), 3, dtype=torch.bool)
    present[2] = False
    with pytest.raises(ValueError, match="no modality present"):
        encoder(make_batch(encoder.cfg, tokenizer), ("T", "V", "A"), present)


def test_save_and_load_round_trip(encoder, tokenizer, tmp_path):
    save_model(tmp_path / "model", encoder, tokenizer)
    loaded = load_model(tmp_path)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    batch = make_batch(loaded.config, loaded.tokenizer)
    assert torch.equal(loaded.encoder(batch, ("T", "V", "A")), encoder(batch, ("T", "V", "A")))


def test_load_names_the_missing_file(encoder, tokenizer, tmp_path):
    save_model(tmp_path / "model", encoder, tokenizer)
    (tmp_path / "model" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing tokenizer.json"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", available_configs())
def test_packaged_configs_build(name):
    cfg = load_config(name)
    assert cfg.name == name
    if cfg.backbone == "tiny":
        assert cfg.video_tokens > 0 and cfg.audio_tokens > 0
    else:  # a pretrained backbone: its sizes come from the checkpoint; frames fit its 28-pixel patch groups
        assert cfg.backbone == "qwen2_5_omni" and cfg.decode.frame_size % 28 == 0


@pytest.mark.parametrize("change,message", [({"dim": 130}, "divisible by heads"), ({"tubelet_size": 7}, "tubelet_size"),
                                            ({"text_projection": False, "embed_dim": 64}, "dim == embed_dim")])
def test_config_errors_name_the_rule(change, message):
    with pytest.raises(ValueError, match=message):
        replace(load_config("tiny"), **change)


def test_unknown_config_fields_and_names(tmp_path):
    with pytest.raises(ValueError, match="unknown config 'huge'"):
        load_config("huge")
    bad = tmp_path / "x.json"
    bad.write_text('{"dim": 64, "depht": 3}')
    with pytest.raises(ValueError, match="unknown encoder config field.*depht"):
        load_config(bad)


def test_tokenizing_only_the_kept_tokens_equals_dropping_them_afterwards(encoder, tokenizer):
    batch = make_batch(encoder.cfg, tokenizer)
    n, cfg = len(CAPTIONS), encoder.cfg
    g = torch.Generator().manual_seed(2)
    keep = {"V": torch.rand(n, cfg.video_tokens, generator=g).argsort(1)[:, :5].sort(1).values,
            "A": torch.rand(n, cfg.audio_tokens, generator=g).argsort(1)[:, :7].sort(1).values}
    with torch.no_grad():
        every = encoder.tokenize(batch, ("T", "V", "A"))
        kept = encoder.tokenize(batch, ("T", "V", "A"), keep)
    assert torch.equal(kept["T"][0], every["T"][0])
    for m, idx in keep.items():
        x, ok = every[m]
        want = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
        assert kept[m][0].shape == want.shape and torch.allclose(kept[m][0], want, atol=1e-5)
        assert kept[m][1].all() and kept[m][1].shape == idx.shape


def test_a_video_token_sees_its_own_tubelet_only(encoder, tokenizer):
    """Token order is (time, row, column) of tubelets; changing pixels inside one tubelet changes that token alone."""
    cfg = encoder.cfg
    batch = make_batch(cfg, tokenizer)
    side = cfg.decode.frame_size // cfg.tubelet_size
    t, r, c = 1, 2, 3  # the tubelet at frames [8, 16), rows [32, 48), columns [48, 64) for tiny
    other = dict(batch, video=batch["video"].clone())
    s, f = cfg.tubelet_size, cfg.tubelet_frames
    other["video"][:, t * f + 3, r * s + 5, c * s + 9] ^= 0x55
    with torch.no_grad():
        a, b = encoder.tokenizers["V"](batch)[0], encoder.tokenizers["V"](other)[0]
    changed = (a - b).abs().amax(dim=(0, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [t * side * side + r * side + c]


def test_gradients_through_kept_tokens_are_bitwise_reproducible(encoder, tokenizer):
    """Many rows keep the same token positions; their gradients must sum in a fixed order (CPU training is deterministic)."""
    cfg = encoder.cfg
    texts = CAPTIONS * 13  # 65 rows
    batch = make_batch(cfg, tokenizer, texts)
    g = torch.Generator().manual_seed(4)
    n = len(texts)
    keep = {"V": torch.rand(n, cfg.video_tokens, generator=g).argsort(1)[:, :16].sort(1).values,
            "A": torch.rand(n, cfg.audio_tokens, generator=g).argsort(1)[:, :12].sort(1).values}
    weights = {m: torch.randn(n, keep[m].shape[1], cfg.dim, generator=g) * 1e3 for m in keep}
    grads = []
    for _ in range(3):
        encoder.zero_grad(set_to_none=True)
        tokens = encoder.tokenize(batch, ("V", "A"), keep)
        sum((tokens[m][0] * weights[m]).sum() for m in keep).backward()
        grads.append([encoder.tokenizers[m].pos.grad.clone() for m in ("V", "A")])
    encoder.zero_grad(set_to_none=True)
    assert all(torch.equal(a, b) for later in grads[1:] for a, b in zip(grads[0], later))


def test_one_caption_tokenizes_as_in_a_batch(tokenizer):
    ids, mask = tokenizer(CAPTIONS)
    for i, caption in enumerate(CAPTIONS):  # padding goes to the longest caption of the call
        one_ids, one_mask = tokenizer([caption])
        n = one_ids.shape[1]
        assert torch.equal(one_ids[0], ids[i, :n]) and torch.equal(one_mask[0], mask[i, :n]) and not mask[i, n:].any()


def test_the_caption_arrays_alone_equal_the_full_ones_and_refuse_media(tokenizer):
    from model.inference import Preprocessor

    cfg = replace(load_config("tiny"), vocab_size=tokenizer.vocab_size, max_text_len=16)
    prep = Preprocessor(tokenizer, cfg)
    rows = [{"text": c} for c in CAPTIONS]
    full, text = prep(rows), prep(rows, ("text_ids", "text_mask"))
    assert sorted(text) == ["present", "text_ids", "text_mask"]
    for name in text:
        assert (text[name] == full[name]).all(), name
    with pytest.raises(ValueError, match="row 1 carries video"):
        prep([{"text": "a"}, {"video": b"x"}], ("text_ids", "text_mask"))
