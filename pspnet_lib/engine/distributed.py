"""Multi-process training helpers for ``torchrun``: process group set-up, SyncBatchNorm, collectives.

``torchrun`` (single node: ``--nproc_per_node N``; several nodes: ``--nnodes``,
``--node_rank``/``--rdzv_endpoint``) starts one process per GPU and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them. Without them everything here degrades to a single process.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from ..models._utils import FrozenBatchNorm2d

__all__ = [
    "average_buffers",
    "DistInfo",
    "init_distributed",
    "cleanup",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "convert_sync_batchnorm",
    "all_gather_objects",
    "broadcast_object",
    "any_true",
]

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """Where this process stands: its rank, the number of processes, its device and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(
    device: str | torch.device | None = None,
    backend: str | None = None,
    timeout_s: float = 1800.0,
) -> DistInfo:
    """Join the process group described by torchrun's environment variables (if any).

    Args:
        device: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when available). With CUDA each process
            uses ``cuda:LOCAL_RANK``.
        backend: ``"nccl"`` or ``"gloo"``; default NCCL on GPUs and gloo on the CPU.
        timeout_s: how long collectives wait for a missing process before failing.

    Returns a :class:`DistInfo`. Outside torchrun (``WORLD_SIZE`` unset or 1) nothing is
    initialised. If a process group already exists it is used as is.
    """
    want_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if want_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available; use --device cpu")
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
        dev = torch.device("cuda", local_rank % torch.cuda.device_count()) if want_cuda else torch.device("cpu")
        return DistInfo(rank, world, local_rank, dev, dist.get_backend(), initialized_here=False)
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if want_cuda:
        explicit = torch.device(device) if device is not None else None
        if world <= 1 and explicit is not None and explicit.index is not None:
            dev = explicit  # a single process on the GPU the user named
        else:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    elif device is not None and torch.device(device).type not in ("cpu", "cuda"):
        dev = torch.device(device)
    else:
        dev = torch.device("cpu")
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set; start multi-process training with "
            "torchrun (e.g. torchrun --nproc_per_node 2 -m pspnet_lib train ...)"
        )
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
    if dev.type == "cuda":
        kwargs["device_id"] = dev
    dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank, **kwargs)
    logger.info("process %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return DistInfo(rank, world, local_rank, dev, backend, initialized_here=True)


def cleanup(info: DistInfo | None = None) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info is not None and not info.initialized_here:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace trainable BatchNorm layers with SyncBatchNorm (statistics over all processes' batches).

    ``FrozenBatchNorm2d`` layers stay as they are: they never compute batch statistics.
    Only CUDA (and similar accelerators) support SyncBatchNorm; call it for GPU training.
    """
    frozen = {name: m for name, m in model.named_modules() if isinstance(m, FrozenBatchNorm2d)}
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, module in frozen.items():
        parent_name, _, child = name.rpartition(".")
        parent = converted.get_submodule(parent_name) if parent_name else converted
        setattr(parent, child, module)
    return converted


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_true(flag: bool | torch.Tensor, device: torch.device | None = None) -> bool:
    """True on every process if ``flag`` is true on any of them (so that all stop together)."""
    if isinstance(flag, torch.Tensor):
        value = flag.detach().to(torch.int32).reshape(())
    else:
        value = torch.tensor(int(bool(flag)), dtype=torch.int32, device=device)
    if get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def average_buffers(model: nn.Module, info: DistInfo) -> None:
    """Average ``model``'s floating-point buffers (BatchNorm statistics) over the processes of
    ``info`` (each saw different batches when not synchronised); other buffers come from rank 0.
    Nothing to do in a single process."""
    if not info.distributed:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(info.world_size)
        else:
            dist.broadcast(buffer, src=0)
