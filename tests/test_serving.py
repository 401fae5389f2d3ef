"""The real tritonserver and the real KServe transformer, queried with tritonclient over HTTP and gRPC.

One endpoint (tiny_run's repository plus a gallery index of tiny_data's test split) serves the whole module.
Embeddings are compared with the PyTorch model; every kind of bad request must get a 4xx naming the problem
and leave both servers healthy.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from model.export import random_inputs
from model.inference import Embedder
from model.manifest import read_split, resolve_media
from dataset.mp4 import write_mp4
from omniretriever.cli import app
from serving.client import encoder_inputs, query, split_url
from serving.index import build_index, load_index
from serving.launcher import LocalEndpoint
from serving.limits import MiB, ServingLimits
from serving.tensors import (EMBEDDING, EMBEDDING_MODEL, ENCODER_MODEL, IDS, REQUEST_FIELDS, SCORES, SEARCH_MODEL,
                             embedding_outputs, search_outputs)
from tests.conftest import ramp_frames, tone

LIMITS = ServingLimits(max_request_bytes=2 * MiB, max_media_bytes=512 * 1024, max_media_seconds=6.0, max_rows=16)
CLIENTS = {"http": httpclient, "grpc": grpcclient}
SUBSETS = [("text",), ("video",), ("audio",), ("text", "video"), ("video", "audio"), ("text", "audio"),
           ("text", "video", "audio")]
NAMES = {field: name for name, field in REQUEST_FIELDS.items()}  # Preprocessor field -> request input


@pytest.fixture(scope="module")
def gallery(tiny_run, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "gallery.safetensors"
    return build_index(tiny_run, tiny_data, "test", ["av", "t", "tva"], out, workers=1, progress=False)


@pytest.fixture(scope="module")
def endpoint(tiny_repo, gallery):
    with LocalEndpoint(tiny_repo, index=gallery, limits=LIMITS, startup_timeout=300) as ep:
        yield ep


@pytest.fixture(scope="module")
def embedder(tiny_run):
    return Embedder(tiny_run)


@pytest.fixture(scope="module")
def items(tiny_data):
    """(id, caption, mp4 bytes) of the test split: the gallery's items."""
    return [(r.id, r.text, resolve_media(tiny_data, r.video).read_bytes()) for r in read_split(tiny_data, "test")]


@pytest.fixture(params=list(CLIENTS))
def protocol(request):
    return request.param


def connect(url: str, protocol: str):
    _, address = split_url(url)
    return CLIENTS[protocol].InferenceServerClient(address)


def make_rows(items, subsets) -> list[dict]:
    return [{f: (text if f == "text" else media) for f in fields} for (_, text, media), fields in zip(items, subsets)]


def columns(rows: list[dict]) -> dict[str, list]:
    """Rows -> one BYTES column per field any row uses; b"" where a row lacks it."""
    used = [f for f in NAMES if any(f in r for r in rows)]
    return {NAMES[f]: [(r[f].encode() if isinstance(r.get(f), str) else r.get(f, b"")) for r in rows] for f in used}


def tensors(module, cols: dict[str, list], shape=None, datatype="BYTES") -> list:
    out = []
    for name, values in cols.items():
        array = np.array(values, dtype=object if datatype == "BYTES" else None)
        tensor = module.InferInput(name, list(shape or array.shape), datatype)
        tensor.set_data_from_numpy(array.reshape(shape) if shape else array)
        out.append(tensor)
    return out


def infer(endpoint, protocol, model, cols, parameters=None):
    client = connect(endpoint.http_url if protocol == "http" else endpoint.grpc_url, protocol)
    return client.infer(model, tensors(CLIENTS[protocol], cols), parameters=parameters)


# --- health and embeddings ----------------------------------------------------------------------------------


def test_both_servers_are_ready_with_their_models(endpoint):
    transformer = connect(endpoint.http_url, "http")
    assert transformer.is_server_ready()
    assert transformer.is_model_ready(EMBEDDING_MODEL) and transformer.is_model_ready(SEARCH_MODEL)
    triton = connect(endpoint.triton_http_url, "http")
    assert triton.is_server_ready() and triton.is_model_ready(ENCODER_MODEL)
    for url in (endpoint.http_url, endpoint.grpc_url, endpoint.triton_http_url, endpoint.triton_grpc_url):
        assert "127.0.0.1" in url


