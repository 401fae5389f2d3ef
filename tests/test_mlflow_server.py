"""The registry through a real `mlflow server` process on 127.0.0.1 (a free port), started and stopped here:
artifacts go through the server's artifact proxy, the gate and aliases through its REST API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from omniretriever.cli import app
from tests.conftest import free_port, http_ok, wait_until
from tests.mlflow_helpers import new_run

BOOT_TIMEOUT_S = 180


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return http_ok(f"{url}/health")

    wait_until(healthy, timeout, lambda: f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}",
               interval=0.5)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """(URL, artifact directory) of a tracking server with a sqlite backend and proxied artifacts."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow-server")
    url, log = f"http://127.0.0.1:{free_port()}", root / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
           "--workers", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    previous = mlflow.get_tracking_uri()
    try:
        wait_healthy(url, proc, log, BOOT_TIMEOUT_S)
        yield url, root / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)


def test_register_promote_and_serve_the_champion_through_a_server(mlflow_server, tiny_run, tiny_data, tmp_path):
    import mlflow

    from model.evaluate import evaluate
    from model.inference import Embedder
    from registry.registry import RegistryError, list_versions, promote, register
    from registry.store import configure

    url, artifacts = mlflow_server
    results = evaluate(tiny_run, tiny_data, "test", tmp_path / "results.json", workers=1, progress=False, n_boot=50)
    run_id = new_run(url, tiny_run / "model", results, tmp_path)
    assert list(artifacts.rglob("model.safetensors")) and list(artifacts.rglob("results.json"))  # stored by the server

    before = register(run_id, "served", tracking_uri=url)
    assert before.aliases == ["challenger"]
    decision = promote("served", tracking_uri=url)
    assert decision.promoted and [v.aliases for v in list_versions("served", tracking_uri=url)] == [["champion"]]
    with pytest.raises(RegistryError, match="unknown run 'nope'"):
        register("nope", "served", tracking_uri=url)

    configure(url)
    champion = mlflow.pyfunc.load_model("models:/served@champion")
    captions = ["a ball moves up", "rain on a roof"]
    np.testing.assert_allclose(champion.predict(pd.DataFrame({"text": captions})),
                               Embedder(tiny_run).embed([{"text": t} for t in captions]), atol=1e-5)

    listed = CliRunner().invoke(app, ["registry", "list", "--name", "served", "--tracking-uri", url])
    assert listed.exit_code == 0 and "champion" in listed.output, listed.output
