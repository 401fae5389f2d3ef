"""A rebuilt gallery replaces the served one under load without a failed request or a half-built answer.

Milvus Lite runs here as a standalone server (`milvus-lite server`, the Milvus gRPC protocol on a loopback
port), so that the transformer and `index add --rebuild` share the store as they would share a cluster:
pymilvus reaches it at http://127.0.0.1:PORT, the code path of a cluster. The test split is indexed and
served; while client threads keep searching the av gallery with top_k above its size, a rebuild from a
manifest of half the items fills a new generation in small batches and publishes it. Every answer must
hold either all the items (the old generation) or exactly the half (the new one): never a count in between,
which is what a search of the generation being filled would return. After the swap every answer is the new
gallery, with no restart.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model.manifest import read_split
from serving.client import query
from serving.launcher import LocalEndpoint, free_port
from serving.library import add_items


@pytest.fixture
def milvus(tmp_path):
    """A Milvus Lite server on a free loopback port, stopped at the end: its http:// URI."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "library.db"),
                             "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "milvus-lite server did not start"
            time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.timeout(900)
def test_a_rebuild_swaps_in_under_load_with_no_failed_or_half_built_answer(milvus, tiny_run, tiny_repo, tiny_data,
                                                                            tmp_path):
    records = read_split(tiny_data, "test")
    n, half = len(records), len(records) // 2
    report = add_items(tiny_run, tiny_data, ["av"], milvus, split="test", workers=1)
    assert report.published and report.generation == 1
    subset = tmp_path / "half.jsonl"
    subset.write_text("".join(json.dumps(json.loads(r.to_json())) + "\n" for r in records[:half]))
    answers: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    with LocalEndpoint(tiny_repo, index=milvus, startup_timeout=300) as endpoint:
        def client() -> None:
            while not stop.is_set():
                try:
                    answers.append(len(query(endpoint.http_url, text="a red circle", top_k=64, gallery="av").hits))
                except Exception as exc:  # every failure is counted: none may happen
                    errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(3)
            before = len(answers)
            rebuild = subprocess.run(
                [sys.executable, "-m", "omniretriever", "index", "add", "--model", str(tiny_run), "--data",
                 str(tiny_data), "--manifest", str(subset), "--uri", milvus, "--view", "av", "--rebuild",
                 "--batch-size", "2", "--workers", "1"], capture_output=True, text=True, timeout=600,
                env={**os.environ, "PYTHONPATH": str(Path.cwd())})
            assert rebuild.returncode == 0, rebuild.stderr[-3000:]
            assert "generation 2: published" in rebuild.stdout
            during = len(answers)
            time.sleep(3)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        after = answers[during + len(threads):]  # past the answers that may have been in flight at the swap
    assert not errors, errors[:5]
    assert before > 0 and during - before > 0 and after, (before, during, len(answers))
    assert set(answers) <= {n, half}, sorted(set(answers))  # the old gallery or the new one, never a part
    assert set(answers[:before]) == {n} and set(after) == {half}  # the swap reached the running server
    print(f"{len(answers)} searches, {during - before} during the rebuild, none failed")
