"""The Triton model repository built from a saved model: the encoder Triton serves, two configs.

For the tiny encoder, two ONNX graphs: the joint one, and the text graph caption-only requests go to:

    REPO/
      repository.json                       what was built: source model, digests, parity, tensors
      production/                           storageUri of the KServe Triton predictor (GPU)
        omniretriever-encoder/
          config.pbtxt                      platform onnxruntime_onnx, KIND_GPU, dynamic batching
          1/model.onnx                      the joint graph (model/export.py)
          encoder.json  tokenizer.json      the preprocessing the transformer runs before Triton
          model.json                        weights and ONNX digests (the transformer checks an index against
                                            them) and the text model's name
        omniretriever-text-encoder/
          config.pbtxt  1/model.onnx        the text graph (text_ids, text_mask -> EMBEDDING), likewise
      local/                                --model-repository of the local tritonserver (CPU)
        omniretriever-encoder/
          config.pbtxt                      backend python, KIND_CPU, same tensors and batching
          1/model.py                        ONNX Runtime on ../../production/.../1/model.onnx (sha256-checked)
        omniretriever-text-encoder/
          config.pbtxt  1/model.py          the same, on production's text graph

For a pretrained backbone (Qwen2.5-Omni), the saved PyTorch model in the python backend instead: its
per-row sequence layout does not trace to one graph. The base's weights are never copied in:

      production/omniretriever-encoder/
          config.pbtxt                      backend python, KIND_GPU; base_checkpoint = BASE_MOUNT, where the
                                            InferenceService mounts the base (serving/manifests.py)
          1/model.py                        serving/triton_torch_model.py: load, merge LoRA, forward
          1/saved/                          the saved model: LoRA + head, base.json, tokenizer.json
          encoder.json  tokenizer.json  model.json
      local/omniretriever-encoder/
          config.pbtxt                      backend python, KIND_CPU; saved_model ../../production/.../1/saved,
                                            base_checkpoint = the base export loaded (its digest checked)
          1/model.py

(no text model: captions go to the encoder, whose per-row layout already runs a caption's tokens alone).

Export checks what Triton will run against the offline model: ONNX Runtime against PyTorch for the graph,
the LoRA-merged model against the unmerged one for a pretrained backbone (model.omni.export), on random
rows with every subset of modalities, within PARITY_TOLERANCE.

Both configs render the tensors of serving.tensors, so they cannot drift apart. The local tree holds no
second copy of the model: it names production's file and refuses it if the digest does not match. The
tritonserver shipped in the nvidia-pytriton wheel has the python backend only, which is why the local
config exists; a cluster's Triton serves `production/`.

The repository is built in a temp directory beside REPO and renamed into place, so a failed build leaves
REPO as it was; an existing REPO is replaced only if it is a repository built here (it has repository.json).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from model.cache import file_digest
from model.config import AnyConfig, config_dict
from model.errors import ExportError
from model.export import PARITY_TOLERANCE, ExportResult, export_onnx, export_text_onnx
from model.store import LoadedModel, load_model, model_dir, replace_dir, weights_digest
from serving.manifests import BASE_MOUNT
from serving.tensors import (ENCODER_MODEL, MAX_BATCH_SIZE, TEXT_ENCODER_MODEL, TensorSpec, encoder_inputs,
                             encoder_outputs, text_encoder_inputs)

FORMAT = "omniretriever-repository-v1"
VERSION = "1"  # the one model version directory
PRODUCTION, LOCAL = "production", "local"
QUEUE_DELAY_US = {PRODUCTION: 2000, LOCAL: 1000}  # dynamic batching: how long a request may wait for others
MODEL_PY = Path(__file__).resolve().parent / "triton_model.py"  # ONNX Runtime on the graph
TORCH_MODEL_PY = Path(__file__).resolve().parent / "triton_torch_model.py"  # a pretrained backbone in PyTorch
SAVED = "saved"  # VERSION/SAVED: a pretrained backbone's saved model
PREPROCESS_FILES = ("encoder.json", "tokenizer.json")


def production_dir(repo: str | Path) -> Path:
    """REPO/production: the Triton repository a cluster serves (and the transformer's --model_dir)."""
    return Path(repo) / PRODUCTION


def local_dir(repo: str | Path) -> Path:
    """REPO/local: the Triton repository the bundled CPU tritonserver serves."""
    return Path(repo) / LOCAL


def config_path(repo: str | Path, kind: str, model: str = ENCODER_MODEL) -> Path:
    return Path(repo) / kind / model / "config.pbtxt"


def _tensor_block(spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.dims)
    return f'  {{\n    name: "{spec.name}"\n    data_type: {spec.triton_type}\n    dims: [ {dims} ]\n  }}'


def render_config(cfg: AnyConfig, kind: str, parameters: dict[str, str] | None = None,
                  model: str = ENCODER_MODEL) -> str:
    """config.pbtxt text for the production (GPU) or local (CPU) encoder, or the text model: onnxruntime for
    the tiny encoder's production graphs, the python backend otherwise."""
    if kind not in (PRODUCTION, LOCAL):
        raise ValueError(f"config kind must be {PRODUCTION!r} or {LOCAL!r}, got {kind!r}")
    if model not in (ENCODER_MODEL, TEXT_ENCODER_MODEL):
        raise ValueError(f"model must be {ENCODER_MODEL!r} or {TEXT_ENCODER_MODEL!r}, got {model!r}")
    onnx = kind == PRODUCTION and cfg.backbone == "tiny"
    engine = 'platform: "onnxruntime_onnx"' if onnx else 'backend: "python"'
    device = "KIND_GPU" if kind == PRODUCTION else "KIND_CPU"
    inputs = text_encoder_inputs(cfg) if model == TEXT_ENCODER_MODEL else encoder_inputs(cfg)
    lines = [
        f'name: "{model}"',
        engine,
        f"max_batch_size: {MAX_BATCH_SIZE}",
        "input [\n" + ",\n".join(_tensor_block(s) for s in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(s) for s in encoder_outputs(cfg)) + "\n]",
        f"instance_group [\n  {{\n    count: 1\n    kind: {device}\n  }}\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US[kind]}\n}}",
    ]
    for key, value in (parameters or {}).items():
        lines.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}')
    return "\n".join(lines) + "\n"


