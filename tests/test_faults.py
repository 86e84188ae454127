"""Interruptions, faults and bad input: nothing is lost, and every mistake explains itself.

Most cases run the real command lines as subprocesses and check the exit code, the one-line
message and that no file was lost.
"""

import errno
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import train
from segmentation.checkpoint import load_checkpoint
from segmentation.errors import UserError
from segmentation.sample import generate_cityscapes

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def run_script(script: str, *args, timeout: int = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / script), *map(str, args)]
    return subprocess.run(
        command, env=ENV, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def long_epochs_root(tmp_path_factory) -> Path:
    """40 training images: 20 steps an epoch at batch 2, long enough to interrupt."""
    root = tmp_path_factory.mktemp("cityscapes_long")
    generate_cityscapes(
        root,
        height=64,
        width=128,
        train_per_city=8,
        val_per_city=1,
        test_per_city=1,
        video_frames=1,
        seed=4,
    )
    return root


@pytest.fixture(scope="module")
def checkpoint(cityscapes_root, tmp_path_factory, small_config) -> Path:
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    config = write_yaml(run_dir.parent / "c.yaml", small_config(cityscapes_root, run_dir))
    assert train.main(["--config", str(config)]) == 0
    return run_dir / "last.pt"


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


def start_training(config: Path, *extra, session: bool = True) -> subprocess.Popen:
    """train.py in its own process group (a job as a cluster or systemd runs it)."""
    command = [sys.executable, str(REPO / "train.py"), "--config", str(config), *map(str, extra)]
    return subprocess.Popen(
        command, env=ENV, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=session
    )


def wait_for(condition, process: subprocess.Popen, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended before {what}: {process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


def first_steps_logged(run_dir: Path):
    # log_every 1: a TensorBoard event file grows after every step.
    def logged() -> bool:
        events = list((run_dir / "tensorboard").glob("events.*"))
        return bool(events) and events[0].stat().st_size > 400

    return logged


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


def test_two_runs_on_one_directory_the_second_is_refused(long_epochs_root, tmp_path, small_config):
    run_dir = tmp_path / "run"
    settings = {"train": {"epochs": 4, "batch_size": 2, "log_every": 1}}
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


def test_temporary_files_of_a_killed_writer_are_removed_at_the_next_start(checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run_dir)
    (run_dir / ".best.pt.4242.tmp").write_bytes(b"half a checkpoint")
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "1"]) == 0
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


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


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "inference.py"])
def test_an_empty_checkpoint_is_one_line(script, tmp_path):
    empty = tmp_path / "last.pt"
    empty.write_bytes(b"")
    flag = ["--resume", empty] if script == "train.py" else ["--checkpoint", empty]
    extra = ["--export-onnx", tmp_path / "m.onnx"] if script == "inference.py" else []
    assert_one_line_error(run_script(script, *flag, *extra), "last.pt is unreadable", "empty")


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


