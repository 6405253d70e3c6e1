"""A user's own DDP loop (docs/training.md) with the default model and find_unused_parameters=False."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from pspnet_lib import build_pspnet
from pspnet_lib.engine.loss import PSPNetLoss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grads_equal_across_ranks(model: torch.nn.Module) -> list[str]:
    """Names of parameters without a gradient or whose gradient differs between the two ranks."""
    bad = []
    for name, p in model.named_parameters():
        if p.grad is None:
            bad.append(f"{name}: no grad")
            continue
        gathered = [torch.empty_like(p.grad) for _ in range(2)]
        dist.all_gather(gathered, p.grad)
        if not torch.equal(gathered[0], gathered[1]):
            bad.append(f"{name}: differs")
    return bad


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        # The loop of docs/training.md ("Your own training loop"), on a small model.
        model = build_pspnet("resnet18", num_classes=4, head_channels=32, aux_channels=16, ppm_channels=8)
        ddp_model = DDP(model)  # find_unused_parameters=False: the default
        criterion = PSPNetLoss(aux_weight=0.4)
        optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.01, momentum=0.9)
        generator = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        report = {}
        for step in range(2):
            images = torch.randn(2, 3, 32, 32, generator=generator)
            masks = torch.randint(0, 4, (2, 32, 32), generator=generator)
            main, aux = ddp_model(images, return_aux=True)
            loss = criterion((main, aux), masks)
            optimizer.zero_grad()
            loss.backward()
            report[f"aux_loop_{step}"] = _grads_equal_across_ranks(model)
            optimizer.step()
        # The plain call (main logits only) in training mode must not leave the aux head unused.
        for step in range(2):
            images = torch.randn(2, 3, 32, 32, generator=generator)
            masks = torch.randint(0, 4, (2, 32, 32), generator=generator)
            loss = torch.nn.functional.cross_entropy(ddp_model(images), masks)
            optimizer.zero_grad()
            loss.backward()
            report[f"plain_loop_{step}"] = _grads_equal_across_ranks(model)
            optimizer.step()
        states = [None, None]
        # parameters (BatchNorm running statistics are per process on the CPU, as in the trainer)
        dist.all_gather_object(states, {k: v.detach().clone() for k, v in model.named_parameters()})
        report["weights_equal"] = all(torch.equal(states[0][k], states[1][k]) for k in states[0])
        torch.save(report, os.path.join(out, f"report{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_user_ddp_loop_default_model_no_unused_parameters(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        report = torch.load(tmp_path / f"report{rank}.pt", weights_only=True)
        assert report.pop("weights_equal") is True
        assert report == {k: [] for k in report}, report
