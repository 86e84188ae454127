"""The real command lines, run as the user runs them: train.py, evaluate.py and inference.py
as subprocesses (one torch thread each) or their main() in the test's process, their one-line
errors, and a training process to signal. Shared by the tests of signals, run directories,
checkpoints and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

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


def call_main(capsys, script: str, *args) -> subprocess.CompletedProcess:
    """A script's main() called in this process, its exit code and output as run_script gives
    them: seconds faster than a child Python (torch's import), for tests of what a script says
    and writes, not of how its process ends."""
    module = __import__(script.removesuffix(".py"))
    capsys.readouterr()  # what came before is not this call's
    try:
        code = module.main([str(arg) for arg in args])
    except SystemExit as exit_:  # argparse's refusals
        code = exit_.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess([script, *args], code, captured.out, captured.err)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def start_training(config: Path, *extra, session: bool = True) -> subprocess.Popen:
    """train.py in its own process group (a job as a cluster or systemd runs it)."""
    command = [sys.executable, str(REPO / "train.py"), "--config", str(config), *map(str, extra)]
    return subprocess.Popen(
        command, env=ENV, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=session
    )


def wait_for(
    condition: Callable[[], bool], process: subprocess.Popen, what: str, seconds: float = 240
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended before {what}: {process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


def first_steps_logged(run_dir: Path) -> Callable[[], bool]:
    # log_every 1: a TensorBoard event file grows after every step.
    def logged() -> bool:
        events = list((run_dir / "tensorboard").glob("events.*"))
        return bool(events) and events[0].stat().st_size > 400

    return logged