NAN_ON_RANK_1 = """
import os, sys
sys.path.insert(0, {repo!r})
from segmentation.engine import setup

real_build_loss = setup.build_loss


def build_loss(*args, **kwargs):
    loss = real_build_loss(*args, **kwargs)
    if os.environ["RANK"] == "1":
        forward, calls = loss.forward, []

        def nan_on_the_second_step(logits, target):
            calls.append(1)
            value = forward(logits, target)
            return value * float("nan") if len(calls) == 2 else value

        loss.forward = nan_on_the_second_step
    return loss


setup.build_loss = build_loss
import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_ddp_ranks_skip_a_nonfinite_step_together(cityscapes_root, tmp_path, small_config):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1.format(repo=str(REPO)))
    run_dir = tmp_path / "run"
    settings = {"train": {"epochs": 1, "batch_size": 2, "skip_nonfinite": 1}}
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, run_dir, **settings))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        str(script), "--config", str(config),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=ENV, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the ranks fell out of step: the run hung")
    assert process.returncode == 0, stderr[-3000:]
    state = load_checkpoint(run_dir / "last.pt")["state"]
    # 15 images: 8 per rank, 4 steps of 2; the second was skipped on both ranks.
    assert state["skipped_batches"] == 1 and state["step"] == 3, state


def test_a_nan_loss_stops_naming_the_step_and_saves_nothing(
    cityscapes_root, tmp_path, small_config
):
    # A learning-rate typo: the weights overflow after the first step.
    config = small_config(cityscapes_root, tmp_path / "run", optim={"lr": 1.0e30})
    result = run_script("train.py", "--config", write_yaml(tmp_path / "c.yaml", config))
    assert_one_line_error(result, "NaN or infinite at step 2", "train.grad_clip")
    assert not (tmp_path / "run" / "last.pt").exists()
    assert not (tmp_path / "run" / "best.pt").exists()


def test_skipping_bad_batches_stops_past_the_allowance(cityscapes_root, tmp_path, small_config):
    config = small_config(
        cityscapes_root, tmp_path / "run", optim={"lr": 1.0e30}, train={"skip_nonfinite": 1}
    )
    result = run_script("train.py", "--config", write_yaml(tmp_path / "c.yaml", config))
    assert_one_line_error(result, "2 batches had a NaN or infinite loss", "skip_nonfinite=1")
    assert "skipped a batch with a NaN or infinite loss" in result.stderr


def test_a_nan_model_never_overwrites_a_good_checkpoint(
    cityscapes_root, tmp_path, monkeypatch, small_config
):
    from segmentation import losses

    run_dir = tmp_path / "run"
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, run_dir))
    assert train.main(["--config", str(config)]) == 0
    good_last, good_best = (run_dir / "last.pt").read_bytes(), (run_dir / "best.pt").read_bytes()

    original = losses.BCEDiceLoss.forward
    monkeypatch.setattr(
        losses.BCEDiceLoss, "forward", lambda self, *a: original(self, *a) * float("nan")
    )
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "2"]) == 2
    assert (run_dir / "last.pt").read_bytes() == good_last
    assert (run_dir / "best.pt").read_bytes() == good_best


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
    failure, cityscapes_root, tmp_path, monkeypatch, capsys, small_config
):
    run_dir = tmp_path / "run"
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, run_dir))
    assert train.main(["--config", str(config)]) == 0
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


def test_debug_shows_the_traceback(tmp_path):
    result = run_script("train.py", "--config", tmp_path / "missing.yaml", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def bad_train_inputs(base: dict, root: Path, tmp: Path, kitti_root: Path, checkpoint: Path) -> dict:
    blocker = tmp / "a_file"
    blocker.write_text("")
    typo = {**base, "train": {**base["train"], "epoch": 3}}
    unet = {**base, "model": {**base["model"], "arch": "unet", "options": {}}}
    kitti = {**base, "data": {**base["data"], "dataset": "kitti", "labels": "road"}}
    return {
        "missing config": (["--config", tmp / "nope.yaml"], ["nope.yaml does not exist"]),
        "config typo": (["--config", write_yaml(tmp / "t.yaml", typo)], ["epoch", "epochs"]),
        "bad image size": (
            ["--config", write_yaml(tmp / "u.yaml", unet), "--image-size", "100x200"],
            ["100x200 is not a multiple of 64", "64x192 or 128x256"],
        ),
        "wrong cityscapes root": (
            ["--config", write_yaml(tmp / "w.yaml", base), "--data-root", kitti_root],
            ["leftImg8bit", "Cityscapes layout"],
        ),
        "wrong kitti root": (
            ["--config", write_yaml(tmp / "k.yaml", kitti), "--data-root", root],
            ["data_road", "KITTI road layout"],
        ),
        "missing resume checkpoint": (["--resume", tmp / "gone.pt"], ["gone.pt does not exist"]),
        "init-from another class count": (
            [
                "--config",
                write_yaml(tmp / "i.yaml", base),
                "--labels",
                "official",
                "--init-from",
                checkpoint,
            ],
            ["expected ['road'", "found ['void'"],
        ),
        "unwritable output directory": (
            ["--config", write_yaml(tmp / "o.yaml", base), "--output-dir", blocker / "run"],
            ["cannot write to run directory", "--output-dir"],
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing config",
        "config typo",
        "bad image size",
        "wrong cityscapes root",
        "wrong kitti root",
        "missing resume checkpoint",
        "init-from another class count",
        "unwritable output directory",
    ],
)
def test_bad_training_input(case, cityscapes_root, kitti_root, checkpoint, tmp_path, small_config):
    base = small_config(cityscapes_root, tmp_path / "run")
    args, fragments = bad_train_inputs(base, cityscapes_root, tmp_path, kitti_root, checkpoint)[
        case
    ]
    result = run_script("train.py", *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_optimizer_changes_it_would_ignore(checkpoint, tmp_path):
    run_dir = tmp_path / "copied_run"
    run_dir.mkdir()
    shutil.copy(checkpoint, run_dir / "last.pt")
    before = (run_dir / "last.pt").read_bytes()
    result = run_script("train.py", "--resume", run_dir / "last.pt", "--lr", "0.5")
    assert_one_line_error(result, "optim.lr:", "-> 0.5", "--init-from")
    assert (run_dir / "last.pt").read_bytes() == before
    assert sorted(path.name for path in run_dir.iterdir()) == ["last.pt"]


def test_bad_evaluation_and_inference_input(cityscapes_root, kitti_root, checkpoint, tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": Path("not a tensor")}, pickled)
    empty = tmp_path / "empty"
    empty.mkdir()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    export = tmp_path / "export"
    export.mkdir()
    (export / "keep.png").write_text("mine")
    cases = [
        ("evaluate.py", ["--checkpoint", tmp_path / "x.pt"], ["x.pt does not exist"]),
        ("evaluate.py", ["--checkpoint", pickled], ["pickle", "refused"]),
        (
            "evaluate.py",
            ["--checkpoint", checkpoint, "--data-root", kitti_root],
            ["Cityscapes layout"],
        ),
        (
            "evaluate.py",
            ["--checkpoint", checkpoint, "--export-dir", export],
            ["is not empty", "--export-dir"],
        ),
        (
            "inference.py",
            ["--checkpoint", checkpoint, "--input", empty, "--output", tmp_path / "out"],
            ["no images", "--input"],
        ),
        (
            "inference.py",
            [
                "--checkpoint",
                checkpoint,
                "--input",
                cityscapes_root / "leftImg8bit" / "val" / "lindau",
                "--output",
                blocker / "out",
            ],
            ["cannot create output folder"],
        ),
    ]
    for script, args, fragments in cases:
        assert_one_line_error(run_script(script, *args), *fragments)
    assert (export / "keep.png").read_text() == "mine"


# --- files, outputs and messages ---


def copy_of(root: Path, tmp_path: Path) -> Path:
    """A private copy of a session dataset, to break files in."""
    return Path(shutil.copytree(root, tmp_path / "data"))


def test_evaluate_checks_its_outputs_first_and_overwrites_nothing(checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    last = Path(shutil.copy(checkpoint, run_dir / "last.pt"))
    best = Path(shutil.copy(checkpoint, run_dir / "best.pt"))
    before = last.read_bytes()
    scores = tmp_path / "scores.json"
    scores.write_text("old scores")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = [
        (["--output-json", best], ["best.pt already exists", "--overwrite"]),
        (["--output-json", last], ["is the checkpoint"]),
        (["--output-json", last, "--overwrite"], ["is the checkpoint"]),
        (["--output-json", scores], ["scores.json already exists", "--overwrite"]),
        (["--output-json", run_dir], ["is a folder", "--output-json"]),
        (["--output-json", blocker / "s.json"], ["cannot write", "--output-json"]),
        (["--export-dir", blocker / "preds"], ["cannot create", "--export-dir"]),
    ]
    for args, fragments in cases:
        result = run_script("evaluate.py", "--checkpoint", last, "--workers", 0, *args)
        assert_one_line_error(result, *fragments)
        assert result.stdout == "", "refused only after scoring"
    assert last.read_bytes() == before and best.read_bytes() == before
    assert scores.read_text() == "old scores"
    assert sorted(path.name for path in run_dir.iterdir()) == ["best.pt", "last.pt"]

    args = ["--checkpoint", last, "--workers", 0, "--output-json", scores, "--overwrite"]
    result = run_script("evaluate.py", *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(scores.read_text())["images"] == 6
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "run", "scores.json"]


def test_a_corrupt_validation_file_stops_training_before_the_first_step(
    cityscapes_root, tmp_path, small_config
):
    data = copy_of(cityscapes_root, tmp_path)
    broken = sorted((data / "leftImg8bit" / "val").glob("*/*.png"))[-1]
    broken.write_bytes(b"")
    config = write_yaml(tmp_path / "c.yaml", small_config(data, tmp_path / "run"))
    result = run_script("train.py", "--config", config)
    assert_one_line_error(result, str(broken), "is empty")
    assert not (tmp_path / "run").exists()


def write_pair(folder: Path, image: np.ndarray, label: np.ndarray, label_suffix=".png"):
    from segmentation.data.dataset import Sample

    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / "x_image.png", folder / f"x_label{label_suffix}"
    cv2.imwrite(str(image_path), image)
    cv2.imwrite(str(label_path), label)
    return Sample(image_path, label_path, "x", "group")


def header_cases(tmp: Path) -> dict:
    """name -> (dataset, samples, fragments of the error; None: accepted)."""
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
    ids = np.full((40, 60), 7, np.uint8)
    rgb = np.dstack([ids] * 3)
    cases = {
        "good cityscapes": ("cityscapes", write_pair(tmp / "a", image, ids), None),
        "good kitti": ("kitti", write_pair(tmp / "b", image, rgb), None),
        "label of another size": (
            "cityscapes",
            write_pair(tmp / "c", image, ids[:30]),
            ["x_label.png is 60x30", "x_image.png is 60x40"],
        ),
        "rgb cityscapes label": (
            "cityscapes",
            write_pair(tmp / "d", image, rgb),
            ["x_label.png", "single-channel 8-bit"],
        ),
        "16-bit cityscapes label": (
            "cityscapes",
            write_pair(tmp / "e", image, ids.astype(np.uint16)),
            ["x_label.png", "single-channel 8-bit"],
        ),
        "grey kitti label": (
            "kitti",
            write_pair(tmp / "f", image, ids),
            ["x_label.png", "RGB"],
        ),
        "jpeg label": (
            "cityscapes",
            write_pair(tmp / "g", image, ids, label_suffix=".jpg"),
            ["x_label.jpg", "JPEG", "not a PNG"],
        ),
    }
    # An image that is a JPEG is fine; its size comes from the SOF marker.
    jpeg_image = write_pair(tmp / "h", image, ids[:, :50])
    cv2.imwrite(str(jpeg_image.image_path.with_suffix(".jpg")), image)
    jpeg_image.image_path.with_suffix(".jpg").replace(jpeg_image.image_path)
    cases["jpeg image of another size"] = ("cityscapes", jpeg_image, ["is 50x40", "is 60x40"])
    truncated = write_pair(tmp / "i", image, ids)
    truncated.image_path.write_bytes(truncated.image_path.read_bytes()[:-100])
    cases["truncated image"] = ("cityscapes", truncated, ["x_image.png", "truncated"])
    text = write_pair(tmp / "j", image, ids)
    text.image_path.write_text("not an image at all, but long enough to have a header")
    cases["text image"] = ("cityscapes", text, ["x_image.png", "neither a PNG nor a JPEG"])
    return cases


def test_the_start_up_check_reads_headers_and_names_the_file(tmp_path):
    from segmentation.data.headers import check_headers

    for name, (dataset, sample, fragments) in header_cases(tmp_path).items():
        if fragments is None:
            check_headers([sample], dataset)
            continue
        with pytest.raises(UserError) as raised:
            check_headers([sample], dataset)
        for fragment in fragments:
            assert fragment in str(raised.value), (name, str(raised.value))


def test_a_jpeg_label_renamed_png_is_refused(cityscapes_root, tmp_path, small_config):
    from segmentation.data.io import read_label_ids
    from segmentation.data.kitti import read_kitti_codes

    data = copy_of(cityscapes_root, tmp_path)
    label = sorted((data / "gtFine" / "train").glob("*/*_labelIds.png"))[0]
    ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    label.write_bytes(cv2.imencode(".jpg", ids)[1].tobytes())
    config = write_yaml(tmp_path / "c.yaml", small_config(data, tmp_path / "run"))
    result = run_script("train.py", "--config", config)
    assert_one_line_error(result, str(label), "not a PNG")
    assert not (tmp_path / "run").exists()
    # Read directly, it is refused too: evaluation reads labels without the start-up check.
    for read in (read_label_ids, read_kitti_codes):
        with pytest.raises(UserError, match="not a PNG"):
            read(label)


def test_inference_refuses_an_output_folder_inside_its_input(checkpoint, cityscapes_root, tmp_path):
    frames = Path(
        shutil.copytree(cityscapes_root / "leftImg8bit" / "val" / "lindau", tmp_path / "f")
    )
    names = sorted(path.name for path in frames.iterdir())
    for source, output in [
        (frames, frames),
        (frames, frames / "renders"),
        (f"{frames}/*.png", frames),
    ]:
        result = run_script(
            "inference.py", "--checkpoint", checkpoint, "--input", source, "--output", output
        )
        assert_one_line_error(result, "--output", "inside the input")
    assert sorted(path.name for path in frames.iterdir()) == names


def test_a_nan_prediction_is_an_error_naming_the_image(
    trained_checkpoint, tmp_path, monkeypatch, capsys, one_thread
):
    import evaluate
    from segmentation.inference import model as model_module

    load = model_module.load_trained_model

    def nan_model(*args, **kwargs):
        trained = load(*args, **kwargs)
        forward = trained.model.forward
        trained.model.forward = lambda images: forward(images) * float("nan")
        return trained

    monkeypatch.setattr(model_module, "load_trained_model", nan_model)
    checkpoint = trained_checkpoint("kitti", "road")
    export = tmp_path / "export"
    for extra in ([], ["--export-dir", str(export)]):
        assert evaluate.main(["--checkpoint", str(checkpoint), "--workers", "0", *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1, lines
        assert "NaN" in errors[0] and "_0000" in errors[0], errors[0]
    assert not list(export.rglob("*.png"))


@pytest.mark.parametrize("scales", ["nan", "1,inf"])
def test_scales_must_be_finite_numbers(scales, checkpoint, cityscapes_root, tmp_path):
    frames = cityscapes_root / "leftImg8bit" / "val" / "lindau"
    for script, args in [
        ("evaluate.py", []),
        ("inference.py", ["--input", frames, "--output", tmp_path / "out"]),
    ]:
        common = ["--checkpoint", checkpoint, "--tta", "multiscale", "--scales", scales]
        assert_one_line_error(run_script(script, *common, *args), "--scales", scales)
    assert not (tmp_path / "out").exists()


def make_video(*args) -> subprocess.CompletedProcess:
    # The script finds imageio-ffmpeg's binary through $PYTHON when no ffmpeg is on PATH.
    return subprocess.run(
        ["bash", str(REPO / "make_video.sh"), *map(str, args)],
        env={**ENV, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_video_takes_any_folder_name_and_fails_in_one_line(tmp_path):
    frames = tmp_path / "br[1] {a,b} 50% $x"
    frames.mkdir()
    for index in range(12):
        image = np.full((32, 48, 3), 20 * index, np.uint8)
        cv2.imwrite(str(frames / f"frame_{index:06d}_overlay.png"), image)
    output = tmp_path / "v[1]" / "out.mp4"
    result = make_video(frames, output, 10, "*_overlay.png")
    assert result.returncode == 0, result.stderr
    assert "12 frames" in result.stdout
    capture = cv2.VideoCapture(str(output))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    capture.release()
    assert decoded == 12

    for fps in ("0", "0.0"):
        result = make_video(frames, tmp_path / "zero.mp4", fps)
        assert result.returncode == 2 and result.stderr.startswith("error: FPS"), result.stderr
        assert result.stderr.count("\n") == 1

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "frame_000000.png").write_text("not a PNG")
    result = make_video(broken, tmp_path / "broken.mp4")
    assert result.returncode != 0
    assert result.stderr.startswith("error: ffmpeg") and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert not (tmp_path / "broken.mp4").exists()


def tiny_files() -> None:
    """In the child: writes past 4 KiB fail with EFBIG, as on a full disk (no SIGXFSZ kill)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_inference_on_a_full_disk_is_one_line(checkpoint, cityscapes_root, tmp_path):
    output = tmp_path / "out"
    command = [
        sys.executable,
        str(REPO / "inference.py"),
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(cityscapes_root / "leftImg8bit" / "val" / "lindau"),
        "--output",
        str(output),
        "--workers",
        "0",
    ]
    result = subprocess.run(
        command,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        preexec_fn=tiny_files,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), lines
    assert "File too large" in lines[0]
    assert list(output.iterdir()) == []


def test_label_schemes_do_not_combine_with_label_names(cityscapes_root, tmp_path, small_config):
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, tmp_path / "run"))
    result = run_script("train.py", "--config", config, "--labels", "categories,road")
    assert_one_line_error(result, "'categories'", "cannot be combined with label names", "road")
    assert "unknown" not in result.stderr


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
