"""Training in several processes under torchrun: one process per GPU (NCCL), or gloo on the CPU.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each process it starts. `process_group()` turns that
environment into an initialised torch.distributed group (and gives a world of one without it), so the
same `model.train.train` runs alone on a laptop and as N ranks on a GPU node. What the ranks share:

- negatives: `model.losses.gather_features` gathers every rank's features, with gradient (each step's
  log records the gathered batch, `gathered_batch` = world x batch);
- gradients: averaged over ranks after each backward (`World.average_gradients`), so every rank takes
  the same optimizer step and the replicas stay identical (checked at the end, `World.check_in_sync`).
  Only parameters that train have gradients: a pretrained backbone's frozen base has none, and only its
  LoRA and head are all-reduced (no DistributedDataParallel wrapper, so no unused-parameter bookkeeping);
- divergence: each step every rank says whether its loss or gradient norm is non-finite
  (`World.flagged_rank`, one all-reduce), so all ranks stop at the same step instead of one leaving
  the others waiting in a collective;
- files: only rank 0 writes the tokenizer, checkpoints, the log and the model, and calls trackers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and reports."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks (one flat all-reduce)."""
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()

    def flagged_rank(self, flag: bool) -> int | None:
        """The highest rank whose `flag` is true (None when no rank's is), the same answer on every rank:
        one all-reduce (MAX) of one number. Every rank must call it; a world of one does no collective."""
        if self.size == 1:
            return self.rank if flag else None
        mark = torch.tensor([self.rank + 1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(mark, op=dist.ReduceOp.MAX)
        highest = int(mark.item())
        return highest - 1 if highest else None

    def check_in_sync(self, modules: Iterable[torch.nn.Module], rtol: float = 1e-5) -> None:
        """Raise if the replicas' trained parameters differ across ranks (a checksum per rank, compared). Frozen
        ones (a pretrained backbone's base: gigabytes, never stepped) are left out."""
        if self.size == 1:
            return
        total = sum(float(p.detach().double().abs().sum()) for m in modules for p in m.parameters() if p.requires_grad)
        sums = torch.tensor([total], dtype=torch.float64, device=self.device)
        gathered = [torch.zeros_like(sums) for _ in range(self.size)]
        dist.all_gather(gathered, sums)
        values = [float(g) for g in gathered]
        if max(values) - min(values) > rtol * max(abs(v) for v in values):
            raise RuntimeError(f"training replicas diverged: parameter checksums per rank {values}")


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (or torch.distributed.run) with more than one rank."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group() -> Iterator[World]:
    """The World of this process: initialised from torchrun's environment (NCCL when CUDA is available,
    else gloo) and torn down on exit; World() when not under torchrun or a group already exists."""
    if dist.is_available() and dist.is_initialized():
        rank, size = dist.get_rank(), dist.get_world_size()
        yield World(rank, size, _device(int(os.environ.get("LOCAL_RANK", "0"))))
        return
    if not launched_by_torchrun():
        yield World(device=_device(0) if torch.cuda.is_available() else torch.device("cpu"))
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _device(local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield World(dist.get_rank(), dist.get_world_size(), device)
        dist.barrier()  # on a clean exit no rank tears the group down while another still has work on it
    finally:
        dist.destroy_process_group()


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
