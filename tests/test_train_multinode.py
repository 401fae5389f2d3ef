"""Training over two torchrun "nodes" on 127.0.0.1, as a TrainJob on the torch-distributed runtime runs it.

Each node is `python -m components.training --node SPEC` with the PET_* variables the runtime sets (two
nodes, one gloo process each, static rendezvous on a free port). Node 1 gets a run directory and feature
cache of its own, as a node with its own disk: whatever it wrote there would show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from components.training import node_rendezvous, run_training, train_spec, write_spec
from model.train import batch_indices
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
BATCH = 4  # per rank: a global batch of 8 over two nodes
# no randomness that depends on the rank (augmented positives, caption draws, token dropping), so two
# ranks of BATCH clips take exactly the step one process takes on 2 x BATCH clips
PARITY = dict(objective="pairwise", alt_texts=False, token_keep=1.0, warmup_steps=1, workers=1, batch_size=BATCH)


def start_node(node_rank: int, spec: Path, port: int, log: Path, nnodes: int = 2) -> subprocess.Popen:
    """One node: its torchrun with the rendezvous the torch-distributed runtime describes, in a session of
    its own (so the whole node can be killed at once)."""
    env = {**os.environ, "PET_NNODES": str(nnodes), "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(node_rank),
           "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "components.training", "--node", str(spec)], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def kill_node(node: subprocess.Popen, spec: Path) -> None:
    """SIGKILL a node's processes: its entry and torchrun (one session) and the workers torchrun started
    (each in a session of its own, found by the spec they run)."""
    os.killpg(node.pid, 9)
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(spec).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), 9)
        except (OSError, ProcessLookupError):
            pass
    node.wait(timeout=10)


def node_specs(tmp_path: Path, data: Path, **train) -> list[Path]:
    """A spec per node: the same training, each node's own run directory and feature cache."""
    return [write_spec(tmp_path / f"node{n}" / "run",
                       train_spec(dict(data=data, out=tmp_path / f"node{n}" / "run",
                                       cache_dir=tmp_path / f"node{n}" / "cache", **train), tracking=False))
            for n in range(2)]


def run_two_nodes(tmp_path: Path, data: Path, timeout: float = 150, **train) -> list[Path]:
    specs = node_specs(tmp_path, data, **train)
    port = free_port()
    nodes = [start_node(n, spec, port, tmp_path / f"node{n}.log") for n, spec in enumerate(specs)]
    for n, node in enumerate(nodes):
        code = node.wait(timeout=timeout)
        assert code == 0, f"node {n} exited {code}:\n{(tmp_path / f'node{n}.log').read_text()[-3000:]}"
    return [spec.parent for spec in specs]


def test_pet_variables_make_a_static_rendezvous():
    env = {"PET_NNODES": "4", "PET_NPROC_PER_NODE": "8", "PET_NODE_RANK": "3", "PET_MASTER_ADDR": "job-node-0-0.job",
           "PET_MASTER_PORT": "29400"}
    rdzv = node_rendezvous(env)
    assert rdzv.args() == ["--nnodes=4", "--node_rank=3", "--master_addr=job-node-0-0.job", "--master_port=29400",
                           "--nproc_per_node=8"]
    assert node_rendezvous({}) is None and node_rendezvous({**env, "PET_NNODES": "1"}) is None
    with pytest.raises(ValueError, match=r"PET_NODE_RANK='4' \(must be an integer in \[0, 3\]\); PET_MASTER_ADDR="):
        node_rendezvous({**env, "PET_NODE_RANK": "4", "PET_MASTER_ADDR": ""})


def test_global_batch_is_split_over_every_rank_of_every_node():
    """Global rank r = node_rank x nproc_per_node + local_rank takes rows [r b, (r + 1) b) of the step's global
    batch (train_step's slicing): the ranks of all nodes cover it exactly once."""
    nnodes, nproc, b = 2, 2, 3
    world = nnodes * nproc
    whole = batch_indices(48, b * world, 5, 0)
    parts = [whole[r * b:(r + 1) * b] for r in (node * nproc + local for node in range(nnodes) for local in range(nproc))]
    assert torch.equal(torch.cat(parts), whole) and len(set(whole.tolist())) == b * world


@pytest.mark.timeout(240)
def test_two_nodes_train_as_one_process_on_the_global_batch(tiny_data: Path, tmp_path: Path):
    steps = 3
    run0, run1 = run_two_nodes(tmp_path, tiny_data, steps=steps, checkpoint_every=2, **PARITY)
    log = [json.loads(line) for line in (run0 / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and {r["gathered_batch"] for r in log} == {2 * BATCH}, \
        "negatives are gathered from both nodes' ranks"
    summary = json.loads((run0 / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert sorted(p.name for p in (run0 / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    # node 1 (global rank 1) wrote nothing to its run directory: only the spec the test put there
    assert sorted(p.name for p in run1.iterdir()) == ["train_spec.json"]

    single = run_training(dict(data=tiny_data, out=tmp_path / "single", steps=steps, checkpoint_every=2,
                               **{**PARITY, "batch_size": 2 * BATCH}), nproc=1, tracking=False)
    assert single.world_size == 1
    two, one = load_file(run0 / "model" / "model.safetensors"), load_file(tmp_path / "single" / "model" / "model.safetensors")
    assert two.keys() == one.keys()
    diff = max(float((two[k].double() - one[k].double()).abs().max()) for k in one)
    print(f"max abs weight difference after {steps} steps, 2 nodes x 1 process vs 1 process: {diff:.3g}")
    # the gradients agree to float rounding (their norms below); AdamW divides each update by the gradient's
    # running RMS, so a weight with a near-zero gradient takes an lr-sized step whose size rounding can change:
    # the bound is a small fraction of the lr (2e-3), far below what one different step would leave
    assert diff < 2e-4
    single_log = [json.loads(line) for line in (tmp_path / "single" / "train_log.jsonl").read_text().splitlines()]
    assert [r["grad_norm"] for r in log] == pytest.approx([r["grad_norm"] for r in single_log], rel=1e-5)


@pytest.mark.timeout(240)
def test_a_lost_node_fails_the_other_naming_its_rank(tiny_data: Path, tmp_path: Path):
    """Node 1 is killed (torchrun and its worker, as a pod's processes die with it) mid-run; node 0 exits with an error that
    names rank 1, and does not wait for it."""
    specs = node_specs(tmp_path, tiny_data, steps=10_000, checkpoint_every=10_000, **PARITY)
    port = free_port()
    nodes = [start_node(n, spec, port, tmp_path / f"node{n}.log") for n, spec in enumerate(specs)]
    log = specs[0].parent / "train_log.jsonl"
    deadline = time.monotonic() + 150
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert time.monotonic() < deadline, (tmp_path / "node0.log").read_text()[-3000:]
        assert nodes[0].poll() is None, (tmp_path / "node0.log").read_text()[-3000:]
        time.sleep(0.2)
    kill_node(nodes[1], specs[1])
    killed = time.monotonic()
    code = nodes[0].wait(timeout=60)
    surfaced = time.monotonic() - killed
    out = (tmp_path / "node0.log").read_text()
    print(f"node 0 exited {code} {surfaced:.1f} s after node 1 was killed")
    assert code != 0
    assert "RankLost: lost rank 1 of 2" in out, out[-3000:]
    failure = json.loads((specs[0].parent / "train_failure.json").read_text())["error"]
    assert failure.startswith("RankLost: lost rank 1 of 2"), failure
    assert surfaced < 30
