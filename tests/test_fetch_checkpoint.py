"""model.omni.fetch and the fetch-checkpoint step: a local directory handed on as it is; an s3:// checkpoint
downloaded once from a real S3-protocol server on 127.0.0.1 (moto's ThreadedMotoServer) into the cache
and reused without a request; the errors a bad URI, bucket or prefix gives; hf:// parsing and the error
when the hub cannot be reached."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.errors import CheckpointError
from model.omni.checkpoint import find_checkpoint
from model.omni.fetch import INDEX_FILE, PARTIAL, STALE_SECONDS, CheckpointFetchError, fetch_checkpoint, parse_source

BUCKET = "checkpoints"


@dataclass
class S3:
    endpoint: str
    client: object
    requests: list[str]  # the request lines the server answered, in order


class _RequestLog(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if '"' in message:  # werkzeug's access line: 127.0.0.1 - - [date] "GET /bucket/key HTTP/1.1" 200 -
            self.lines.append(message.split('"')[1])


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """An S3 server on 127.0.0.1 (a free port) with an empty bucket, and credentials in the environment;
    every request it answers is logged in `requests`."""
    pytest.importorskip("moto", reason="moto[s3] (the test extra) runs the S3 server")
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    requests: list[str] = []
    handler, werkzeug = _RequestLog(requests), logging.getLogger("werkzeug")
    werkzeug.addHandler(handler)
    level, werkzeug.level = werkzeug.level, logging.INFO
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield S3(endpoint, client, requests)
    finally:
        server.stop()
        werkzeug.removeHandler(handler)
        werkzeug.setLevel(level)


def upload(s3: S3, directory: Path, prefix: str, skip: tuple[str, ...] = ()) -> str:
    """Every file of `directory` (but `skip`) under s3://BUCKET/prefix/; returns that URI."""
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name not in skip:
            s3.client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
    return f"s3://{BUCKET}/{prefix}"


def mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def test_an_s3_checkpoint_is_downloaded_once_then_reused_without_a_request(s3, thinker_dir, tmp_path):
    uri, cache = upload(s3, thinker_dir, "qwen/tiny"), tmp_path / "cache"
    digest = find_checkpoint(thinker_dir).digest
    s3.requests.clear()
    first = fetch_checkpoint(uri, cache, endpoint_url=s3.endpoint)
    assert first.downloaded and first.sha256 == digest and first.path == cache / digest
    assert sorted(p.name for p in first.path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert find_checkpoint(first.path).digest == digest
    assert any("1 object(s)" in note and "not checkpoint files" in note for note in first.notes), first.notes
    assert first.files == 3 and first.size == sum(p.stat().st_size for p in first.path.iterdir())
    assert any(line.startswith("GET /checkpoints/qwen/tiny/model.safetensors") for line in s3.requests), s3.requests
    index = json.loads((cache / INDEX_FILE).read_text())
    assert index["entries"][uri]["sha256"] == digest
    assert not list(cache.glob(PARTIAL + "*")), "no partial directory is left behind"

    before, s3.requests[:] = mtimes(first.path), []
    second = fetch_checkpoint(uri, cache, endpoint_url=s3.endpoint)
    assert (second.path, second.sha256, second.downloaded) == (first.path, first.sha256, False)
    assert s3.requests == [], "the second fetch asked the server nothing"
    assert mtimes(second.path) == before
    assert not fetch_checkpoint(uri + "/", cache, endpoint_url=s3.endpoint).downloaded, "a trailing / is the same URI"
    assert s3.requests == []


def test_a_cached_copy_that_changed_is_fetched_again(s3, thinker_dir, tmp_path):
    uri, cache = upload(s3, thinker_dir, "tiny"), tmp_path / "cache"
    first = fetch_checkpoint(uri, cache, endpoint_url=s3.endpoint)
    with open(first.path / "tokenizer.json", "a") as fh:
        fh.write(" ")
    again = fetch_checkpoint(uri, cache, endpoint_url=s3.endpoint)
    assert again.downloaded and again.path == first.path and again.sha256 == first.sha256
    assert any("removed and fetched again" in n and "tokenizer.json" in n for n in again.notes), again.notes
    assert (again.path / "tokenizer.json").read_bytes() == (thinker_dir / "tokenizer.json").read_bytes()


def test_two_uris_with_the_same_files_share_one_directory(s3, thinker_dir, tmp_path):
    cache = tmp_path / "cache"
    a = fetch_checkpoint(upload(s3, thinker_dir, "a"), cache, endpoint_url=s3.endpoint)
    b = fetch_checkpoint(upload(s3, thinker_dir, "b"), cache, endpoint_url=s3.endpoint)
    assert a.path == b.path and b.downloaded
    assert sorted(json.loads((cache / INDEX_FILE).read_text())["entries"]) == [f"s3://{BUCKET}/a", f"s3://{BUCKET}/b"]
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".") and p.is_dir()] == [a.sha256]


