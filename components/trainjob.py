"""Multi-node training as a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1, runtime torch-distributed).

`render_trainjob` writes the TrainJob: our CUDA image on `nodes` nodes with `gpus_per_node` GPUs each, every node
running `python -m components.training --node SPEC` (torchrun with the PET_* rendezvous the runtime injects, see
components/training.py); the workspace PVC, node selector and tolerations through spec.runtimePatches (the
podSpecOverrides field was removed in Trainer v2.2); MLflow and DVC credentials as env from secrets.
`validate_trainjob` checks it against the kubeflow SDK's kubeflow_trainer_api models before it is submitted.

`TrainJobRun` submits it through the kubernetes client, streams the nodes' logs, waits with a deadline, and
deletes it when the step is cancelled. The spec and the checkpoints lie on the PVC and the spec asks to resume,
so a retried step continues from the last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
RUNTIME = "torch-distributed"
NODE = "node"  # the runtime's ReplicatedJob and container that runs the trainer
MANAGER = "omniretriever.io/launcher"  # who owns our runtime patch
GPU_RESOURCE = "nvidia.com/gpu"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
NODE_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class TrainJobOptions:
    name: str  # the TrainJob's name (a DNS label)
    namespace: str
    spec_path: str  # the training spec on the workspace volume (components.training.write_spec)
    nodes: int
    gpus_per_node: int
    image: str
    workspace_pvc: str
    mount_path: str  # where the PVC is mounted in every node (the spec's paths lie under it)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    secret_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # secret -> {key: ENV_NAME}
    env: Mapping[str, str] = field(default_factory=dict)
    deadline_s: int | None = None  # activeDeadlineSeconds


def render_trainjob(o: TrainJobOptions) -> dict:
    """The TrainJob manifest (a plain dict, as the Kubernetes API takes it)."""
    if o.nodes < 1 or o.gpus_per_node < 0:
        raise ValueError(f"a TrainJob needs nodes >= 1 and gpus_per_node >= 0, got nodes={o.nodes}, "
                         f"gpus_per_node={o.gpus_per_node}")
    env = [{"name": k, "value": v} for k, v in o.env.items()]
    env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for secret, keys in o.secret_env.items() for key, var in keys.items()]
    trainer: dict[str, Any] = {"image": o.image, "command": ["python", "-m", "components.training", "--node", o.spec_path],
                               "numNodes": o.nodes, "env": env}
    if o.gpus_per_node:
        trainer["numProcPerNode"] = o.gpus_per_node
        gpus = str(o.gpus_per_node)  # a Kubernetes quantity
        trainer["resourcesPerNode"] = {"limits": {GPU_RESOURCE: gpus}, "requests": {GPU_RESOURCE: gpus}}
    pod_spec: dict[str, Any] = {
        "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": o.workspace_pvc}}],
        "containers": [{"name": NODE, "volumeMounts": [{"name": "workspace", "mountPath": o.mount_path}]}]}
    if o.node_selector:
        pod_spec["nodeSelector"] = dict(o.node_selector)
    if o.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in o.tolerations]
    patch = {"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": NODE, "template": {"spec": {"template": {"spec": pod_spec}}}}]}}}}
    spec: dict[str, Any] = {"runtimeRef": {"name": RUNTIME, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
                            "trainer": trainer, "runtimePatches": [patch]}
    if o.deadline_s:
        spec["activeDeadlineSeconds"] = o.deadline_s
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": o.name, "namespace": o.namespace, "labels": {"app.kubernetes.io/part-of": "omniretriever"}},
            "spec": spec}


def validate_trainjob(manifest: dict) -> Any:
    """The manifest as the kubeflow SDK's TrainerV1alpha1TrainJob; ValueError naming the first field it refuses
    or an unknown field it would drop (the models ignore extra keys: compared key for key after a round trip)."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    try:
        job = TrainerV1alpha1TrainJob.from_dict(manifest)
    except Exception as exc:  # pydantic.ValidationError
        raise ValueError(f"the TrainJob {manifest.get('metadata', {}).get('name')!r} is not valid for "
                         f"kubeflow_trainer_api: {exc}") from exc
    back = job.to_dict()
    dropped = _dropped(manifest, back)
    if dropped:
        raise ValueError(f"the TrainJob has field(s) kubeflow_trainer_api does not know: {', '.join(dropped)}")
    return job


