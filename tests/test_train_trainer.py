"""The Trainer: exact resume, checkpoint files, crash safety, NaN handling, learning."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pspnet_lib.engine import NonFiniteLossError, PSPNetLoss, TrainConfig, Trainer, evaluate
from pspnet_lib.engine.checkpoint import load_checkpoint

from ._engine_helpers import ColourBlocks, ColourGrid, one_thread, tiny_pspnet  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path, **changes):
    options = dict(
        iters=6,
        batch_size=2,
        lr=0.01,
        num_workers=0,
        ckpt_interval=3,
        log_interval=2,
        out_dir=str(tmp_path / "run"),
        progress=False,
        export=False,
    )
    options.update(changes)
    return TrainConfig(**options)


def _model(seed=0):
    torch.manual_seed(seed)
    return tiny_pspnet()


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_resume_is_exact(tmp_path):
    data, val = ColourBlocks(10, 32), ColourBlocks(2, 32, seed=5, augment=False)
    straight = _model()
    Trainer(straight, data, val, _config(tmp_path / "a", val_interval=3)).fit()

    first = _model()
    summary = Trainer(first, data, val, _config(tmp_path / "b", val_interval=3)).fit(stop_at=3)
    assert summary["iteration"] == 3 and summary["model_dir"] is None
    # A new process would build a differently initialised model; resume must overwrite everything.
    resumed = _model(seed=123)
    # Loading data in worker processes must not change anything either (per-sample seeds).
    trainer = Trainer(resumed, data, val, _config(tmp_path / "b", val_interval=3, num_workers=2), resume=True)
    summary = trainer.fit()
    assert summary["iteration"] == 6
    _assert_same_weights(straight, resumed)
    # The weights moved: this is not two untrained models compared.
    assert not torch.equal(_model().decode_head.classifier.weight, resumed.decode_head.classifier.weight)
    history = json.loads((tmp_path / "b" / "run" / "history.json").read_text())["history"]
    assert [h["iter"] for h in history if h["type"] == "train"] == [2, 3, 4, 6]
    assert [h["iter"] for h in history if h["type"] == "val"] == [3, 6]


def test_checkpoint_files_rotation_best_and_export(tmp_path):
    data, val = ColourBlocks(6, 32), ColourBlocks(2, 32, seed=5, augment=False)
    config = _config(tmp_path, iters=5, ckpt_interval=1, keep_last=2, val_interval=2, export=True)
    model = _model()
    summary = Trainer(model, data, val, config).fit()
    ckpt = Path(config.out_dir) / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "iter_00000004.pt", "iter_00000005.pt", "latest.pt"]
    latest = load_checkpoint(ckpt / "latest.pt")
    assert latest["iteration"] == 5
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config", "model_config", "pretrained_cfg"} <= set(
        latest
    )
    assert latest["config"]["iters"] == 5 and TrainConfig.from_dict(latest["config"]) == config
    best = load_checkpoint(ckpt / "best.pt")
    assert best["best_miou"] == summary["best_miou"] and best["iteration"] in (2, 4, 5)
    metrics = json.loads((Path(config.out_dir) / "metrics.json").read_text())
    assert set(metrics["per_class"]) == set(ColourBlocks.classes)
    # The exported model reloads to the same outputs, with its classes and normalisation.
    from pspnet_lib import load_pretrained as load_model

    reloaded = load_model(summary["model_dir"])
    assert reloaded.pretrained_cfg["classes"] == list(ColourBlocks.classes)
    x = torch.randn(1, 3, 32, 32)
    model.eval(), reloaded.eval()
    torch.testing.assert_close(reloaded(x), model(x))
    # Starting a new run over an existing one is refused rather than silently mixing them.
    with pytest.raises(FileExistsError, match="resume"):
        Trainer(_model(), data, None, config).fit()


class _NaNAfter(PSPNetLoss):
    def __init__(self, calls):
        super().__init__()
        self.calls, self.count = calls, 0

    def components(self, outputs, target):
        terms = super().components(outputs, target)
        self.count += 1
        if self.count >= self.calls:
            terms["loss"] = terms["loss"] * float("nan")
        return terms


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    config = _config(tmp_path, iters=10, ckpt_interval=2)
    model = _model()
    trainer = Trainer(model, ColourBlocks(6, 32), None, config, loss_fn=_NaNAfter(calls=5))
    with pytest.raises(NonFiniteLossError, match=r"iteration 5 .*latest\.pt \(iteration 4\) is intact"):
        trainer.fit()
    state = load_checkpoint(Path(config.out_dir) / "checkpoints" / "latest.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # The weights in memory were not touched by the bad step either.
    assert all(torch.isfinite(p).all() for p in model.parameters())


_CRASH_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from tests._engine_helpers import ColourBlocks, tiny_pspnet
from pspnet_lib.engine import TrainConfig, Trainer
torch.manual_seed(0)
config = TrainConfig(iters=1000, batch_size=2, num_workers=0, ckpt_interval=1, keep_last=2,
                     out_dir={out!r}, progress=False, export=False)
Trainer(tiny_pspnet(), ColourBlocks(8, 32), None, config).fit()
"""


