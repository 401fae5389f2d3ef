"""Triton python-backend model: a pretrained backbone's saved model in PyTorch, its LoRA merged into the base.

repository.py copies this file to 1/model.py of both configs of a Qwen2.5-Omni model (production: KIND_GPU;
local: KIND_CPU). The config's parameters say what to load:

    saved_model       the saved model (LoRA + head, base.json, tokenizer.json), a path relative to this
                      model's directory that must stay inside the repository
    saved_sha256      sha256 of its model.safetensors (the one export checked)
    base_checkpoint   the base Qwen2.5-Omni checkpoint: a directory (production: where the InferenceService
                      mounts it); its weights digest must be the one base.json records

Loading goes through model.store.load_model (every checkpoint check, the digest included), then
model.omni.export.merge_lora; the instance kind picks the device. The stub must import torch,
transformers, peft and this project: in production the predictor image carries them
(serving/Dockerfile.triton), locally the launcher puts this environment first on PATH and the project
on PYTHONPATH (the stub imports this file under the name `model`, the package's name: initialize hands the
name back first). As in triton_model.py, a row with no modality present is refused alone, and requests the
dynamic batcher gathered run as one forward.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _saved_model(model_dir: Path, params: dict) -> Path:
    """The saved model named by the config, refused outside the repository or with other weights than exported."""
    root = model_dir.resolve().parent.parent  # REPO: model_dir is REPO/<kind>/<model>
    path = (model_dir / params["saved_model"]).resolve()
    if not path.is_relative_to(root):
        raise pb_utils.TritonModelException(f"saved_model {params['saved_model']!r} resolves outside the repository {root}")
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise pb_utils.TritonModelException(f"saved_model {path} has no model.safetensors")
    digest = _sha256(weights)
    if digest != params["saved_sha256"]:
        raise pb_utils.TritonModelException(f"{weights} has sha256 {digest}, the config expects {params['saved_sha256']}")
    return path


def _import_the_package() -> None:
    """Triton's stub imports this file as the module `model`, which is also the name of this project's package,
    and puts this directory on sys.path: give the name back to the package and import it from where it is
    installed (the stub keeps its own reference to this module; the package's lazy imports at request time
    need `model` to be the package)."""
    import importlib

    here = Path(__file__).resolve().parent
    module = sys.modules.get("model")
    if module is not None and not hasattr(module, "__path__"):
        del sys.modules["model"]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    package = importlib.import_module("model")
    if not hasattr(package, "__path__"):
        raise pb_utils.TritonModelException(f"cannot import the omniretriever package `model` (found {package.__file__}); "
                                            f"install the project or put it on PYTHONPATH (sys.path: {sys.path})")


def _bad_request(message: str) -> "pb_utils.InferenceResponse":
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        _import_the_package()
        import torch

        from model.inference import Embedder
        from model.omni.export import merge_lora
        from model.store import load_model

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]
        if params.get("intra_op_threads", "0") != "0":
            torch.set_num_threads(int(params["intra_op_threads"]))
        saved = _saved_model(Path(args["model_repository"]), params)
        try:
            loaded = load_model(saved, base=params["base_checkpoint"])
        except (OSError, ValueError) as exc:  # CheckpointError (a ValueError) names the file and the field
            raise pb_utils.TritonModelException(f"cannot load {saved} over {params['base_checkpoint']}: {exc}") from None
        merge_lora(loaded.encoder)
        gpu = args.get("model_instance_kind") == "GPU"
        device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu")
        loaded.encoder.to(device)
        self.embedder = Embedder(loaded)

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
            try:
                embeddings = self.embedder.forward(joined)  # (sum of rows, E)
            except ValueError:  # the encoder's own checks (token ids, audio masks): find the request at fault
                for i, arrays in batches:
                    responses[i] = self._alone(arrays)
                return responses
            start = 0
            for i, arrays in batches:
                n = len(arrays["present"])
                responses[i] = self._response(embeddings[start:start + n])
                start += n
        return responses

    def _response(self, embeddings: np.ndarray) -> "pb_utils.InferenceResponse":
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, np.ascontiguousarray(embeddings))])

    def _alone(self, arrays: dict[str, np.ndarray]) -> "pb_utils.InferenceResponse":
        try:
            return self._response(self.embedder.forward(arrays))
        except ValueError as exc:
            return _bad_request(str(exc))

    def finalize(self) -> None:
        self.embedder = None
