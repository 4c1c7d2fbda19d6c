"""How the processes of one training run agree: ranks, stop requests and shared decisions.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK: training then runs DistributedDataParallel over
NCCL on CUDA, gloo on the CPU. Every collective here is a no-op in a single process. Decisions
that make a rank leave the loop (a stop request, a non-finite loss) are all-reduced, so that no
rank is left waiting in a collective the others never reach.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .model import RowGather


@dataclass(frozen=True)
class Dist:
    """This process's place in the run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder."""
        return self.rank == 0


def setup_distributed(device_name: str) -> Dist:
    """Join the process group torchrun describes (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank)


@contextmanager
def process_group(device_name: str) -> Iterator[Dist]:
    """`setup_distributed` for the length of a block, then leave the process group if the block
    joined it (a caller that had joined one keeps it). A process must destroy its group before
    it exits: Gloo's worker threads outliving the interpreter abort it ("terminate called
    without an active exception", SIGABRT) when one rank finishes while another still works."""
    joined_here = dist.is_available() and not dist.is_initialized()
    d = setup_distributed(device_name)
    try:
        yield d
    finally:
        if joined_here and dist.is_initialized():
            dist.destroy_process_group()


def set_threads_per_rank(d: Dist) -> None:
    """torchrun starts one process per rank on the same cores: split them, never oversubscribe.
    An explicit OMP_NUM_THREADS wins (e.g. 1 on a machine shared with other work)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(d.world)))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def _collective_device(device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")  # gloo works on CPU tensors


def broadcast_float(value: float, d: Dist, device: torch.device) -> float:
    """Rank 0's `value` on every rank."""
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device(device))
    dist.broadcast(t, src=0)
    return float(t.item())


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=_collective_device(device))
    dist.all_reduce(t)
    return bool(t.item())


def all_finite(value: torch.Tensor, d: Dist) -> bool:
    """Whether `value` is finite on every rank (a MIN all-reduce on the value's device)."""
    finite = torch.isfinite(value.detach()).reshape(1).float()
    if d.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums, over every process, the gradient sent to this
    process's rows (an all_reduce, which gloo and NCCL both have; reduce_scatter gloo lacks)."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), len(rows)
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_rows(d: Dist) -> RowGather | None:
    """For `model.nt_xent`: every process's rows (the same count on each) and where this one's
    start, differentiable; None in a single process."""
    if d.world == 1:
        return None
    return lambda rows: (_GatherRows.apply(rows), d.rank * len(rows))


class StopRequest:
    """SIGTERM/SIGINT set a flag (the loop finishes its step, checkpoints and stops); handlers
    are installed only in the main thread, where Python delivers signals."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
