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

Search in a cluster ranks through a Milvus cluster: `store` (GalleryStoreRef) names its http(s):// URI,
which the transformer gets as --index, and the Kubernetes Secret holding its token, mounted read-only at
STORE_SECRET_MOUNT with TOKEN_FILE_ENV naming the file (see GalleryStoreRef). `index` instead names a
.safetensors index file inside the container (under /mnt/models, say), which each transformer pod
imports into a private Milvus Lite store at start. With search, `media` (MediaVolume) turns on the search
page: the gallery's media directory on a PersistentVolumeClaim is mounted read-only at MEDIA_MOUNT in the
transformer, which serves /ui on its HTTP port with --media_root MEDIA_MOUNT.

The controller adds --model_name (the service's name), --predictor_host and --http_port to the
transformer's arguments; the embedding model is then served as <name> and search as <name>-search.
The dict is plain data (what `kubectl apply` or the Kubernetes API takes); a test checks it against the
kserve SDK's models, key for key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from serving.limits import ServingLimits

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MODELS_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
BASE_MOUNT = "/mnt/base"  # where the predictor finds a pretrained backbone's base checkpoint
BASE_VOLUME = "base-checkpoint"
MEDIA_MOUNT = "/mnt/media"  # where the transformer finds the gallery's media (the search page's --media_root)
MEDIA_VOLUME = "gallery-media"
TRITON_RUNTIME = "kserve-tritonserver"
H2C_PORT = 9000
STORE_SECRET_VOLUME = "milvus-token"
STORE_SECRET_MOUNT = "/var/run/secrets/omniretriever/milvus"  # where the transformer finds the store's token
STORE_TOKEN_FILE = "token"  # the token's file name in that directory, whatever the Secret's key
INDEX_SUFFIX = ".safetensors"  # an index file; the transformer takes any other --index as a store URI
LITE_SUFFIX = ".db"  # a Milvus Lite store
LITE_IN_A_CLUSTER = ("Lite serves one process per store, so replicated transformers cannot share one "
                     "(each pod would search its own)")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict:
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def _claim_problems(what: str, holds: str, pvc: str, sub_path: str, whole_claim: bool = False) -> list[str]:
    out = []
    if not pvc:
        out.append(f"{what}.pvc must name the PersistentVolumeClaim that holds {holds}")
    parts = sub_path.split("/")
    if (not sub_path and not whole_claim) or sub_path.startswith("/") or ".." in parts:
        out.append(f"{what}.sub_path {sub_path!r} must be a relative path inside the claim, without '..'")
    return out


@dataclass(frozen=True)
class BaseCheckpoint:
    """Where a pretrained backbone's base checkpoint lies for the predictor: `sub_path` inside the claim `pvc`."""

    pvc: str
    sub_path: str

    def problems(self) -> list[str]:
        return _claim_problems("base", "the base checkpoint", self.pvc, self.sub_path)


@dataclass(frozen=True)
class MediaVolume:
    """The gallery's media root for the search page: `sub_path` inside the claim `pvc` ("" for the whole claim),
    the directory the store's media paths are relative to (the dataset root `index add --data` was given). It is
    mounted read-only; the page serves only files the gallery names, confined to it."""

    pvc: str
    sub_path: str = ""

    def problems(self) -> list[str]:
        return _claim_problems("media", "the gallery's media", self.pvc, self.sub_path, whole_claim=True)


@dataclass(frozen=True)
class GalleryStoreRef:
    """The Milvus cluster the transformer's search ranks through: `uri` (http(s)://host:port) and, for a
    cluster that checks tokens, the Kubernetes Secret `secret` (in the InferenceService's namespace) whose
    entry `key` holds the token.

    The Secret is mounted as a read-only volume (that one entry, as the file STORE_TOKEN_FILE under
    STORE_SECRET_MOUNT) and TOKEN_FILE_ENV names the file, rather than handing the token over as a
    secretKeyRef environment variable. Neither puts the token's value in the pod spec, but an environment
    variable lives in the process environment: every child process inherits it, and it shows in
    /proc/<pid>/environ, in `kubectl exec ... env` and in any crash report or debug dump that prints the
    environment. The file is read once, when the transformer opens the store; the whole directory is
    mounted (no subPath), so a rotated Secret reaches the file and a restarted pod reads the new token.

    Without `secret` the transformer connects with no token: an unauthenticated Milvus, for a private
    network only (anything that reaches the cluster can read and overwrite the galleries).

    A Milvus Lite path (.db) is refused: Lite serves one process per store, so the transformer's replicas
    cannot share one (each pod would search its own)."""

    uri: str
    secret: str | None = None
    key: str = "token"

    def problems(self) -> list[str]:
        out = []
        if not self.uri:
            out.append("store.uri must name the gallery store (http(s)://host:port of a Milvus cluster)"
                       + (f"; store.secret {self.secret!r} needs it" if self.secret else ""))
        elif self.uri.endswith(INDEX_SUFFIX) and "://" not in self.uri:
            out.append(f"store.uri {self.uri!r} is an index file, not a store: pass it as index")
        elif self.uri.endswith(LITE_SUFFIX) and "://" not in self.uri:
            out.append(f"store.uri {self.uri!r} is a Milvus Lite store: {LITE_IN_A_CLUSTER}; give a Milvus cluster "
                       "(http(s)://host:port), or a .safetensors index file as index")
        else:
            out += _cluster_uri_problems(self.uri)
        if self.secret is None and self.key != "token":
            out.append(f"store.key {self.key!r} needs store.secret: the key names an entry of that Secret")
        if self.secret is not None:
            if len(self.secret) > 253 or not _DNS_SUBDOMAIN.fullmatch(self.secret):
                out.append(f"store.secret {self.secret!r} must be a Secret's name, a DNS-1123 subdomain (lower-case "
                           "letters, digits, '-' and '.', starting and ending with a letter or digit; at most 253)")
            if (len(self.key) > 253 or not _SECRET_KEY.fullmatch(self.key) or self.key in (".", "..")
                    or self.key.startswith("..")):
                out.append(f"store.key {self.key!r} must be a Secret key (letters, digits, '-', '_', '.'; not '.', "
                           "'..' or starting with '..'; at most 253)")
        return out


def _cluster_uri_problems(uri: str) -> list[str]:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme not in ("http", "https"):
        got = f"{scheme}:// is not supported" if scheme else "has no scheme"
        return [f"store.uri {uri!r}: {got}; a Milvus cluster is http(s)://host:port"]
    try:
        parts = urlsplit(uri)
        _ = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError as exc:
        return [f"store.uri: not a URL ({exc})"]
    if "@" in parts.netloc:  # never echo it: what precedes the '@' is a credential
        return ["store.uri must not carry credentials (user:password@): put the token in store.secret"]
    if not parts.hostname:
        return [f"store.uri {uri!r} names no host; a Milvus cluster is http(s)://host:port"]
    return []


def _index_problems(index: str) -> list[str]:
    if index.endswith(INDEX_SUFFIX) and "://" not in index:
        return []
    if "://" in index:
        return [f"index {index!r} is a URI: name a Milvus cluster as store=GalleryStoreRef(uri, secret) "
                "(--store, --store-secret), so its token reaches the transformer"]
    if index.endswith(LITE_SUFFIX):
        return [f"index {index!r} is a Milvus Lite store: {LITE_IN_A_CLUSTER}; give a Milvus cluster as store, "
                "or a .safetensors index file"]
    return [f"index {index!r} must be a .safetensors index file inside the transformer container"]


def base_on_volume(path: str, mount: str, pvc: str) -> BaseCheckpoint:
    """The base checkpoint at `path` (as a pipeline step saw it) on the volume `pvc`, mounted at `mount` there."""
    from pathlib import PurePosixPath

    base, root = PurePosixPath(path), PurePosixPath(mount)
    if not base.is_relative_to(root) or base == root:
        raise ValueError(f"the base checkpoint {path} is not on the volume {pvc} (mounted at {mount}): the predictor "
                         "mounts it from there; fetch it onto the volume with the pipeline's checkpoint parameter")
    return BaseCheckpoint(pvc, str(base.relative_to(root)))


def media_on_volume(path: str, mount: str, pvc: str) -> MediaVolume | None:
    """The media root at `path` (as a pipeline step saw it) on the volume `pvc` mounted at `mount`; None when it
    is not on that volume (the transformer could not mount it)."""
    from pathlib import PurePosixPath

    media, root = PurePosixPath(path), PurePosixPath(mount)
    if not media.is_relative_to(root):
        return None
    rel = media.relative_to(root)
    return MediaVolume(pvc, "" if rel == PurePosixPath(".") else str(rel))


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
                 max_replicas: int, cpu: str, memory: str, store: GalleryStoreRef | None = None,
                 media: MediaVolume | None = None) -> dict:
    args = ["--predictor_protocol", "grpc-v2", "--model_dir", MODELS_DIR, "--host", "0.0.0.0", *limits.to_args()]
    env = [{"name": "STORAGE_URI", "value": storage_uri}]
    container = {"name": "kserve-container", "image": image, "args": args, "env": env,
                 "resources": _resources(cpu, memory)}
    transformer = {"minReplicas": min_replicas, "maxReplicas": max_replicas, "containers": [container]}
    if index is not None:
        args += ["--index", index]
    if store is not None:
        args += ["--index", store.uri]
    if store is not None and store.secret is not None:
        from serving.store.engine import TOKEN_FILE_ENV

        env.append({"name": TOKEN_FILE_ENV, "value": f"{STORE_SECRET_MOUNT}/{STORE_TOKEN_FILE}"})
        container.setdefault("volumeMounts", []).append(
            {"name": STORE_SECRET_VOLUME, "mountPath": STORE_SECRET_MOUNT, "readOnly": True})
        transformer.setdefault("volumes", []).append({"name": STORE_SECRET_VOLUME, "secret": {
            "secretName": store.secret, "items": [{"key": store.key, "path": STORE_TOKEN_FILE}]}})
    if media is not None:
        args += ["--media_root", MEDIA_MOUNT]
        container.setdefault("volumeMounts", []).append(
            {"name": MEDIA_VOLUME, "mountPath": MEDIA_MOUNT, "readOnly": True,
             **({"subPath": media.sub_path} if media.sub_path else {})})
        transformer.setdefault("volumes", []).append(
            {"name": MEDIA_VOLUME, "persistentVolumeClaim": {"claimName": media.pvc, "readOnly": True}})
    return transformer


