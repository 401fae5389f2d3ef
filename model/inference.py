"""Embedding requests with a saved model: the preprocessing that training and evaluation use, row by row.

A row is a mapping with any non-empty subset of the fields "text" (a caption), "video" and "audio" (a
path, or the encoded bytes of a media file; "audio" may be the same mp4 as "video"). `Preprocessor`
turns rows into the encoder's input arrays (`INPUTS`, with a per-row presence mask) and `Embedder`
runs the model on them. The logged MLflow model, the KServe transformer and the ONNX export all go
through these two, so an embedding served online equals the one evaluation computes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import AnyConfig
from model.errors import InputError, MediaError
from model.media import MediaLimits, decode_audio, decode_video, log_mel
from model.modalities import A, MODALITIES, T, V
from model.store import LoadedModel, load_model
from model.text import TextTokenizer

FIELDS = {T: "text", V: "video", A: "audio"}  # modality -> request field
INPUTS = ("text_ids", "text_mask", "video", "audio", "present")  # encoder input arrays, in this order
MAX_TEXT_CHARS = 2_000  # longer captions are refused, not cut silently (the tokenizer keeps max_text_len tokens)

Media = str | os.PathLike | bytes | bytearray | memoryview


def input_shapes(cfg: AnyConfig) -> dict[str, tuple[tuple[int | str, ...], str]]:
    """name -> (shape with "B" for the batch, numpy dtype) of every encoder input array. A backbone with its
    own audio features (the Qwen2.5-Omni one) takes Whisper features and their valid frames ("audio_mask")."""
    d = cfg.decode
    shapes = {
        "text_ids": (("B", cfg.max_text_len), "int64"),
        "text_mask": (("B", cfg.max_text_len), "bool"),
        "video": (("B", d.num_frames, d.frame_size, d.frame_size, 3), "uint8"),
        "audio": (("B", d.n_mels, d.num_mel_frames), "float32"),
        "present": (("B", len(MODALITIES)), "bool"),
    }
    if cfg.audio_input == "waveform":
        from model.omni.preprocess import HOP, WHISPER_MELS

        frames = d.num_samples // HOP
        shapes["audio"] = (("B", WHISPER_MELS, frames), "float32")
        shapes["audio_mask"] = (("B", frames), "bool")
    return shapes


def input_names(cfg: AnyConfig) -> tuple[str, ...]:
    """The encoder input arrays of `cfg`'s backbone, in order: INPUTS, then "audio_mask" for the Qwen2.5-Omni one."""
    return tuple(input_shapes(cfg))


def load_tokenizer(cfg: AnyConfig, path: str | Path, pad_id: int | None = None) -> Any:
    """The captions' tokenizer saved beside a model (tokenizer.json): the tiny encoder's TextTokenizer, or a
    pretrained backbone's OmniTokenizer, which pads with the base checkpoint's `pad_id`."""
    if cfg.backbone == "tiny":
        return TextTokenizer.load(path, cfg.max_text_len)
    if pad_id is None:
        raise ValueError(f"{path}: the {cfg.backbone} tokenizer needs the base checkpoint's pad_token_id")
    from model.omni.text import OmniTokenizer

    return OmniTokenizer.load(path, cfg.max_text_len, pad_id)