def test_the_same_weights_with_another_config_are_refused_not_shared(s3, thinker_dir, tmp_path):
    cache = tmp_path / "cache"
    first = fetch_checkpoint(upload(s3, thinker_dir, "a"), cache, endpoint_url=s3.endpoint)
    uri = upload(s3, thinker_dir, "b", skip=("config.json",))
    config = json.loads((thinker_dir / "config.json").read_text()) | {"note": "another config"}
    s3.client.put_object(Bucket=BUCKET, Key="b/config.json", Body=json.dumps(config).encode())
    with pytest.raises(CheckpointFetchError, match=rf"^{uri}: its weights are those already cached in {first.path} "
                                                   rf"\(from s3://{BUCKET}/a\), but config.json differs"):
        fetch_checkpoint(uri, cache, endpoint_url=s3.endpoint)
    assert (first.path / "config.json").read_bytes() == (thinker_dir / "config.json").read_bytes()
    assert uri not in json.loads((cache / INDEX_FILE).read_text())["entries"]


def test_a_killed_fetch_leaves_nothing_a_later_fetch_takes_for_complete(s3, thinker_dir, tmp_path):
    """A partial directory (a download cut short) is never read; once stale it is removed."""
    uri, cache = upload(s3, thinker_dir, "tiny"), tmp_path / "cache"
    killed = cache / f"{PARTIAL}killed"
    killed.mkdir(parents=True)
    (killed / "config.json").write_bytes((thinker_dir / "config.json").read_bytes())
    old = time.time() - STALE_SECONDS - 60
    os.utime(killed / "config.json", (old, old))
    os.utime(killed, (old, old))
    fresh = cache / f"{PARTIAL}running"
    fresh.mkdir()
    fetched = fetch_checkpoint(uri, cache, endpoint_url=s3.endpoint)
    assert fetched.downloaded and find_checkpoint(fetched.path).digest == fetched.sha256
    assert not killed.exists() and any(str(killed) in n for n in fetched.notes)
    assert fresh.is_dir(), "a partial directory still being written is left alone"


@pytest.mark.parametrize("case, reason", [
    ("no-bucket", "bucket 'no-such-bucket' does not exist"),
    ("no-prefix", "no objects under prefix 'nothing/here/'"),
    ("no-config", "no config.json under the prefix (it holds 3 object(s): generation_config.json, model.safetensors, "
                  "tokenizer.json)"),
    ("no-weights", "no weights: neither model.safetensors nor model.safetensors.index.json"),
    ("bad-field", "config.json: text_config.vocab_size: expected a positive integer, got 0"),
    ("bad-scheme", "unsupported scheme 'gs://'"),
])
def test_bad_s3_sources_fail_naming_the_uri(s3, thinker_dir, tmp_path, case, reason):
    uri = {"no-bucket": "s3://no-such-bucket/qwen", "no-prefix": f"s3://{BUCKET}/nothing/here",
           "no-config": upload(s3, thinker_dir, "noconfig", skip=("config.json",)),
           "no-weights": upload(s3, thinker_dir, "noweights", skip=("model.safetensors",)),
           "bad-field": upload(s3, thinker_dir, "badfield", skip=("config.json",)),
           "bad-scheme": "gs://bucket/qwen"}[case]
    if case == "bad-field":
        config = json.loads((thinker_dir / "config.json").read_text())
        config["text_config"]["vocab_size"] = 0
        s3.client.put_object(Bucket=BUCKET, Key="badfield/config.json", Body=json.dumps(config).encode())
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointFetchError) as err:
        fetch_checkpoint(uri, cache, endpoint_url=s3.endpoint)
    assert str(err.value).startswith(f"{uri}: ") and reason in str(err.value), str(err.value)
    assert not cache.exists() or not [p for p in cache.iterdir() if p.is_dir()], "nothing is left in the cache"


