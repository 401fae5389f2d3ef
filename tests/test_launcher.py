"""Starting and stopping the local endpoint: Ctrl-C stops both servers, a failed start leaves nothing running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.index import load_index, save_index
from serving.launcher import LocalEndpoint, ServingError
from tests.conftest import free_port, http_ok, wait_until


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children of children included), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    def ready() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        return http_ok(url)

    wait_until(ready, timeout, f"{url} not ready after {timeout} s", interval=0.5)


def none_alive(pids: Callable[[], set[int]], timeout: float = 30) -> None:
    """Wait until no process of `pids()` is alive (the kernel reaps stopped servers shortly after they exit)."""
    def left() -> list[int]:
        return sorted(p for p in pids() if alive(p))

    wait_until(lambda: not left(), timeout, lambda: f"still alive after {timeout} s: {left()}")


def test_serve_stops_both_servers_on_ctrl_c(tiny_repo, tmp_path):
    http_port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "omniretriever", "serve", "--repo", str(tiny_repo), "--http-port", str(http_port),
            "--grpc-port", str(grpc_port), "--log-dir", str(tmp_path / "logs")]
    # As an interactive shell would start it: a suite run as a background job (`make test &`) inherits SIGINT
    # ignored, and Python then never turns SIGINT into KeyboardInterrupt in the child.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_ready(f"http://127.0.0.1:{http_port}/v2/models/omniretriever/ready", proc)
        servers = descendants(proc.pid)
        assert len(servers) >= 3  # tritonserver, its python-backend stub, the transformer
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)  # generous: a loaded 2-core machine stops slowly
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    # the SIGINT may arrive before serve prints its URLs (the transformer answers ready a moment earlier)
    assert "stopped" in out, out
    none_alive(lambda: servers)  # the kernel reaps the children shortly after the launcher returns
    assert (tmp_path / "logs" / "tritonserver.log").is_file() and (tmp_path / "logs" / "transformer.log").is_file()


def test_a_server_that_fails_to_start_raises_with_its_log_and_leaves_nothing(tiny_repo, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(tiny_repo, broken)
    config = broken / "local" / "omniretriever-encoder" / "config.pbtxt"
    text = config.read_text()
    digest = text.split('key: "onnx_sha256"')[1].split('string_value: "')[1][:64]
    config.write_text(text.replace(digest, "0" * 64))  # the local model must refuse a graph it was not built for
    before = descendants(os.getpid())
    with pytest.raises(ServingError) as info:
        with LocalEndpoint(broken, startup_timeout=120):
            pytest.fail("the endpoint must not start")
    assert "tritonserver" in str(info.value) and "the config expects" in str(info.value)
    none_alive(lambda: descendants(os.getpid()) - before)


def test_missing_repository_or_index_is_refused_before_anything_starts(tiny_repo, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model repository"):
        LocalEndpoint(tmp_path).__enter__()
    with pytest.raises(FileNotFoundError, match="index .* does not exist"):
        LocalEndpoint(tiny_repo, index=tmp_path / "none.safetensors").__enter__()


def test_the_search_model_refuses_an_index_of_another_model(tiny_repo, tiny_run, tiny_data, tmp_path):
    """In a process of its own: kserve and tritonclient.grpc cannot share one."""
    import numpy as np

    index = save_index(tmp_path / "other.safetensors", ["a", "b"], {"av": np.eye(2, 128, dtype=np.float32)}, "f" * 64)
    assert load_index(index).views == ("av",)
    code = ("import sys; from pathlib import Path; from serving.transformer import SearchModel; "
            "from serving.limits import ServingLimits; "
            "SearchModel('s', Path(sys.argv[1]), ServingLimits(), Path(sys.argv[2])).load()")
    res = subprocess.run([sys.executable, "-c", code, str(tiny_repo / "production"), str(index)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "rebuild the index" in res.stderr
