"""Applying an InferenceService manifest to a cluster with the Kubernetes API (used in a cluster only).

    apply_inference_service(inference_service(...), namespace="models")

Creates the InferenceService, or replaces the spec of an existing one of the same name (the controller
then rolls out a new revision, honouring canaryTrafficPercent). Credentials come from the in-cluster
service account, else from the local kubeconfig.
"""

from __future__ import annotations

from typing import Any

from serving.manifests import API_VERSION, KIND

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "inferenceservices"


def _custom_objects_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise RuntimeError(f"no Kubernetes credentials: not in a cluster and no usable kubeconfig ({exc})") from None
    return client.CustomObjectsApi()


def apply_inference_service(manifest: dict, namespace: str, api: Any = None) -> dict:
    """Create or update the InferenceService in `namespace`; returns the object the API server stored."""
    from kubernetes.client.exceptions import ApiException

    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        raise ValueError(f"expected an {API_VERSION} {KIND}, got {manifest.get('apiVersion')} {manifest.get('kind')}")
    name = manifest["metadata"]["name"]
    body = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
    api = api or _custom_objects_api()
    try:
        current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
