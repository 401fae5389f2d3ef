"""Local Qwen2.5-Omni checkpoints: find and validate one, digest its weights, load its thinker.

Two layouts are accepted, both as Hugging Face writes them:

    thinker   config.json with model_type "qwen2_5_omni_thinker"; weights keyed as save_pretrained of the
              thinker writes them (model.* for the LLM, visual.*, audio_tower.*, lm_head.*) or as the
              thinker holds them in memory (model.language_model.*, model.visual.*, model.audio_tower.*)
    omni      the full Qwen2.5-Omni: model_type "qwen2_5_omni" with a "thinker_config" inside and the
              thinker's weights under thinker.*; the talker.* and token2wav.* weights (speech output)
              may be present and are ignored

Weights are model.safetensors, or model.safetensors.index.json and the shards its weight_map names.
tokenizer.json (the captions' tokenizer) lies beside them. Every problem found is a CheckpointError
naming the file and the field, raised before transformers is imported: a missing directory or file, a
config that is not the thinker's, a special token id that is missing or outside the vocabulary, hidden
sizes that do not meet, an index naming a missing shard or a key its shard lacks, weights without one
of the three parts. Loading reads local files only, and weights the model expects but the files lack
are an error too (from_pretrained would leave them random with a warning).

Identity: `weights_digest` is the sha256, over the weights files in name order (the index included when
sharded), of each file's name (UTF-8), a NUL byte, its size as 8 little-endian bytes, then its bytes.
The same files give the same digest wherever the directory lies; any changed byte or name changes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import CheckpointError

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniThinkerModel

THINKER, OMNI = "qwen2_5_omni_thinker", "qwen2_5_omni"
WEIGHTS, INDEX, TOKENIZER = "model.safetensors", "model.safetensors.index.json", "tokenizer.json"
# the thinker config's special token ids: name -> the names a config.json may give it
SPECIAL_IDS: dict[str, tuple[str, ...]] = {
    "audio_token_id": ("audio_token_id", "audio_token_index"),
    "image_token_id": ("image_token_id", "image_token_index"),
    "video_token_id": ("video_token_id", "video_token_index"),
    "audio_start_token_id": ("audio_start_token_id",),
    "audio_end_token_id": ("audio_end_token_id",),
    "vision_start_token_id": ("vision_start_token_id",),
    "vision_end_token_id": ("vision_end_token_id",),
}
# the thinker's three parts: name -> the key prefixes (after any "thinker.") one of which must hold weights
PARTS: dict[str, tuple[str, ...]] = {
    "language model": ("model.embed_tokens.", "model.language_model.embed_tokens."),
    "vision tower": ("visual.", "model.visual."),
    "audio tower": ("audio_tower.", "model.audio_tower."),
}
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class OmniCheckpoint:
    """A validated checkpoint directory: its layout, the thinker's config (as in config.json), its special
    token ids, the id left padding uses, the vocabulary size and the weights files."""

    root: Path
    layout: str  # "thinker" or "omni"
    thinker_config: dict[str, Any]
    special_ids: dict[str, int]
    pad_token_id: int
    vocab_size: int
    weight_files: tuple[Path, ...]  # the safetensors files, and the index first when sharded

    @cached_property
    def digest(self) -> str:
        return weights_digest(self.weight_files)

    @property
    def tokenizer_path(self) -> Path:
        return self.root / TOKENIZER

    def identity(self) -> dict[str, str]:
        """What a saved model or a training checkpoint records of its base: where it lay and its digest."""
        return {"path": str(self.root.resolve()), "digest": self.digest, "layout": self.layout}

    def check_identity(self, recorded: dict, where: str | Path) -> None:
        """Refuse a base whose weights are not the ones `recorded` (an identity()) names, naming both digests."""
        if recorded.get("digest") != self.digest:
            raise CheckpointError(self.root, "digest",
                                  f"the base checkpoint's weights have digest {self.digest}, but {where} was trained on "
                                  f"weights with digest {recorded.get('digest')} (recorded at {recorded.get('path')}): "
                                  f"give the checkpoint it was trained on")


def weights_digest(files: tuple[Path, ...] | list[Path]) -> str:
    """sha256 over (name, NUL, size, bytes) of each file in name order; see the module docstring."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        h.update(path.name.encode() + b"\0" + path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def read_json(path: Path, what: str) -> dict:
    """The JSON object in `path`; a CheckpointError naming the file (and `what` it is) otherwise."""
    if not path.is_file():
        raise CheckpointError(path, None, f"{what} not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, None, f"cannot read {what}: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(path, None, f"{what} must hold a JSON object, got {type(raw).__name__}")
    return raw


def _thinker_config(config_path: Path, raw: dict) -> tuple[str, dict, str]:
    """(layout, the thinker's config dict, the field path it came from)."""
    model_type = raw.get("model_type")
    if model_type == THINKER:
        return "thinker", raw, ""
    if model_type != OMNI:
        raise CheckpointError(config_path, "model_type", f"expected {THINKER!r} or {OMNI!r}, got {model_type!r}")
    thinker = raw.get("thinker_config")
    if not isinstance(thinker, dict):
        raise CheckpointError(config_path, "thinker_config", f"a {OMNI} config needs the thinker's config as an object")
    if thinker.get("model_type", THINKER) != THINKER:
        raise CheckpointError(config_path, "thinker_config.model_type",
                              f"expected {THINKER!r}, got {thinker.get('model_type')!r}")
    return "omni", thinker, "thinker_config."


def _int_field(config_path: Path, section: dict, field: str, name: str) -> int:
    value = section.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CheckpointError(config_path, field + name, f"expected a positive integer, got {value!r}")
    return value


def _check_sizes(config_path: Path, thinker: dict, at: str) -> int:
    """The sub-configs exist and fit together; returns the vocabulary size."""
    for part in ("text_config", "vision_config", "audio_config"):
        if not isinstance(thinker.get(part), dict):
            raise CheckpointError(config_path, at + part, "missing (the model class would fill in the 7B defaults)")
    text, vision, audio = thinker["text_config"], thinker["vision_config"], thinker["audio_config"]
    hidden = _int_field(config_path, text, f"{at}text_config.", "hidden_size")
    heads = _int_field(config_path, text, f"{at}text_config.", "num_attention_heads")
    for section, name, field in ((vision, "vision_config", "out_hidden_size"), (audio, "audio_config", "output_dim")):
        if _int_field(config_path, section, f"{at}{name}.", field) != hidden:
            raise CheckpointError(config_path, f"{at}{name}.{field}",
                                  f"must equal text_config.hidden_size={hidden}, got {section[field]}")
    head_dim = text.get("head_dim") or hidden // heads
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    section = rope.get("mrope_section") if isinstance(rope, dict) else None
    if not isinstance(section, list) or 2 * sum(section) != head_dim:
        raise CheckpointError(config_path, f"{at}text_config.rope_parameters.mrope_section",
                              f"must be a list summing to head_dim/2 = {head_dim // 2}, got {section!r}")
    return _int_field(config_path, text, f"{at}text_config.", "vocab_size")


def _special_ids(config_path: Path, thinker: dict, at: str, vocab: int) -> dict[str, int]:
    ids: dict[str, int] = {}
    for name, aliases in SPECIAL_IDS.items():
        given = next((a for a in aliases if a in thinker), None)
        if given is None:
            raise CheckpointError(config_path, at + aliases[-1], "missing")
        value = thinker[given]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < vocab:
            raise CheckpointError(config_path, at + given,
                                  f"must be a token id inside the vocabulary [0, {vocab}), got {value!r}")
        if value in ids.values():
            other = next(k for k, v in ids.items() if v == value)
            raise CheckpointError(config_path, at + given, f"id {value} is already {other}")
        ids[name] = value
    return ids


def _pad_id(config_path: Path, thinker: dict, at: str, ids: dict[str, int], vocab: int) -> int:
    """The id left padding uses: text_config.pad_token_id, else the thinker's, else the first id no special
    token has. Padding is masked out; the id only has to be no placeholder."""
    for field, section in ((f"{at}text_config.pad_token_id", thinker["text_config"]), (f"{at}pad_token_id", thinker)):
        value = section.get("pad_token_id")
        if value is None:
            continue
        if not isinstance(value, int) or not 0 <= value < vocab or value in ids.values():
            raise CheckpointError(config_path, field,
                                  f"must be an id inside [0, {vocab}) that no placeholder uses, got {value!r}")
        return value
    return next(i for i in range(vocab) if i not in ids.values())


def _safetensors_keys(path: Path) -> set[str]:
    """The tensor names in a safetensors header, read without loading a tensor."""
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 2 <= size <= 100 * 1024 * 1024:
                raise ValueError(f"header length {size} is not plausible")
            header = json.loads(fh.read(size))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
    except (OSError, ValueError) as exc:
        raise CheckpointError(path, None, f"not a readable safetensors file: {exc}") from None
    return {k for k in header if k != "__metadata__"}


def _weights(root: Path) -> tuple[tuple[Path, ...], set[str], Path]:
    """(weights files, every key in them, the file to name when a part is missing). A single file is
    preferred to an index, as from_pretrained prefers it."""
    single, index = root / WEIGHTS, root / INDEX
    if single.is_file():
        return (single,), _safetensors_keys(single), single
    if not index.exists():
        raise CheckpointError(root, None, f"no weights: neither {WEIGHTS} nor {INDEX}")
    weight_map = read_json(index, "the safetensors index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(index, "weight_map", "must map tensor names to shard files")
    keys: set[str] = set()
    shards = []
    for shard in sorted(set(map(str, weight_map.values()))):
        path = root / shard
        if not path.is_file():
            raise CheckpointError(index, "weight_map", f"names shard {shard!r}, which is missing from {root}")
        shard_keys = _safetensors_keys(path)
        absent = sorted(k for k, s in weight_map.items() if s == shard and k not in shard_keys)
        if absent:
            raise CheckpointError(path, absent[0], f"named by {INDEX} but not in this shard ({len(absent)} such keys)")
        keys |= shard_keys
        shards.append(path)
    return (index, *shards), keys, index


def find_checkpoint(path: str | Path) -> OmniCheckpoint:
    """Validate a local checkpoint directory (either layout) without loading a tensor."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(root, None, "checkpoint directory not found")
    config_path = root / "config.json"
    layout, thinker, at = _thinker_config(config_path, read_json(config_path, "config.json"))
    vocab = _check_sizes(config_path, thinker, at)
    ids = _special_ids(config_path, thinker, at, vocab)
    pad = _pad_id(config_path, thinker, at, ids, vocab)
    prefix = "thinker." if layout == "omni" else ""
    files, keys, named = _weights(root)
    for part, prefixes in PARTS.items():
        if not any(k.startswith(prefix + p) for k in keys for p in prefixes):
            raise CheckpointError(named, " or ".join(prefix + p + "*" for p in prefixes), f"no weights for the {part}")
    _check_tokenizer(root / TOKENIZER, vocab)
    return OmniCheckpoint(root, layout, thinker, ids, pad, vocab, files)


def unsaved_checkpoint(root: str | Path, thinker: dict[str, Any]) -> OmniCheckpoint:
    """The record of a thinker built in memory (a random one, model.omni.random_checkpoint), whose config
    dict is checked as find_checkpoint checks a config.json's; it has no weights files and its tokenizer.json
    is the caller's to write at root."""
    config_path = Path(root) / "config.json"
    vocab = _check_sizes(config_path, thinker, "")
    ids = _special_ids(config_path, thinker, "", vocab)
    return OmniCheckpoint(Path(root), "thinker", thinker, ids, _pad_id(config_path, thinker, "", ids, vocab), vocab, ())


def _check_tokenizer(path: Path, vocab: int) -> None:
    from tokenizers import Tokenizer

    if not path.is_file():
        raise CheckpointError(path, None, "the captions' tokenizer is missing")
    try:
        size = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises a plain Exception
        raise CheckpointError(path, None, f"cannot read the tokenizer: {exc}") from None
    if size > vocab:
        raise CheckpointError(path, "vocab", f"{size} tokens do not fit the model's vocabulary of {vocab}")


def load_thinker(checkpoint: OmniCheckpoint, dtype: str = "float32", seconds_per_chunk: int | None = None,
                 attn_implementation: str = "sdpa") -> Qwen2_5OmniThinkerModel:
    """The checkpoint's Qwen2_5OmniThinkerModel (no lm_head: embeddings need none), in eval mode, read from
    local files only. `seconds_per_chunk` overrides the audio/video interleave; `attn_implementation` is
    "sdpa" (torch's fused attention, on the CPU too) or "eager", for the LLM and both towers."""
    import torch
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerModel

    raw = {k: v for k, v in checkpoint.thinker_config.items() if k not in ("architectures", "transformers_version")}
    config = Qwen2_5OmniThinkerConfig.from_dict(raw)
    for name, value in checkpoint.special_ids.items():
        if getattr(config, name, None) is None:  # the config class lacks vision_start_token_id; get_rope_index reads it
            setattr(config, name, value)
    if seconds_per_chunk is not None:
        config.seconds_per_chunk = seconds_per_chunk
    model, info = Qwen2_5OmniThinkerModel.from_pretrained(
        checkpoint.root, config=config, local_files_only=True, dtype=getattr(torch, dtype),
        attn_implementation=attn_implementation, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or ()) + sorted(str(k) for k in info.get("mismatched_keys") or ())
    if missing:
        raise CheckpointError(checkpoint.weight_files[0], missing[0],
                              f"the model needs {len(missing)} weight(s) the files lack or shape differently")
    return model.eval()