def test_sigkill_mid_run_leaves_loadable_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT.format(root=str(ROOT), out=str(out))], cwd=ROOT)
    latest = out / "checkpoints" / "latest.pt"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if latest.exists() and load_checkpoint(latest)["iteration"] >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the training process ended early"
        time.sleep(0.3)  # let it get somewhere in the middle of its next step or write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    state = load_checkpoint(latest)
    done = state["iteration"]
    assert done >= 3
    for path in (out / "checkpoints").glob("iter_*.pt"):
        load_checkpoint(path)  # every numbered file is complete too
    config = TrainConfig.from_dict({**state["config"], "out_dir": str(out)})
    trainer = Trainer(tiny_pspnet(), ColourBlocks(8, 32), None, config, resume=True)
    summary = trainer.fit(stop_at=done + 2)
    assert summary["iteration"] == done + 2
    assert load_checkpoint(latest)["iteration"] == done + 2
    assert not list((out / "checkpoints").glob(".*tmp*"))


def test_trainer_learns(tmp_path):
    """150 SGD steps of the paper's recipe take a tiny PSPNet from chance (~25% mIoU) to >80% on its data."""
    data = ColourGrid(32)
    model = _model()
    before = evaluate(model, data, progress=False)["mIoU"]
    config = _config(tmp_path, iters=150, batch_size=4, lr=0.02, ckpt_interval=0, log_interval=50)
    summary = Trainer(model, data, data, config).fit()
    losses = [h["loss"] for h in summary["history"] if h["type"] == "train"]
    assert losses[-1] < 0.5 * losses[0]
    # Observed 0.93 (before training: ~0.1-0.25); broken learning (no step, misaligned masks,
    # wrong normalisation) stays near chance.
    assert before < 0.4
    assert summary["metrics"]["mIoU"] > 0.8, summary["metrics"]


def test_grad_accumulation_equals_the_larger_batch(tmp_path):
    # Frozen BN statistics and no dropout: then 2 x 2 accumulated images are one batch of 4.
    data = ColourGrid(8)
    models = []
    for name, batch, accum in (("big", 4, 1), ("accum", 2, 2)):
        torch.manual_seed(0)
        model = tiny_pspnet(dropout=0.0)
        config = _config(tmp_path / name, iters=3, batch_size=batch, grad_accum=accum, freeze_bn=True, ckpt_interval=0)
        Trainer(model, data, None, config).fit()
        models.append(model)
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=key)


