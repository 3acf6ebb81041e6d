"""Process-group setup for ``torchrun`` (DDP: gloo on CPU, nccl on CUDA) and the few collectives used.

Run without torchrun, everything here degrades to a single process (rank 0 of 1) and the
collectives return their input, so the trainer has one code path.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssamba_stream.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("device=cuda was requested but CUDA is not available: set device=cpu or device=auto")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device_preference: str) -> DistContext:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, ...), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, device)


def shutdown(context: DistContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(module: nn.Module, context: DistContext) -> nn.Module:
    """DDP around ``module`` in a multi-process job (broadcasting rank 0's weights), else ``module``."""
    if not context.distributed:
        return module
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def all_reduce_sum(tensor: Tensor, context: DistContext) -> Tensor:
    """Sum over ranks (in place on a copy); the tensor itself on a single process."""
    if not context.distributed:
        return tensor
    reduced = tensor.detach().clone().to(context.device)
    dist.all_reduce(reduced)
    return reduced.to(tensor.device)


def all_gather_tensor(tensor: Tensor, context: DistContext) -> list[Tensor]:
    """Every rank's copy of a same-shaped tensor, in rank order."""
    if not context.distributed:
        return [tensor]
    local = tensor.detach().contiguous().to(context.device)
    gathered = [torch.empty_like(local) for _ in range(context.world_size)]
    dist.all_gather(gathered, local)
    return [t.to(tensor.device) for t in gathered]


def all_gather_objects(value: object, context: DistContext) -> list[object]:
    """Every rank's copy of a small picklable value (e.g. skipped file names), in rank order."""
    if not context.distributed:
        return [value]
    gathered: list[object] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def any_rank(flag: bool, context: DistContext) -> bool:
    """Whether ``flag`` is true on any rank (so that all ranks take the same branch)."""
    return bool(all_reduce_sum(torch.tensor([float(flag)]), context).item() > 0)


def state_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and bytes): equal iff the weights are identical."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def replica_digests(module: nn.Module, context: DistContext) -> list[str]:
    """Each rank's :func:`state_digest`; raises if DDP replicas have drifted apart."""
    local = torch.frombuffer(bytearray.fromhex(state_digest(module)), dtype=torch.uint8)
    digests = [bytes(t.tolist()).hex() for t in all_gather_tensor(local, context)]
    if len(set(digests)) > 1:
        raise RuntimeError(f"DDP replicas diverged: per-rank weight digests {digests}")
    return digests
