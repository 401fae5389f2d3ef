"""The two ways the deploy step deploys a Triton model repository (see components/serving_steps.py)."""

from __future__ import annotations

from pathlib import Path

SMOKE_TOP_K = 3


def storage_uri_for(artifact_uri: str) -> str:
    """The URI KServe's storage initializer reads for a pipeline artifact: KFP names MinIO artifacts
    minio://bucket/key, which KServe reads as s3://bucket/key; gs:// and s3:// pass through."""
    if artifact_uri.startswith("minio://"):
        return "s3://" + artifact_uri[len("minio://"):]
    if artifact_uri.startswith(("s3://", "gs://", "pvc://", "https://")):
        return artifact_uri
    raise ValueError(f"cannot serve a model repository from {artifact_uri!r}: KServe needs an object-store URI "
                     "(s3://, gs://, minio://) or pass storage_uri")


def deploy_kserve(repository_uri: str, *, name: str, namespace: str, storage_uri: str, transformer_image: str,
                  canary_percent: int, gpus: int) -> tuple[str, str]:
    """Apply the InferenceService; returns (its name in namespace, a one-line description)."""
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent must be between 0 and 100, got {canary_percent}")
    from serving.deploy import apply_inference_service
    from serving.manifests import inference_service

    storage = storage_uri or storage_uri_for(repository_uri)
    manifest = inference_service(name, storage, transformer_image, canary_percent, gpus)
    apply_inference_service(manifest, namespace)
    return f"{namespace}/{name}", f"InferenceService {name} applied: storage {storage}, canary {canary_percent}%"


def deploy_local(repository: str | Path, smoke_text: str) -> tuple[str, str]:
    """Start the local endpoint (Triton + transformer on loopback), run one text query, stop it."""
    from serving.client import query
    from serving.launcher import LocalEndpoint

    with LocalEndpoint(Path(repository), index=None, host="127.0.0.1") as endpoint:  # every port a free one
        url = endpoint.http_url
        answer = query(url, text=smoke_text, top_k=SMOKE_TOP_K)
    dim = len(answer.embedding)
    return url, f"smoke query {smoke_text!r} answered by {url} with a {dim}-d embedding (endpoint stopped)"