def inference_service(name: str, storage_uri: str, transformer_image: str, canary_percent: int | None = None,
                      gpus: int = 1, *, namespace: str | None = None, index: str | None = None,
                      min_replicas: int = 1, max_replicas: int = 1, predictor_cpu: str = "2", predictor_memory: str = "8Gi",
                      transformer_cpu: str = "2", transformer_memory: str = "4Gi",
                      limits: ServingLimits = ServingLimits(), predictor_image: str | None = None,
                      base: BaseCheckpoint | None = None, store: GalleryStoreRef | None = None,
                      media: MediaVolume | None = None) -> dict:
    """A v1beta1 InferenceService: Triton predictor (GPU, grpc-v2, storageUri) plus the transformer container.

    `storage_uri` points at a repository's production/ directory (s3://, gs://, pvc://, ...). Search is
    served as well with either `store`, a Milvus cluster and the Secret holding its token (GalleryStoreRef:
    mounted as a file, not an environment variable), or `index`, a .safetensors index file inside the
    transformer container (e.g. /mnt/models/omniretriever-encoder/gallery.safetensors); a Milvus Lite .db
    is refused for either; `media` then turns on the search page over the gallery's media (MediaVolume).
    `canary_percent` sends that share of traffic to this revision. A pretrained
    backbone's repository needs `predictor_image` and `base` (see the module docstring), and a GPU."""
    problems = []
    if index is not None and store is not None:
        problems.append("give store or index, not both: the transformer searches one gallery store")
    if index is not None:
        problems += _index_problems(index)
    if store is not None:
        problems += store.problems()
    if media is not None:
        problems += media.problems()
        if index is None and store is None:
            problems.append("media turns on the search page, which searches a gallery: give store or index too")
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
                                        transformer_cpu, transformer_memory, store, media),
        },
    }
