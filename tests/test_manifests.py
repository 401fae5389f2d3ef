"""The InferenceService manifest against the kserve SDK's models, the transformer's Dockerfile, deploy's checks."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from typer.testing import CliRunner

from serving.deploy import apply_inference_service
from serving.limits import ServingLimits
from serving.manifests import (BASE_MOUNT, MEDIA_MOUNT, BaseCheckpoint, GalleryStoreRef, MediaVolume, base_on_volume,
                               inference_service, media_on_volume)
from serving.store import TOKEN_ENV, TOKEN_FILE_ENV

ROOT = Path(__file__).resolve().parent.parent
STORAGE = "s3://models/omniretriever/v3/production"
IMAGE = "registry.example.com/omniretriever-transformer:0.1.0"
CLUSTER = "https://milvus.milvus.svc:19530"

# Runs in its own process: kserve cannot be imported beside tritonclient.grpc (duplicate protobuf symbols).
SDK_CHECK = r'''
import json, sys
import kserve.models, kubernetes.client.models
from kubernetes.client import ApiClient

SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}

def build(data, type_name, where):
    """Plain data -> SDK objects, refusing any key the SDK's schema does not know and any wrong scalar type."""
    if type_name.startswith("list["):
        return [build(x, type_name[5:-1], f"{where}[{i}]") for i, x in enumerate(data)]
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1:-1].strip()
        return {k: build(v, inner, f"{where}.{k}") for k, v in data.items()}
    if type_name in SCALARS:
        if not isinstance(data, SCALARS[type_name]) or (type_name == "int" and isinstance(data, bool)):
            raise SystemExit(f"{where}: {data!r} is not {type_name}")
        return data
    cls = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name)
    attrs = {key: attr for attr, key in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(attrs))
    if unknown:
        raise SystemExit(f"{where}: {type_name} has no field(s) {unknown}")
    return cls(**{attrs[k]: build(v, cls.openapi_types[attrs[k]], f"{where}.{k}") for k, v in data.items()})

manifest = json.load(sys.stdin)
type_name = sys.argv[1] if len(sys.argv) > 1 else "V1beta1InferenceService"
obj = build(manifest, type_name, type_name)
if type_name == "V1beta1InferenceService":
    assert isinstance(obj.spec.predictor.model, kserve.models.V1beta1ModelSpec)
if type_name == "V1PodSpec":  # the official Kubernetes models all the way down
    for volume in obj.volumes or ():
        assert volume.secret is None or isinstance(volume.secret, kubernetes.client.models.V1SecretVolumeSource)
        assert all(isinstance(i, kubernetes.client.models.V1KeyToPath)
                   for i in ((volume.secret.items if volume.secret else None) or ()))
        claim = volume.persistent_volume_claim
        assert claim is None or isinstance(claim, kubernetes.client.models.V1PersistentVolumeClaimVolumeSource)
    for container in obj.containers:
        assert all(isinstance(m, kubernetes.client.models.V1VolumeMount) for m in (container.volume_mounts or ()))