def _decode_media(value: Media, field: str, row: int, decode: Any, limits: MediaLimits, kind: str,
                  audio_input: str = "log_mel") -> tuple[np.ndarray, bool]:
    """Decode a path or encoded bytes; bytes go through a private temp file so every limit and check applies."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise InputError(row, field, "media bytes are empty")
        if len(data) > limits.max_file_bytes:
            raise InputError(row, field, f"media is {len(data)} bytes, over the limit of {limits.max_file_bytes} bytes")
        with tempfile.NamedTemporaryFile(prefix="omniretriever-", suffix=".media") as tmp:
            tmp.write(data)
            tmp.flush()
            return _decode_path(tmp.name, field, row, decode, limits, kind, "<bytes>", audio_input)
    if isinstance(value, (str, os.PathLike)):
        if not str(value).strip():
            raise InputError(row, field, "media path is empty")
        return _decode_path(value, field, row, decode, limits, kind, str(value), audio_input)
    raise InputError(row, field, f"expected a path or media bytes, got {type(value).__name__}")


def _decode_path(path: str | os.PathLike, field: str, row: int, decode: Any, limits: MediaLimits, kind: str,
                 shown: str, audio_input: str = "log_mel") -> tuple[np.ndarray, bool]:
    try:
        if kind == "video":
            return decode_video(path, decode, limits), True
        wave, has_audio = decode_audio(path, decode, limits)
    except MediaError as exc:
        raise InputError(row, field, f"{shown}: {exc.reason}") from None
    if not has_audio:
        raise InputError(row, field, f"{shown}: has no audio stream")
    return (wave if audio_input == "waveform" else log_mel(wave, decode).numpy()), True


@dataclass
class Preprocessor:
    """Rows -> {name: array} for `INPUTS`; absent modalities are zero-filled and masked by "present"."""

    tokenizer: TextTokenizer  # or a pretrained backbone's OmniTokenizer
    config: AnyConfig
    limits: MediaLimits = MediaLimits()

    @classmethod
    def from_model(cls, loaded: LoadedModel, limits: MediaLimits = MediaLimits()) -> "Preprocessor":
        return cls(loaded.tokenizer, loaded.config, limits)

    def row_modalities(self, row: Mapping[str, Any], index: int) -> tuple[str, ...]:
        """The modalities a row carries; a field set to None or missing is absent."""
        if not isinstance(row, Mapping):
            raise InputError(index, None, f"expected a mapping of text/video/audio, got {type(row).__name__}")
        unknown = sorted(set(row) - set(FIELDS.values()))
        if unknown:
            raise InputError(index, None, f"unknown field(s) {', '.join(map(repr, unknown))}; expected text, video, audio")
        present = tuple(m for m in MODALITIES if row.get(FIELDS[m]) is not None)
        if not present:
            raise InputError(index, None, "no modality: give at least one of text, video, audio")
        return present

    def text(self, value: Any, index: int) -> str:
        if not isinstance(value, str):
            raise InputError(index, "text", f"expected a string, got {type(value).__name__}")
        if not value.strip():
            raise InputError(index, "text", "caption is empty or whitespace")
        if len(value) > MAX_TEXT_CHARS:
            raise InputError(index, "text", f"caption is {len(value)} characters, over the limit of {MAX_TEXT_CHARS}")
        return value

    def __call__(self, rows: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The encoder arrays of `rows`; with `names`, only those (and "present"), for rows whose modalities they
        cover (captions only: the text graph's text_ids and text_mask, without a zero clip per row)."""
        if len(rows) == 0:
            raise InputError(0, None, "the request has no rows")
        shapes = input_shapes(self.config)
        if names is not None:
            shapes = {k: v for k, v in shapes.items() if k in names or k == "present"}
        n = len(rows)
        out = {name: np.zeros((n, *shape[1:]), dtype=dtype) for name, (shape, dtype) in shapes.items()}
        texts = [""] * n
        for i, row in enumerate(rows):
            for m in self.row_modalities(row, i):
                out["present"][i, MODALITIES.index(m)] = True
                value = row[FIELDS[m]]
                if m == T:
                    texts[i] = self.text(value, i)
                else:
                    kind = "video" if m == V else "audio"
                    if kind not in out:
                        raise ValueError(f"row {i} carries {kind}, which the arrays asked for ({', '.join(out)}) leave out")
                    decoded = _decode_media(value, FIELDS[m], i, self.config.decode, self.limits, kind,
                                            self.config.audio_input)[0]
                    if kind == "audio" and "audio_mask" in out:  # a waveform: its Whisper features
                        from model.omni.preprocess import audio_features

                        features, valid = audio_features([decoded])
                        out["audio"][i], out["audio_mask"][i] = features[0].numpy(), valid[0].numpy()
                    else:
                        out[kind][i] = decoded
        ids, mask = self.tokenizer(texts)
        out["text_ids"][:, : ids.shape[1]] = ids.numpy()
        out["text_mask"][:, : mask.shape[1]] = mask.numpy() & out["present"][:, :1]
        return out


def encoder_batch(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Preprocessor output -> (the encoder's batch dict, present (B, 3) bool)."""
    keys = ("text_ids", "text_mask", "video", "audio") + (("audio_mask",) if "audio_mask" in arrays else ())
    batch = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in keys}
    return batch, torch.from_numpy(np.ascontiguousarray(arrays["present"]))


class Embedder:
    """A saved model plus its preprocessing: `embed(rows)` -> float32 (B, embed_dim), L2-normalised."""

    def __init__(self, model: str | Path | LoadedModel, limits: MediaLimits = MediaLimits(), batch_size: int = 64):
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model)
        self.preprocess = Preprocessor.from_model(self.loaded, limits)
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return self.loaded.config.embed_dim

    @torch.inference_mode()
    def forward(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Encoder input arrays -> embeddings: every modality in one joint forward, absent ones masked per row."""
        batch, present = encoder_batch(arrays)
        return self.loaded.encoder(batch, MODALITIES, present).float().cpu().numpy()

    def embed(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if len(rows) == 0:
            raise InputError(0, None, "the request has no rows")
        parts = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            try:
                arrays = self.preprocess(chunk)
            except InputError as exc:  # report the row's index in the whole request
                raise InputError(exc.row + start, exc.field, exc.reason) from None
            parts.append(self.forward(arrays))
        return np.concatenate(parts)
