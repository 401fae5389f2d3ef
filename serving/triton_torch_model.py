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
name back first). serving.triton_batch.run_requests refuses a row with no modality present and runs the
requests the dynamic batcher gathered as one forward.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

from serving.triton_batch import repository_file, run_requests


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
        saved = repository_file(pb_utils, Path(args["model_repository"]), params["saved_model"], params["saved_sha256"],
                                "saved_model")
        try:
            loaded = load_model(saved, base=params["base_checkpoint"])
        except (OSError, ValueError) as exc:  # CheckpointError (a ValueError) names the file and the field
            raise pb_utils.TritonModelException(f"cannot load {saved} over {params['base_checkpoint']}: {exc}") from None
        merge_lora(loaded.encoder)
        gpu = args.get("model_instance_kind") == "GPU"
        device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu")
        loaded.encoder.to(device)
        self.embedder = Embedder(loaded)

    def execute(self, requests: list) -> list:
        return run_requests(pb_utils, requests, self.inputs, self.output, self.embedder.forward)

    def finalize(self) -> None:
        self.embedder = None
