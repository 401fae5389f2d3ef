"""The KServe InferenceService (v1beta1) that serves a model repository in a cluster.

    predictor     Triton (runtime kserve-tritonserver, modelFormat triton) on REPO/production at storageUri,
                  protocol grpc-v2 on the h2c port 9000, with GPUs; canaryTrafficPercent for a gradual rollout
    transformer   the image built from serving/Dockerfile (python -m serving.transformer) with
                  --predictor_protocol grpc-v2; STORAGE_URI makes KServe download the same repository to
                  /mnt/models, where the transformer reads the preprocessing (encoder.json, tokenizer.json)

The controller adds --model_name (the service's name), --predictor_host and --http_port to the
transformer's arguments; the embedding model is then served as <name> and search as <name>-search.
The dict is plain data (what `kubectl apply` or the Kubernetes API takes); a test checks it against the
kserve SDK's models, key for key.
"""

from __future__ import annotations

from serving.limits import ServingLimits

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MODELS_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
TRITON_RUNTIME = "kserve-tritonserver"
H2C_PORT = 9000


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict:
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def _predictor(storage_uri: str, gpus: int, canary_percent: int | None, min_replicas: int, max_replicas: int,
               cpu: str, memory: str) -> dict:
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
                      limits: ServingLimits = ServingLimits()) -> dict:
    """A v1beta1 InferenceService: Triton predictor (GPU, grpc-v2, storageUri) plus the transformer container.

    `storage_uri` points at a repository's production/ directory (s3://, gs://, pvc://, ...); `index` is a
    gallery index path inside the transformer container (e.g. /mnt/models/omniretriever-encoder/gallery.safetensors)
    to serve search as well; `canary_percent` sends that share of traffic to this revision."""
    problems = []
    if not name or not name.replace("-", "").isalnum() or name != name.lower() or len(name) > 63:
        problems.append(f"name {name!r} must be a DNS label (lower-case letters, digits, '-'; at most 63)")
    if "://" not in storage_uri:
        problems.append(f"storage_uri {storage_uri!r} needs a scheme such as s3://, gs:// or pvc://")
    tail = transformer_image.rsplit("/", 1)[-1]
    if not ("@" in transformer_image or (":" in tail and not tail.endswith(":latest"))):
        problems.append(f"transformer_image {transformer_image!r} must be pinned by tag or digest (not :latest)")
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
                                    predictor_cpu, predictor_memory),
            "transformer": _transformer(transformer_image, storage_uri, index, limits, min_replicas, max_replicas,
                                        transformer_cpu, transformer_memory),
        },
    }
