"""Triton python-backend model: ONNX Runtime on the repository's model.onnx (the local predictor, KIND_CPU).

repository.py copies this file to REPO/local/omniretriever-encoder/1/model.py. The config's parameters
name the ONNX file (`onnx_model`, a path relative to this model's directory that must stay inside the
repository) and its sha256 (`onnx_sha256`), so the local model runs exactly the graph the production
config serves with the onnxruntime backend, without a second copy. It imports numpy, onnxruntime,
Triton's own utilities and serving.triton_batch (the launcher puts the project on PYTHONPATH); the stub
runs it with the `python` first on PATH.

Triton has already checked every input's name, datatype and shape against config.pbtxt; a row with no
modality present is refused (serving.triton_batch.run_requests), and requests gathered by the dynamic
batcher run as one ONNX Runtime call.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from serving.triton_batch import repository_file, run_requests


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        # "0": ONNX Runtime's threads sleep between runs instead of spinning, so a CPU shared with the transformer
        # (the local endpoint) is not spent waiting for work
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "1"))
        path = repository_file(pb_utils, Path(args["model_repository"]), params["onnx_model"], params["onnx_sha256"],
                               "onnx_model")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _forward(self, arrays: dict) -> object:
        return self.session.run([self.output], arrays)[0]

    def execute(self, requests: list) -> list:
        return run_requests(pb_utils, requests, self.inputs, self.output, self._forward)

    def finalize(self) -> None:
        self.session = None