def _write_preprocessing(model_root: Path, source: Path, cfg: AnyConfig) -> None:
    """encoder.json and tokenizer.json: what the transformer needs to preprocess requests as training did."""
    (model_root / "encoder.json").write_text(json.dumps(config_dict(cfg), indent=2) + "\n")
    shutil.copyfile(source / "tokenizer.json", model_root / "tokenizer.json")


def _write_graph(tmp: Path, loaded: LoadedModel, name: str) -> dict:
    """One ONNX model `name` (the joint graph, or the text graph): production's graph and config, local's
    python model running it by digest; its digest and parity."""
    export = export_text_onnx if name == TEXT_ENCODER_MODEL else export_onnx
    cfg = loaded.config
    result: ExportResult = export(loaded, production_dir(tmp) / name / VERSION / "model.onnx")
    (production_dir(tmp) / name / "config.pbtxt").write_text(render_config(cfg, PRODUCTION, model=name))
    onnx_sha256 = file_digest(result.onnx)
    local_root = local_dir(tmp) / name
    (local_root / VERSION).mkdir(parents=True)
    shutil.copyfile(MODEL_PY, local_root / VERSION / "model.py")
    onnx_rel = f"../../{PRODUCTION}/{name}/{VERSION}/model.onnx"  # relative to local/<model>/
    params = {"onnx_model": onnx_rel, "onnx_sha256": onnx_sha256, "intra_op_threads": "0", "allow_spinning": "0"}
    (local_root / "config.pbtxt").write_text(render_config(cfg, LOCAL, params, model=name))
    return {"onnx_sha256": onnx_sha256, "max_abs_diff": result.max_abs_diff, "rows_checked": result.rows_checked}


