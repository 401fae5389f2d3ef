"""Triton python-backend model: ONNX Runtime on the repository's model.onnx (the local predictor, KIND_CPU).

repository.py copies this file to REPO/local/omniretriever-encoder/1/model.py. The config's parameters
name the ONNX file (`onnx_model`, a path relative to this model's directory that must stay inside the
repository) and its sha256 (`onnx_sha256`), so the local model runs exactly the graph the production
config serves with the onnxruntime backend, without a second copy. It imports only numpy, onnxruntime
and Triton's own utilities: the stub runs it with the `python` first on PATH.

Triton has already checked every input's name, datatype and shape against config.pbtxt; this model
also refuses a row with no modality present (the graph would pool nothing). Requests gathered by the
dynamic batcher run as one ONNX Runtime call; a bad request fails alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _onnx_path(model_dir: Path, params: dict) -> Path:
    """The ONNX file named by the config, refused if it resolves outside the repository or is not the one built."""
    root = model_dir.resolve().parent.parent  # REPO: model_dir is REPO/local/<model>
    path = (model_dir / params["onnx_model"]).resolve()
    if not path.is_relative_to(root):
        raise pb_utils.TritonModelException(f"onnx_model {params['onnx_model']!r} resolves outside the repository {root}")
    if not path.is_file():
        raise pb_utils.TritonModelException(f"onnx_model {path} does not exist")
    digest = _sha256(path)
    if digest != params["onnx_sha256"]:
        raise pb_utils.TritonModelException(f"{path} has sha256 {digest}, the config expects {params['onnx_sha256']}")
    return path


def _bad_request(message: str) -> "pb_utils.InferenceResponse":
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        path = _onnx_path(Path(args["model_repository"]), params)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _arrays(self, request) -> dict[str, np.ndarray]:
        return {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}

    def execute(self, requests: list) -> list:
        batches, responses = [], [None] * len(requests)
        for i, request in enumerate(requests):
            arrays = self._arrays(request)
            empty = np.flatnonzero(~arrays["present"].any(axis=1))
            if empty.size:
                responses[i] = _bad_request(f"row {int(empty[0])}: no modality present (present is all false); "
                                            "every row needs at least one of text, video, audio")
            else:
                batches.append((i, arrays))
        if batches:
            joined = {name: np.concatenate([a[name] for _, a in batches]) for name in self.inputs}
            embeddings = self.session.run([self.output], joined)[0]  # (sum of rows, E)
            start = 0
            for i, arrays in batches:
                n = len(arrays["present"])
                tensor = pb_utils.Tensor(self.output, np.ascontiguousarray(embeddings[start:start + n]))
                responses[i] = pb_utils.InferenceResponse(output_tensors=[tensor])
                start += n
        return responses

    def finalize(self) -> None:
        self.session = None
