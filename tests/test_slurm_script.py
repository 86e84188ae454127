"""scripts/slurm_train.sbatch without a cluster: lint, and its runs under fake srun, torchrun,
scontrol and scancel (on PATH, each logging its arguments) with SLURM's variables set: a new
run starts from the config, a run with last.pt resumes, a stopped run requeues itself and a
crashed one does not, and the time-limit signal stops training and requeues."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_train.sbatch"

FAKES = {
    # srun: log, drop its own options, run the command (torchrun) in its place.
    "srun": 'echo "srun $*" >>"$FAKE_LOG"\nwhile [[ $1 == -* ]]; do shift; done\nexec "$@"\n',
    # torchrun: log; exit FAKE_STATUS, or with FAKE_WAIT run until SIGTERM and then exit 1,
    # as the real torchrun does when a signal stops it (not with its ranks' 143).
    "torchrun": (
        'echo "torchrun $*" >>"$FAKE_LOG"\necho $$ >"$FAKE_DIR/torchrun.pid"\n'
        "if [[ -n ${FAKE_WAIT:-} ]]; then\n"
        "    trap 'exit 1' TERM\n    while true; do sleep 0.1; done\nfi\n"
        'exit "${FAKE_STATUS:-0}"\n'
    ),
    "scontrol": (
        'if [[ $1 == show && $2 == hostnames ]]; then printf "node7\\nnode8\\n"; exit 0; fi\n'
        'echo "scontrol $*" >>"$FAKE_LOG"\n'
    ),
    # scancel --signal=TERM JOB: what the steps would get.
    "scancel": 'echo "scancel $*" >>"$FAKE_LOG"\nkill -TERM "$(cat "$FAKE_DIR/torchrun.pid")"\n',
}


@pytest.fixture
def cluster(tmp_path) -> dict[str, str]:
    """PATH with the fakes first and a job's variables; the job was submitted from tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "node[7-8]",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_DIR": str(tmp_path),
    }


def submit(env: dict, *args: str, **extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = Path(env["FAKE_LOG"])
    return result, log.read_text().splitlines() if log.is_file() else []


def torchrun_call(calls: list[str]) -> str:
    (call,) = [line for line in calls if line.startswith("torchrun ")]
    return call


def test_script_lints():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    text = SCRIPT.read_text()
    for directive in ("--requeue", "--ntasks-per-node=1", "--signal=B:USR1@120"):
        assert f"#SBATCH {directive}" in text
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is missing (apt-get install shellcheck): bash -n only")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_a_new_run_starts_from_its_config(cluster):
    result, calls = submit(cluster, "configs/demo.yaml", "runs/r", "--data-root", "/d")
    assert result.returncode == 0, result.stdout + result.stderr
    call = torchrun_call(calls)
    assert call.startswith(
        "torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d "
        "--rdzv_endpoint=node7:29400 --rdzv_id=4242 train.py"
    )
    assert call.endswith("train.py --config configs/demo.yaml --output-dir runs/r --data-root /d")
    assert not any(line.startswith("scontrol requeue") for line in calls)


def test_a_run_with_last_pt_resumes(cluster, tmp_path):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "last.pt").write_bytes(b"")
    result, calls = submit(cluster, "configs/demo.yaml", "runs/r", "--data-root", "/d")
    assert result.returncode == 0, result.stdout + result.stderr
    call = torchrun_call(calls)
    assert call.endswith("train.py --resume runs/r/last.pt --data-root /d")
    assert "--config" not in call


@pytest.mark.parametrize(("status", "requeued"), [(143, True), (1, False), (0, False)])
def test_only_a_stopped_run_requeues_itself(cluster, tmp_path, status, requeued):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "last.pt").write_bytes(b"")
    result, calls = submit(cluster, "configs/demo.yaml", "runs/r", FAKE_STATUS=str(status))
    assert ("scontrol requeue 4242" in calls) == requeued, calls
    assert result.returncode == (143 if requeued else status)


def test_the_time_limit_signal_stops_training_and_requeues(cluster, tmp_path):
    process = subprocess.Popen(
        ["bash", str(SCRIPT), "configs/demo.yaml", "runs/r"],
        env={**cluster, "FAKE_WAIT": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pid_file = tmp_path / "torchrun.pid"
    deadline = time.monotonic() + 30
    while not pid_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "runs" / "r").mkdir(parents=True)  # what training saves when it stops
    (tmp_path / "runs" / "r" / "last.pt").write_bytes(b"")
    process.send_signal(signal.SIGUSR1)  # --signal=B:USR1@120: to the batch shell only
    output, _ = process.communicate(timeout=30)
    calls = Path(cluster["FAKE_LOG"]).read_text().splitlines()
    assert "scancel --signal=TERM 4242" in calls, output
    assert "scontrol requeue 4242" in calls, output
    assert process.returncode == 143, output
