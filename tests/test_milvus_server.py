"""The gallery store against a real Milvus server: tests/milvus_server_checks.py, run by pytest in a private
network namespace (tests/netns.py under `unshare -rn`) where the Milvus 2.3.5 standalone server it starts
listens, on every interface it has, which there is loopback alone. Skipped, saying why, only where the kernel
refuses the namespace."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def namespace_refused() -> str | None:
    """Why no private network namespace can be made here (None: one can)."""
    if shutil.which("unshare") is None:
        return "no unshare (util-linux) on PATH"
    probe = subprocess.run(["unshare", "-rn", sys.executable, "-c", ""], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -rn refused: {probe.stderr.strip() or probe.returncode}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_gallery_store_on_a_milvus_server(tmp_path):
    refused = namespace_refused()
    if refused:
        pytest.skip(f"cannot run the Milvus server isolated: {refused}")
    cmd = ["unshare", "-rn", sys.executable, str(ROOT / "tests" / "netns.py"), sys.executable, "-m", "pytest", "-q",
           "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}", str(ROOT / "tests" / "milvus_server_checks.py")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=840)
    finally:
        if proc.poll() is None:  # timed out: stop the inner run and the server it started
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(out)
    assert proc.returncode == 0, out[-6000:]
    assert " passed" in out and "skipped" not in out, out[-3000:]
