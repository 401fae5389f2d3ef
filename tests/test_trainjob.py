"""The TrainJob the multi-node launcher submits: checked against the kubeflow SDK's models, and driven through the
kubernetes client against a loopback HTTP API that records the requests (no cluster on these machines: this
stands in for the Kubernetes API server only; the Trainer controller's behaviour is not exercised)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components.images import CUDA_TARGET_IMAGE
from components.trainjob import TrainJobFailed, TrainJobOptions, TrainJobRun, render_trainjob, validate_trainjob

SELECTOR = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
SECRETS = {"omniretriever-mlflow": {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                                    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"},
           "omniretriever-dvc": {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID"}}


def options(nodes: int = 4, gpus: int = 8, **kw) -> TrainJobOptions:
    return TrainJobOptions(**{"name": "omni-train-abc", "namespace": "kubeflow-user", "spec_path":
                              "/workspace/runs/abc/train_spec.json", "nodes": nodes, "gpus_per_node": gpus,
                              "image": CUDA_TARGET_IMAGE, "workspace_pvc": "omniretriever-workspace",
                              "mount_path": "/workspace", "node_selector": SELECTOR, "tolerations": TOLERATIONS,
                              "secret_env": SECRETS, **kw})


@pytest.mark.parametrize("nodes,gpus", [(2, 1), (4, 8)])
def test_the_trainjob_is_valid_for_the_sdk_key_for_key(nodes, gpus):
    manifest = render_trainjob(options(nodes, gpus))
    job = validate_trainjob(manifest)
    assert job.to_dict() == manifest, "the SDK's models keep every key we set"
    t = job.spec.trainer
    assert (job.api_version, job.kind) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job.spec.runtime_ref.name == "torch-distributed"
    assert t.image == CUDA_TARGET_IMAGE and t.num_nodes == nodes and t.num_proc_per_node == gpus
    assert t.command == ["python", "-m", "components.training", "--node", "/workspace/runs/abc/train_spec.json"]
    assert t.resources_per_node.limits["nvidia.com/gpu"].actual_instance == str(gpus)
    secrets = {e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key) for e in t.env}
    assert secrets["MLFLOW_TRACKING_PASSWORD"] == ("omniretriever-mlflow", "MLFLOW_TRACKING_PASSWORD")
    assert secrets["AWS_ACCESS_KEY_ID"] == ("omniretriever-dvc", "AWS_ACCESS_KEY_ID")
    (patch,) = job.spec.runtime_patches
    (rjob,) = patch.training_runtime_spec.template.spec.replicated_jobs
    pod = rjob.template.spec.template.spec
    assert rjob.name == "node" and pod.node_selector == SELECTOR
    assert [t.to_dict() for t in pod.tolerations] == TOLERATIONS
    assert pod.volumes[0].persistent_volume_claim.claim_name == "omniretriever-workspace"
    assert pod.containers[0].name == "node" and pod.containers[0].volume_mounts[0].mount_path == "/workspace"
    assert "podSpecOverrides" not in json.dumps(manifest)


def test_the_sdk_check_catches_an_unknown_field():
    manifest = render_trainjob(options())
    manifest["spec"]["podSpecOverrides"] = [{"targetJobs": [{"name": "node"}]}]  # removed in Trainer v2.2
    with pytest.raises(ValueError, match=r"does not know: spec\.podSpecOverrides"):
        validate_trainjob(manifest)


class FakeApi:
    """A loopback Kubernetes API for one TrainJob: records each request; the job completes (or fails) after
    `polls` status reads; two node pods with a log each."""

    def __init__(self, outcome: str = "Complete", polls: int = 2):
        self.requests: list[tuple[str, str, dict | None]] = []
        self.outcome, self.polls, self.reads = outcome, polls, 0
        self.on_create = None  # called with a created TrainJob: what its nodes do
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict | str) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict | None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                api.requests.append((self.command, self.path, body))
                return body

            def do_POST(self):
                body = self._record()
                if api.on_create is not None:
                    api.on_create(body)
                self._reply(201, body)

            def do_DELETE(self):
                self._record()
                self._reply(200, {"kind": "Status", "status": "Success"})

            def do_GET(self):
                self._record()
                if "/trainjobs/" in self.path:
                    api.reads += 1
                    done = api.reads > api.polls
                    cond = [{"type": api.outcome, "status": "True", "message": f"jobset {api.outcome.lower()}"}]
                    self._reply(200, {"metadata": {"name": "omni-train-abc"}, "status": {"conditions": cond if done else []}})
                elif self.path.split("?")[0].endswith("/log"):
                    pod = self.path.split("/pods/")[1].split("/")[0]
                    self._reply(200, "".join(f"{pod} line {i}\n" for i in range(api.reads + 1)))
                else:
                    phase = "Failed" if api.outcome == "Failed" else "Running"
                    self._reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
                        {"metadata": {"name": f"omni-train-abc-node-0-{i}",
                                      "labels": {"batch.kubernetes.io/job-completion-index": str(i)}},
                         "status": {"phase": phase if i == 1 else "Running"}} for i in range(2)]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = f"http://127.0.0.1:{self.server.server_port}"
        return client.ApiClient(cfg)


@pytest.fixture
def fake_api(request):
    api = FakeApi(**getattr(request, "param", {}))
    yield api
    api.server.shutdown()


def test_submit_stream_and_complete(fake_api):
    lines: list[str] = []
    TrainJobRun(fake_api.client(), render_trainjob(options(2, 1)), poll_s=0.01, log=lines.append).run(deadline_s=30)
    method, path, body = fake_api.requests[0]
    assert (method, path) == ("POST", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow-user/trainjobs")
    assert body == render_trainjob(options(2, 1))
    assert any(p.startswith("/api/v1/namespaces/kubeflow-user/pods?") and "jobset-name%3Domni-train-abc" in p
               for _, p, _ in fake_api.requests)
    assert "[node 1] omni-train-abc-node-0-1 line 2" in lines
    assert len([ln for ln in lines if ln.startswith("[node 0]")]) == 3, "each line streamed once"
    assert not any(m == "DELETE" for m, _, _ in fake_api.requests)


@pytest.mark.parametrize("fake_api", [{"outcome": "Failed"}], indirect=True)
def test_a_failed_trainjob_raises_with_the_failing_nodes_last_lines(fake_api):
    with pytest.raises(TrainJobFailed, match=r"failed: jobset failed\nnode 1 \(omni-train-abc-node-0-1\), last lines:\n"
                                             r"(.|\n)*omni-train-abc-node-0-1 line 3"):
        TrainJobRun(fake_api.client(), render_trainjob(options(2, 1)), poll_s=0.01, log=lambda s: None).run(30)


@pytest.mark.parametrize("fake_api", [{"polls": 10_000}], indirect=True)
def test_a_cancelled_step_deletes_its_trainjob_and_a_deadline_fails(fake_api):
    run = TrainJobRun(fake_api.client(), render_trainjob(options(2, 1)), poll_s=0.01, log=lambda s: None)
    with pytest.raises(TrainJobFailed, match="did not finish within 0 s"):
        run.run(deadline_s=0.05)

    def cancel(line: str) -> None:
        raise SystemExit(143)  # what the step's SIGTERM handler raises

    run.log = cancel
    with pytest.raises(SystemExit):
        run.run(deadline_s=30)
    assert fake_api.requests[-1][:2] == ("DELETE", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow-user/"
                                                   "trainjobs/omni-train-abc")


def test_the_launch_step_submits_the_trainjob_waits_and_hands_on_the_run(fake_api, tmp_path, monkeypatch):
    """The pipeline's launch-training step end to end against the loopback API (reached through $KUBECONFIG, as
    outside a pod): the spec on the workspace asks to resume, the submitted TrainJob is valid and runs it on every
    node, and what global rank 0 left in the run directory becomes the step's model artifact and outputs."""
    import yaml
    from kfp.dsl import Model

    from components.launch_training import launch_training

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
        "clusters": [{"name": "loopback", "cluster": {"server": f"http://127.0.0.1:{fake_api.server.server_port}"}}],
        "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    workspace = tmp_path / "workspace"
    submitted = []

    def nodes_train(job: dict) -> None:  # what the nodes' global rank 0 leaves behind
        spec_path = Path(job["spec"]["trainer"]["command"][-1])
        submitted.append(json.loads(spec_path.read_text()))
        run = spec_path.parent
        (run / "model").mkdir(parents=True, exist_ok=True)
        (run / "model" / "config.json").write_text("{}")
        (run / "train_summary.json").write_text(json.dumps({"steps": 3, "world_size": 4, "final": {"loss": 1.5}}))
        (run / "mlflow_run.json").write_text(json.dumps({"run_id": "r123"}))

    fake_api.on_create = nodes_train
    model = Model(name="model", uri=str(tmp_path / "artifacts" / "model"))
    out = launch_training.python_func(
        data="/workspace/data", model=model, nodes=2, gpus_per_node=2, namespace="kubeflow-user",
        workspace_pvc="omniretriever-workspace", image=CUDA_TARGET_IMAGE, steps=3, batch_size=4,
        pipeline_run_id="Run-1", mlflow_secret="omniretriever-mlflow", workspace_mount=str(workspace), poll_s=0.01,
        node_selector=SELECTOR, tolerations=TOLERATIONS)
    assert (out.run_id, out.world_size, out.final_loss) == ("r123", 4, 1.5)
    (spec,) = submitted
    assert spec["resume"] is True and spec["train"]["batch_size"] == 4 and spec["train"]["steps"] == 3
    method, path, job = fake_api.requests[0]
    assert method == "POST" and job["metadata"]["name"] == "omniretriever-train-run-1"
    validate_trainjob(job)
    assert job["spec"]["trainer"]["numNodes"] == 2 and job["spec"]["trainer"]["numProcPerNode"] == 2
    assert (Path(model.path) / "model" / "config.json").is_file(), "the run directory is the step's artifact"
    assert model.metadata["mlflow_run_id"] == "r123" and model.metadata["nodes"] == 2
