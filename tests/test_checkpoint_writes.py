"""Checkpoint writes: best.pt before last.pt records it, a signal mid-write waits for the file,
a failed or NaN write never replaces the previous checkpoint, and a resume with another amp
mode restores what it can."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from command_line import write_yaml

import train
from segmentation.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint) -> Path:
    """last.pt of the session's tiny categories run (FPN/resnet18, bce_dice, one epoch)."""
    return trained_checkpoint("cityscapes", "categories")


def copy_of_run(checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the session's run (last.pt, best.pt, its logs) to resume and break:
    a resume writes beside the checkpoint it starts from."""
    return Path(shutil.copytree(checkpoint.parent, tmp_path / "run"))


def test_best_is_written_before_last_records_it(
    cityscapes_root, tmp_path, small_config, monkeypatch
):
    from segmentation.engine import loop

    written = []
    real_save, real_copy = loop.save_checkpoint, loop.copy_checkpoint
    monkeypatch.setattr(
        loop, "save_checkpoint", lambda s, p: (written.append(p.name), real_save(s, p))
    )
    monkeypatch.setattr(
        loop, "copy_checkpoint", lambda a, b: (written.append(b.name), real_copy(a, b))
    )
    config = small_config(cityscapes_root, tmp_path / "run")
    assert train.main(["--config", str(write_yaml(tmp_path / "c.yaml", config))]) == 0
    assert written == ["best.pt", "last.pt"]


def test_a_second_signal_during_a_save_waits_for_the_file(tmp_path, monkeypatch):
    from segmentation.checkpoint import save_checkpoint

    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    def save_then_get_interrupted(obj, handle, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives mid-write
        time.sleep(0.05)
        real_save(obj, handle, *args, **kwargs)

    real_save = torch.save
    previous = signal.signal(signal.SIGINT, on_sigint)
    monkeypatch.setattr(torch, "save", save_then_get_interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint({"model": {"w": torch.ones(3)}}, tmp_path / "last.pt")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupted == [signal.SIGINT]
    assert load_checkpoint(tmp_path / "last.pt")["model"]["w"].tolist() == [1.0, 1.0, 1.0]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # What torch.save's zip writer raises when the disk fills under it.
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 33"),
    ],
    ids=["oserror", "torch-runtimeerror"],
)
def test_a_failed_checkpoint_write_keeps_the_previous_one(
    failure, checkpoint, tmp_path, monkeypatch, capsys
):
    run_dir = copy_of_run(checkpoint, tmp_path)
    previous = (run_dir / "last.pt").read_bytes()

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", disk_full)
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "2"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no space left writing" in lines[0], lines
    assert "the previous checkpoint is kept" in lines[0]
    assert (run_dir / "last.pt").read_bytes() == previous
    assert [path.name for path in run_dir.iterdir() if path.name.endswith(".tmp")] == []


def test_a_nan_model_never_overwrites_a_good_checkpoint(checkpoint, tmp_path, monkeypatch):
    from segmentation import losses

    run_dir = copy_of_run(checkpoint, tmp_path)
    good_last, good_best = (run_dir / "last.pt").read_bytes(), (run_dir / "best.pt").read_bytes()

    original = losses.BCEDiceLoss.forward
    monkeypatch.setattr(
        losses.BCEDiceLoss, "forward", lambda self, *a: original(self, *a) * float("nan")
    )
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "2"]) == 2
    assert (run_dir / "last.pt").read_bytes() == good_last
    assert (run_dir / "best.pt").read_bytes() == good_best


def test_resuming_with_another_amp_mode_warns_instead_of_crashing(checkpoint):
    from types import SimpleNamespace

    from segmentation.engine.distributed import DistributedContext
    from segmentation.engine.setup import restore_state

    state = load_checkpoint(checkpoint)  # a train.amp=off run: its scaler state is empty
    assert state["scaler"] == {}
    model = torch.nn.Linear(1, 1)
    model.load_state_dict = lambda weights: None
    ignore = SimpleNamespace(load_state_dict=lambda saved: None)
    scaler = torch.amp.GradScaler("cpu", enabled=True)  # as an fp16 resume builds it
    training = SimpleNamespace(
        config=SimpleNamespace(train=SimpleNamespace(amp="fp16")),
        bare_model=model,
        optimizer=ignore,
        scheduler=ignore,
        scaler=scaler,
        device=torch.device("cpu"),
        context=DistributedContext(0, 1, 0, torch.device("cpu")),
    )
    restore_state(training, state)
    assert scaler.is_enabled() and scaler.get_scale() == 65536.0  # a fresh scaler
    assert training.state.step == state["state"]["step"]