def test_frozen_backbone_bf16_channels_last_checkpointing(tmp_path):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = _config(
        tmp_path,
        iters=2,
        amp="bf16",
        channels_last=True,
        grad_checkpointing=True,
        freeze_backbone=True,
        ckpt_interval=0,
    )
    trainer = Trainer(model, ColourBlocks(4, 32), None, config)
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["head"]
    summary = trainer.fit()
    assert all(h["loss"] == h["loss"] for h in summary["history"] if h["type"] == "train")  # finite
    after = model.state_dict()
    backbone = [k for k in after if k.startswith("backbone.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BN statistics
    assert not torch.equal(before["decode_head.classifier.weight"], after["decode_head.classifier.weight"])
    assert not torch.equal(
        before["decode_head.bottleneck.norm.running_mean"], after["decode_head.bottleneck.norm.running_mean"]
    )
    assert model.decode_head.classifier.weight.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- the machine's limits (issue 10, items 8 and 13)


def _fail_writes(monkeypatch, at_name, error):
    """Make torch.save write part of the file named ``at_name`` and then fail like a full disk does."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if at_name in os.path.basename(str(f)):
            Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 500)  # the part that fitted
            raise error
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_during_a_checkpoint_says_so_and_keeps_the_last_one(tmp_path, monkeypatch):
    import errno
    import shutil

    from pspnet_lib.engine import checkpoint as ckpt_module
    from pspnet_lib.engine.checkpoint import CheckpointWriteError

    data = ColourBlocks(6, 32)
    config = _config(tmp_path, iters=4, ckpt_interval=2)
    # What torch's zip writer raises when the disk fills (no errno), while little space is free.
    _fail_writes(
        monkeypatch,
        "iter_00000004",
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3529856 vs 3529750"),
    )
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ckpt_module.shutil, "disk_usage", lambda p: usage._replace(free=12_345))
    with pytest.raises(CheckpointWriteError) as info:
        Trainer(_model(), data, None, config).fit()
    message = str(info.value)
    ckpt = Path(config.out_dir) / "checkpoints"
    assert info.value.errno == errno.ENOSPC and "\n" not in message
    assert f"{ckpt / 'iter_00000004.pt'}" in message and "no space left" in message
    assert "12.3 KB free" in message and "needed: the size of iter_00000002.pt" in message
    needed = (ckpt / "iter_00000002.pt").stat().st_size
    assert f"about {needed / 1e6:.1f} MB needed" in message
    assert f"{ckpt / 'iter_00000002.pt'} (iteration 2)" in message and "--resume" in message
    assert "inline_container" not in message
    # Nothing half-written is left for a later run to trust; the last checkpoint is intact.
    assert sorted(p.name for p in ckpt.iterdir()) == ["iter_00000002.pt", "latest.pt"]
    assert load_checkpoint(ckpt / "latest.pt")["iteration"] == 2
    # Space freed: --resume finishes the run.
    monkeypatch.undo()
    assert Trainer(_model(seed=9), data, None, config, resume=True).fit()["iteration"] == 4


def test_disk_full_at_the_first_checkpoint(tmp_path, monkeypatch):
    import errno

    from pspnet_lib.engine.checkpoint import CheckpointWriteError

    config = _config(tmp_path, iters=2, ckpt_interval=2)
    _fail_writes(monkeypatch, "iter_00000002", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointWriteError, match=r"iter_00000002\.pt: no space left on the device") as info:
        Trainer(_model(), ColourBlocks(6, 32), None, config).fit()
    assert "no checkpoint had been written yet" in str(info.value) and "--seed" in str(info.value)
    assert "tensors" in str(info.value)  # the estimate when no checkpoint exists yet
    assert not [p for p in (Path(config.out_dir) / "checkpoints").iterdir()]


def test_torn_latest_falls_back_to_the_newest_readable_checkpoint(tmp_path, caplog):
    data = ColourBlocks(6, 32)
    config = _config(tmp_path, iters=6, ckpt_interval=3)
    Trainer(_model(), data, None, config).fit()
    ckpt = Path(config.out_dir) / "checkpoints"
    latest, newest, older = ckpt / "latest.pt", ckpt / "iter_00000006.pt", ckpt / "iter_00000003.pt"
    intact = newest.read_bytes()
    # A torn copy of latest.pt (e.g. copied without hard links and cut short); iter_00000006.pt is intact.
    latest.unlink()
    latest.write_bytes(intact[: len(intact) // 2])
    longer = config.replace(iters=8)
    trainer = Trainer(_model(seed=5), data, None, longer, resume=True)
    caplog.set_level("WARNING")
    assert trainer.fit(stop_at=6)["iteration"] == 6
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert str(latest) in warning and str(newest) in warning and "iteration 6" in warning

    # latest.pt torn together with the file it links to: the next older one is used.
    newest.write_bytes(intact[:1000])
    caplog.clear()
    trainer = Trainer(_model(seed=5), data, None, longer, resume=True)
    assert trainer.fit(stop_at=3)["iteration"] == 3
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert str(newest) in warning and str(older) in warning

    # Nothing readable: one error listing every file tried and why.
    older.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        Trainer(_model(), data, None, longer, resume=True).fit()
    message = str(info.value)
    assert all(str(p) in message for p in (latest, newest, older)) and "none of the 3" in message


def test_the_train_step_is_a_collaborator_with_explicit_inputs():
    from pspnet_lib.engine.trainer import NonFiniteLossError, TrainConfig
    from pspnet_lib.engine.trainer_step import TrainStep

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scale = {"value": 1.0}

    def loss_fn(outputs, masks):
        return {"loss": outputs.float().mean() * scale["value"], "extra": outputs.float().abs().mean()}

    step = TrainStep(
        TrainConfig(grad_accum=2, amp="none"),
        model=model,
        train_model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        loss_fn=loss_fn,
        device=torch.device("cpu"),
        distributed=False,
        uses_aux=False,
    )
    batch = (torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8), torch.zeros(1, 4, 4, dtype=torch.long))
    before = model.weight.detach().clone()
    terms = step(iter([batch, batch]), iteration=0, checkpoint_note=lambda: "unused")
    assert set(terms) == {"loss", "extra"} and not torch.equal(model.weight, before)  # one step, two micro-batches
    scale["value"] = float("nan")
    kept = model.weight.detach().clone()
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite at iteration 4 \(loss=nan, extra=.*\); no checkpoint yet\."
    ):
        step(iter([batch, batch]), iteration=3, checkpoint_note=lambda: "no checkpoint yet")
    assert torch.equal(model.weight, kept)  # stopped before the bad step touched the weights
