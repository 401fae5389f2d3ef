"""The real tritonserver and the real KServe transformer, queried with tritonclient over HTTP and gRPC.

One endpoint (tiny_run's repository plus a gallery index of tiny_data's test split) serves the whole module.
Embeddings are compared with the PyTorch model; every kind of bad request must get a 4xx naming the problem
and leave both servers healthy, and the connection it came on usable. The last sections check what no
request may do: remove a model, hold a connection, stall the event loop, or get a 5xx (a hypothesis fuzz of
V2 JSON and binary bodies), and that readiness follows Triton's (a second transformer behind a TCP proxy).
"""

from __future__ import annotations

import json
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
from serving.tensors import (EMBEDDING, EMBEDDING_MODEL, ENCODER_MODEL, IDS, MEDIA_URIS, REQUEST_FIELDS, SCORES,
                             SEARCH_MODEL, TEXT_ENCODER_MODEL, embedding_outputs, search_outputs)
from tests.conftest import free_port, http_ok, ramp_frames, tone, wait_until

LIMITS = ServingLimits(max_request_bytes=2 * MiB, max_media_bytes=512 * 1024, max_media_seconds=6.0, max_rows=16,
                       header_timeout_seconds=2.0, body_timeout_seconds=3.0, idle_timeout_seconds=5.0)
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
    assert triton.is_server_ready() and triton.is_model_ready(ENCODER_MODEL) and triton.is_model_ready(TEXT_ENCODER_MODEL)
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


def triton_requests(endpoint) -> dict[str, int]:
    """Successful inference requests each Triton model has answered so far (Triton's statistics extension)."""
    stats = connect(endpoint.triton_http_url, "http").get_inference_statistics()["model_stats"]
    return {s["name"]: int(s["inference_stats"]["success"]["count"]) for s in stats}


def test_captions_go_to_the_text_model_and_clips_to_the_encoder(endpoint, embedder, items, protocol):
    """A caption-only request runs the text graph (the same embedding as the joint forward); one with a clip in
    any row runs the joint graph for every row."""
    captions = make_rows(items[:5], [("text",)] * 5)
    before = triton_requests(endpoint)
    got = infer(endpoint, protocol, EMBEDDING_MODEL, columns(captions)).as_numpy(EMBEDDING)
    np.testing.assert_allclose(got, embedder.embed(captions), atol=1e-5)
    after = triton_requests(endpoint)
    assert after[TEXT_ENCODER_MODEL] == before[TEXT_ENCODER_MODEL] + 1 and after[ENCODER_MODEL] == before[ENCODER_MODEL]
    mixed = make_rows(items[:2], [("text",), ("video",)])
    got = infer(endpoint, protocol, EMBEDDING_MODEL, columns(mixed)).as_numpy(EMBEDDING)
    np.testing.assert_allclose(got, embedder.embed(mixed), atol=1e-5)
    last = triton_requests(endpoint)
    assert last[ENCODER_MODEL] == after[ENCODER_MODEL] + 1 and last[TEXT_ENCODER_MODEL] == after[TEXT_ENCODER_MODEL]


def test_triton_text_model_matches_pytorch_and_refuses_a_row_without_tokens(endpoint, embedder, protocol):
    arrays = random_inputs(embedder.loaded, 6, seed=8, text_only=True)
    text = {k: arrays[k] for k in ("text_ids", "text_mask")}
    client = connect(endpoint.triton_http_url if protocol == "http" else endpoint.triton_grpc_url, protocol)
    got = client.infer(TEXT_ENCODER_MODEL, encoder_inputs(CLIENTS[protocol], text)).as_numpy(EMBEDDING)
    np.testing.assert_allclose(got, embedder.forward(arrays), atol=1e-5)
    empty = {"text_ids": np.zeros_like(text["text_ids"][:2]), "text_mask": np.zeros_like(text["text_mask"][:2])}
    empty["text_mask"][0, :3] = True
    with pytest.raises(InferenceServerException, match="row 1: no text token"):
        client.infer(TEXT_ENCODER_MODEL, encoder_inputs(CLIENTS[protocol], empty))
    again = client.infer(TEXT_ENCODER_MODEL, encoder_inputs(CLIENTS[protocol], text)).as_numpy(EMBEDDING)
    np.testing.assert_allclose(again, got, atol=1e-6)


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
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert all(h.modalities == "av" and 0 == h.start < h.end <= 4.5 for h in result.hits)  # whole clips, 2-4 s


