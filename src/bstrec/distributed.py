"""torchrun support: the process group, each rank's device and share of an epoch.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) training runs
as DistributedDataParallel: gloo when the device is the CPU, NCCL when it is a GPU.
Without torchrun every helper here degrades to the single-process no-op, so one code
path serves both.

The sharding keeps the *global* batch of step k identical to what one process would
train on, whatever the number of ranks: every rank draws the same epoch permutation
and takes its contiguous part of each global batch. That is what makes 2 ranks
reproduce 1 process (see ``tests/test_train_distributed.py``) and lets a run resume
on a different number of ranks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda``; under torchrun LOCAL_RANK picks the GPU."""
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but no CUDA device is available")
        if name == "cuda":
            n = torch.cuda.device_count()
            if local_rank >= n:
                raise ValueError(
                    f"LOCAL_RANK {local_rank} but this machine has {n} CUDA "
                    f"device(s); use torchrun --nproc_per_node={n} or fewer"
                )
            return torch.device("cuda", local_rank)
    return torch.device(name)


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # we started the process group, so we end it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def _comm_device(self) -> torch.device:
        # NCCL moves only CUDA tensors; gloo only CPU ones
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        t = t.to(self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu()

    def all_gather_object(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (others pass anything, e.g. None)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device_name: str) -> DistContext:
    """Join torchrun's process group if there is one (or use the caller's) and pick the device.

    A group the caller already initialised (tests spawn their own) is used as is and
    left for the caller to destroy.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = pick_device(device_name, local)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistContext(rank, world, local, device)
    rank, world, local = torchrun_world()
    device = pick_device(device_name, local)
    if world <= 1:
        return DistContext(0, 1, 0, device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local, device, owns_group=True)


def shard_bounds(n: int, rank: int, world: int) -> slice:
    """Contiguous part ``rank`` of ``n`` items; parts differ in size by at most one."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return slice(lo, lo + base + (1 if rank < extra else 0))


class EpochShards:
    """DistributedSampler's contract without its padding.

    ``set_epoch`` reshuffles (a generator seeded from seed and epoch, the same on every
    rank, so the permutation need not be stored to resume); ``batch(k)`` gives the
    global batch k and this rank's slice of it. torch's DistributedSampler pads the
    epoch with repeated rows to equal shards and strides ranks across the whole epoch,
    so its global batches differ from one process's; here they never do.
    """

    def __init__(self, rows: np.ndarray, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, not {batch_size}")
        self.rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.perm = self.rows
        self.epoch = -1

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.perm = self.rows[torch.randperm(len(self.rows), generator=g)]
        self.epoch = epoch

    def batch(self, k: int) -> tuple[torch.Tensor, slice]:
        rows = self.perm[k * self.batch_size : (k + 1) * self.batch_size]
        return rows, shard_bounds(len(rows), self.rank, self.world)


def merge_shard_metrics(parts: list[dict]) -> dict:
    """Combine metrics that ranks computed on disjoint shards of the evaluation targets.

    Every metric here is a mean over targets (HR, NDCG, MRR, MAE) or the root of one
    (RMSE), so the count-weighted combination equals the metric over all targets, up
    to floating-point summation order.
    """
    count_key = "cases" if any("cases" in p for p in parts) else "users"
    n = [int(p.get(count_key, 0)) for p in parts]
    total = sum(n)
    keys: list[str] = []
    for p in sorted(parts, key=len, reverse=True):
        keys += [k for k in p if k not in keys]
    out: dict = {}
    for k in keys:
        vals = [(p[k], w) for p, w in zip(parts, n, strict=True) if k in p]
        if k == count_key:
            out[k] = total
        elif k == "eval_seconds":
            out[k] = max(v for v, _ in vals)
        elif isinstance(vals[0][0], bool) or not isinstance(vals[0][0], int | float):
            out[k] = next(v for v, w in vals if w > 0) if total else vals[0][0]
        elif total == 0:
            out[k] = float("nan")
        elif k.endswith("_se"):  # standard error of a count-weighted mean of shard means
            out[k] = math.sqrt(sum((w * v) ** 2 for v, w in vals if w > 0)) / total
        elif k == "RMSE":
            out[k] = math.sqrt(sum(w * v * v for v, w in vals if w > 0) / total)
        else:
            out[k] = sum(w * v for v, w in vals if w > 0) / total
    return out