def test_triton_direct_matches_pytorch(endpoint, embedder, protocol):
    arrays = random_inputs(embedder.loaded, 9, seed=5)
    module = CLIENTS[protocol]
    inputs = encoder_inputs(module, arrays)
    url = endpoint.triton_http_url if protocol == "http" else endpoint.triton_grpc_url
    got = connect(url, protocol).infer(ENCODER_MODEL, inputs).as_numpy(EMBEDDING)
    np.testing.assert_allclose(got, embedder.forward(arrays), atol=1e-5)


def test_transformer_matches_pytorch_for_every_subset(endpoint, embedder, items, protocol):
    rows = make_rows(items, SUBSETS)
    got = infer(endpoint, protocol, EMBEDDING_MODEL, columns(rows)).as_numpy(EMBEDDING)
    assert got.shape == (7, embedder.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, embedder.embed(rows), atol=1e-5)


def test_search_ranks_the_gallery_like_the_offline_index(endpoint, embedder, items, gallery, protocol):
    rows = make_rows(items[:6], [("text",)] * 3 + [("video", "audio")] * 3)
    result = infer(endpoint, protocol, SEARCH_MODEL, columns(rows), parameters={"top_k": 5, "gallery": "tva"})
    want_ids, want_scores = load_index(gallery).search(embedder.embed(rows), "tva", 5)
    got_ids = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(result.as_numpy(IDS))
    assert got_ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(result.as_numpy(SCORES), want_scores, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy(EMBEDDING), embedder.embed(rows), atol=1e-5)


def test_outputs_follow_the_tensor_specs(endpoint, embedder, items, protocol):
    """Each model answers with the outputs of serving.tensors: names, V2 datatypes and shapes [B, ...], in order."""
    cfg, cols = embedder.loaded.config, columns(make_rows(items[:2], [("text",), ("video", "audio")]))
    for model, specs, params in ((EMBEDDING_MODEL, embedding_outputs(cfg), None),
                                 (SEARCH_MODEL, search_outputs(cfg, 4), {"top_k": 4})):
        response = infer(endpoint, protocol, model, cols, parameters=params).get_response()
        if protocol == "http":
            got = [(o["name"], o["datatype"], list(o["shape"])) for o in response["outputs"]]
        else:
            got = [(o.name, o.datatype, list(o.shape)) for o in response.outputs]
        assert got == [(s.name, s.datatype, s.batch_shape(2)) for s in specs], model


def test_search_defaults_to_the_first_view_and_ten_results(endpoint, items):
    result = query(endpoint.http_url, text=items[0][1])
    assert result.gallery == "av" and len(result.hits) == 10
    assert [s for _, s in result.hits] == sorted((s for _, s in result.hits), reverse=True)


def test_client_query_over_both_protocols_agrees(endpoint, embedder, items):
    _, text, media = items[3]
    by_http = query(endpoint.http_url, text=text, video=media, top_k=3, gallery="t")
    by_grpc = query(endpoint.grpc_url, text=text, video=media, top_k=3, gallery="t")
    assert [i for i, _ in by_http.hits] == [i for i, _ in by_grpc.hits] and by_http.gallery == by_grpc.gallery == "t"
    np.testing.assert_allclose([s for _, s in by_http.hits], [s for _, s in by_grpc.hits], atol=1e-6)
    np.testing.assert_allclose(by_http.embedding, embedder.embed([{"text": text, "video": media}])[0], atol=1e-5)


def test_query_command_prints_the_hits(endpoint, items, tmp_path):
    clip = tmp_path / "query.mp4"
    clip.write_bytes(items[2][2])
    res = CliRunner().invoke(app, ["query", "--audio", str(clip), "--top-k", "4", "--url", endpoint.grpc_url,
                                   "--gallery", "av"])
    assert res.exit_code == 0, res.output
    assert "top 4 in gallery view 'av'" in res.output and res.output.count("test-") == 4
    missing = CliRunner().invoke(app, ["query", "--video", str(tmp_path / "none.mp4"), "--url", endpoint.http_url])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_concurrent_requests_each_get_their_own_answer(endpoint, embedder, items):
    """Rows of many requests in flight at once (batched together by Triton) never leak into each other."""
    jobs = [(i % 2 and "grpc" or "http", [{"text": items[i][1]}] if i % 3 else [{"video": items[i][2]}])
            for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: infer(endpoint, job[0], EMBEDDING_MODEL, columns(job[1])).as_numpy(EMBEDDING),
                            jobs))
    want = embedder.embed([row for _, rows in jobs for row in rows])
    np.testing.assert_allclose(np.concatenate(got), want, atol=1e-5)


