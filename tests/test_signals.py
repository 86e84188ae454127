"""Signals to a training job: SIGTERM or SIGINT to the process, its process group, each of its
processes or a torchrun job saves a checkpoint that resumes exactly, says so once and shows no
traceback; DataLoader workers left at exit end quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from command_line import ENV, REPO, first_steps_logged, start_training, wait_for, write_yaml

import train
from segmentation.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # every test runs training in child processes (one under torchrun)


def test_sigterm_mid_epoch_saves_and_resume_matches_a_straight_run(
    long_epochs_root, tmp_path, one_thread, small_config
):
    settings = {"train": {"epochs": 2, "batch_size": 2, "seed": 7}}
    straight = small_config(long_epochs_root, tmp_path / "straight", **settings)
    assert train.main(["--config", str(write_yaml(tmp_path / "a.yaml", straight))]) == 0

    run_dir = tmp_path / "interrupted"
    config = write_yaml(tmp_path / "b.yaml", small_config(long_epochs_root, run_dir, **settings))
    command = [sys.executable, str(REPO / "train.py"), "--config", str(config)]
    process = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 240
    while not (run_dir / "last.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "the first epoch never finished"
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert f"--resume {run_dir / 'last.pt'}" in stderr and "Traceback" not in stderr
    state = load_checkpoint(run_dir / "last.pt")
    assert state["state"]["epoch"] == 1 and 0 < state["state"]["epoch_batches"] < 20

    assert train.main(["--resume", str(run_dir / "last.pt")]) == 0
    expected = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(run_dir / "last.pt")["model"]
    for key, tensor in expected.items():
        assert torch.equal(tensor, resumed[key]), key


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_to_the_whole_job_saves_and_says_so_once(
    signum, long_epochs_root, tmp_path, small_config
):
    run_dir = tmp_path / "run"
    settings = {"train": {"epochs": 2, "batch_size": 2, "log_every": 1}, "data": {"workers": 2}}
    config = write_yaml(tmp_path / "c.yaml", small_config(long_epochs_root, run_dir, **settings))
    process = start_training(config)
    wait_for(first_steps_logged(run_dir), process, "the first steps")
    os.killpg(process.pid, signum)  # the DataLoader workers get it too
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr
    assert stderr.count(f"{signal.Signals(signum).name} received") == 1, stderr
    assert stderr.count(f"--resume {run_dir / 'last.pt'}") == 1, stderr
    assert load_checkpoint(run_dir / "last.pt")["state"]["epoch_batches"] > 0


def test_sigterm_to_a_torchrun_job_stops_every_rank_at_one_step(
    long_epochs_root, tmp_path, small_config
):
    run_dir = tmp_path / "run"
    settings = {"train": {"epochs": 2, "batch_size": 2, "log_every": 1}}
    config = write_yaml(tmp_path / "c.yaml", small_config(long_epochs_root, run_dir, **settings))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        str(REPO / "train.py"), "--config", str(config),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=ENV, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True
    )
    wait_for(first_steps_logged(run_dir), process, "the first steps")
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=180)
    ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "--resume" in ours[0], stderr[-3000:]
    # torchrun itself reports the signal it got with a traceback of its own; the ranks none.
    assert str(REPO / "segmentation") not in stderr and 'train.py", line' not in stderr
    state = load_checkpoint(run_dir / "last.pt")["state"]
    assert state["epoch"] == 0 and state["step"] > 0
    # Both ranks stopped after the same step: the saved one, from which a resume continues.
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "1"]) == 0


def test_sigterm_to_every_process_of_the_job_saves_too(long_epochs_root, tmp_path, small_config):
    """SLURM's pre-emption and systemd signal each process of the job, DataLoader workers
    included, by pid: the workers outlive it until the step is finished and saved."""
    import psutil

    run_dir = tmp_path / "run"
    settings = {"train": {"epochs": 2, "batch_size": 2, "log_every": 1}, "data": {"workers": 2}}
    config = write_yaml(tmp_path / "c.yaml", small_config(long_epochs_root, run_dir, **settings))
    process = start_training(config)
    wait_for(first_steps_logged(run_dir), process, "the first steps")
    job = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    assert len(job) >= 3  # the training process and its two workers
    for member in job:
        os.kill(member.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr
    assert load_checkpoint(run_dir / "last.pt")["state"]["epoch_batches"] > 0


# A loader whose persistent workers are still alive when the interpreter exits.
WORKERS_LEFT_AT_EXIT = """
import torch
from segmentation.data.loading import make_loader
loader = make_loader(list(range(8)), batch_size=2, workers=2, device=torch.device("cpu"))
print(sum(len(batch) for batch in loader))
"""


def test_workers_left_alive_at_exit_end_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-c", WORKERS_LEFT_AT_EXIT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["8"]
    assert "Traceback" not in result.stderr and "killed by signal" not in result.stderr, (
        result.stderr
    )
