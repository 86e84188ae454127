"""bench/gpu_check.py on a machine without CUDA: the refusal (exit 2), two cheap steps on the
CPU with --allow-cpu (the summary's format, results.json, logs, exit 0), and how the budget,
the steps' order and a failure decide a step's line and the exit status."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check

REPO = Path(__file__).resolve().parents[1]
STEP_LINE = re.compile(r"^(PASS|FAIL|SKIP|INFO) +\S+( +.*)?$")
FOOTER = re.compile(r"^PASS (\d+)  FAIL (\d+)  SKIP (\d+)  INFO (\d+)  in \d+s on (\w+); exit (\d)")
no_cuda_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")


def run_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)


@no_cuda_only
def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path):
    result = run_check(tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if STEP_LINE.match(line)]
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("FAIL environment") and "--allow-cpu" in lines[0]


@no_cuda_only
def test_two_cheap_steps_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    result = run_check(out, "--allow-cpu", "--only", "data_cityscapes", "sync_probe")
    assert result.returncode == 0, result.stdout + result.stderr
    *lines, footer = (out / "summary.txt").read_text().splitlines()
    assert lines and all(STEP_LINE.match(line) for line in lines), lines
    status = {line.split()[1]: line.split()[0] for line in lines}
    assert status["data_cityscapes"] == "PASS"
    # The probe trains on batches shaped as the DataLoader ships them; syncs are CUDA's to count.
    assert status["sync_probe"] == "PASS"
    assert "1 scenario(s) ran on the CPU; host syncs are counted on CUDA" in next(
        line for line in lines if " sync_probe " in line
    )
    assert status["device"] == "INFO"
    counts = FOOTER.match(footer)
    assert counts and counts.groups()[:3] == ("2", "0", "0") and counts[5] == "cpu", footer
    assert counts[6] == "0"
    for line in lines:  # printed as written
        assert line in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["exit_code"] == 0 and results["device"] == "cpu"
    steps = {step["name"]: step for step in results["steps"]}
    assert Path(steps["data_cityscapes"]["log"]).is_file()
    assert not (out / "work").exists()  # all passed: the generated data is gone


def make_context(tmp_path: Path, **options) -> gpu_check.Context:
    values = {"budget": 600.0, "quick": False, "only": None, "keep_work": True, "jobs": 1}
    args = argparse.Namespace(**{**values, **options})
    (tmp_path / "logs").mkdir(exist_ok=True)
    return gpu_check.Context(args=args, out=tmp_path, work=tmp_path / "work", device="cpu")


def test_steps_past_the_budget_or_without_their_inputs_skip(tmp_path):
    steps = gpu_check.all_steps()
    ctx = make_context(tmp_path, budget=0.0)
    assert gpu_check.skip_reason(ctx, steps["data_cityscapes"]).startswith("time budget")
    ctx = make_context(tmp_path)
    assert gpu_check.skip_reason(ctx, steps["train_bf16"]) == "needs data_cityscapes (not run)"
    assert "fp16" in gpu_check.skip_reason(ctx, steps["train_fp16"])  # on the CPU
    quick = make_context(tmp_path, quick=True)
    assert gpu_check.skip_reason(quick, steps["bench_quick"]) == "not part of --quick"


def test_a_failed_step_makes_the_exit_status_1(tmp_path):
    ctx = make_context(tmp_path)
    ctx.record(gpu_check.Outcome("PASS", "data_cityscapes", "2s"))
    ctx.record(gpu_check.Outcome("FAIL", "train_bf16", "exit 1: boom"))
    assert gpu_check.finish(ctx) == 1
    *lines, footer = (tmp_path / "summary.txt").read_text().splitlines()
    assert lines[1].startswith("FAIL train_bf16") and "exit 1: boom" in lines[1]
    assert FOOTER.match(footer).groups()[:2] == ("1", "1")
    assert json.loads((tmp_path / "results.json").read_text())["exit_code"] == 1


def test_every_step_is_in_one_phase_after_what_it_needs():
    where = {
        name: (phase_index, chain_index, position)
        for phase_index, phase in enumerate(gpu_check.PHASES)
        for chain_index, chain in enumerate(phase)
        for position, name in enumerate(chain)
    }
    assert sorted(where) == sorted(gpu_check.all_steps())
    assert sum(len(chain) for phase in gpu_check.PHASES for chain in phase) == len(where)
    for step in gpu_check.all_steps().values():
        phase, chain, position = where[step.name]
        for needed in step.needs:  # an earlier phase, or earlier in the same chain
            other = where[needed]
            assert other[0] < phase or (other[:2] == (phase, chain) and other[2] < position)