# --- bad requests -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """An 8 s clip: over the 6 s duration limit, under the size limits."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return write_mp4(path, ramp_frames(8 * 6, size=32), tone(8.0), fps=6).read_bytes()


def bad_cases(items, long_clip) -> dict[str, tuple]:
    """name -> (model, inputs {name: (values, shape, datatype)}, parameters, http status, grpc status, message)."""
    text = items[0][1].encode()
    return {
        "wrong datatype": (EMBEDDING_MODEL, {"TEXT": ([1.5], [1], "FP32")}, None, 400, "INVALID_ARGUMENT",
                           "datatype FP32, expected BYTES"),
        "wrong shape": (EMBEDDING_MODEL, {"TEXT": ([text, text], [1, 2], "BYTES")}, None, 400, "INVALID_ARGUMENT",
                        "shape [1, 2], expected [B] or [B, 1]"),
        "rows disagree": (EMBEDDING_MODEL, {"TEXT": ([text, text], [2], "BYTES"), "VIDEO": ([items[0][2]], [1], "BYTES")},
                          None, 400, "INVALID_ARGUMENT", "disagree on the number of rows"),
        "unknown input": (EMBEDDING_MODEL, {"IMAGE": ([b"x"], [1], "BYTES")}, None, 400, "INVALID_ARGUMENT",
                          "unknown input 'IMAGE'"),
        "no modality in a row": (EMBEDDING_MODEL, {"TEXT": ([text, b""], [2], "BYTES")}, None, 400, "INVALID_ARGUMENT",
                                 "row 1: no modality"),
        "undecodable media": (EMBEDDING_MODEL, {"VIDEO": ([b"not a video" * 100], [1], "BYTES")}, None, 400,
                              "INVALID_ARGUMENT", "row 0, video: <bytes>: cannot open as a media container"),
        "media over the size limit": (EMBEDDING_MODEL, {"AUDIO": ([b"\0" * (600 * 1024)], [1], "BYTES")}, None, 400,
                                      "INVALID_ARGUMENT", "over the limit of 524288 bytes"),
        "media over the duration limit": (EMBEDDING_MODEL, {"VIDEO": ([long_clip], [1], "BYTES")}, None, 400,
                                          "INVALID_ARGUMENT", "is over the limit of 6 s"),
        "text not UTF-8": (EMBEDDING_MODEL, {"TEXT": ([b"\xff\xfe caption"], [1], "BYTES")}, None, 400,
                           "INVALID_ARGUMENT", "not valid UTF-8"),
        "too many rows": (EMBEDDING_MODEL, {"TEXT": ([text] * 17, [17], "BYTES")}, None, 400, "INVALID_ARGUMENT",
                          "17 rows, expected 1 to 16"),
        "unknown model name": ("no-such-model", {"TEXT": ([text], [1], "BYTES")}, None, 404, "NOT_FOUND",
                               "no-such-model"),
        "payload over the request limit": (EMBEDDING_MODEL, {"VIDEO": ([b"\0" * (3 * MiB)], [1], "BYTES")}, None, 413,
                                           "RESOURCE_EXHAUSTED", {"http": "over the limit of 2097152 bytes",
                                                                  "grpc": "larger than max"}),
        "top_k out of range": (SEARCH_MODEL, {"TEXT": ([text], [1], "BYTES")}, {"top_k": 1000}, 400, "INVALID_ARGUMENT",
                               "top_k: expected an integer from 1 to 100"),
        "gallery view not indexed": (SEARCH_MODEL, {"TEXT": ([text], [1], "BYTES")}, {"gallery": "v"}, 400,
                                     "INVALID_ARGUMENT", "holds the view(s) av, t, tva, not 'v'"),
    }


CASE_NAMES = ["wrong datatype", "wrong shape", "rows disagree", "unknown input", "no modality in a row",
              "undecodable media", "media over the size limit", "media over the duration limit", "text not UTF-8",
              "too many rows", "unknown model name", "payload over the request limit", "top_k out of range",
              "gallery view not indexed"]


