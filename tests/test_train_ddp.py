"""Distributed training: two gloo processes on the CPU, and the sharded endless sampler."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pspnet_lib.engine import TrainConfig, Trainer, evaluate
from pspnet_lib.engine.checkpoint import load_checkpoint
from pspnet_lib.engine.class_weights import compute_class_weights
from pspnet_lib.engine.sampler import InfiniteSampler

from ._engine_helpers import ColourBlocks, one_thread, tiny_pspnet  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    # What torchrun sets for every process.
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different initialisations: DDP must broadcast rank 0's
    model = tiny_pspnet()
    config = TrainConfig(
        iters=4,
        batch_size=2,
        lr=0.01,
        num_workers=0,
        ckpt_interval=2,
        log_interval=2,
        device="cpu",
        out_dir=os.path.join(out, "run"),
        progress=False,
        export=False,
        # rank 0 computes the class weights and hands them to the other; every rank mines its own pixels
        class_weight="auto",
        loss="ce + 0.5*lovasz",
        sampler="ohem(thresh=0.7, min_kept=100)",
    )
    trainer = Trainer(model, ColourBlocks(8, 32), ColourBlocks(3, 32, seed=9, augment=False), config)
    summary = trainer.fit()
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    with open(os.path.join(out, f"metrics{rank}.json"), "w") as f:
        json.dump(
            {"metrics": summary["metrics"], "history": summary["history"], "weights": trainer.config.class_weight}, f
        )
    from pspnet_lib.engine.distributed import cleanup

    cleanup()


def test_two_gloo_processes_stay_in_sync_and_reduce_metrics(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    torch.manual_seed(0)
    initial = tiny_pspnet().state_dict()
    assert not torch.equal(initial["decode_head.classifier.weight"], weights[0]["decode_head.classifier.weight"])

    results = [json.loads((tmp_path / f"metrics{r}.json").read_text()) for r in range(2)]
    assert results[0]["weights"] == results[1]["weights"] == compute_class_weights(ColourBlocks(8, 32), 4)
    assert results[0]["metrics"] == results[1]["metrics"]  # every rank gets the whole dataset's metrics
    # Reduced over the two shards = one process scoring all three images.
    model = tiny_pspnet()
    model.load_state_dict(weights[0])
    single = evaluate(model, ColourBlocks(3, 32, seed=9, augment=False), progress=False)
    assert (
        results[0]["metrics"]["pixels"]
        == single["pixels"]
        == 3 * 32 * 32 - sum(int((ColourBlocks(3, 32, seed=9, augment=False)[i][1] == 255).sum()) for i in range(3))
    )
    assert results[0]["metrics"]["mIoU"] == pytest.approx(single["mIoU"], abs=1e-12)
    # Training losses were averaged over ranks, identically on both; rank 0 alone wrote checkpoints.
    losses = [
        [(h["iter"], h["loss"], h["main"], h["main.lovasz"], h["aux"]) for h in r["history"] if h["type"] == "train"]
        for r in results
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["iteration"] == 4 and len(state["rng"]) == 2 and state["world_size"] == 2
    for key, value in state["model"].items():
        assert torch.equal(value, weights[0][key]), key


def test_infinite_sampler_shards_epochs_and_resumes_mid_stream():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    size = 7
    ranks = [InfiniteSampler(size, seed=3, rank=r, world_size=2) for r in range(2)]
    per_rank = 4  # ceil(7 / 2): one padded sample per epoch
    streams = [take(s, 3 * per_rank) for s in ranks]
    for epoch in range(3):
        chunk = [idx for s in streams for idx, _ in s[epoch * per_rank : (epoch + 1) * per_rank]]
        assert sorted(set(chunk)) == list(range(size)) and len(chunk) == 8  # every sample, one repeat
    first_epochs = [[i for i, _ in s[:per_rank]] for s in streams]
    assert first_epochs[0] != [i for i, _ in streams[0][per_rank : 2 * per_rank]]  # reshuffled per epoch
    # Augmentation seeds never repeat, and differ between ranks.
    seeds = [seed for s in streams for _, seed in s]
    assert len(set(seeds)) == len(seeds)
    # Starting at position k gives exactly the stream from k onwards.
    resumed = take(InfiniteSampler(size, seed=3, rank=1, world_size=2, start=5), 7)
    assert resumed == streams[1][5:12]
    assert take(InfiniteSampler(size, seed=4), 7) != take(InfiniteSampler(size, seed=3), 7)
