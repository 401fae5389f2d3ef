"""Negatives gathered across ranks, with gradient: two real gloo processes on CPU."""

import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from model.distributed import process_group
from model.losses import TupleLoss, gather_features, info_nce
from tests.conftest import free_port

WORLD, B, E = 2, 4, 8


def full_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(WORLD * B, E, generator=g), torch.randn(WORLD * B, E, generator=g),
            torch.randn(WORLD * B, E, generator=g))


def single_process_reference() -> tuple[float, float, torch.Tensor]:
    a, b, h = (x.requires_grad_() for x in full_batch())
    za, zb, zh = (F.normalize(x, dim=-1) for x in (a, b, h))
    nce = info_nce(za, zb, torch.tensor(10.0))
    tup = TupleLoss()({"TVA": za, "TVA_aug": zb, "TVA_hard": zh}, torch.tensor(10.0), 0)["tuple_loss"]
    (nce + tup).backward()
    return float(nce.detach()), float(tup.detach()), a.grad


def _rank_losses(rank: int) -> dict:
    """This rank's share of the losses and its gradient, with the autograd graph (and the process
    group its gather nodes hold) gone once it returns."""
    a, b, h = (x[rank * B:(rank + 1) * B].clone().requires_grad_() for x in full_batch())
    za, zb, zh = (F.normalize(x, dim=-1) for x in (a, b, h))
    assert gather_features(za).shape == (WORLD * B, E)
    nce = info_nce(za, zb, torch.tensor(10.0))
    tup = TupleLoss()({"TVA": za, "TVA_aug": zb, "TVA_hard": zh}, torch.tensor(10.0), 0)["tuple_loss"]
    (nce + tup).backward()
    return {"nce": float(nce.detach()), "tup": float(tup.detach()), "grad": a.grad}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))  # as torchrun sets them
    with process_group():  # gloo on the CPU; torn down as training tears it down
        torch.save(_rank_losses(rank), f"{out}/rank{rank}.pt")


@pytest.mark.timeout(120)
def test_gathered_negatives_match_one_big_batch(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    nce, tup, grad = single_process_reference()
    # each rank's loss covers its own queries against every rank's keys: the mean over ranks is the big-batch loss
    assert sum(r["nce"] for r in ranks) / WORLD == pytest.approx(nce, rel=1e-5)
    assert sum(r["tup"] for r in ranks) / WORLD == pytest.approx(tup, rel=1e-5)
    # gradients flow back through the gather: each rank gets the sum over ranks' losses for its slice,
    # i.e. WORLD x the big-batch gradient, which DDP's gradient averaging divides back out
    got = torch.cat([r["grad"] for r in ranks]) / WORLD
    assert torch.allclose(got, grad, atol=1e-6)


def test_single_process_gather_is_identity():
    z = torch.randn(3, 4)
    assert gather_features(z) is z


def _diverging_worker(rank: int, port: int, data: str, out: str) -> None:
    """Trains as one of two ranks; at step 2 rank 1's loss value (not its gradient) turns NaN, so only the
    shared flag can tell rank 0, whose own numbers stay finite."""
    from pathlib import Path

    from model.errors import TrainingDiverged
    from model.losses import Objective
    from model.train import TrainConfig, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    forward = Objective.forward

    def nan_on_rank1_at_step2(self, z, step, present=None):
        terms = forward(self, z, step, present)
        if rank == 1 and step == 1:  # 0-based: the second step
            terms["loss"] = terms["loss"] + float("nan")
        return terms

    Objective.forward = nan_on_rank1_at_step2
    try:
        train(TrainConfig(data=Path(data), out=Path(out) / "run", steps=4, batch_size=8, warmup_steps=1,
                          checkpoint_every=1, workers=1), progress=False)
        outcome = "finished"
    except TrainingDiverged as exc:
        outcome = str(exc)
    (Path(out) / f"rank{rank}.txt").write_text(outcome)


@pytest.mark.timeout(180)
def test_divergence_on_one_rank_stops_every_rank_at_that_step(tiny_data, tmp_path):
    mp.spawn(_diverging_worker, args=(free_port(), str(tiny_data), str(tmp_path)), nprocs=WORLD, join=True)
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in range(WORLD))
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000001"
    assert rank0.startswith("training diverged at step 2: rank 1 of 2 has a non-finite loss or gradient norm (rank 0: ")
    assert rank1.startswith("training diverged at step 2: on rank 1 of 2, loss is nan (")
    assert all(r.endswith(f"the last good checkpoint is {checkpoint}") for r in (rank0, rank1))
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["step-000001"]
    assert not (tmp_path / "run" / "model").exists()
