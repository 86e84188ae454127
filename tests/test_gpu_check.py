"""The GPU acceptance tests (tests/gpu) and their launcher bench/gpu_check.py on a machine
without CUDA: the tests skip at once, the launcher refuses in one line (exit 2), and with
--allow-cpu runs tests on the CPU (the environment and the sync probe: their code cannot go
stale unseen), writes its summary, skips what no longer fits the budget, and turns JUnit
results into summary lines and an exit status."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(PASS|FAIL|SKIP) +\S+( +.*)?$")
FOOTER = re.compile(r"^PASS (\d+)  FAIL (\d+)  SKIP (\d+)  in \d+s on (\w+); exit (\d)")
no_cuda_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")


def environment() -> dict[str, str]:
    """This environment without the variables that steer the GPU tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTATION_GPU_")}


def run_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(out), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=REPO, env=environment()
    )


def summary(out: Path) -> tuple[dict[str, tuple[str, str]], re.Match | None]:
    """summary.txt's lines as {test: (status, detail)} in their order, and its footer."""
    *lines, footer = (out / "summary.txt").read_text().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    tests = {}
    for line in lines:
        status, name, *detail = line.split(None, 2)
        tests[name] = (status, detail[0] if detail else "")
    return tests, FOOTER.match(footer)


@pytest.mark.slow
@no_cuda_only
def test_without_cuda_the_gpu_tests_skip_at_once_building_nothing(tmp_path):
    basetemp = tmp_path / "basetemp"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "tests/gpu",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
    ]
    result = subprocess.run(
        [*command, "--basetemp", str(basetemp)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=environment(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\n(\d+) skipped in", result.stdout), result.stdout
    assert " passed" not in result.stdout and " failed" not in result.stdout
    reasons = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all("needs CUDA" in line for line in reasons), reasons
    # No fixture ran: no data generated, no run trained.
    assert not basetemp.exists() or not any(basetemp.iterdir()), list(basetemp.iterdir())


@pytest.mark.slow
@no_cuda_only
def test_without_cuda_the_launcher_says_so_in_one_line_and_exits_2(tmp_path):
    result = run_check(tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if LINE.match(line)]
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("FAIL environment") and "--allow-cpu" in lines[0]
    assert (tmp_path / "out" / "summary.txt").read_text().splitlines() == lines


@pytest.mark.slow
@no_cuda_only
def test_the_environment_and_the_sync_probe_run_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    result = run_check(out, "--allow-cpu", "--only", "environment", "syncs")
    assert result.returncode == 0, result.stdout + result.stderr
    tests, footer = summary(out)
    assert tests["test_environment"][0] == "PASS"
    assert "no CUDA: on the CPU" in tests["test_environment"][1]
    # The probe trains on batches shaped as the DataLoader ships them; syncs are CUDA's to count.
    status, detail = tests.pop("test_host_syncs_per_training_step[default]")
    assert status == "PASS" and detail.endswith("ran on the CPU; host syncs are counted on CUDA")
    others = [status for name, (status, _) in tests.items() if "host_syncs" in name]
    assert others == ["SKIP"] * 7
    assert footer and footer.groups() == ("2", "0", "7", "cpu", "0"), footer
    assert (out / "results.xml").is_file() and (out / "pytest.log").is_file()
    assert not (out / "work").exists()  # all passed: the generated data is gone
    assert "==== gpu_check summary ====" in result.stdout


@pytest.mark.slow
@no_cuda_only
def test_a_spent_budget_skips_every_test_most_valuable_first(tmp_path):
    """--quick skips the long tests, the budget (0 s) all others; in the order they run."""
    out = tmp_path / "out"
    result = run_check(out, "--allow-cpu", "--quick", "--budget", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    tests, footer = summary(out)
    names = list(tests)
    assert names[0] == "test_environment" and names[-1] == "test_benchmark_suite"
    assert names.index("test_bf16_training") < names.index("test_ddp_with_two_ranks")
    quick = ("test_bf16_training", "test_environment", "test_host_syncs_per_training_step[bf16]")
    for name in quick:
        assert tests[name][0] == "SKIP" and tests[name][1].startswith("time budget spent")
    for name in ("test_sgd_under_fp16", "test_compiled_training", "test_benchmark_suite"):
        assert tests[name] == ("SKIP", "not part of --quick")
    assert footer and footer.groups()[:3] == ("0", "0", str(len(tests)))


def junit(cases: str) -> str:
    return f'<?xml version="1.0"?><testsuites><testsuite>{cases}</testsuite></testsuites>'


PASSED = (
    '<testcase name="test_bf16_training" time="41.6"><properties>'
    '<property name="detail" value="epoch 2: train loss 1.2" /></properties></testcase>'
)
FAILED = (
    '<testcase name="test_fp16_resume" time="3.0"><failure message="AssertionError: resume_fp16'
    ' exit 1: boom&#10;assert False">long traceback</failure></testcase>'
)
SETUP_ERROR = (
    '<testcase name="test_sgd_under_fp16" time="1.0"><error message="failed on setup with '
    '&quot;AssertionError: train_sgd_fp16 exit 2: error: bad key&quot;">...</error></testcase>'
)
SKIPPED = (
    '<testcase name="test_benchmark_suite" time="0.0"><skipped type="pytest.skip" '
    'message="time budget spent (40s left, needs ~300s)">...</skipped></testcase>'
)


def test_junit_results_become_summary_lines(tmp_path):
    path = tmp_path / "results.xml"
    path.write_text(junit(PASSED + FAILED + SETUP_ERROR + SKIPPED))
    lines = [" ".join(line.split()) for line in gpu_check.summary_lines(path)]
    assert lines == [
        "PASS test_bf16_training 42s; epoch 2: train loss 1.2",
        "FAIL test_fp16_resume AssertionError: resume_fp16 exit 1: boom",
        'FAIL test_sgd_under_fp16 failed on setup with "AssertionError: train_sgd_fp16 exit 2: '
        'error: bad key"',
        "SKIP test_benchmark_suite time budget spent (40s left, needs ~300s)",
    ]


def fake_pytest(status: int, cases: str):
    """A stand-in for run_pytest: writes `cases` as OUT/results.xml and a work folder."""

    def run(args, seconds_left):
        (args.out / "work").mkdir()
        if cases:
            (args.out / "results.xml").write_text(junit(cases))
        return status

    return run


@pytest.mark.parametrize(
    ("status", "cases", "code", "last"),
    [
        (0, PASSED + SKIPPED, 0, "SKIP test_benchmark_suite"),
        (1, PASSED + FAILED, 1, "FAIL test_fp16_resume"),
        (5, "", 2, "FAIL selection no GPU test name contains nothing"),
        (2, PASSED, 1, "FAIL pytest exit 2: see"),
    ],
)
def test_the_exit_status_and_the_work_folder_follow_the_tests(
    tmp_path, monkeypatch, status, cases, code, last
):
    monkeypatch.setattr(gpu_check, "environment_problem", lambda args: None)
    monkeypatch.setattr(gpu_check, "run_pytest", fake_pytest(status, cases))
    out = tmp_path / "out"
    assert gpu_check.main(["--out", str(out), "--allow-cpu", "--only", "nothing"]) == code
    *lines, footer = (out / "summary.txt").read_text().splitlines()
    assert " ".join(lines[-1].split()).startswith(last), lines
    assert FOOTER.match(footer)[5] == str(code)
    assert (out / "work").exists() == (code != 0)  # kept when something failed
