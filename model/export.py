"""ONNX export of the unified encoder: one graph for every subset of modalities, and a text graph for
captions, each checked against PyTorch.

The joint graph takes the five arrays of `model.inference.INPUTS` (shapes and dtypes from `input_shapes`)
with a dynamic batch dimension and returns `OUTPUT` = EMBEDDING, float32 (B, embed_dim):

    text_ids  int64   (B, max_text_len)
    text_mask bool    (B, max_text_len)
    video     uint8   (B, frames, size, size, 3)
    audio     float32 (B, n_mels, mel_frames)
    present   bool    (B, 3)            order T, V, A; a row may carry any non-empty subset
    EMBEDDING float32 (B, embed_dim)    L2-normalised

Every modality goes through one joint forward and absent ones are masked per row by `present`, exactly
as `model.inference.Embedder.forward` does, so a Triton server running this graph returns what the
PyTorch model returns. The graph does not check for a row with nothing present (the caller does:
`Preprocessor` refuses such rows). The export is written to a temp file, checked on random subsets
per row at several batch sizes, and only then renamed into place, so a failed export leaves nothing.

The text graph (`export_text_onnx`) takes `TEXT_INPUTS` only and runs the encoder's text view: a caption's
tokens alone through the trunk, where the joint graph also carries (and masks) a zero clip's video and audio
tokens. For a caption-only row the two are the same computation, since masked tokens are never attended to or
pooled; the export checks the text graph against the PyTorch joint forward on caption-only rows. Serving sends
caption-only requests to it: about a sixth of the joint graph's work a row for the tiny encoder, and
0.3 KB a row on the wire instead of the 250 KB of a zero clip.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.errors import ExportError
from model.inference import INPUTS, input_shapes
from model.modalities import MODALITIES, T
from model.store import LoadedModel, load_model, weights_digest

OUTPUT = "EMBEDDING"  # the graph's one output
OPSET = 17
PARITY_TOLERANCE = 1e-4  # max |onnxruntime - pytorch| allowed in float32
PARITY_BATCHES = (1, 7, 16)  # batch sizes checked: the batch dimension must really be dynamic
TEXT_INPUTS = ("text_ids", "text_mask")  # the text graph's inputs, a prefix of INPUTS


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote and how closely ONNX Runtime reproduces PyTorch on it."""

    onnx: Path
    max_abs_diff: float  # over every row of every parity batch
    rows_checked: int
    embed_dim: int
    opset: int = OPSET


class _Graph(torch.nn.Module):
    """The five INPUTS arrays as positional tensors -> the encoder's joint, per-row-masked forward."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.encoder = loaded.encoder

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor, audio: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        batch = {"text_ids": text_ids, "text_mask": text_mask, "video": video, "audio": audio}
        return self.encoder(batch, MODALITIES, present)  # (B, E)


class _TextGraph(torch.nn.Module):
    """TEXT_INPUTS as positional tensors -> the encoder's text view (only the caption's tokens)."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.encoder = loaded.encoder

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder({"text_ids": text_ids, "text_mask": text_mask}, (T,))  # (B, E)


def random_inputs(loaded: LoadedModel, batch: int, seed: int, text_only: bool = False) -> dict[str, np.ndarray]:
    """Encoder inputs of `batch` rows with random content and a random non-empty subset of modalities per row
    (with `text_only`, a caption alone in every row: what the text graph is checked on).

    The first rows cycle through all seven subsets, so every subset is checked at every batch size >= 7."""
    rng = np.random.default_rng(seed)
    cfg = loaded.config
    shapes = input_shapes(cfg)
    out: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in shapes.items():
        full = (batch, *shape[1:])
        if dtype == "uint8":
            out[name] = rng.integers(0, 256, full, dtype=np.uint8)
        elif dtype == "float32":
            out[name] = rng.normal(-4.0, 2.0, full).astype(np.float32)  # log-mel-like values
        elif name == "text_ids":
            out[name] = rng.integers(1, cfg.vocab_size, full, dtype=np.int64)
    lengths = rng.integers(1, cfg.max_text_len + 1, batch)
    out["text_mask"] = np.arange(cfg.max_text_len)[None, :] < lengths[:, None]
    out["text_ids"] = np.where(out["text_mask"], out["text_ids"], 0)
    subsets = [np.array([(k >> i) & 1 for i in range(len(MODALITIES))], dtype=bool) for k in range(1, 8)]
    present = np.stack([subsets[i % 7] if i < 7 else subsets[rng.integers(0, 7)] for i in range(batch)])
    if text_only:
        present = np.zeros_like(present)
        present[:, MODALITIES.index(T)] = True
    out["present"] = present
    out["text_mask"] &= present[:, :1]
    return {name: out[name] for name in INPUTS}


