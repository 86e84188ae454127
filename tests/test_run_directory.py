"""The run directory: one run at a time (its lock), what a dead run left behind, an output
path that is a file, the next steps printed with copyable paths, and the resumes it refuses."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from pathlib import Path

import pytest
import torch
from command_line import (
    assert_one_line_error,
    first_steps_logged,
    run_script,
    start_training,
    wait_for,
    write_yaml,
)

import train
from segmentation.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint) -> Path:
    """last.pt of the session's tiny categories run (FPN/resnet18, bce_dice, one epoch)."""
    return trained_checkpoint("cityscapes", "categories")


@pytest.mark.slow
def test_two_runs_on_one_directory_the_second_is_refused(long_epochs_root, tmp_path, small_config):
    run_dir = tmp_path / "run"
    # Epochs enough to outlast the second start on a loaded machine: it is stopped below.
    settings = {"train": {"epochs": 100, "batch_size": 2, "log_every": 1}}
    config = write_yaml(tmp_path / "c.yaml", small_config(long_epochs_root, run_dir, **settings))
    first = start_training(config)
    try:
        wait_for(first_steps_logged(run_dir), first, "the first run's steps")
        second = run_script("train.py", "--config", config, "--output-dir", run_dir)
        assert_one_line_error(second, "in use by another train.py", f"PID {first.pid}")
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.communicate(timeout=120)


def test_a_lock_left_by_a_dead_run_does_not_block(cityscapes_root, tmp_path, small_config):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("999999\n")  # its process is gone, and its flock with it
    (run_dir / "config.yaml").write_text("left by a start that failed\n")
    (run_dir / "tensorboard").mkdir()
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, run_dir))
    assert train.main(["--config", str(config)]) == 0
    assert (run_dir / "last.pt").is_file()


def test_temporary_files_of_a_killed_writer_are_removed_at_the_next_start(checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run_dir)
    (run_dir / ".best.pt.4242.tmp").write_bytes(b"half a checkpoint")
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "1"]) == 0
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


@pytest.mark.slow
def test_an_output_dir_that_is_a_file_is_one_line(cityscapes_root, tmp_path, small_config):
    blocker = tmp_path / "taken"
    blocker.write_text("")
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, blocker))
    assert_one_line_error(run_script("train.py", "--config", config), "is a file", "--output-dir")


def test_the_next_steps_can_be_copied_when_paths_hold_spaces(
    cityscapes_root, tmp_path, small_config, capsys
):
    run_dir = tmp_path / "my runs" / "run 1"
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, run_dir))
    assert train.main(["--config", str(config)]) == 0
    commands = [line.strip() for line in capsys.readouterr().out.splitlines()[2:]]
    evaluate = next(shlex.split(line) for line in commands if "evaluate.py" in line)
    checkpoint_path = Path(evaluate[evaluate.index("--checkpoint") + 1])
    assert checkpoint_path.is_file() and checkpoint_path.parent == run_dir
    for line in commands:
        for word in shlex.split(line):
            if word.startswith(str(tmp_path)) and not word.endswith((".mp4", "frames")):
                assert Path(word).exists(), word


@pytest.mark.slow
def test_resuming_from_an_older_checkpoint_is_refused(long_epochs_root, tmp_path, small_config):
    run_dir = tmp_path / "run"
    # An lr that makes validation worse after the first epoch: best.pt stays at epoch 1.
    config = small_config(long_epochs_root, run_dir, train={"epochs": 3, "batch_size": 8})
    assert train.main(["--config", str(write_yaml(tmp_path / "c.yaml", config))]) == 0
    best = load_checkpoint(run_dir / "best.pt")["state"]["step"]
    last = load_checkpoint(run_dir / "last.pt")["state"]["step"]
    records = (run_dir / "metrics.jsonl").read_text()
    if best == last:  # the last epoch was the best: make best.pt older by hand
        state = load_checkpoint(run_dir / "best.pt")
        state["state"]["step"] -= 1
        torch.save(state, run_dir / "best.pt")
    result = run_script("train.py", "--resume", run_dir / "best.pt", "--epochs", "4")
    assert_one_line_error(result, "older than the run's", f"--resume {run_dir / 'last.pt'}")
    assert "--init-from" in result.stderr
    assert load_checkpoint(run_dir / "last.pt")["state"]["step"] == last
    assert (run_dir / "metrics.jsonl").read_text() == records


@pytest.mark.slow
def test_resume_refuses_optimizer_changes_it_would_ignore(checkpoint, tmp_path):
    run_dir = tmp_path / "copied_run"
    run_dir.mkdir()
    shutil.copy(checkpoint, run_dir / "last.pt")
    before = (run_dir / "last.pt").read_bytes()
    result = run_script("train.py", "--resume", run_dir / "last.pt", "--lr", "0.5")
    assert_one_line_error(result, "optim.lr:", "-> 0.5", "--init-from")
    assert (run_dir / "last.pt").read_bytes() == before
    assert sorted(path.name for path in run_dir.iterdir()) == ["last.pt"]
