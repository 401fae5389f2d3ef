"""`omniretriever pipeline schedule` against a small KFP v2beta1 REST server on loopback.

The server is a real HTTP server in a thread that keeps experiments and recurring runs in memory,
answers the endpoints kfp.Client calls (healthz, experiments list/create, recurring runs
list/create/delete) the way the KFP API server does, and records every request.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from typer.testing import CliRunner

from omniretriever.cli import app
from pipelines.schedule import check_cron, schedule
from tests.conftest import free_port

API = "/apis/v2beta1"
NOW = "2026-01-01T00:00:00Z"


@dataclass
class KfpState:
    experiments: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[str, str, dict, dict | None]] = field(default_factory=list)  # method, path, query, body
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def calls(self, method: str, path: str) -> list[tuple[str, str, dict, dict | None]]:
        return [r for r in self.requests if r[0] == method and r[1] == path]


def _matches(item: dict, query: dict) -> bool:
    """The EQUALS predicates of a v2beta1 `filter` query parameter."""
    raw = query.get("filter", [""])[0]
    predicates = json.loads(raw).get("predicates", []) if raw else []
    return all(item.get(p["key"]) == p.get("stringValue", p.get("string_value")) for p in predicates)


class KfpHandler(BaseHTTPRequestHandler):
    state: KfpState

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> tuple[str, dict, dict | None]:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        query = parse_qs(url.query)
        self.state.requests.append((self.command, url.path, query, body))
        return url.path, query, body

    def do_GET(self) -> None:
        path, query, _ = self._record()
        if path == f"{API}/healthz":
            return self._send(200, {"commit_sha": "test", "tag_name": "2.5.0", "multi_user": False})
        if path == f"{API}/experiments":
            found = [e for e in self.state.experiments.values() if _matches(e, query)]
            return self._send(200, {"experiments": found, "total_size": len(found)} if found else {})
        if path == f"{API}/recurringruns":
            exp = query.get("experiment_id", [None])[0]
            found = [r for r in self.state.recurring_runs.values()
                     if (exp is None or r["experiment_id"] == exp) and _matches(r, query)]
            return self._send(200, {"recurringRuns": found, "total_size": len(found)} if found else {})
        self._send(404, {"error": f"no route {path}", "code": 5})

    def do_POST(self) -> None:
        path, _, body = self._record()
        if path == f"{API}/experiments":
            exp = {**body, "experiment_id": f"exp-{next(self.state.ids)}", "created_at": NOW,
                   "storage_state": "AVAILABLE"}
            self.state.experiments[exp["experiment_id"]] = exp
            return self._send(200, exp)
        if path == f"{API}/recurringruns":
            if body.get("experiment_id") not in self.state.experiments:
                return self._send(400, {"error": "experiment not found", "code": 3})
            run = {**body, "recurring_run_id": f"rr-{next(self.state.ids)}", "created_at": NOW, "updated_at": NOW,
                   "status": "ENABLED"}
            self.state.recurring_runs[run["recurring_run_id"]] = run
            return self._send(200, run)
        self._send(404, {"error": f"no route {path}", "code": 5})

    def do_DELETE(self) -> None:
        path, _, _ = self._record()
        prefix = f"{API}/recurringruns/"
        if path.startswith(prefix) and self.state.recurring_runs.pop(path[len(prefix):], None) is not None:
            return self._send(200, {})
        self._send(404, {"error": f"no recurring run at {path}", "code": 5})


@pytest.fixture
def kfp_server() -> Iterator[tuple[str, KfpState]]:
    state = KfpState()
    handler = type("Handler", (KfpHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_kfp_context(tmp_path, monkeypatch) -> None:
    """kfp.Client reads ~/.config/kfp/context.json: give it an empty home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_creates_experiment_and_recurring_run(kfp_server):
    url, state = kfp_server
    result = schedule(url, "0 30 2 * * *", params={"train_steps": 500})
    assert result.action == "created" and result.experiment_created and result.replaced == ()
    assert state.calls("GET", f"{API}/healthz"), "the client checks the server's health first"
    (_, _, _, exp_body), = state.calls("POST", f"{API}/experiments")
    assert exp_body["display_name"] == "omniretriever"
    (_, _, _, body), = state.calls("POST", f"{API}/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
    assert body["display_name"] == "omniretriever-retrain" and body["mode"] == "ENABLE"
    assert body["experiment_id"] == result.experiment_id and int(body["max_concurrency"]) == 1
    assert body["runtime_config"]["parameters"] == {"train_steps": 500}
    spec = body["pipeline_spec"]  # the compiled pipeline, inline, with its Kubernetes settings
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "omniretriever"
    train = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert "nodeSelector" in train and "tolerations" in train
    assert list(state.recurring_runs) == [result.recurring_run_id]


def test_second_schedule_updates_the_one_recurring_run(kfp_server):
    url, state = kfp_server
    first = schedule(url, "0 0 3 * * *")
    second = schedule(url, "0 0 4 * * 1-5")
    assert second.action == "updated" and not second.experiment_created
    assert second.experiment_id == first.experiment_id and second.replaced == (first.recurring_run_id,)
    assert len(state.calls("POST", f"{API}/experiments")) == 1, "the experiment is found by name, not created again"
    assert [r[1] for r in state.requests if r[0] == "DELETE"] == [f"{API}/recurringruns/{first.recurring_run_id}"]
    # the new schedule is created before the old one is deleted: nothing is lost if creation fails
    kinds = [(m, p) for m, p, _, _ in state.requests if m in ("POST", "DELETE") and "recurringruns" in p]
    assert kinds[-2:] == [("POST", f"{API}/recurringruns"), ("DELETE", f"{API}/recurringruns/{first.recurring_run_id}")]
    (only,) = state.recurring_runs.values()
    assert only["recurring_run_id"] == second.recurring_run_id and only["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 1-5"


def test_schedule_command(kfp_server):
    url, state = kfp_server
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--host", url, "--cron", "0 15 1 * * *",
                                      "--experiment", "nightly", "--param", "train_steps=50", "--param", "config=base"])
    assert result.exit_code == 0, result.output
    assert "experiment 'nightly' created" in result.output and "recurring run 'omniretriever-retrain' created" in result.output
    (_, _, _, body), = state.calls("POST", f"{API}/recurringruns")
    assert body["runtime_config"]["parameters"] == {"train_steps": 50, "config": "base"}
    again = CliRunner().invoke(app, ["pipeline", "schedule", "--host", url, "--cron", "0 15 2 * * *", "--experiment", "nightly"])
    assert again.exit_code == 0 and "updated" in again.output and "replacing rr-" in again.output


@pytest.mark.parametrize("cron, problem", [("0 3 * * *", "has 5 field(s)"), ("0 0 3 * * * *", "has 7 field(s)"),
                                           ("0 0 3 * * $", "day of week field '$'")])
def test_bad_cron_is_refused_before_any_request(kfp_server, cron, problem):
    url, state = kfp_server
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--host", url, "--cron", cron])
    assert result.exit_code == 2 and problem in result.output
    assert state.requests == []


@pytest.mark.parametrize("cron", ["0 0 3 * * *", "*/30 * * * * ?", "0 0 9 ? * 2-6", "0  0 3 * *  *"])
def test_six_field_crons_are_accepted(cron):
    assert check_cron(cron) == " ".join(cron.split())


def test_unreachable_server_is_a_clear_error(tmp_path):
    port = free_port()  # a port nothing listens on
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--host", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1 and f"127.0.0.1:{port}" in result.output
