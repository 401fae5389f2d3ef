"""The two ways the deploy step deploys a Triton model repository (see components/serving_steps.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SMOKE_TOP_K = 3
SMOKE_GALLERY = "av"


def storage_uri_for(artifact_uri: str) -> str:
    """The URI KServe's storage initializer reads for a pipeline artifact: KFP names MinIO artifacts
    minio://bucket/key, which KServe reads as s3://bucket/key; gs:// and s3:// pass through."""
    if artifact_uri.startswith("minio://"):
        return "s3://" + artifact_uri[len("minio://"):]
    if artifact_uri.startswith(("s3://", "gs://", "pvc://", "https://")):
        return artifact_uri
    raise ValueError(f"cannot serve a model repository from {artifact_uri!r}: KServe needs an object-store URI "
                     "(s3://, gs://, minio://) or pass storage_uri")


def kserve_manifest(repository: str | Path, repository_uri: str, *, name: str, storage_uri: str, transformer_image: str,
                    canary_percent: int, gpus: int, predictor_image: str = "", workspace_pvc: str = "",
                    workspace_mount: str = "/workspace", gallery_store: str = "", gallery_secret: str = "",
                    media_root: str = "") -> dict:
    """The InferenceService for the repository at `repository` (stored at `repository_uri`). A pretrained
    backbone's repository (repository.json names its base) gets `predictor_image` and its base checkpoint
    mounted from `workspace_pvc`, where the pipeline fetched it (under `workspace_mount` in the steps). With
    `gallery_store` (a Milvus cluster URI) the transformer searches it, with the token of the Secret
    `gallery_secret` (key "token") when given, and serves the search page over `media_root` (the dataset the
    gallery was indexed from) when that lies on the workspace volume, mounted read-only from there."""
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent must be between 0 and 100, got {canary_percent}")
    from serving.manifests import GalleryStoreRef, base_on_volume, inference_service, media_on_volume
    from serving.repository import read_repository

    info = read_repository(repository)
    image, base = None, None
    if info.get("backbone", "tiny") != "tiny":
        if not predictor_image or not workspace_pvc:
            raise ValueError(f"the repository serves the {info['backbone']} backbone: it needs predictor_image (a "
                             "Triton image with torch, serving/Dockerfile.triton) and workspace_pvc (where its base lies)")
        image, base = predictor_image, base_on_volume(info["base"]["path"], workspace_mount, workspace_pvc)
    storage = storage_uri or storage_uri_for(repository_uri)
    store = GalleryStoreRef(gallery_store, gallery_secret or None) if gallery_store else None
    media = media_on_volume(media_root, workspace_mount, workspace_pvc) if store and media_root and workspace_pvc else None
    return inference_service(name, storage, transformer_image, canary_percent, gpus, predictor_image=image, base=base,
                             store=store, media=media)


def deploy_kserve(repository: str | Path, repository_uri: str, *, name: str, namespace: str, **options) -> tuple[str, str]:
    """Apply kserve_manifest(repository, repository_uri, name=name, **options); returns (its name in namespace,
    a one-line description)."""
    from serving.deploy import apply_inference_service

    manifest = kserve_manifest(repository, repository_uri, name=name, **options)
    apply_inference_service(manifest, namespace)
    predictor = manifest["spec"]["predictor"]
    storage = predictor["model"]["storageUri"]
    mounts = predictor["model"].get("volumeMounts", [])
    mounted = "".join(f", base {predictor['volumes'][0]['persistentVolumeClaim']['claimName']}:{m['subPath']} at "
                      f"{m['mountPath']}" for m in mounts)
    searched = f", gallery {options['gallery_store']}" if options.get("gallery_store") else ""
    args = manifest["spec"]["transformer"]["containers"][0]["args"]
    if "--media_root" in args:
        searched += ", search page at /ui"
    elif options.get("gallery_store") and options.get("media_root"):
        searched += (f", no search page (the media root {options['media_root']} is not on the workspace volume "
                     f"{options.get('workspace_pvc') or '(none)'})")
    return f"{namespace}/{name}", (f"InferenceService {name} applied: storage {storage}, "
                                   f"canary {options['canary_percent']}%{mounted}{searched}")


def deploy_local(repository: str | Path, smoke_text: str, gallery_store: str = "",
                 media_root: str = "", gallery_views: Sequence[str] = ()) -> tuple[str, str]:
    """Start the local endpoint (Triton + transformer on loopback; searching `gallery_store` when given, with
    the search page when `media_root` holds the gallery's media), run one text query (a search when there is
    a gallery: of the av view when it is among `gallery_views`) and load the page, stop it. The detail says how to serve the page again."""
    import urllib.request

    from serving.client import query
    from serving.launcher import LocalEndpoint

    page_root = media_root if gallery_store and media_root else None
    with LocalEndpoint(Path(repository), index=gallery_store or None, host="127.0.0.1",  # every port a free one
                       media_root=page_root) as endpoint:
        url = endpoint.http_url
        # a caption against the clips (t2av) when that gallery was indexed, else the server's default one
        gallery = SMOKE_GALLERY if gallery_store and SMOKE_GALLERY in gallery_views else None
        answer = query(url, text=smoke_text, top_k=SMOKE_TOP_K, gallery=gallery)
        if endpoint.page_url:
            with urllib.request.urlopen(endpoint.page_url, timeout=30) as page:
                if page.status != 200 or b"<html" not in page.read(4096).lower():
                    raise RuntimeError(f"the search page {endpoint.page_url} did not load (HTTP {page.status})")
    if gallery_store:
        hits = ", ".join(f"{h.id} {h.score:.3f}" for h in answer.hits)
        detail = (f"smoke query {smoke_text!r} answered by {url} through the {answer.gallery} gallery of "
                  f"{gallery_store}: top {len(answer.hits)} {hits} (endpoint stopped)")
        if page_root:
            detail += (f"; search page: `omniretriever serve --repo {repository} --index {gallery_store} "
                       f"--media-root {page_root}`, then open http://127.0.0.1:8080/ui/")
        return url, detail
    dim = len(answer.embedding)
    return url, f"smoke query {smoke_text!r} answered by {url} with a {dim}-d embedding (endpoint stopped)"
