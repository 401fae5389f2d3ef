"""Serving steps, in the CPU image, run only for a promoted model: export to ONNX and a Triton model
repository, then deploy. In a cluster, deploy applies the KServe InferenceService (Triton predictor +
transformer) with a canary share of the traffic; locally it starts the local endpoint on loopback,
sends one smoke query and stops it again."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import CPU_BASE_IMAGE, CPU_TARGET_IMAGE

DEPLOY_TARGETS = ("local", "kserve")


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def export_model(model: Input[Model], repository: Output[Model]) -> int:
    """Export the trained model to ONNX (checked against PyTorch) and lay out the Triton model
    repository in `repository`; returns how many files the repository holds."""
    from pathlib import Path

    from serving.repository import build_repository

    repo = build_repository(Path(model.path), Path(repository.path))
    files = sum(1 for p in Path(repo).rglob("*") if p.is_file())
    repository.metadata.update(files=files)
    return files


@dsl.component(base_image=CPU_BASE_IMAGE, target_image=CPU_TARGET_IMAGE)
def deploy_model(repository: Input[Model], target: str = "local", name: str = "omniretriever",
                 namespace: str = "kubeflow-user", storage_uri: str = "", transformer_image: str = "",
                 canary_percent: int = 10, gpus: int = 1, smoke_text: str = "a red circle moving left",
                 predictor_image: str = "", workspace_pvc: str = "", gallery_store: str = "",
                 gallery_secret: str = "", media_root: str = "", gallery_views: list = []) -> NamedTuple(
        "DeployOutputs", [("target", str), ("endpoint", str), ("detail", str)]):
    """target="kserve": apply the InferenceService `name` in `namespace`, its storage the repository
    artifact (or `storage_uri`), `canary_percent` of the traffic to the new revision; a pretrained backbone's
    predictor runs `predictor_image` and mounts its base checkpoint from `workspace_pvc`; with `gallery_store`
    (a Milvus cluster URI) the transformer searches it, its token from the secret `gallery_secret`, and serves
    the search page over `media_root` when that lies on `workspace_pvc` (mounted read-only).
    target="local": start the local endpoint on 127.0.0.1 (searching `gallery_store` when given, with the
    search page over `media_root`), send `smoke_text` (a search of the store's first view, else an
    embedding), load the page, stop it."""
    from collections import namedtuple

    from components.deploying import deploy_kserve, deploy_local

    outputs = namedtuple("DeployOutputs", ["target", "endpoint", "detail"])
    if target == "kserve":
        endpoint, detail = deploy_kserve(repository.path, repository.uri, name=name, namespace=namespace,
                                         storage_uri=storage_uri, transformer_image=transformer_image,
                                         canary_percent=canary_percent, gpus=gpus, predictor_image=predictor_image,
                                         workspace_pvc=workspace_pvc, gallery_store=gallery_store,
                                         gallery_secret=gallery_secret, media_root=media_root)
    elif target == "local":
        endpoint, detail = deploy_local(repository.path, smoke_text, gallery_store, media_root, gallery_views)
    else:
        raise ValueError(f"deploy target must be 'local' or 'kserve', got {target!r}")
    return outputs(target, endpoint, detail)