print(json.dumps(ApiClient().sanitize_for_serialization(obj)))
'''


def sdk_roundtrip(manifest: dict, type_name: str = "V1beta1InferenceService") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SDK_CHECK, type_name], input=json.dumps(manifest),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("canary,gpus", [(None, 1), (10, 2)])
def test_manifest_is_a_valid_inference_service_for_the_kserve_sdk(canary, gpus):
    manifest = inference_service("omniretriever", STORAGE, IMAGE, canary_percent=canary, gpus=gpus,
                                 index="/mnt/models/omniretriever-encoder/gallery.safetensors")
    res = sdk_roundtrip(manifest)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == manifest  # every key known to the SDK, nothing dropped or retyped


def test_a_pretrained_backbone_gets_the_torch_triton_image_a_gpu_and_its_base_mounted_read_only():
    manifest = inference_service("omniretriever", STORAGE, IMAGE, gpus=1, predictor_image="registry/omniretriever-triton:0.1.0",
                                 base=BaseCheckpoint("omniretriever-workspace", "checkpoints/3f2a"))
    res = sdk_roundtrip(manifest)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == manifest
    predictor = manifest["spec"]["predictor"]
    model = predictor["model"]
    assert model["image"] == "registry/omniretriever-triton:0.1.0" and model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (mount,) = model["volumeMounts"]
    (volume,) = predictor["volumes"]
    assert mount == {"name": volume["name"], "mountPath": BASE_MOUNT, "subPath": "checkpoints/3f2a", "readOnly": True}
    assert volume["persistentVolumeClaim"] == {"claimName": "omniretriever-workspace", "readOnly": True}


@pytest.mark.parametrize("kwargs,message", [
    ({"base": BaseCheckpoint("ws", "checkpoints/x")}, "give predictor_image"),
    ({"base": BaseCheckpoint("", "checkpoints/x"), "predictor_image": "r/t:1"}, "base.pvc"),
    ({"base": BaseCheckpoint("ws", "../etc"), "predictor_image": "r/t:1"}, "base.sub_path"),
    ({"base": BaseCheckpoint("ws", "/abs"), "predictor_image": "r/t:1"}, "base.sub_path"),
    ({"base": BaseCheckpoint("ws", "c"), "predictor_image": "r/triton:latest"}, "predictor_image .* pinned"),
])
def test_bad_base_checkpoint_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inference_service("omniretriever", STORAGE, IMAGE, **kwargs)


def test_a_base_fetched_onto_the_workspace_volume_is_mounted_from_its_directory_there():
    assert base_on_volume("/workspace/checkpoints/3f2a", "/workspace", "ws") == BaseCheckpoint("ws", "checkpoints/3f2a")
    for outside in ("/data/qwen", "/workspace", "/workspaces/qwen"):
        with pytest.raises(ValueError, match="is not on the volume ws .*checkpoint parameter"):
            base_on_volume(outside, "/workspace", "ws")
    with pytest.raises(ValueError, match="without '..'"):
        inference_service("omniretriever", STORAGE, IMAGE, predictor_image="r/t:1",
                          base=base_on_volume("/workspace/../etc", "/workspace", "ws"))


def test_the_sdk_check_catches_a_misspelled_field():
    manifest = inference_service("omniretriever", STORAGE, IMAGE)
    manifest["spec"]["predictor"]["model"]["storageUrl"] = manifest["spec"]["predictor"]["model"].pop("storageUri")
    res = sdk_roundtrip(manifest)
    assert res.returncode != 0 and "storageUrl" in res.stderr


def test_manifest_content():
    manifest = inference_service("omniretriever", STORAGE, IMAGE, canary_percent=25, gpus=1,
                                 limits=ServingLimits(max_media_seconds=12.0))
    predictor, transformer = manifest["spec"]["predictor"], manifest["spec"]["transformer"]
    model = predictor["model"]
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    assert model["modelFormat"] == {"name": "triton"} and model["runtime"] == "kserve-tritonserver"
    assert model["protocolVersion"] == "grpc-v2" and model["storageUri"] == STORAGE
    assert model["ports"] == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1" and predictor["canaryTrafficPercent"] == 25
    (container,) = transformer["containers"]
    args = container["args"]
    assert container["image"] == IMAGE and args[:2] == ["--predictor_protocol", "grpc-v2"]
    assert args[args.index("--max_media_seconds") + 1] == "12.0"
    assert {"name": "STORAGE_URI", "value": STORAGE} in container["env"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "canaryTrafficPercent" not in inference_service("omniretriever", STORAGE, IMAGE)["spec"]["predictor"]


TOKEN = "s3cr3t-milvus-token-value"


def test_a_cluster_store_reaches_the_transformer_as_index_with_its_token_mounted_from_a_secret(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # what a careless build would copy into the manifest
    store = GalleryStoreRef(CLUSTER, "omniretriever-milvus", "milvus-token")
    manifest = inference_service("omniretriever", STORAGE, IMAGE, store=store, min_replicas=2, max_replicas=4)
    res = sdk_roundtrip(manifest)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == manifest
    transformer = manifest["spec"]["transformer"]
    pod = {k: v for k, v in transformer.items() if k in ("containers", "volumes")}
    res = sdk_roundtrip(pod, "V1PodSpec")  # volume, secret source, key-to-path, mount, env: Kubernetes' own models
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == pod

    (container,) = transformer["containers"]
    args = container["args"]
    assert args.count("--index") == 1 and args[args.index("--index") + 1] == CLUSTER
    (volume,) = transformer["volumes"]
    (mount,) = container["volumeMounts"]
    (item,) = volume["secret"]["items"]
    assert volume == {"name": mount["name"], "secret": {"secretName": "omniretriever-milvus", "items": [item]}}
    assert item["key"] == "milvus-token" and not PurePosixPath(item["path"]).is_absolute() and ".." not in item["path"]
    assert mount["readOnly"] is True and "subPath" not in mount  # subPath mounts never see a rotated Secret
    token_file = {e["name"]: e.get("value") for e in container["env"]}[TOKEN_FILE_ENV]
    assert PurePosixPath(token_file) == PurePosixPath(mount["mountPath"]) / item["path"]
    assert PurePosixPath(token_file).is_relative_to(mount["mountPath"]) and token_file.endswith("/" + item["path"])

    text = json.dumps(manifest)
    assert TOKEN not in text and "valueFrom" not in text and "secretKeyRef" not in text
    assert TOKEN_ENV not in [e["name"] for e in container["env"]]  # the engine refuses both set
    assert "volumes" not in manifest["spec"]["predictor"] and "volumeMounts" not in manifest["spec"]["predictor"]["model"]


def test_a_cluster_store_without_a_secret_connects_without_a_token_and_an_index_file_stays_as_it_was():
    (container,) = inference_service("omniretriever", STORAGE, IMAGE, store=GalleryStoreRef("http://milvus:19530"))[
        "spec"]["transformer"]["containers"]
    assert container["args"][-2:] == ["--index", "http://milvus:19530"] and "volumeMounts" not in container
    assert [e["name"] for e in container["env"]] == ["STORAGE_URI"]
    index = "/mnt/models/omniretriever-encoder/gallery.safetensors"
    transformer = inference_service("omniretriever", STORAGE, IMAGE, index=index)["spec"]["transformer"]
    assert transformer["containers"][0]["args"][-2:] == ["--index", index] and "volumes" not in transformer


@pytest.mark.parametrize("kwargs,message", [
    ({"store": GalleryStoreRef("/mnt/models/gallery.db")}, "'/mnt/models/gallery.db' is a Milvus Lite store: Lite "
                                                           "serves one process per store"),
    ({"store": GalleryStoreRef("/mnt/models/gallery.db", "milvus")}, "is a Milvus Lite store"),
    ({"index": "/mnt/models/gallery.db"}, "index '/mnt/models/gallery.db' is a Milvus Lite store"),
    ({"store": GalleryStoreRef("", "omniretriever-milvus")}, "store.secret 'omniretriever-milvus' needs it"),
    ({"store": GalleryStoreRef(CLUSTER, "Milvus_Token")}, "store.secret 'Milvus_Token' .* DNS-1123 subdomain"),
    ({"store": GalleryStoreRef(CLUSTER, "-milvus")}, "DNS-1123 subdomain"),
    ({"store": GalleryStoreRef(CLUSTER, "milvus.")}, "DNS-1123 subdomain"),
    ({"store": GalleryStoreRef(CLUSTER, "m" * 254)}, "DNS-1123 subdomain"),
    ({"store": GalleryStoreRef(CLUSTER, "milvus", "../token")}, "store.key '../token' must be a Secret key"),
    ({"store": GalleryStoreRef(CLUSTER, "milvus", "a/b")}, "store.key 'a/b' must be a Secret key"),
    ({"store": GalleryStoreRef(CLUSTER, "milvus", "")}, "store.key '' must be a Secret key"),
    ({"store": GalleryStoreRef(CLUSTER, key="milvus-token")}, "store.key 'milvus-token' needs store.secret"),
    ({"store": GalleryStoreRef("grpc://milvus:19530", "milvus")}, "grpc:// is not supported.*http\\(s\\)://"),
    ({"store": GalleryStoreRef("s3://bucket/gallery")}, "s3:// is not supported"),
    ({"store": GalleryStoreRef("milvus:19530")}, "'milvus:19530': has no scheme"),
    ({"store": GalleryStoreRef("https://")}, "names no host"),
    ({"store": GalleryStoreRef("https://milvus:port")}, "not a URL"),
    ({"store": GalleryStoreRef("/mnt/models/gallery.safetensors")}, "is an index file, not a store: pass it as index"),
    ({"index": CLUSTER}, "is a URI: name a Milvus cluster as store"),
    ({"index": "/mnt/models/gallery"}, "must be a .safetensors index file"),
    ({"index": "/mnt/models/g.safetensors", "store": GalleryStoreRef(CLUSTER)}, "give store or index, not both"),
])
def test_bad_store_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inference_service("omniretriever", STORAGE, IMAGE, **kwargs)


def test_the_search_page_mounts_the_gallerys_media_read_only_beside_the_secret():
    store, media = GalleryStoreRef(CLUSTER, "omniretriever-milvus"), MediaVolume("omniretriever-workspace", "data")
    manifest = inference_service("omniretriever", STORAGE, IMAGE, store=store, media=media)
    res = sdk_roundtrip(manifest)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == manifest
    transformer = manifest["spec"]["transformer"]
    pod = {k: v for k, v in transformer.items() if k in ("containers", "volumes")}
    res = sdk_roundtrip(pod, "V1PodSpec")
    assert res.returncode == 0, res.stderr[-2000:]
    (container,) = transformer["containers"]
    args = container["args"]
    assert args[args.index("--media_root") + 1] == MEDIA_MOUNT and args[args.index("--index") + 1] == CLUSTER
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in transformer["volumes"]}
    assert len(mounts) == len(volumes) == 2  # the token's Secret and the media
    page = mounts[MEDIA_MOUNT]
    assert page["readOnly"] is True and page["subPath"] == "data"
    assert volumes[page["name"]]["persistentVolumeClaim"] == {"claimName": "omniretriever-workspace", "readOnly": True}
    whole = inference_service("omniretriever", STORAGE, IMAGE, index="/mnt/models/g.safetensors",
                              media=MediaVolume("media"))["spec"]["transformer"]["containers"][0]
    assert "subPath" not in whole["volumeMounts"][0]  # the whole claim
    assert media_on_volume("/workspace/data", "/workspace", "ws") == MediaVolume("ws", "data")
    assert media_on_volume("/workspace", "/workspace", "ws") == MediaVolume("ws", "")
    assert media_on_volume("/data", "/workspace", "ws") is None


@pytest.mark.parametrize("kwargs,message", [
    ({"media": MediaVolume("media")}, "media turns on the search page, which searches a gallery: give store or index"),
    ({"media": MediaVolume("media", "../data"), "store": GalleryStoreRef(CLUSTER)}, "media.sub_path '../data'"),
    ({"media": MediaVolume("media", "/data"), "store": GalleryStoreRef(CLUSTER)}, "must be a relative path"),
    ({"media": MediaVolume("", "data"), "store": GalleryStoreRef(CLUSTER)}, "media.pvc must name"),
])
def test_bad_media_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inference_service("omniretriever", STORAGE, IMAGE, **kwargs)


def test_a_store_uri_with_credentials_is_refused_without_repeating_them():
    with pytest.raises(ValueError, match="must not carry credentials") as err:
        inference_service("omniretriever", STORAGE, IMAGE, store=GalleryStoreRef(f"https://root:{TOKEN}@milvus:19530"))
    assert TOKEN not in str(err.value)


def test_the_sdk_check_reaches_into_the_secret_volume():
    manifest = inference_service("omniretriever", STORAGE, IMAGE, store=GalleryStoreRef(CLUSTER, "milvus"))
    secret = manifest["spec"]["transformer"]["volumes"][0]["secret"]
    secret["secretname"] = secret.pop("secretName")
    res = sdk_roundtrip(manifest)
    assert res.returncode != 0 and "V1SecretVolumeSource has no field(s) ['secretname']" in res.stderr
    secret["secretName"] = secret.pop("secretname")
    del secret["items"][0]["path"]
    res = sdk_roundtrip(manifest)
    assert res.returncode != 0 and "`path`, must not be `None`" in res.stderr


def test_manifest_command_prints_the_store_and_its_secret_as_yaml():
    from serving.cli import app

    common = ["manifest", "--storage-uri", STORAGE, "--image", IMAGE]
    res = CliRunner().invoke(app, [*common, "--store", CLUSTER, "--store-secret", "omniretriever-milvus",
                                   "--store-secret-key", "milvus-token"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.output) == inference_service(
        "omniretriever", STORAGE, IMAGE, store=GalleryStoreRef(CLUSTER, "omniretriever-milvus", "milvus-token"))
    res = CliRunner().invoke(app, [*common, "--store", CLUSTER, "--store-secret", "omniretriever-milvus"])
    assert res.exit_code == 0 and yaml.safe_load(res.output)["spec"]["transformer"]["volumes"][0]["secret"][
        "items"][0]["key"] == "token"
    res = CliRunner().invoke(app, [*common, "--store", CLUSTER, "--media-pvc", "ws", "--media-path", "data"])
    assert res.exit_code == 0 and yaml.safe_load(res.output) == inference_service(
        "omniretriever", STORAGE, IMAGE, store=GalleryStoreRef(CLUSTER), media=MediaVolume("ws", "data"))
    for args, message in [(["--store-secret", "milvus"], "--store-secret needs --store"),
                          (["--store", CLUSTER, "--store-secret-key", "k"], "--store-secret-key needs --store-secret"),
                          (["--store", "/mnt/gallery.db"], "Milvus Lite store"),
                          (["--store", CLUSTER, "--store-secret", "Milvus"], "DNS-1123 subdomain"),
                          (["--store", CLUSTER, "--media-path", "data"], "--media-path needs --media-pvc"),
                          (["--media-pvc", "ws"], "give store or index too")]:
        bad = CliRunner().invoke(app, [*common, *args])
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "Bad_Name"}, "DNS label"),
    ({"storage_uri": "models/repo"}, "needs a scheme"),
    ({"transformer_image": "omniretriever-transformer:latest"}, "pinned"),
    ({"transformer_image": "omniretriever-transformer"}, "pinned"),
    ({"canary_percent": 120}, "0..100"),
    ({"gpus": -1}, "gpus >= 0"),
])
def test_bad_manifest_arguments_are_refused(kwargs, message):
    args = {"name": "omniretriever", "storage_uri": STORAGE, "transformer_image": IMAGE, **kwargs}
    with pytest.raises(ValueError, match=message):
        inference_service(**args)


def test_deploy_refuses_anything_but_an_inference_service():
    with pytest.raises(ValueError, match="expected an serving.kserve.io/v1beta1 InferenceService"):
        apply_inference_service({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}, "default", api=object())


def test_the_triton_image_for_a_pretrained_backbone_runs_the_wheels_stub_for_the_projects_python():
    text = (ROOT / "serving" / "Dockerfile.triton").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", base), base  # a release, not latest
    assert "torch==2.13.0" in text and "-c constraints.txt" in text and re.search(r"^USER 1000$", text, flags=re.M)
    stub = Path(importlib.util.find_spec("pytriton").origin).parent / "tritonserver" / "python_backend_stubs" / "3.11"
    assert (stub / "triton_python_backend_stub").is_file() and "python_backend_stubs/3.11/triton_python_backend_stub" in text
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile.triton copies {path}, which the repository lacks"
    packages = re.findall(r'"(\w+)\*"', (ROOT / "pyproject.toml").read_text())
    assert not [p for p in packages if f"COPY {p} ./{p}" not in text], "the image must copy every package"
    assert (ROOT / "serving" / "Dockerfile.triton.dockerignore").is_file()


def test_transformer_dockerfile_is_pinned_and_runs_the_transformer():
    text = (ROOT / "serving" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base  # Python and Debian release pinned
    assert '-m", "serving.transformer"' in re.search(r"^ENTRYPOINT .*$", text, flags=re.M).group(0)
    assert "-c constraints.txt" in text and re.search(r"^USER 1000$", text, flags=re.M)
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which the repository lacks"
    packages = re.findall(r'"(\w+)\*"', (ROOT / "pyproject.toml").read_text())
    assert "model" in packages and not [p for p in packages if f"COPY {p} ./{p}" not in text], \
        "the image must copy every package the distribution installs"


def test_the_pipelines_deploy_serves_the_page_over_the_dataset_on_the_workspace_volume(tiny_repo):
    from components.deploying import kserve_manifest

    options = {"name": "omniretriever", "storage_uri": STORAGE, "transformer_image": IMAGE, "canary_percent": 10,
               "gpus": 1, "workspace_pvc": "ws", "workspace_mount": "/workspace", "gallery_store": CLUSTER}
    transformer = kserve_manifest(tiny_repo, "", media_root="/workspace/data", **options)["spec"]["transformer"]
    assert "--media_root" in transformer["containers"][0]["args"]
    assert {v["name"]: v for v in transformer["volumes"]}["gallery-media"]["persistentVolumeClaim"]["claimName"] == "ws"
    assert transformer["containers"][0]["volumeMounts"][0]["subPath"] == "data"
    for media_root, store in (("/elsewhere/data", CLUSTER), ("/workspace/data", "")):  # not mountable; nothing to search
        transformer = kserve_manifest(tiny_repo, "", media_root=media_root, **{**options, "gallery_store": store})[
            "spec"]["transformer"]
        assert "--media_root" not in transformer["containers"][0]["args"] and "volumes" not in transformer