def test_a_filtered_search_returns_only_matching_hits_and_a_bad_filter_gets_400(endpoint, items, protocol):
    """The index file was imported into the transformer's own Milvus Lite store: filters run there."""
    wanted = [items[0][0], items[4][0]]
    where = f"item_id in [{', '.join(json.dumps(i) for i in wanted)}] and modalities == 'av' and end > 0"
    cols = {"TEXT": [items[0][1].encode()] * 2}
    result = infer(endpoint, protocol, SEARCH_MODEL, cols, parameters={"top_k": 10, "filter": where})
    ids = result.as_numpy(IDS).astype(str)
    assert ids.shape == (2, 2) and set(ids[0]) == set(ids[1]) == set(wanted)
    assert result.as_numpy(MEDIA_URIS).shape == (2, 2)  # "" for entries imported from an index file
    with pytest.raises(InferenceServerException) as info:
        infer(endpoint, protocol, SEARCH_MODEL, cols, parameters={"filter": 'content_hash == "imported"'})
    assert info.value.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")
    assert "parameter filter: unknown field 'content_hash' at position 0" in info.value.message()
    again = infer(endpoint, protocol, SEARCH_MODEL, cols, parameters={"top_k": 3, "filter": "split != 'nope'"})
    assert again.as_numpy(IDS).shape == (2, 3)
    url = endpoint.http_url if protocol == "http" else endpoint.grpc_url
    hits = query(url, text=items[0][1], filter=where).hits  # the client passes it on too
    assert {h.id for h in hits} == set(wanted) and all(h.uri == "" for h in hits)


def test_client_query_over_both_protocols_agrees(endpoint, embedder, items):
    _, text, media = items[3]
    by_http = query(endpoint.http_url, text=text, video=media, top_k=3, gallery="t")
    by_grpc = query(endpoint.grpc_url, text=text, video=media, top_k=3, gallery="t")
    assert [h.id for h in by_http.hits] == [h.id for h in by_grpc.hits] and by_http.gallery == by_grpc.gallery == "t"
    np.testing.assert_allclose([h.score for h in by_http.hits], [h.score for h in by_grpc.hits], atol=1e-6)
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


# --- what no request may do: remove a model, get a 5xx, break its connection ----------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection to the transformer (http.client reopens only if the server closed it)."""

    def __init__(self, endpoint, timeout: float = 60):
        import http.client

        host, port = split_url(endpoint.http_url)[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def send(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        import json

        try:
            self.conn.request(method, path, body=body, headers=headers or {})
        except Exception:
            self.conn.close()  # a request http.client refused to send: the next one starts afresh
            raise
        response = self.conn.getresponse()
        raw = response.read()
        try:
            content = json.loads(raw or b"{}")
        except ValueError:
            content = {"raw": raw.decode(errors="replace")}
        return response.status, {k.lower(): v for k, v in response.getheaders()}, content

    @property
    def sock(self):
        return self.conn.sock

    def close(self) -> None:
        self.conn.close()


def caption_body(text: str) -> bytes:
    import json

    return json.dumps({"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": [text]}]}).encode()


def assert_same_connection_answers(conn: Connection, items) -> None:
    """The connection a refused request came on serves a valid request next, without reconnecting."""
    sock = conn.sock
    assert sock is not None, "the server closed the connection"
    status, _, answer = conn.send("POST", f"/v2/models/{EMBEDDING_MODEL}/infer", caption_body(items[0][1]),
                                  {"Content-Type": "application/json"})
    assert status == 200, answer
    assert conn.sock is sock, "the connection was replaced"


def test_the_repository_api_is_not_served_and_no_request_removes_a_model(endpoint, items):
    conn = Connection(endpoint)
    for path in (f"/v2/repository/models/{EMBEDDING_MODEL}/unload", f"/v2/repository/models/{SEARCH_MODEL}/unload",
                 f"/v2/repository/models/{EMBEDDING_MODEL}/load", "/v2/repository/models/no-such-model/load",
                 "/v2/repository/index"):
        status, _, answer = conn.send("POST", path, b"{}", {"Content-Type": "application/json"})
        assert status == 404 and "repository API" in answer["error"], (path, answer)
    triton_style = connect(endpoint.grpc_url, "grpc")
    for call in (triton_style.unload_model, triton_style.load_model):
        with pytest.raises(InferenceServerException) as info:
            call(EMBEDDING_MODEL)
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    status, _, meta = conn.send("GET", "/v2")
    assert status == 200 and meta["extensions"] == []
    for model in (EMBEDDING_MODEL, SEARCH_MODEL):
        assert connect(endpoint.http_url, "http").is_model_ready(model) and triton_style.is_model_ready(model)
    assert_same_connection_answers(conn, items)
    assert_healthy(endpoint, items)