def _write_onnx(tmp: Path, loaded: LoadedModel) -> dict:
    """The tiny encoder: the joint graph and the text graph, both exported from the one loaded model; what
    repository.json adds."""
    joint = _write_graph(tmp, loaded, ENCODER_MODEL)
    _write_preprocessing(production_dir(tmp) / ENCODER_MODEL, loaded.path, loaded.config)
    text = _write_graph(tmp, loaded, TEXT_ENCODER_MODEL)
    return {**joint, "text_model": {"triton_model": TEXT_ENCODER_MODEL, **text}}


def _write_torch(tmp: Path, model: Path, loaded: LoadedModel, tolerance: float = PARITY_TOLERANCE) -> dict:
    """A pretrained backbone: the saved model (never its base) under both python-backend configs."""
    from model.omni.export import check_merge_parity

    diff, rows = check_merge_parity(loaded)
    if not diff < tolerance:
        raise ExportError(f"{model}: merging the LoRA weights changes the embeddings by {diff:.3g} "
                          f"(limit {tolerance:g}); the repository was not written")
    cfg, source = loaded.config, model_dir(model)
    prod_root, local_root = production_dir(tmp) / ENCODER_MODEL, local_dir(tmp) / ENCODER_MODEL
    shutil.copytree(source, prod_root / VERSION / SAVED)
    saved_sha256 = weights_digest(prod_root / VERSION / SAVED)  # the copy's: repository.json's weights_sha256
    _write_preprocessing(prod_root, source, cfg)
    base = loaded.encoder.checkpoint
    for root, kind, saved, base_path in ((prod_root, PRODUCTION, f"{VERSION}/{SAVED}", BASE_MOUNT),
                                         (local_root, LOCAL, f"../../{PRODUCTION}/{ENCODER_MODEL}/{VERSION}/{SAVED}",
                                          str(base.root.resolve()))):
        (root / VERSION).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TORCH_MODEL_PY, root / VERSION / "model.py")
        params = {"saved_model": saved, "saved_sha256": saved_sha256, "base_checkpoint": base_path,
                  "intra_op_threads": "0"}
        (root / "config.pbtxt").write_text(render_config(cfg, kind, params))
    return {"max_abs_diff": diff, "rows_checked": rows, "base": base.identity(),
            "pad_token_id": loaded.tokenizer.pad_id, "text_model": None}


def _check_replaceable(repo: Path) -> None:
    if repo.exists() and not repo.is_dir():
        raise FileExistsError(f"{repo} exists and is not a directory")
    if repo.is_dir() and any(repo.iterdir()) and not (repo / "repository.json").is_file():
        raise FileExistsError(f"{repo} is a non-empty directory that is not a model repository "
                              "(no repository.json); refusing to replace it")


def build_repository(model: Path, repo: Path) -> Path:
    """Export `model` (RUN or RUN/model) and lay out REPO as in this module's docstring; returns REPO."""
    model, repo = Path(model), Path(repo)
    _check_replaceable(repo)
    loaded = load_model(model)  # also checks that MODEL is a saved model before anything is written
    cfg = loaded.config
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = repo.with_name(f".{repo.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        built = _write_onnx(tmp, loaded) if cfg.backbone == "tiny" else _write_torch(tmp, model, loaded)
        info = {"format": FORMAT, "model": str(model_dir(model).resolve()), "backbone": cfg.backbone,
                "weights_sha256": weights_digest(model), **built, "embed_dim": cfg.embed_dim,
                "triton_model": ENCODER_MODEL, "max_batch_size": MAX_BATCH_SIZE,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (production_dir(tmp) / ENCODER_MODEL / "model.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "repository.json").write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, repo)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return repo


def read_repository(repo: str | Path) -> dict:
    """repository.json of a built repository; a clear error when REPO is not one."""
    path = Path(repo) / "repository.json"
    if not path.is_file():
        raise FileNotFoundError(f"{repo} is not a model repository: no repository.json (build one with "
                                "`omniretriever export --model RUN --out REPO`)")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r}, expected {FORMAT!r}")
    return info