def _inputs(text_only: bool) -> tuple[str, ...]:
    """The inputs of the text graph or of the joint one."""
    return TEXT_INPUTS if text_only else INPUTS


def _torch_forward(graph: _Graph, arrays: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return graph(*(torch.from_numpy(arrays[k]) for k in INPUTS)).float().numpy()


def _trace(graph: torch.nn.Module, loaded: LoadedModel, path: Path, text_only: bool = False) -> None:
    names = _inputs(text_only)
    arrays = random_inputs(loaded, 2, seed=0, text_only=text_only)
    example = tuple(torch.from_numpy(arrays[k]) for k in names)
    axes = {name: {0: "batch"} for name in (*names, OUTPUT)}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes are expected
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, example, str(path), input_names=list(names), output_names=[OUTPUT],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _annotate(path: Path, loaded: LoadedModel) -> None:
    """Fix the output's embedding size and record the encoder config and the weights' digest in the metadata."""
    import onnx

    proto = onnx.load(str(path))
    dims = proto.graph.output[0].type.tensor_type.shape.dim  # (batch, E): the tracer leaves E symbolic
    dims[1].Clear()
    dims[1].dim_value = loaded.config.embed_dim
    onnx.checker.check_model(proto)
    meta = {"omniretriever.config": json.dumps(loaded.config.to_dict(), sort_keys=True),
            "omniretriever.weights_sha256": weights_digest(loaded.path)}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))



def check_parity(onnx_path: Path, loaded: LoadedModel, batches: tuple[int, ...] = PARITY_BATCHES,
                 seed: int = 1, text_only: bool = False) -> tuple[float, int]:
    """(max |onnxruntime - pytorch| over random per-row subsets at each batch size, rows checked). With
    `text_only`, `onnx_path` is a text graph, fed TEXT_INPUTS of caption-only rows and compared with the
    PyTorch joint forward on the same rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph = _Graph(loaded).eval()
    names = _inputs(text_only)
    worst, rows = 0.0, 0
    for i, n in enumerate(batches):
        arrays = random_inputs(loaded, n, seed=seed + i, text_only=text_only)
        got = session.run([OUTPUT], {k: arrays[k] for k in names})[0]
        want = _torch_forward(graph, arrays)
        if got.shape != want.shape:
            raise ExportError(f"{onnx_path}: ONNX output shape {got.shape} differs from PyTorch's {want.shape} at batch {n}")
        worst = max(worst, float(np.abs(got - want).max()))
        rows += n
    return worst, rows


def onnx_path_for(out: str | Path) -> Path:
    """`out` itself when it names an .onnx file, else out/model.onnx."""
    out = Path(out)
    return out if out.suffix == ".onnx" else out / "model.onnx"


def _export(model: Path | LoadedModel, out: Path, tolerance: float, text_only: bool) -> ExportResult:
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    source = loaded.path if isinstance(model, LoadedModel) else model
    path = onnx_path_for(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    graph = _TextGraph(loaded) if text_only else _Graph(loaded)
    try:
        _trace(graph.eval(), loaded, tmp, text_only)
        _annotate(tmp, loaded)
        diff, rows = check_parity(tmp, loaded, text_only=text_only)
        if not diff < tolerance:
            what = "the text graph's ONNX Runtime" if text_only else "ONNX Runtime"
            raise ExportError(f"{source}: {what} differs from PyTorch by {diff:.3g} (limit {tolerance:g}); "
                              "the export was not written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(onnx=path, max_abs_diff=diff, rows_checked=rows, embed_dim=loaded.config.embed_dim)


def export_onnx(model: Path | LoadedModel, out: Path, tolerance: float = PARITY_TOLERANCE) -> ExportResult:
    """Export a saved model (RUN or RUN/model, or one already loaded) to ONNX at `out` (a .onnx file, or a
    directory for model.onnx).

    Raises ExportError, leaving nothing at `out`, when ONNX Runtime's output differs from PyTorch's by
    `tolerance` or more on any row."""
    return _export(model, out, tolerance, text_only=False)


def export_text_onnx(model: Path | LoadedModel, out: Path, tolerance: float = PARITY_TOLERANCE) -> ExportResult:
    """The text graph of a saved model (TEXT_INPUTS -> EMBEDDING) at `out`, like export_onnx; its parity is
    checked against the PyTorch joint forward on caption-only rows."""
    return _export(model, out, tolerance, text_only=True)