@pytest.mark.parametrize("method,path,message", [
    ("POST", f"/v1/models/{EMBEDDING_MODEL}:predict", "V1 protocol is not served"),
    ("GET", f"/v1/models/{EMBEDDING_MODEL}", "V1 protocol is not served"),
    ("POST", f"/v2/models/{EMBEDDING_MODEL}/versions/1/infer", "model versions are not served"),
    ("GET", f"/v2/models/{EMBEDDING_MODEL}/versions/1/ready", "model versions are not served"),
    ("POST", "/v2/models/no-such-model/infer", "no-such-model"),
    ("GET", "/v2/models/no-such-model/ready", "no-such-model"),
    ("GET", "/v2/models/no-such-model", "no-such-model"),
])
def test_other_protocols_versions_and_unknown_models_get_404(endpoint, items, method, path, message):
    conn = Connection(endpoint)
    status, _, answer = conn.send(method, path, caption_body("a dog") if method == "POST" else None,
                                  {"Content-Type": "application/json"})
    assert status == 404 and message in answer["error"], answer
    assert_same_connection_answers(conn, items)


def _binary(header: dict, *chunks: bytes) -> tuple[bytes, dict]:
    import json

    head = json.dumps(header).encode()
    return head + b"".join(chunks), {"Content-Type": "application/octet-stream",
                                     "Inference-Header-Content-Length": str(len(head))}


def _element(value: bytes) -> bytes:
    return len(value).to_bytes(4, "little") + value


def malformed_http_bodies() -> dict[str, tuple[str, bytes, dict, int, str]]:
    """name -> (model, body, headers, status, message): the header variants that used to get a 500."""
    good = _element(b"a dog barks")
    spec = {"name": "TEXT", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(good)}}

    def header(**changes) -> dict:
        inputs = changes.pop("input", {})
        return {"inputs": [{**spec, **inputs}], **changes}

    json_headers = {"Content-Type": "application/json"}
    cases = {
        "shape 5": (EMBEDDING_MODEL, header(input={"shape": 5}), "input TEXT: shape must be a list"),
        "shape of a string": (EMBEDDING_MODEL, header(input={"shape": ["a"]}), "input TEXT: shape must be a list"),
        "shape of null": (EMBEDDING_MODEL, header(input={"shape": [None]}), "input TEXT: shape must be a list"),
        "input parameters as a list": (EMBEDDING_MODEL, header(input={"parameters": [len(good)]}),
                                       "input TEXT: parameters: expected an object"),
        "input parameters as a string": (EMBEDDING_MODEL, header(input={"parameters": "binary"}),
                                         "input TEXT: parameters: expected an object"),
        "outputs of a number": (EMBEDDING_MODEL, header(outputs=[1]), "outputs[0]: expected an object"),
        "outputs of a string": (EMBEDDING_MODEL, header(outputs=["EMBEDDING"]), "outputs[0]: expected an object"),
        "outputs as an object": (EMBEDDING_MODEL, header(outputs={"name": "EMBEDDING"}), "outputs: expected a list"),
        "id a number": (EMBEDDING_MODEL, header(id=5), "id: expected a string"),
        "id a list": (EMBEDDING_MODEL, header(id=[1]), "id: expected a string"),
        "search parameters as a list": (SEARCH_MODEL, header(parameters=[5]), "parameters: expected an object"),
        "search parameters as a string": (SEARCH_MODEL, header(parameters="top_k=5"), "parameters: expected an object"),
    }
    out = {name: (model, *_binary(h, good), 400, message) for name, (model, h, message) in cases.items()}
    out["JSON caption with a lone surrogate"] = (
        EMBEDDING_MODEL, b'{"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["a \\ud800 dog"]}]}',
        json_headers, 400, "input TEXT, row 0: not valid Unicode")
    out["JSON shape 5"] = (EMBEDDING_MODEL, b'{"inputs": [{"name": "TEXT", "shape": 5, "datatype": "BYTES", '
                                            b'"data": ["a dog"]}]}', json_headers, 400, "input TEXT: shape")
    out["JSON search parameters as a list"] = (
        SEARCH_MODEL, b'{"parameters": [1], "inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", '
                      b'"data": ["a dog"]}]}', json_headers, 400, "parameters: expected an object")
    out["JSON data not a list"] = (EMBEDDING_MODEL, b'{"inputs": [{"name": "TEXT", "shape": [1], "datatype": '
                                                    b'"BYTES", "data": "a dog"}]}', json_headers, 400,
                                   "input TEXT: data must be a list")
    out["not JSON"] = (EMBEDDING_MODEL, b"{not json", json_headers, 400, "not valid JSON")
    out["JSON over max_json_bytes"] = (EMBEDDING_MODEL, b'{"inputs": []' + b" " * LIMITS.max_json_bytes + b"}",
                                       json_headers, 413, "over the limit of")
    out["shape declaring more elements than max_elements"] = (
        EMBEDDING_MODEL, *_binary({"inputs": [{**spec, "shape": [LIMITS.max_elements + 1]}]}, good), 413,
        f"over the limit of {LIMITS.max_elements}")
    return out


