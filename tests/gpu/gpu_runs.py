"""What the GPU tests share: the time budget, the scripts as child processes with their logs,
and the checks of a finished training run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
STARTED = time.monotonic()  # this module is imported when the session starts (by conftest.py)
# The environment variables that steer these tests (bench/gpu_check.py sets them).
ON_CPU = os.environ.get("SEGMENTATION_GPU_TESTS_ON_CPU") == "1"
QUICK = os.environ.get("SEGMENTATION_GPU_QUICK") == "1"
BUDGET = os.environ.get("SEGMENTATION_GPU_BUDGET")  # seconds for the session; none: no limit


def seconds_left() -> float:
    """What is left of the session's time budget (SEGMENTATION_GPU_BUDGET)."""
    if not BUDGET:
        return math.inf
    return float(BUDGET) - (time.monotonic() - STARTED)


def script_environment(work: Path) -> dict[str, str]:
    """The scripts' environment: unbuffered output, caches in the work folder (nothing of the
    user's is read or written; a download attempt finds an empty cache), no hub access."""
    env = dict(os.environ)
    python_path = env.get("PYTHONPATH")
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        MPLBACKEND="Agg",
        XDG_CACHE_HOME=str(work / "cache"),
        TORCH_HOME=str(work / "torch_home"),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO_ROOT) + (os.pathsep + python_path if python_path else ""),
    )
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on busy cores
    return env


class Script:
    """A command started now in its own process group (torchrun's ranks and DataLoader
    workers with it), its output in LOG_DIR/NAME.log."""

    def __init__(self, name: str, command: list[str], log_dir: Path, work: Path, timeout: float):
        self.name, self.timeout, self.started = name, timeout, time.monotonic()
        self.log = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as handle:
            handle.write(f"=== {' '.join(command)}\n")
            handle.flush()
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=script_environment(work),
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, expect_success: bool = True) -> str:
        """Wait for the exit (within its timeout and the budget left); its output. Raises
        AssertionError on a timeout, and on a non-zero exit when success is expected."""
        own = self.timeout - (time.monotonic() - self.started)
        timeout = max(min(own, seconds_left()), 1)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            cut = " (cut to the time budget: raise --budget)" if timeout < own else ""
            raise AssertionError(
                f"{self.name} timed out after {time.monotonic() - self.started:.0f}s{cut}: "
                f"{last_lines(self.output())} (log {self.log})"
            ) from None
        if expect_success and code != 0:
            said = last_lines(self.output())
            raise AssertionError(f"{self.name} exit {code}: {said} (log {self.log})")
        return self.output()

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there 15 s later."""
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue


def last_lines(text: str, count: int = 2, width: int = 300) -> str:
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    return " | ".join(lines[-count:])[-width:] or "no output"


def train_arguments(data_root: Path, run_dir: Path, device: str, *extra: str) -> list[str]:
    """train.py's arguments for the demo config (FPN-resnet18, 8 categories, pretrained: null)
    over the 64x128 Cityscapes tree, at a constant learning rate (so that a resumed run can be
    held against a straight one)."""
    return [
        *("--config", "configs/demo.yaml", "--data-root", str(data_root)),
        *("--output-dir", str(run_dir), "--device", device, "--workers", "2"),
        *("--image-size", "64x128", "--set", "optim.scheduler=none"),
        *("--set", "optim.warmup_iters=0", *extra),
    ]


def epochs_logged(run_dir: Path, epochs: int, *files: str) -> str:
    """Assert that the run's metrics.jsonl holds `epochs` epochs with finite losses and that
    last.pt and `files` exist; what its last epoch says."""
    path = run_dir / "metrics.jsonl"
    text = path.read_text() if path.is_file() else ""
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(records) == epochs, f"{path} holds {len(records)} epochs, not {epochs}"
    last = records[-1]
    for key in ("train_loss", "val_loss"):
        assert math.isfinite(last.get(key) or math.nan), f"{key} {last.get(key)} in {path}"
    missing = [name for name in ("last.pt", *files) if not (run_dir / name).is_file()]
    assert not missing, f"no {', '.join(missing)} in {run_dir}"
    miou = last.get("val_mIoU") or 0.0
    return f"epoch {epochs}: train loss {last['train_loss']:.3f}, val mIoU {miou:.3f}"
