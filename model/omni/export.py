"""What serving runs for this backbone: the saved model with its LoRA merged into the base, checked first.

The Qwen2.5-Omni encoder does not export to one ONNX graph (each row's sequence is laid out in Python:
prompts, placeholders, A/V interleave, rotary positions), so Triton runs it in its python backend
(serving/triton_torch_model.py). There the LoRA deltas are merged into the frozen q/k/v weights once at
load (`merge_lora`), so a request pays for no adapter matmuls. `check_merge_parity` is the export's check
that merging changes nothing that matters: the same random rows, every subset of T, V, A per row, at
several batch sizes, before and after the merge, must agree within the tolerance.

    random_arrays(loaded, n, seed)   encoder input arrays (model.inference.input_names) of n random rows
    merge_lora(encoder)              merge every LoRA layer in place; returns how many were merged
    check_merge_parity(loaded)       (max |merged - unmerged|, rows); leaves the encoder merged
"""

from __future__ import annotations

import numpy as np

from model.inference import Embedder, input_shapes
from model.modalities import MODALITIES
from model.omni.backbone import QwenOmniEncoder
from model.omni.preprocess import audio_features
from model.store import LoadedModel

PARITY_BATCHES = (1, 3, 7)  # batch 7 holds each of the seven subsets of T, V, A once
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def random_arrays(loaded: LoadedModel, n: int, seed: int) -> dict[str, np.ndarray]:
    """n rows of random captions, frames and audio (full length), row i carrying subset i % 7 of T, V, A."""
    rng = np.random.default_rng(seed)
    shapes = input_shapes(loaded.config)
    out = {name: np.zeros((n, *shape[1:]), dtype=dtype) for name, (shape, dtype) in shapes.items()}
    words = [" ".join("".join(rng.choice(_LETTERS, rng.integers(2, 8))) for _ in range(rng.integers(1, 9)))
             for _ in range(n)]
    ids, mask = loaded.tokenizer(words)
    out["text_ids"][:, : ids.shape[1]], out["text_mask"][:, : mask.shape[1]] = ids.numpy(), mask.numpy()
    out["video"][:] = rng.integers(0, 256, out["video"].shape, dtype=np.uint8)
    waves = [rng.normal(0, 0.1, loaded.config.decode.num_samples).astype(np.float32) for _ in range(n)]
    features, valid = audio_features(waves)
    out["audio"][:, :, : features.shape[2]], out["audio_mask"][:, : valid.shape[1]] = features.numpy(), valid.numpy()
    subsets = np.array([[(k >> i) & 1 for i in range(len(MODALITIES))] for k in range(1, 8)], dtype=bool)
    out["present"] = subsets[np.arange(n) % 7]
    out["text_mask"] &= out["present"][:, :1]
    return out


def merge_lora(encoder: QwenOmniEncoder) -> int:
    """Fold each LoRA delta into its base weight (peft's merge); the adapters stop being applied."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in encoder.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        if not layer.merged:
            layer.merge()
    return len(layers)


def check_merge_parity(loaded: LoadedModel, batches: tuple[int, ...] = PARITY_BATCHES, seed: int = 1
                       ) -> tuple[float, int]:
    """Embed random rows unmerged, merge the LoRA layers, embed them again: (max |difference|, rows)."""
    embedder = Embedder(loaded)
    inputs = [random_arrays(loaded, n, seed + i) for i, n in enumerate(batches)]
    before = [embedder.forward(a) for a in inputs]
    merge_lora(loaded.encoder)
    after = [embedder.forward(a) for a in inputs]
    worst = max(float(np.abs(a - b).max()) for a, b in zip(after, before))
    if not np.isfinite(worst):
        raise ValueError(f"{loaded.path}: the model's embeddings are not finite")
    return worst, sum(batches)

