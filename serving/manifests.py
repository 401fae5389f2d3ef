"""The KServe InferenceService (v1beta1) that serves a model repository in a cluster.

    predictor     Triton (runtime kserve-tritonserver, modelFormat triton) on REPO/production at storageUri,
                  protocol grpc-v2 on the h2c port 9000, with GPUs; canaryTrafficPercent for a gradual rollout
    transformer   the image built from serving/Dockerfile (python -m serving.transformer) with
                  --predictor_protocol grpc-v2; STORAGE_URI makes KServe download the same repository to
                  /mnt/models, where the transformer reads the preprocessing (encoder.json, tokenizer.json)

For a pretrained backbone (Qwen2.5-Omni) the predictor runs the saved PyTorch model in Triton's python
backend, so it needs an image with torch, transformers, peft and this project (serving/Dockerfile.triton,
`predictor_image`) and the base checkpoint, which the repository never holds: `base` mounts it read-only
at BASE_MOUNT from a PersistentVolumeClaim (the workspace volume the pipeline fetched it into), where the
production config.pbtxt looks for it. The python model checks its weights digest on load.

The controller adds --model_name (the service's name), --predictor_host and --http_port to the
transformer's arguments; the embedding model is then served as <name> and search as <name>-search.
The dict is plain data (what `kubectl apply` or the Kubernetes API takes); a test checks it against the
kserve SDK's models, key for key.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.limits import ServingLimits

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MODELS_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
BASE_MOUNT = "/mnt/base"  # where the predictor finds a pretrained backbone's base checkpoint
BASE_VOLUME = "base-checkpoint"
TRITON_RUNTIME = "kserve-tritonserver"
H2C_PORT = 9000


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict:
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


@dataclass(frozen=True)
class BaseCheckpoint:
    """Where a pretrained backbone's base checkpoint lies for the predictor: `sub_path` inside the claim `pvc`."""

    pvc: str
    sub_path: str

    def problems(self) -> list[str]:
        out = []
        if not self.pvc:
            out.append("base.pvc must name the PersistentVolumeClaim that holds the base checkpoint")
        parts = self.sub_path.split("/")
        if not self.sub_path or self.sub_path.startswith("/") or ".." in parts:
            out.append(f"base.sub_path {self.sub_path!r} must be a relative path inside the claim, without '..'")
        return out


def base_on_volume(path: str, mount: str, pvc: str) -> BaseCheckpoint:
    """The base checkpoint at `path` (as a pipeline step saw it) on the volume `pvc`, mounted at `mount` there."""
    from pathlib import PurePosixPath

    base, root = PurePosixPath(path), PurePosixPath(mount)
    if not base.is_relative_to(root) or base == root:
        raise ValueError(f"the base checkpoint {path} is not on the volume {pvc} (mounted at {mount}): the predictor "
                         "mounts it from there; fetch it onto the volume with the pipeline's checkpoint parameter")
    return BaseCheckpoint(pvc, str(base.relative_to(root)))


def _predictor(storage_uri: str, gpus: int, canary_percent: int | None, min_replicas: int, max_replicas: int,
               cpu: str, memory: str, image: str | None = None, base: BaseCheckpoint | None = None) -> dict:
    predictor = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "model": {
            "name": "kserve-container",
            "modelFormat": {"name": "triton"},
            "runtime": TRITON_RUNTIME,
            "protocolVersion": "grpc-v2",
            "storageUri": storage_uri,
            "ports": [{"name": "h2c", "containerPort": H2C_PORT, "protocol": "TCP"}],
            "resources": _resources(cpu, memory, gpus),
        },
    }
    if image is not None:  # the runtime's Triton, with what a pretrained backbone's python model imports
        predictor["model"]["image"] = image
    if base is not None:
        predictor["model"]["volumeMounts"] = [{"name": BASE_VOLUME, "mountPath": BASE_MOUNT, "subPath": base.sub_path,
                                               "readOnly": True}]
        predictor["volumes"] = [{"name": BASE_VOLUME,
                                 "persistentVolumeClaim": {"claimName": base.pvc, "readOnly": True}}]
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    return predictor


def _transformer(image: str, storage_uri: str, index: str | None, limits: ServingLimits, min_replicas: int,
                 max_replicas: int, cpu: str, memory: str) -> dict:
    args = ["--predictor_protocol", "grpc-v2", "--model_dir", MODELS_DIR, "--host", "0.0.0.0", *limits.to_args()]
    if index is not None:
        args += ["--index", index]
    return {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "containers": [{
            "name": "kserve-container",
            "image": image,
            "args": args,
            "env": [{"name": "STORAGE_URI", "value": storage_uri}],
            "resources": _resources(cpu, memory),
        }],
    }


def inference_service(name: str, storage_uri: str, transformer_image: str, canary_percent: int | None = None,
                      gpus: int = 1, *, namespace: str | None = None, index: str | None = None,
                      min_replicas: int = 1, max_replicas: int = 1, predictor_cpu: str = "2", predictor_memory: str = "8Gi",
                      transformer_cpu: str = "2", transformer_memory: str = "4Gi",
                      limits: ServingLimits = ServingLimits(), predictor_image: str | None = None,
                      base: BaseCheckpoint | None = None) -> dict:
    """A v1beta1 InferenceService: Triton predictor (GPU, grpc-v2, storageUri) plus the transformer container.

    `storage_uri` points at a repository's production/ directory (s3://, gs://, pvc://, ...); `index` is a
    gallery index path inside the transformer container (e.g. /mnt/models/omniretriever-encoder/gallery.safetensors)
    to serve search as well; `canary_percent` sends that share of traffic to this revision. A pretrained
    backbone's repository needs `predictor_image` and `base` (see the module docstring), and a GPU."""
    problems = []
    if not name or not name.replace("-", "").isalnum() or name != name.lower() or len(name) > 63:
        problems.append(f"name {name!r} must be a DNS label (lower-case letters, digits, '-'; at most 63)")
    if "://" not in storage_uri:
        problems.append(f"storage_uri {storage_uri!r} needs a scheme such as s3://, gs:// or pvc://")
    for what, image in (("transformer_image", transformer_image), ("predictor_image", predictor_image)):
        tail = (image or "").rsplit("/", 1)[-1]
        if image is not None and not ("@" in image or (":" in tail and not tail.endswith(":latest"))):
            problems.append(f"{what} {image!r} must be pinned by tag or digest (not :latest)")
    if base is not None:
        problems += base.problems()
        if predictor_image is None:
            problems.append("a model with a base checkpoint runs in PyTorch: give predictor_image (serving/Dockerfile.triton)")
    if canary_percent is not None and not 0 <= canary_percent <= 100:
        problems.append(f"canary_percent {canary_percent} must be within 0..100")
    if gpus < 0 or min_replicas < 0 or max_replicas < max(min_replicas, 1):
        problems.append(f"gpus={gpus}, min_replicas={min_replicas}, max_replicas={max_replicas}: need gpus >= 0 "
                        "and max_replicas >= max(min_replicas, 1)")
    if problems:
        raise ValueError("invalid InferenceService: " + "; ".join(problems))
    metadata = {"name": name, "labels": {"app.kubernetes.io/part-of": "omniretriever"}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "predictor": _predictor(storage_uri, gpus, canary_percent, min_replicas, max_replicas,
                                    predictor_cpu, predictor_memory, predictor_image, base),
            "transformer": _transformer(transformer_image, storage_uri, index, limits, min_replicas, max_replicas,
                                        transformer_cpu, transformer_memory),
        },
    }
