"""Training as torchrun launches it on a GPU node, here with two gloo ranks on the CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from components.training import run_training, torchrun_command
from model.distributed import World, process_group
from tests.conftest import free_port


@pytest.mark.timeout(300)
def test_two_ranks_train_one_run(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = run_training(dict(data=tiny_data, out=out, steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2,
                               workers=1), nproc=2, tracking=False)
    assert result.world_size == 2 and result.run_id == ""
    assert result.summary["world_size"] == 2 and result.summary["steps"] == 4
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4], "one log, written by rank 0 only"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert (out / "model" / "model.safetensors").is_file()
    assert {r["gathered_batch"] for r in log} == {16}, "each anchor is scored against both ranks' 8 clips"


@pytest.mark.timeout(300)
def test_two_ranks_train_the_omni_backbone_with_negatives_from_both(tiny_data: Path, thinker_dir: Path,
                                                                   omni_config: Path, tmp_path: Path):
    """LoRA + head over a frozen base under torchrun: only they are averaged, saved and checked in sync."""
    out = tmp_path / "omni"
    result = run_training(dict(data=tiny_data, out=out, config=str(omni_config), checkpoint=thinker_dir, token_keep=1.0,
                               steps=2, batch_size=4, warmup_steps=1, checkpoint_every=2, workers=1),
                          nproc=2, tracking=False)
    assert result.summary["world_size"] == 2 and result.summary["steps"] == 2
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["gathered_batch"] == 2 * 4 for r in log)
    assert result.summary["final"]["gathered_batch"] == 8
    for weights in (out / "model" / "model.safetensors", out / "checkpoints" / "step-000002" / "model.safetensors"):
        keys = load_file(weights)
        assert keys and all("lora_" in k or "head." in k or "logit_scale" in k for k in keys), weights
    assert json.loads((out / "model" / "base.json").read_text())["path"] == str(thinker_dir.resolve())


def test_a_diverging_torchrun_run_fails_naming_the_step(tiny_data: Path, tmp_path: Path):
    """Both ranks stop at the same step, and the launcher's error says why, not just the exit status."""
    out = tmp_path / "diverged"
    with pytest.raises(RuntimeError, match=r"exit status 1: TrainingDiverged: training diverged at step \d+: "):
        run_training(dict(data=tiny_data, out=out, steps=6, batch_size=8, warmup_steps=1, checkpoint_every=1,
                          lr=1e6, workers=1), nproc=2, tracking=False)
    assert not (out / "model").exists() and not (out / "train_summary.json").exists()


def test_torchrun_command_runs_one_process_per_gpu(tmp_path):
    cmd = torchrun_command(4, tmp_path / "spec.json")
    assert "--nproc_per_node=4" in cmd and "--standalone" in cmd
    assert cmd[-3:] == ["-m", "components.training", str(tmp_path / "spec.json")]


def _verdict(world: World, layer: torch.nn.Module) -> str:
    try:
        world.check_in_sync([layer])
        return "in sync"
    except RuntimeError as exc:
        return str(exc)


def _sync_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")  # as torchrun sets them
    with process_group() as world:
        assert (world.rank, world.size) == (rank, 2)
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 4)
        same = _verdict(world, layer)
        if rank == 1:
            layer.weight.data += 0.1
        different = _verdict(world, layer)
        layer.weight.grad = torch.full_like(layer.weight, float(rank))
        world.average_gradients([layer.weight])
        Path(out, f"rank{rank}.json").write_text(json.dumps({"same": same, "different": different,
                                                             "grad": layer.weight.grad.mean().item()}))


@pytest.mark.timeout(120)
def test_replicas_checked_in_sync_and_gradients_averaged(tmp_path):
    mp.spawn(_sync_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["same"] == "in sync"
        assert r["different"].startswith("training replicas diverged: parameter checksums per rank")
        assert r["grad"] == pytest.approx(0.5), "every rank holds the mean of the ranks' gradients (0 and 1)"
