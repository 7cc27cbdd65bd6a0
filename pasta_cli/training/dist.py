"""torchrun awareness: one process per device, rank 0 alone writes, everyone agrees on the run folder."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from pasta_cli.errors import PastaError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def adopt_slurm_tasks() -> bool:
    """Inside a job of Hydra's submitit launcher with several SLURM tasks (one per GPU), export what torchrun
    would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) from SLURM's variables; True when it did."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or "RANK" in os.environ:
        return False
    from submitit.helpers import TorchDistributedEnvironment  # the cluster extra: only here
    env = TorchDistributedEnvironment()
    if env.world_size < 2:
        return False
    env.export(set_cuda_visible_devices=False)  # every rank sees every GPU of its node; LOCAL_RANK picks one
    return True


def init(device_type: str) -> None:
    """Join the torchrun process group (NCCL on GPU, gloo on CPU); a no-op for one process."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(value):
    """Rank 0's value on every rank (any picklable object)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def decide(fn):
    """Rank 0 runs `fn` (a check of shared state: the run folder); every rank returns its result or
    raises the same PastaError, so that a refusal stops all ranks instead of leaving them waiting."""
    outcome = None
    if is_main():
        try:
            outcome = ("ok", fn())
        except PastaError as e:
            outcome = ("error", e)
    outcome = broadcast(outcome)
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


def mean(value: float, device) -> float:
    """The average of a number over all ranks (e.g. the training loss each rank saw)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def local_device(device_type: str) -> torch.device:
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