def _dropped(given: Any, kept: Any, path: str = "") -> list[str]:
    if isinstance(given, dict):
        kept = kept if isinstance(kept, dict) else {}
        return [p for k, v in given.items() for p in ([f"{path}.{k}".lstrip(".")] if k not in kept
                                                       else _dropped(v, kept[k], f"{path}.{k}"))]
    if isinstance(given, list) and isinstance(kept, list):
        return [p for i, (a, b) in enumerate(zip(given, kept)) for p in _dropped(a, b, f"{path}[{i}]")]
    return []


class TrainJobFailed(RuntimeError):
    """The TrainJob ended Failed (or ran past its deadline); the message carries the failing node's last log lines."""


@dataclass
class TrainJobRun:
    """One TrainJob through the Kubernetes API: submit, stream logs, wait, delete."""

    api: Any  # kubernetes.client.ApiClient
    manifest: dict
    poll_s: float = 5.0
    log: Callable[[str], None] = print
    _seen: dict[str, int] = field(default_factory=dict)  # pod -> log lines already streamed

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.manifest["metadata"]["namespace"]

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def submit(self) -> None:
        """Create the TrainJob; one already there with this name (a retried step) is kept and followed."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._custom().create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.log(f"TrainJob {self.namespace}/{self.name} exists already: following it")

    def condition(self) -> tuple[str, str]:
        """("Complete" | "Failed" | "", message) from the TrainJob's status conditions."""
        job = self._custom().get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
                return cond["type"], cond.get("message", "")
        return "", ""

    def pods(self) -> list[Any]:
        from kubernetes import client

        pods = client.CoreV1Api(self.api).list_namespaced_pod(self.namespace, label_selector=f"{JOBSET_LABEL}={self.name}")
        return sorted(pods.items, key=lambda p: p.metadata.name)

    def pod_log(self, pod: str) -> list[str]:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            text = client.CoreV1Api(self.api).read_namespaced_pod_log(pod, self.namespace, container=NODE)
        except ApiException:
            return []  # not started yet
        return text.splitlines()

    def stream_logs(self) -> None:
        """Each node's new log lines into this step's log, prefixed with its node index."""
        for pod in self.pods():
            lines = self.pod_log(pod.metadata.name)
            index = (pod.metadata.labels or {}).get(NODE_INDEX_LABEL, "?")
            for line in lines[self._seen.get(pod.metadata.name, 0):]:
                self.log(f"[node {index}] {line}")
            self._seen[pod.metadata.name] = len(lines)

    def failing_node_tail(self, lines: int = 20) -> str:
        """The last log lines of the first pod that failed (of every pod when none says so)."""
        pods = self.pods()
        failed = [p for p in pods if (p.status and p.status.phase == "Failed")] or pods
        parts = []
        for pod in failed[:1]:
            index = (pod.metadata.labels or {}).get(NODE_INDEX_LABEL, "?")
            parts.append(f"node {index} ({pod.metadata.name}), last lines:\n" + "\n".join(self.pod_log(pod.metadata.name)[-lines:]))
        return "\n".join(parts) or "no node pod was found"

    def wait(self, deadline_s: float) -> None:
        """Stream logs until the TrainJob completes; TrainJobFailed when it fails or `deadline_s` passes."""
        end = time.monotonic() + deadline_s
        while True:
            self.stream_logs()
            state, message = self.condition()
            if state == "Complete":
                return
            if state == "Failed":
                raise TrainJobFailed(f"TrainJob {self.namespace}/{self.name} failed: {message}\n{self.failing_node_tail()}")
            if time.monotonic() >= end:
                raise TrainJobFailed(f"TrainJob {self.namespace}/{self.name} did not finish within {deadline_s:.0f} s\n"
                                     f"{self.failing_node_tail()}")
            time.sleep(self.poll_s)

    def delete(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._custom().delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def run(self, deadline_s: float) -> None:
        """Submit and wait; the TrainJob is deleted if the wait is cancelled (SIGTERM raises SystemExit in the step,
        Ctrl-C KeyboardInterrupt) so no nodes keep holding GPUs. A failed one is kept for its logs."""
        self.submit()
        try:
            self.wait(deadline_s)
        except (KeyboardInterrupt, SystemExit):
            self.delete()  # first: logging may itself be interrupted
            self.log(f"cancelled: deleted TrainJob {self.namespace}/{self.name}")
            raise
