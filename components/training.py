"""How the train component runs training: in this process on a CPU, under torchrun with one process
per GPU when GPUs are visible. Either way the work is `model.train.train`; under torchrun each rank
runs `python -m components.training SPEC` (this module's `main`), and global rank 0 reports to MLflow.

On several nodes (a Kubeflow Trainer TrainJob on the torch-distributed runtime) each node's pod runs
`python -m components.training --node SPEC`: the runtime sets PET_NNODES, PET_NPROC_PER_NODE,
PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT, and `node_rendezvous` turns them into torchrun's
static rendezvous (`--nnodes N --node_rank R --master_addr A --master_port P --nproc_per_node K`). With
PET_NNODES 1 (or unset) torchrun stays `--standalone`.

The spec is a small JSON file: {"train": TrainConfig keyword arguments (paths as strings; "checkpoint"
is a pretrained backbone's base checkpoint directory, or null), "tracking": bool,
"tracking_uri": str, "pipeline_run_id": str, "data_version": str (the lineage tag; "": computed from
the data)}. The MLflow tracker (registry.tracking.train_tracker, as `omniretriever train` builds it)
records its run id in RUN/mlflow_run.json, which is how the launching process learns it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.run_record import RUN_RECORD

SPEC_FILE = "train_spec.json"
FAILURE_FILE = "train_failure.json"  # written by torchrun's rank 0 when its training raised: {"error": "Type: message"}


@dataclass
class TrainResult:
    summary: dict
    run_id: str  # MLflow run id ("" without tracking)
    world_size: int


def visible_gpus() -> int:
    """How many CUDA devices this process can use (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class Rendezvous:
    """Where this node's torchrun meets the other nodes' (static rendezvous: fixed node count and ranks)."""

    nnodes: int
    node_rank: int  # 0 .. nnodes - 1; node 0 hosts the rendezvous store and global rank 0
    master_addr: str
    master_port: int
    nproc_per_node: int  # ranks per node (GPUs per node)

    def args(self) -> list[str]:
        return [f"--nnodes={self.nnodes}", f"--node_rank={self.node_rank}", f"--master_addr={self.master_addr}",
                f"--master_port={self.master_port}", f"--nproc_per_node={self.nproc_per_node}"]


PET_VARIABLES = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")


def node_rendezvous(env: Mapping[str, str] | None = None) -> Rendezvous | None:
    """The multi-node rendezvous the torch-distributed runtime describes in PET_* variables, None on one node
    (PET_NNODES unset or 1). Raises ValueError naming each variable that is missing or malformed."""
    env = os.environ if env is None else env
    if int(env.get("PET_NNODES", "1") or "1") <= 1:
        return None
    bad = []

    def number(name: str, low: int, high: int | None = None) -> int:
        raw = env.get(name, "")
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            rule = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
            bad.append(f"{name}={raw!r} (must be {rule})")
            return low
        return value

    nnodes = number("PET_NNODES", 2)
    node_rank = number("PET_NODE_RANK", 0, nnodes - 1)
    nproc = number("PET_NPROC_PER_NODE", 1)
    port = number("PET_MASTER_PORT", 1, 65535)
    addr = env.get("PET_MASTER_ADDR", "")
    if not addr:
        bad.append("PET_MASTER_ADDR='' (must be the host name of node 0)")
    if bad:
        raise ValueError(f"multi-node training (PET_NNODES={env.get('PET_NNODES')}) needs a rendezvous: {'; '.join(bad)}")
    return Rendezvous(nnodes, node_rank, addr, port, nproc)


def torchrun_command(nproc: int, spec: Path, rendezvous: Rendezvous | None = None) -> list[str]:
    """torchrun with `nproc` ranks on this node, each running this module's main(SPEC): `--standalone` on one
    node, the static rendezvous (whose nproc_per_node wins) on several."""
    launcher = shutil.which("torchrun")
    head = [launcher] if launcher else [sys.executable, "-m", "torch.distributed.run"]
    where = rendezvous.args() if rendezvous else ["--standalone", f"--nproc_per_node={nproc}"]
    return [*head, *where, "-m", "components.training", str(spec)]


def run_training(train_kwargs: dict[str, Any], *, nproc: int | None = None, tracking: bool = True,
                 tracking_uri: str = "", pipeline_run_id: str = "", data_version: str = "",
                 resume: bool = False) -> TrainResult:
    """Train into train_kwargs["out"]: torchrun with `nproc` ranks when nproc > 1 or GPUs are visible
    (nproc defaults to their number), in this process otherwise. With `resume`, continue from the run's
    latest checkpoint (a fresh run when there is none). Raises RuntimeError naming the exit status when a
    rank fails."""
    nproc = visible_gpus() if nproc is None else nproc
    spec = train_spec(train_kwargs, tracking=tracking, tracking_uri=tracking_uri, pipeline_run_id=pipeline_run_id,
                      data_version=data_version, resume=resume)
    run = Path(train_kwargs["out"])
    if nproc >= 1 and (nproc > 1 or visible_gpus() > 0):
        spec_path = write_spec(run, spec)
        code = run_torchrun(spec_path, nproc)
        if code != 0:
            raise RuntimeError(f"torchrun with {nproc} process(es) failed with exit status {code}{_failure(run)}")
        return finished_run(run, tracking, nproc)
    summary, run_id = _train(spec)
    return TrainResult(summary, run_id, 1)


def train_spec(train_kwargs: dict[str, Any], *, tracking: bool = True, tracking_uri: str = "",
               pipeline_run_id: str = "", data_version: str = "", resume: bool = False) -> dict:
    """The JSON spec every rank reads (see the module docstring)."""
    return {"train": {k: str(v) if isinstance(v, Path) else v for k, v in train_kwargs.items()},
            "tracking": tracking, "tracking_uri": tracking_uri, "pipeline_run_id": pipeline_run_id,
            "data_version": data_version, "resume": resume}


def write_spec(run: Path, spec: dict) -> Path:
    """RUN/train_spec.json (and a stale failure record removed), for torchrun's ranks to read."""
    run.mkdir(parents=True, exist_ok=True)
    spec_path = run / SPEC_FILE
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    (run / FAILURE_FILE).unlink(missing_ok=True)
    return spec_path


def run_torchrun(spec_path: Path, nproc: int, rendezvous: Rendezvous | None = None) -> int:
    """Run this node's torchrun over SPEC to the end; its exit status."""
    proc = subprocess.run(torchrun_command(nproc, spec_path, rendezvous), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc.returncode


def finished_run(run: Path, tracking: bool, world_size: int) -> TrainResult:
    """What a finished torchrun run left in RUN: its summary and (with tracking) its MLflow run id."""
    summary = json.loads((run / "train_summary.json").read_text())
    run_id = json.loads((run / RUN_RECORD).read_text())["run_id"] if tracking else ""
    return TrainResult(summary, run_id, world_size)


def run_node(spec_path: Path, env: Mapping[str, str] | None = None) -> int:
    """One node of a TrainJob: torchrun over SPEC with the PET_* rendezvous (`--standalone` with one
    process per visible GPU, at least one, when PET_NNODES is 1 or unset); torchrun's exit status."""
    rendezvous = node_rendezvous(env)
    nproc = rendezvous.nproc_per_node if rendezvous else max(1, visible_gpus())
    return run_torchrun(spec_path, nproc, rendezvous)


def base_identity(run: Path, sha256: str = "") -> dict | None:
    """The base checkpoint's identity the trained model records (RUN/model/base.json: path, digest, layout),
    None for a model without a base. With `sha256` (the fetch step's digest), a recorded digest that differs
    is an error: the weights trained on are not the ones that were fetched."""
    from model.omni.store import BASE_FILE, read_base_identity

    path = run / "model" / BASE_FILE
    identity = read_base_identity(run / "model")
    if identity is None:
        if sha256:
            raise RuntimeError(f"{path} is missing: the run was given a base checkpoint (sha256 {sha256}) but its "
                               f"model records none")
        return None
    if sha256 and identity.get("digest") != sha256:
        raise RuntimeError(f"{path}: the run trained on weights with digest {identity.get('digest')} at "
                           f"{identity.get('path')}, but the fetched checkpoint's digest is {sha256}: the copy "
                           f"changed after it was fetched")
    return identity


def _train(spec: dict) -> tuple[dict, str]:
    """Run model.train.train from a spec, with an MLflow tracker on rank 0 when spec["tracking"]. A run
    that fails (an error, divergence, Ctrl-C) reaches the tracker's on_train_abort from the trainer
    itself, so its MLflow run ends FAILED or KILLED as on the command line."""
    from model.train import TrainConfig, train

    kwargs = dict(spec["train"])
    checkpoint = kwargs.get("checkpoint")
    cfg = TrainConfig(**{**kwargs, "data": Path(kwargs["data"]), "out": Path(kwargs["out"]),
                         "checkpoint": Path(checkpoint) if checkpoint else None})
    rank = int(os.environ.get("RANK", "0"))
    tracker = _mlflow_tracker(cfg, spec) if spec["tracking"] and rank == 0 else None
    summary = train(cfg, resume=bool(spec.get("resume", False)), callbacks=[tracker] if tracker else [],
                    progress=rank == 0)
    return summary, _run_id(tracker) if tracker else ""


def _mlflow_tracker(cfg: Any, spec: dict) -> Any:
    """The MLflow tracker `omniretriever train` gets too, on `tracking_uri` (the default store when empty)."""
    from model.hooks import TrackingOptions
    from registry.tracking import train_tracker

    return train_tracker(cfg, TrackingOptions(tracking_uri=spec.get("tracking_uri") or None,
                                              pipeline_run_id=spec.get("pipeline_run_id") or None,
                                              data_version=spec.get("data_version") or None))


def _run_id(tracker: Any) -> str:
    run_id = getattr(tracker, "run_id", None)
    if not run_id:
        raise RuntimeError("the MLflow tracker finished without a run id")
    return str(run_id)


def _failure(run: Path) -> str:
    """": <error>" from the failure rank 0 recorded, "" when there is none."""
    try:
        return f": {json.loads((run / FAILURE_FILE).read_text())['error']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def main(argv: Sequence[str] | None = None) -> None:
    """torchrun worker: python -m components.training SPEC.json. Rank 0 records why its training raised
    in RUN/train_failure.json, so the launching process can say it (a divergence names its step).
    `--node SPEC.json` is a TrainJob node's entry instead: this node's torchrun (see run_node)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--node":
        raise SystemExit(run_node(Path(args[1])))
    if len(args) != 1:
        raise SystemExit("usage: python -m components.training [--node] SPEC.json")
    spec = json.loads(Path(args[0]).read_text())
    try:
        _train(spec)
    except BaseException as exc:
        if int(os.environ.get("RANK", "0")) == 0:
            path = Path(spec["train"]["out"]) / FAILURE_FILE
            path.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        raise


if __name__ == "__main__":
    main()