@pytest.mark.parametrize("case", list(malformed_http_bodies()))
def test_malformed_bodies_get_a_4xx_naming_the_field_and_the_connection_stays_usable(endpoint, items, case):
    model, body, headers, want_status, message = malformed_http_bodies()[case]
    conn = Connection(endpoint)
    try:
        status, response_headers, answer = conn.send("POST", f"/v2/models/{model}/infer", body, headers)
        assert status == want_status and message in answer["error"], answer
        assert response_headers.get("connection") != "close"
        assert_same_connection_answers(conn, items)
    finally:
        conn.close()


def test_a_body_of_empty_elements_is_refused_in_milliseconds_and_health_stays_fast(endpoint, items):
    """~1.9 MiB of zero-length TEXT elements (just under the request limit): refused from the declared shape, or
    after reading the one element the shape declares, never by splitting them all; health checks keep answering."""
    import time

    blob = b"\0\0\0\0" * ((LIMITS.max_request_bytes - 4096) // 4)
    conn, probe = Connection(endpoint), Connection(endpoint)
    for shape, status, message in (([len(blob) // 4], 413, "tensor elements, over the limit"),
                                   ([1], 400, "does not match its shape [1]")):
        body, headers = _binary({"inputs": [{"name": "TEXT", "shape": shape, "datatype": "BYTES",
                                             "parameters": {"binary_data_size": len(blob)}}]}, blob)
        start = time.perf_counter()
        got, _, answer = conn.send("POST", f"/v2/models/{EMBEDDING_MODEL}/infer", body, headers)
        elapsed = time.perf_counter() - start
        assert got == status and message in answer["error"], answer
        assert elapsed < 2.0, f"refusing took {elapsed:.2f} s"
        start = time.perf_counter()
        assert probe.send("GET", "/v2/health/ready")[0] == 200
        assert time.perf_counter() - start < 1.0
    assert_same_connection_answers(conn, items)


def _raw_grpc(endpoint):
    import grpc
    from tritonclient.grpc import service_pb2

    channel = grpc.insecure_channel(split_url(endpoint.grpc_url)[1])
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=lambda raw: raw,
                               response_deserializer=service_pb2.ModelInferResponse.FromString)
    return channel, call


def malformed_grpc_requests(items) -> dict[str, tuple[bytes, str, str]]:
    """name -> (serialized ModelInferRequest, gRPC status, message)."""
    from tritonclient.grpc import service_pb2 as pb

    def request(model=EMBEDDING_MODEL, shape=(1,), elements=(b"a dog",), raw=None, **fields) -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name=model, **fields)
        tensor = req.inputs.add(name="TEXT", datatype="BYTES", shape=list(shape))
        if raw is not None:
            req.raw_input_contents.extend(raw)
        else:
            tensor.contents.bytes_contents.extend(elements)
        return req

    top_k_string = request(SEARCH_MODEL)
    top_k_string.parameters["top_k"].string_param = "5"
    unset = request()
    unset.parameters["top_k"].CopyFrom(pb.InferParameter())
    empties = request(elements=[b""] * ((LIMITS.max_request_bytes - 4096) // 2))
    return {
        "not a protobuf message": (b"\xff\xff\xff\xff", "INVALID_ARGUMENT", "not a valid ModelInferRequest"),
        "model name not UTF-8": (b"\x0a\x02\xff\xfe", "INVALID_ARGUMENT", "not a valid ModelInferRequest"),
        "top_k as a string": (top_k_string.SerializeToString(), "INVALID_ARGUMENT", "parameter top_k"),
        "a parameter with no value": (unset.SerializeToString(), "INVALID_ARGUMENT", "parameters.top_k"),
        "a negative shape": (request(shape=(-1,)).SerializeToString(), "INVALID_ARGUMENT", "input TEXT: shape"),
        "raw contents that do not fit the shape": (request(raw=[_element(b"a") * 2]).SerializeToString(),
                                                   "INVALID_ARGUMENT", "does not match its shape [1]"),
        "more raw contents than inputs": (request(raw=[_element(b"a"), _element(b"b")]).SerializeToString(),
                                          "INVALID_ARGUMENT", "raw_input_contents"),
        "a model version": (request(model_version="1").SerializeToString(), "NOT_FOUND", "versions are not served"),
        "an unknown model": (request("no-such-model").SerializeToString(), "NOT_FOUND", "no-such-model"),
        "a lot of empty elements": (empties.SerializeToString(), "RESOURCE_EXHAUSTED", "too many fields"),
        "an id that is not UTF-8": (request().SerializeToString() + b"\x1a\x01\xff", "INVALID_ARGUMENT",
                                    "not a valid ModelInferRequest"),
    }


@pytest.mark.parametrize("case", ["not a protobuf message", "model name not UTF-8", "top_k as a string",
                                  "a parameter with no value", "a negative shape",
                                  "raw contents that do not fit the shape", "more raw contents than inputs",
                                  "a model version", "an unknown model", "a lot of empty elements",
                                  "an id that is not UTF-8"])
def test_malformed_grpc_requests_get_a_client_status_and_the_channel_stays_usable(endpoint, items, case):
    import time

    import grpc
    from tritonclient.grpc import service_pb2 as pb

    raw, code, message = malformed_grpc_requests(items)[case]
    channel, call = _raw_grpc(endpoint)
    try:
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            call(raw, timeout=30)
        assert info.value.code().name == code and message in info.value.details(), info.value
        assert time.perf_counter() - start < 5.0
        valid = pb.ModelInferRequest(model_name=EMBEDDING_MODEL)
        valid.inputs.add(name="TEXT", datatype="BYTES", shape=[1]).contents.bytes_contents.append(items[0][1].encode())
        assert call(valid.SerializeToString(), timeout=30).outputs[0].name == EMBEDDING
    finally:
        channel.close()


# --- timeouts: a request that never finishes does not hold its connection --------------------------------------


def _closed_after(endpoint, payload: bytes, limit: float) -> tuple[float, bytes]:
    """Send `payload` on a raw socket and stall: (seconds until the server closed it, what it answered)."""
    import socket
    import time

    host, port = split_url(endpoint.http_url)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=limit) as sock:
        if payload:
            sock.sendall(payload)
        start, answer = time.perf_counter(), b""
        while True:
            chunk = sock.recv(65536)  # socket.timeout (a failure) if the server keeps it open past `limit`
            if not chunk:
                return time.perf_counter() - start, answer
            answer += chunk


def test_half_open_requests_are_closed_in_time_and_others_are_served(endpoint, items):
    path = f"/v2/models/{EMBEDDING_MODEL}/infer"
    half_body = (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n").encode() + b'{"inputs": [' + b" " * 488
    half_headers = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Le".encode()
    cases = {"half a body": (half_body, LIMITS.body_timeout_seconds),
             "half the headers": (half_headers, LIMITS.header_timeout_seconds),
             "nothing at all": (b"", LIMITS.idle_timeout_seconds)}
    with ThreadPoolExecutor(len(cases)) as pool:
        stalled = {name: pool.submit(_closed_after, endpoint, payload, bound + 10) for name, (payload, bound) in
                   cases.items()}
        for _ in range(3):  # while they stall, others are served
            assert_healthy(endpoint, items)
        for name, job in stalled.items():
            seconds, answer = job.result()
            bound = cases[name][1]
            assert bound - 0.5 <= seconds <= bound + 2.0, (name, seconds)
            if name != "nothing at all":
                assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower(), (name, answer)
    assert_healthy(endpoint, items)


# --- the worker pools (a subprocess: kserve cannot share a process with tritonclient.grpc) ------------------------


WORKERS_SCRIPT = r"""
import asyncio, json, threading, time
from serving.limits import ServingLimits
from serving.server.status import Overloaded
from serving.server.workers import Workers

async def main():
    workers = Workers(ServingLimits(media_workers=1, text_workers=1, queue_timeout_seconds=0.5))
    gate = threading.Event()
    heavy = asyncio.ensure_future(workers.run("media", gate.wait, 30))
    await asyncio.sleep(0.1)
    start = time.perf_counter()
    caption = await workers.run("text", lambda: "a caption")
    text_s = time.perf_counter() - start
    start = time.perf_counter()
    try:
        await workers.run("media", lambda: "second clip")
        refused = None
    except Overloaded as exc:
        refused = str(exc)
    waited_s = time.perf_counter() - start
    gate.set()
    await heavy
    after = await workers.run("media", lambda: "third clip")
    print(json.dumps({"caption": caption, "text_s": text_s, "refused": refused, "waited_s": waited_s,
                      "after": after}))

asyncio.run(main())
"""


def test_media_and_text_work_have_their_own_bounded_pools_with_a_deadline():
    import json
    import subprocess
    import sys

    from serving.launcher import PROJECT_ROOT

    res = subprocess.run([sys.executable, "-c", WORKERS_SCRIPT], capture_output=True, text=True, timeout=120,
                         cwd=PROJECT_ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["caption"] == "a caption" and got["text_s"] < 0.3  # the busy media worker does not hold captions
    assert got["refused"] and "media workers stayed busy for 0.5 s" in got["refused"]
    assert 0.45 <= got["waited_s"] < 2.0
    assert got["after"] == "third clip"  # the slot came back when the heavy job finished


# --- readiness follows Triton's: a second transformer reaches Triton through a TCP proxy we can cut --------------


class TcpProxy:
    """127.0.0.1:port -> 127.0.0.1:upstream, byte for byte; cut() drops every connection and refuses new ones."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.port = free_port()
        self._pairs: list = []
        self._server = None
        self.restore()

    def restore(self) -> None:
        import socket
        import threading

        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def _accept(self, server) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = server.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            self._pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        try:  # wakes the accepting thread (closing alone leaves the socket listening in its accept on Linux)
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        for pair in self._pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._pairs.clear()


@pytest.fixture
def proxied_transformer(endpoint, tiny_repo, tmp_path):
    """A second transformer whose predictor is Triton behind a TcpProxy: (its urls, the proxy)."""
    import os
    import subprocess
    import sys

    from serving.launcher import PROJECT_ROOT
    from serving.repository import production_dir

    proxy = TcpProxy(endpoint.ports["triton_grpc"])
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path / "transformer.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
    argv = [sys.executable, "-m", "serving.transformer", "--model_dir", str(production_dir(tiny_repo).resolve()),
            "--predictor_host", f"127.0.0.1:{proxy.port}", "--host", "127.0.0.1", "--http_port", str(http_port),
            "--grpc_port", str(grpc_port), "--grace_seconds", "1", *LIMITS.to_args()]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    try:
        yield {"http": f"http://127.0.0.1:{http_port}", "grpc": f"grpc://127.0.0.1:{grpc_port}", "log": log}, proxy
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proxy.cut()


def test_readiness_and_inference_follow_the_predictor(proxied_transformer, items):
    urls, proxy = proxied_transformer
    log = lambda: f"transformer log:\n{urls['log'].read_text(errors='replace')[-3000:]}"  # noqa: E731
    wait_until(lambda: http_ok(f"{urls['http']}/v2/health/ready"), 180, log)
    conn = Connection(type("E", (), {"http_url": urls["http"]})())
    grpc_client = connect(urls["grpc"], "grpc")
    caption = {"TEXT": [items[0][1].encode()]}

    def embed(protocol: str):
        client = connect(urls[protocol], protocol)
        return client.infer(EMBEDDING_MODEL, tensors(CLIENTS[protocol], caption)).as_numpy(EMBEDDING)

    want = embed("http")
    assert grpc_client.is_server_ready() and grpc_client.is_model_ready(EMBEDDING_MODEL)

    proxy.cut()  # Triton unreachable
    wait_until(lambda: conn.send("GET", "/v2/health/ready")[0] == 503, 15, log)
    status, headers, answer = conn.send("GET", "/v2/health/ready")
    assert headers.get("retry-after") == "1" and "unreachable" in answer["error"], answer
    status, headers, answer = conn.send("GET", f"/v2/models/{EMBEDDING_MODEL}/ready")
    assert status == 503 and headers.get("retry-after") == "1", answer
    assert conn.send("GET", "/v2/health/live")[0] == 200
    assert not grpc_client.is_server_ready() and not grpc_client.is_model_ready(EMBEDDING_MODEL)
    status, headers, answer = conn.send("POST", f"/v2/models/{EMBEDDING_MODEL}/infer", caption_body(items[0][1]),
                                        {"Content-Type": "application/json"})
    assert status == 503 and headers.get("retry-after") == "1" and "unreachable" in answer["error"], answer
    with pytest.raises(InferenceServerException) as info:
        embed("grpc")
    assert info.value.status() == "StatusCode.UNAVAILABLE" and "unreachable" in info.value.message()

    proxy.restore()  # Triton back
    wait_until(lambda: conn.send("GET", "/v2/health/ready")[0] == 200, 20, log)
    assert grpc_client.is_server_ready() and grpc_client.is_model_ready(EMBEDDING_MODEL)
    np.testing.assert_array_equal(embed("http"), want)
    np.testing.assert_array_equal(embed("grpc"), want)


# --- a property-based fuzz of V2 JSON and binary bodies ------------------------------------------------------------


FUZZ_EXAMPLES = 500  # per body kind: about 5 s each


def _fuzz_strategies(items):
    """Hypothesis strategies for (model, body, headers): JSON bodies and binary bodies, valid and not."""
    import json

    from hypothesis import strategies as st

    surrogate_text = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)
    text = st.one_of(st.text(max_size=12), surrogate_text, st.sampled_from([items[0][1], items[1][1], "", " "]))
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), text)
    junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                        max_leaves=6)
    names = st.one_of(st.sampled_from(["TEXT", "VIDEO", "AUDIO", "IMAGE", ""]), junk)
    datatypes = st.one_of(st.sampled_from(["BYTES", "bytes", "FP32", "INT64", "BOOL"]), junk)
    shapes = st.one_of(st.lists(st.integers(-2, 20), max_size=3), st.lists(st.integers(0, 3), min_size=1, max_size=2),
                       st.just([LIMITS.max_elements + 1]), junk)
    media = st.sampled_from([b"", b"\x00\x00\x00\x18ftypmp42", items[0][2], items[0][2][: len(items[0][2]) // 2],
                             b"not media" * 20])
    elements = st.lists(st.one_of(text.map(lambda t: t.encode("utf-8", "surrogatepass")), media,
                                  st.binary(max_size=16)), max_size=4)
    def mostly(valid, invalid):
        """`valid` three times in four: so that many bodies get past the first check and reach the models."""
        return st.sampled_from([True, True, True, False]).flatmap(lambda pick: valid if pick else invalid)

    parameters = mostly(st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "top_k": mostly(st.integers(1, 100), st.one_of(st.integers(-1, 200), junk)),
        "gallery": mostly(st.sampled_from(["av", "t", "v"]), st.one_of(st.just("x"), junk)),
        "binary_data_output": st.booleans()})), junk)
    outputs = mostly(st.one_of(st.none(), st.lists(st.fixed_dictionaries({"name": st.sampled_from(["EMBEDDING", "IDS"])}),
                                                   max_size=2)), junk)
    models = st.sampled_from([EMBEDDING_MODEL, SEARCH_MODEL])

    def header(inputs):
        return st.fixed_dictionaries({"inputs": inputs}, optional={"id": mostly(st.text(max_size=12), junk),
                                                                   "parameters": parameters,
                                                                   "outputs": outputs})

    captions = st.sampled_from([items[0][1], items[1][1], items[2][1]])
    valid_names = st.sampled_from(["TEXT", "VIDEO", "AUDIO"])

    @st.composite
    def json_bodies(draw):
        rows, inputs = draw(st.integers(1, 3)), []
        for _ in range(draw(mostly(st.just(1), st.integers(0, 4)))):
            data = draw(mostly(st.lists(mostly(captions, text), min_size=rows, max_size=rows),
                               st.one_of(st.lists(text, max_size=4), junk)))
            spec = {"name": draw(mostly(st.just("TEXT"), names)), "datatype": draw(mostly(st.just("BYTES"), datatypes)),
                    "shape": draw(mostly(st.just([rows]), shapes)), "data": data}
            if draw(st.booleans()):
                spec["parameters"] = draw(parameters)
            inputs.append(spec)
        body = draw(mostly(header(st.just(inputs)), junk))
        return draw(models), json.dumps(body).encode(), {"Content-Type": "application/json"}

    @st.composite
    def binary_bodies(draw):
        rows, inputs, chunks = draw(st.integers(1, 3)), [], []
        for _ in range(draw(mostly(st.integers(1, 3), st.integers(0, 4)))):
            name = draw(mostly(valid_names, names))
            valid_values = (st.lists(captions.map(str.encode), min_size=rows, max_size=rows) if name == "TEXT"
                            else st.lists(media, min_size=rows, max_size=rows))
            values = draw(mostly(valid_values, elements))
            blob = b"".join(len(v).to_bytes(4, "little") + v for v in values)
            blob = draw(mostly(st.just(blob), st.sampled_from([blob[:-1], blob + b"\x00", b"\xff\xff\xff\xff" + blob])))
            size = draw(mostly(st.just(len(blob)), st.one_of(st.integers(-1, len(blob) + 8), junk)))
            spec = {"name": name, "datatype": draw(mostly(st.just("BYTES"), datatypes)),
                    "shape": draw(mostly(st.just([len(values)]), shapes)),
                    "parameters": draw(mostly(st.just({"binary_data_size": size}), parameters))}
            inputs.append(spec)
            chunks.append(blob)
        head = json.dumps(draw(header(st.just(inputs)))).encode()
        header_junk = st.one_of(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8),
                                st.binary(max_size=8).filter(lambda b: b"\r" not in b and b"\n" not in b))
        length = draw(mostly(st.just(str(len(head))), st.one_of(st.integers(-1, len(head) + 20).map(str), header_junk)))
        return draw(models), head + b"".join(chunks), {"Content-Type": "application/octet-stream",
                                                       "Inference-Header-Content-Length": length}

    return json_bodies(), binary_bodies()


def _probe(conn: Connection, items) -> np.ndarray:
    status, _, answer = conn.send("POST", f"/v2/models/{EMBEDDING_MODEL}/infer", caption_body(items[2][1]),
                                  {"Content-Type": "application/json"})
    assert status == 200, answer
    return np.asarray(answer["outputs"][0]["data"], dtype=np.float32)


@pytest.mark.parametrize("kind", ["json", "binary"])
def test_fuzzed_bodies_never_get_a_5xx_or_hang(endpoint, items, kind):
    """Hypothesis bodies, valid and not: every answer is a 2xx or 4xx within the client's timeout, and afterwards
    the server is ready and embeds a fixed caption exactly as before."""
    import time

    from hypothesis import HealthCheck, given, settings

    strategy = _fuzz_strategies(items)[0 if kind == "json" else 1]
    conn = Connection(endpoint, timeout=30)  # a hang fails as socket.timeout
    before = _probe(conn, items)
    seen: dict[int, int] = {}
    last = [time.monotonic()]

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def check(case):
        model, body, headers = case
        if time.monotonic() - last[0] > LIMITS.idle_timeout_seconds - 1:
            conn.close()  # the server closes idle connections: start a fresh one rather than race it
        status, response_headers, answer = conn.send("POST", f"/v2/models/{model}/infer", body, headers)
        last[0] = time.monotonic()
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (status, answer, body[:300], headers)
        if status >= 400:
            assert answer.get("error"), answer
        if response_headers.get("connection") == "close":
            conn.close()

    started = time.monotonic()
    check()
    print(f"fuzzed {kind} bodies: {sum(seen.values())} requests in {time.monotonic() - started:.1f} s, "
          f"statuses {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= FUZZ_EXAMPLES // 2, seen
    assert connect(endpoint.http_url, "http").is_server_ready()
    np.testing.assert_array_equal(_probe(conn, items), before)
    conn.close()