def test_an_unreachable_s3_endpoint_is_named(thinker_dir, tmp_path, monkeypatch):
    from tests.conftest import free_port

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CheckpointFetchError, match=rf"^s3://{BUCKET}/qwen: cannot reach {endpoint}"):
        fetch_checkpoint(f"s3://{BUCKET}/qwen", tmp_path / "cache", endpoint_url=endpoint)


def test_a_local_directory_is_validated_and_handed_on_unchanged(thinker_dir, tmp_path):
    fetched = fetch_checkpoint(str(thinker_dir), tmp_path / "cache")
    assert (fetched.path, fetched.sha256, fetched.downloaded) == (thinker_dir, find_checkpoint(thinker_dir).digest, False)
    assert not (tmp_path / "cache").exists(), "nothing is copied"
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((thinker_dir / "config.json").read_text())
    del config["audio_token_index"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"^{broken / 'config.json'}: audio_token_index: missing"):
        fetch_checkpoint(str(broken), tmp_path / "cache")


@pytest.mark.parametrize("uri, expected", [
    ("hf://Qwen/Qwen2.5-Omni-3B", ("hf", "Qwen/Qwen2.5-Omni-3B", None)),
    ("hf://Qwen/Qwen2.5-Omni-7B@v1.0", ("hf", "Qwen/Qwen2.5-Omni-7B", "v1.0")),
    ("hf://nvidia/omni-embed-nemotron-3b@0123abcd", ("hf", "nvidia/omni-embed-nemotron-3b", "0123abcd")),
    ("s3://my-bucket/models/qwen/", ("s3", "my-bucket", "models/qwen")),
    ("/workspace/checkpoints/qwen", ("local", "/workspace/checkpoints/qwen", None)),
])
def test_sources_parse(uri, expected):
    src = parse_source(uri)
    assert (src.kind, src.location, src.detail) == expected and src.uri == uri


@pytest.mark.parametrize("uri, reason", [
    ("hf://Qwen2.5-Omni-3B", "is not a hub repository (expected hf://org/name[@revision])"),
    ("hf://Qwen/Qwen2.5-Omni-3B@", "'' is not a revision"),
    ("hf://Qwen/a/b", "is not a hub repository"),
    ("s3://Bad_Bucket/qwen", "'Bad_Bucket' is not an S3 bucket name"),
    ("s3:///qwen", "'' is not an S3 bucket name"),
    ("file:///tmp/qwen", "unsupported scheme 'file://': expected a directory path, s3://bucket/prefix or "
                         "hf://org/name[@revision]"),
])
def test_bad_uris_fail_naming_the_uri(uri, reason):
    with pytest.raises(CheckpointFetchError) as err:
        parse_source(uri)
    assert str(err.value).startswith(f"{uri}: ") and reason in str(err.value), str(err.value)


def test_hf_without_the_hub_says_it_is_unreachable(tmp_path):
    """HF_HUB_OFFLINE is read when huggingface_hub is imported, so this runs in a fresh interpreter."""
    code = ("import sys; from model.omni.fetch import fetch_checkpoint\n"
            "try:\n    fetch_checkpoint('hf://Qwen/Qwen2.5-Omni-3B@main', sys.argv[1])\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).resolve().parents[1], timeout=120).stdout
    assert out.startswith("CheckpointFetchError hf://Qwen/Qwen2.5-Omni-3B@main: the Hugging Face hub is unreachable"), out
    assert "hf:// works only where the cluster reaches the hub" in out
    assert not list((tmp_path / "cache").glob(PARTIAL + "*")), "the partial download was removed"


def test_the_fetch_step_returns_the_path_and_digest(s3, thinker_dir, tmp_path, monkeypatch, capsys):
    """The component as the pipeline runs it: the endpoint from the environment, as a cluster's secret sets it."""
    from components.checkpoints import fetch_checkpoint as step
    from components.checkpoints import no_checkpoint

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    uri, cache = upload(s3, thinker_dir, "tiny"), tmp_path / "cache"
    path, sha256 = step.python_func(checkpoint=uri, cache=str(cache))
    assert sha256 == find_checkpoint(thinker_dir).digest and path == str(cache / sha256)
    assert step.python_func(checkpoint=uri, cache=str(cache)) == (path, sha256)
    out = capsys.readouterr().out
    assert "fetched s3://" in out and "(nothing downloaded)" in out
    assert tuple(no_checkpoint.python_func()) == ("", "")
