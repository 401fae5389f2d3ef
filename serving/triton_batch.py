"""What both Triton python-backend models do with the requests of one execute call, and their file checks.

    triton_model.py        ONNX Runtime on the repository's model.onnx (the tiny encoder, locally)
    triton_torch_model.py  a pretrained backbone's saved PyTorch model (production and locally)

`run_requests` refuses a request with a row that carries no modality (the encoder would pool nothing;
for the text model, which takes no `present`, a row whose text_mask marks no token), runs the others as
ONE forward (what the dynamic batcher gathered), and splits the answer back per request; when that forward
raises ValueError (the encoder's own checks, e.g. token ids or audio masks), each request runs alone, so
only the one at fault fails. `repository_file` resolves a path a config
names, confined to the repository and checked by sha256.

The stub imports each model file under the module name `model`, so this module imports numpy only (never
the project's `model` package) and is handed Triton's `pb_utils`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]  # encoder input arrays -> embeddings (rows, E)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def repository_file(pb_utils: Any, model_dir: Path, relative: str, sha256: str, what: str) -> Path:
    """`relative` (to the model's directory REPO/<kind>/<model>) as a path inside REPO whose file `what` has
    the given sha256; a TritonModelException naming the parameter otherwise."""
    root = model_dir.resolve().parent.parent
    path = (model_dir / relative).resolve()
    if not path.is_relative_to(root):
        raise pb_utils.TritonModelException(f"{what} {relative!r} resolves outside the repository {root}")
    target = path / "model.safetensors" if path.is_dir() else path
    if not target.is_file():
        raise pb_utils.TritonModelException(f"{what} {target} does not exist")
    digest = file_sha256(target)
    if digest != sha256:
        raise pb_utils.TritonModelException(f"{target} has sha256 {digest}, the config expects {sha256}")
    return path


def bad_request(pb_utils: Any, message: str) -> Any:
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _empty_row(arrays: dict[str, np.ndarray]) -> str | None:
    """Why the first row that would pool nothing is refused, or None."""
    if "present" in arrays:
        empty = np.flatnonzero(~arrays["present"].any(axis=1))
        reason = "no modality present (present is all false); every row needs at least one of text, video, audio"
    else:
        empty = np.flatnonzero(~arrays["text_mask"].any(axis=1))
        reason = "no text token (text_mask is all false); the text model needs a caption in every row"
    return f"row {int(empty[0])}: {reason}" if empty.size else None


def run_requests(pb_utils: Any, requests: list, inputs: list[str], output: str, forward: Forward) -> list:
    """One response per request, in order (see the module docstring)."""

    def answer(embeddings: np.ndarray) -> Any:
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(output, np.ascontiguousarray(embeddings))])

    def alone(arrays: dict[str, np.ndarray]) -> Any:
        try:
            return answer(forward(arrays))
        except ValueError as exc:
            return bad_request(pb_utils, str(exc))

    batches, responses = [], [None] * len(requests)
    for i, request in enumerate(requests):
        arrays = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in inputs}
        refused = _empty_row(arrays)
        if refused:
            responses[i] = bad_request(pb_utils, refused)
        else:
            batches.append((i, arrays))
    if not batches:
        return responses
    joined = {name: np.concatenate([a[name] for _, a in batches]) for name in inputs}
    try:
        embeddings = forward(joined)  # (sum of rows, E)
    except ValueError:
        for i, arrays in batches:
            responses[i] = alone(arrays)
        return responses
    start = 0
    for i, arrays in batches:
        n = len(arrays[inputs[0]])
        responses[i] = answer(embeddings[start:start + n])
        start += n
    return responses
