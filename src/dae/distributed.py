"""Devices, and data parallelism with PyTorch's own engine, ``torch.distributed``.

Launched by ``torchrun --nproc-per-node N -m dae train ...``, every process (a *rank*) holds
the whole model and trains on its own disjoint share of each epoch's minibatches.  After
each step's backward pass the ranks sum their gradients with one all-reduce and apply the
same update, so the weights stay identical everywhere: this is what DistributedDataParallel
does, written into the update path of the steps of :mod:`dae.steps` rather than around
autograd.  With a per-rank batch of B the global batch is N x B, and the update is that of
one process with batch N x B (up to the order of floating-point sums and the corruption noise,
which is drawn per rank).

The backend is gloo on CPUs and NCCL on GPUs.  Only rank 0 prints and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

# Seeds of ranks 1, 2, ... are the run's seed plus a large odd stride times the rank: distinct
# streams for each rank's noise, while rank 0 keeps the seed, so a 1-process run under torchrun
# draws exactly the numbers of a plain run.
RANK_SEED_STRIDE = 1_000_003


class DeviceError(ValueError):
    """A --device that this machine does not have."""


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device that ``name`` ("auto", "cpu", "cuda" or "cuda:N") means on this machine.

    "auto" is a GPU when there is one (rank k of a node takes GPU k), else the CPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise DeviceError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name}: no CUDA GPU is available here (torch {torch.__version__})")
    index = local_rank % torch.cuda.device_count() if name == "cuda" else int(name[5:])
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0.."
                          f"cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


@dataclass(frozen=True)
class World:
    """This process's place among the processes that train together (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """True on the one process that prints and writes outputs."""
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """This rank's seed for its own random draws (rank 0: ``seed`` itself)."""
        return (seed + RANK_SEED_STRIDE * self.rank) % 2**63

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (nothing to do for one process)."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor

    def sum(self, *values: float) -> list[float]:
        """Each of ``values`` summed over the ranks, in float64."""
        if self.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def mean_rows(self, y: torch.Tensor) -> torch.Tensor:
        """The mean over the rows of every process's ``y`` (all of the same shape), differentiable:
        the gradient reaching each process's rows is that of the mean over all of them."""
        if self.size == 1:
            return y.mean(dim=0)
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(y.sum(dim=0)) / (y.shape[0] * self.size)

    def all_ok(self, ok: bool) -> bool:
        """True if ``ok`` is true on every rank (a collective: every rank must call it)."""
        return self.sum(0.0 if ok else 1.0)[0] == 0.0

    def broadcast_(self, tensors) -> None:
        """Copy rank 0's ``tensors`` to every rank, as DistributedDataParallel does at the start."""
        if self.size > 1:
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def gather_bytes(self, data: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``data`` (a uint8 tensor of the same size on each), in rank order."""
        if self.size == 1:
            return [data]
        parts = [torch.empty_like(data, device=self._comm_device) for _ in range(self.size)]
        dist.all_gather(parts, data.to(self._comm_device))
        return [p.cpu() for p in parts]

    @property
    def _comm_device(self) -> torch.device:
        # NCCL moves only GPU tensors; gloo, CPU tensors.
        return self.device if self.device.type == "cuda" else torch.device("cpu")


SINGLE = World()


def leave_world(finished: bool) -> None:
    """Leave the process group, if this process joined one.

    After a run that finished on every rank, the ranks first meet at a barrier, so that none
    tears down its connections while another is still reading from them: PyTorch's advice is to
    destroy the group once all communication is over.  After an error the other ranks may never
    come to the barrier, so there is none.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: str = "auto") -> World:
    """This process's :class:`World`: from torchrun's environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) when it launched us, else a single process.

    Joins the process group (gloo for CPUs, NCCL for GPUs) the first time it is called.
    """
    if not launched_by_torchrun():
        return World(0, 1, resolve_device(device))
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    where = resolve_device(device, local_rank)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
    return World(rank, size, where)
