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
- lost ranks: a collective that fails because a process or node went away becomes RankLost naming the
  ranks that no longer answer (`surfacing_lost_ranks`: a roll call in the rendezvous store), on every
  survivor, instead of a bare transport error or a wait;
- divergence: each step every rank says whether its loss or gradient norm is non-finite
  (`World.flagged_rank`, one all-reduce), so all ranks stop at the same step instead of one leaving
  the others waiting in a collective;
- files: only rank 0 writes the tokenizer, checkpoints, the log and the model, and calls trackers; the
  tokenizer it trained and the step it resumes from reach the other ranks by broadcast, so ranks on
  other nodes need no shared disk to start (to resume, every node must see the run's checkpoints);
- several nodes: torchrun's static rendezvous gives every process its global RANK and WORLD_SIZE
  (nodes x processes per node), so nothing here knows about nodes: the global batch is split over all
  ranks, negatives are gathered from all of them, and global rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from model.errors import RankLost


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

    def broadcast(self, value: object) -> object:
        """Rank 0's `value` on every rank (what the other ranks pass is ignored): how rank 0's tokenizer and
        resume step reach ranks on other nodes, which need not share its disk."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

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

    def mean_values(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each value's mean over ranks (one all-reduce): a step's loss over the global batch, as one process
        would report it, rather than rank 0's share. Every rank must call it; a world of one does none."""
        if self.size == 1:
            return dict(values)
        flat = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(flat)
        return dict(zip(values, (flat / self.size).tolist()))

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


ROLL_CALL_S = 5.0  # how long survivors of a failed collective wait for one another to answer the roll call


def roll_call(world: World, wait: float = ROLL_CALL_S) -> list[int]:
    """After a collective failed: the ranks that do not answer within `wait` seconds. Each survivor marks
    itself in the rendezvous store (which node 0's torchrun hosts) and waits for the others' marks; a rank
    whose process or node is gone never marks. [0] when the store itself is unreachable (node 0 is gone)."""
    from torch.distributed.distributed_c10d import _get_default_store

    try:
        store = _get_default_store()
        store.set(f"omniretriever/alive/{world.rank}", "1")
        deadline = time.monotonic() + wait
        missing = list(range(world.size))
        while missing and time.monotonic() < deadline:
            missing = [r for r in missing if not store.check([f"omniretriever/alive/{r}"])]
            time.sleep(0.1)
        return missing
    except Exception:  # noqa: BLE001 - a store that cannot answer says its host is gone
        return [0] if world.rank != 0 else []


def is_peer_failure(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because a peer went away (not a bug in this rank's own code)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in ("Connection closed by peer", "Connection reset",
                                                                     "[enforce fail", "Gloo", "gloo", "NCCL"))


@contextlib.contextmanager
def surfacing_lost_ranks(world: World) -> Iterator[None]:
    """Turn a collective that failed because ranks went away into RankLost naming them (after a roll call)."""
    try:
        yield
    except Exception as exc:
        if world.size == 1 or not is_peer_failure(exc):
            raise
        lost = roll_call(world)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankLost(lost, world.size, world.rank, f"{type(exc).__name__}: {detail[:300]}") from exc


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
