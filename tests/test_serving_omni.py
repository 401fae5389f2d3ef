"""Serving a Qwen2.5-Omni model: export to a python-backend repository, then the real tritonserver (PyTorch,
LoRA merged) and the real KServe transformer, queried over HTTP and gRPC, against the offline model.

The run is the session's `omni_run` (3 steps on the tiny random thinker). Embeddings served must equal
model.inference.Embedder's within 1e-4, the repository must hold the adapter and the base's identity but never
the base's weights, and a base with other weights must keep the model from loading.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from safetensors.torch import load_file, save_file

from model.inference import Embedder
from model.manifest import read_split, resolve_media
from model.omni.export import random_arrays
from serving.client import encoder_inputs, split_url
from serving.launcher import LocalEndpoint, ServingError
from serving.manifests import BASE_MOUNT
from serving.repository import build_repository, config_path, read_repository
from serving.index import build_index, load_index
from serving.tensors import EMBEDDING, EMBEDDING_MODEL, ENCODER_MODEL, IDS, REQUEST_FIELDS, SCORES, SEARCH_MODEL

CLIENTS = {"http": httpclient, "grpc": grpcclient}
SUBSETS = [("text",), ("video",), ("audio",), ("text", "video"), ("video", "audio"), ("text", "audio"),
           ("text", "video", "audio")]
NAMES = {field: name for name, field in REQUEST_FIELDS.items()}
TOLERANCE = 1e-4  # what the issue of serving this backend promises: served = offline within 1e-4


@pytest.fixture(scope="module")
def omni_repo(omni_run, tmp_path_factory):
    return build_repository(omni_run, tmp_path_factory.mktemp("omni-repo") / "repo")


@pytest.fixture(scope="module")
def gallery(omni_run, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("omni-index") / "gallery.safetensors"
    return build_index(omni_run, tiny_data, "test", ["av", "t"], out, workers=1, progress=False)


@pytest.fixture(scope="module")
def endpoint(omni_repo, gallery):
    with LocalEndpoint(omni_repo, index=gallery, startup_timeout=300) as ep:
        yield ep


@pytest.fixture(scope="module")
def embedder(omni_run):
    return Embedder(omni_run)


@pytest.fixture(scope="module")
def items(tiny_data):
    return [(r.text, resolve_media(tiny_data, r.video).read_bytes()) for r in read_split(tiny_data, "test")]


def connect(url: str, protocol: str):
    return CLIENTS[protocol].InferenceServerClient(split_url(url)[1])


def test_the_repository_runs_the_saved_model_in_pytorch_and_holds_no_base_weights(omni_repo, omni_run, thinker_dir):
    info = read_repository(omni_repo)
    assert info["backbone"] == "qwen2_5_omni" and info["max_abs_diff"] < TOLERANCE and info["rows_checked"] == 11
    assert info["base"]["digest"] == json.loads((omni_run / "model" / "base.json").read_text())["digest"]
    production, local = config_path(omni_repo, "production").read_text(), config_path(omni_repo, "local").read_text()
    assert 'backend: "python"' in production and "KIND_GPU" in production and f'"{BASE_MOUNT}"' in production
    assert 'backend: "python"' in local and "KIND_CPU" in local and str(thinker_dir.resolve()) in local
    assert 'name: "audio_mask"' in production and 'name: "audio_mask"' in local
    assert production.count(info["weights_sha256"]) == 1 and local.count(info["weights_sha256"]) == 1  # saved_sha256
    saved = omni_repo / "production" / ENCODER_MODEL / "1" / "saved"
    assert sorted(p.name for p in saved.iterdir()) == ["base.json", "config.json", "model.safetensors", "tokenizer.json"]
    base_bytes = sum(p.stat().st_size for p in thinker_dir.glob("*.safetensors"))
    repo_bytes = sum(p.stat().st_size for p in omni_repo.rglob("*.safetensors"))
    assert repo_bytes < base_bytes / 4  # the adapter and head, not a copy of the thinker
    assert not list(omni_repo.rglob("*.onnx"))


@pytest.mark.parametrize("protocol", list(CLIENTS))
def test_triton_direct_matches_pytorch(endpoint, embedder, protocol):
    arrays = random_arrays(embedder.loaded, 7, seed=3)
    url = endpoint.triton_http_url if protocol == "http" else endpoint.triton_grpc_url
    got = connect(url, protocol).infer(ENCODER_MODEL, encoder_inputs(CLIENTS[protocol], arrays)).as_numpy(EMBEDDING)
    np.testing.assert_allclose(got, embedder.forward(arrays), atol=TOLERANCE)


def test_triton_refuses_a_row_with_nothing_present_and_keeps_serving(endpoint, embedder):
    from tritonclient.utils import InferenceServerException

    arrays = random_arrays(embedder.loaded, 3, seed=4)
    arrays["present"][1] = False
    client = connect(endpoint.triton_http_url, "http")
    with pytest.raises(InferenceServerException, match="row 1: no modality present"):
        client.infer(ENCODER_MODEL, encoder_inputs(httpclient, arrays))
    arrays["present"][1] = True
    got = client.infer(ENCODER_MODEL, encoder_inputs(httpclient, arrays)).as_numpy(EMBEDDING)
    np.testing.assert_allclose(got, embedder.forward(arrays), atol=TOLERANCE)


@pytest.mark.parametrize("protocol", list(CLIENTS))
def test_the_transformer_preprocesses_as_training_and_matches_for_every_subset(endpoint, embedder, items, protocol):
    rows = [{f: (text if f == "text" else media) for f in fields} for (text, media), fields in zip(items, SUBSETS)]
    module = CLIENTS[protocol]
    inputs = []
    for field, name in NAMES.items():
        values = [(r[field].encode() if field == "text" else r[field]) if field in r else b"" for r in rows]
        tensor = module.InferInput(name, [len(rows)], "BYTES")
        tensor.set_data_from_numpy(np.array(values, dtype=object))
        inputs.append(tensor)
    url = endpoint.http_url if protocol == "http" else endpoint.grpc_url
    got = connect(url, protocol).infer(EMBEDDING_MODEL, inputs).as_numpy(EMBEDDING)
    assert got.shape == (7, embedder.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, embedder.embed(rows), atol=TOLERANCE)


def test_the_query_command_embeds_through_the_endpoint(endpoint, embedder, items):
    from typer.testing import CliRunner

    from omniretriever.cli import app

    res = CliRunner().invoke(app, ["query", "--url", endpoint.http_url, "--text", items[0][0], "--json"])
    assert res.exit_code == 0, res.output
    got = np.array(json.loads(res.output)["embedding"], dtype=np.float32)
    np.testing.assert_allclose(got.reshape(1, -1), embedder.embed([{"text": items[0][0]}]), atol=TOLERANCE)


@pytest.mark.parametrize("protocol", list(CLIENTS))
def test_search_ranks_the_gallery_like_the_offline_index(endpoint, embedder, items, gallery, protocol):
    rows = [{"text": text} for text, _ in items[:3]] + [{"video": media, "audio": media} for _, media in items[:3]]
    module = CLIENTS[protocol]
    inputs = []
    for field, name in (("text", "TEXT"), ("video", "VIDEO"), ("audio", "AUDIO")):
        values = [(r[field].encode() if field == "text" else r[field]) if field in r else b"" for r in rows]
        tensor = module.InferInput(name, [len(rows)], "BYTES")
        tensor.set_data_from_numpy(np.array(values, dtype=object))
        inputs.append(tensor)
    url = endpoint.http_url if protocol == "http" else endpoint.grpc_url
    result = connect(url, protocol).infer(SEARCH_MODEL, inputs, parameters={"top_k": 4, "gallery": "av"})
    want_ids, want_scores = load_index(gallery).search(embedder.embed(rows), "av", 4)
    got = [[b.decode() if isinstance(b, bytes) else b for b in row] for row in result.as_numpy(IDS)]
    assert got == want_ids.tolist()
    np.testing.assert_allclose(result.as_numpy(SCORES), want_scores, atol=TOLERANCE)


def test_a_base_with_other_weights_keeps_the_model_from_loading(omni_run, thinker_dir, tmp_path):
    moved = tmp_path / "base"
    shutil.copytree(thinker_dir, moved)
    weights = next(moved.glob("*.safetensors"))
    state = load_file(weights)
    name = next(k for k in state if "layers.0.self_attn.q_proj.weight" in k)
    state[name] = state[name] + 1.0
    save_file(state, weights, metadata={"format": "pt"})
    repo = build_repository(omni_run, tmp_path / "repo")  # exported against its own (recorded) base
    local = config_path(repo, "local")
    local.write_text(local.read_text().replace(str(thinker_dir.resolve()), str(moved)))
    with pytest.raises(ServingError, match="digest"):
        with LocalEndpoint(repo, startup_timeout=120):
            pass


def test_the_pipelines_kserve_manifest_mounts_the_base_from_the_workspace_volume(omni_repo, thinker_dir, tmp_path):
    from components.deploying import kserve_manifest

    options = dict(name="omniretriever", storage_uri="pvc://ws/repo/production", transformer_image="r/t:1",
                   canary_percent=10, gpus=1)
    with pytest.raises(ValueError, match="needs predictor_image .* and workspace_pvc"):
        kserve_manifest(omni_repo, "", **options)
    mount = str(thinker_dir.resolve().parent)  # the volume, as the steps see it
    manifest = kserve_manifest(omni_repo, "", predictor_image="r/triton:1", workspace_pvc="ws", workspace_mount=mount,
                               **options)
    predictor = manifest["spec"]["predictor"]
    assert predictor["model"]["image"] == "r/triton:1" and predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["model"]["volumeMounts"][0]["subPath"] == thinker_dir.name
    assert predictor["model"]["volumeMounts"][0]["mountPath"] == BASE_MOUNT
    assert predictor["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ws"
    with pytest.raises(ValueError, match="is not on the volume ws"):
        kserve_manifest(omni_repo, "", predictor_image="r/triton:1", workspace_pvc="ws", workspace_mount=str(tmp_path),
                        **options)