def assert_healthy(endpoint, items):
    assert connect(endpoint.http_url, "http").is_server_ready()
    assert connect(endpoint.triton_http_url, "http").is_model_ready(ENCODER_MODEL)
    result = infer(endpoint, "grpc", EMBEDDING_MODEL, {"TEXT": [items[1][1].encode()]})
    assert result.as_numpy(EMBEDDING).shape[0] == 1


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_request_gets_a_4xx_naming_the_problem(endpoint, items, long_clip, protocol, case):
    model, spec, params, http_status, grpc_status, message = bad_cases(items, long_clip)[case]
    module = CLIENTS[protocol]
    inputs = []
    for name, (values, shape, datatype) in spec.items():
        array = np.array(values, dtype=object if datatype == "BYTES" else np.float32).reshape(shape)
        tensor = module.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client = connect(endpoint.http_url if protocol == "http" else endpoint.grpc_url, protocol)
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs, parameters=params)
    expected = str(http_status) if protocol == "http" else f"StatusCode.{grpc_status}"
    assert info.value.status() == expected, info.value
    message = message[protocol] if isinstance(message, dict) else message
    assert message in info.value.message()
    assert_healthy(endpoint, items)


def test_triton_refuses_a_row_with_nothing_present(endpoint, embedder, protocol):
    arrays = random_inputs(embedder.loaded, 3, seed=2)
    arrays["present"][1] = False
    module = CLIENTS[protocol]
    inputs = encoder_inputs(module, arrays)
    url = endpoint.triton_http_url if protocol == "http" else endpoint.triton_grpc_url
    with pytest.raises(InferenceServerException, match="row 1: no modality present"):
        connect(url, protocol).infer(ENCODER_MODEL, inputs)


# --- the V2 HTTP protocol by hand: JSON bodies and malformed binary bodies -----------------------------------


def post(endpoint, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    import http.client
    import json

    host, port = split_url(endpoint.http_url)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_a_plain_json_request_embeds_text(endpoint, embedder, items):
    import json

    body = json.dumps({"inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES",
                                   "data": [items[0][1], items[1][1]]}]}).encode()
    status, answer = post(endpoint, f"/v2/models/{EMBEDDING_MODEL}/infer", body, {"Content-Type": "application/json"})
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert output["name"] == EMBEDDING and output["shape"] == [2, embedder.dim] and output["datatype"] == "FP32"
    want = embedder.embed([{"text": items[0][1]}, {"text": items[1][1]}])
    np.testing.assert_allclose(np.array(output["data"], dtype=np.float32).reshape(2, -1), want, atol=1e-5)


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, int]:
    import json

    head = json.dumps(header).encode()
    return head + b"".join(chunks), len(head)


@pytest.mark.parametrize("case,message", [
    ("media as a JSON string", "media must be sent as binary data"),
    ("header length past the body", "outside the body"),
    ("binary size past the body", "does not fit the body"),
    ("bytes after the last input", "bytes after the last binary input"),
    ("length prefix of an element is wrong", "does not match its shape"),
])
def test_malformed_http_bodies_get_400(endpoint, items, case, message):
    element = items[0][1].encode()
    good = len(element).to_bytes(4, "little") + element
    spec = {"name": "TEXT", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(good)}}
    if case == "media as a JSON string":
        body, length = binary_body({"inputs": [{"name": "VIDEO", "shape": [1], "datatype": "BYTES", "data": ["abc"]}]})
    elif case == "header length past the body":
        body, length = binary_body({"inputs": [spec]}, good)
        length = len(body) + 10
    elif case == "binary size past the body":
        body, length = binary_body({"inputs": [{**spec, "parameters": {"binary_data_size": 10_000}}]}, good)
    elif case == "bytes after the last input":
        body, length = binary_body({"inputs": [spec]}, good, b"extra")
    else:
        bad = (len(element) + 50).to_bytes(4, "little") + element
        body, length = binary_body({"inputs": [spec]}, bad)
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(length)}
    status, answer = post(endpoint, f"/v2/models/{EMBEDDING_MODEL}/infer", body, headers)
    assert status == 400 and message in answer["error"], answer
    assert_healthy(endpoint, items)


def test_a_chunked_body_over_the_limit_gets_413(endpoint, items):
    """No Content-Length to check up front: the body is counted as it arrives."""
    import http.client

    host, port = split_url(endpoint.http_url)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = (b"\0" * (256 * 1024) for _ in range(12))  # 3 MiB against a 2 MiB limit
    try:
        conn.request("POST", f"/v2/models/{EMBEDDING_MODEL}/infer", body=chunks, encode_chunked=True,
                     headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "10"})
        response = conn.getresponse()
        assert response.status == 413 and b"over the limit of 2097152 bytes" in response.read()
    finally:
        conn.close()
    assert_healthy(endpoint, items)
