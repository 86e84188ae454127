"""The GPU acceptance check on a lent machine: `pytest -m gpu tests/gpu` under a time budget.

    python bench/gpu_check.py [--out DIR] [--budget SECONDS] [--quick] [--only NAME ...]
        [--wheels DIR] [--keep-work] [--allow-cpu]

The tests (tests/gpu/) run the real scripts on generated data, every model with `pretrained:
null`: nothing is downloaded. Writes DIR/summary.txt (one line per test, `PASS|FAIL|SKIP name
detail`, then the counts), DIR/results.xml (JUnit), DIR/pytest.log (pytest's whole output) and
DIR/logs/NAME.log (every script a test ran); default DIR: runs/gpu_check/DATE-TIME. Tests that
no longer fit the budget skip, the most valuable run first. DIR/work (data, runs) is deleted
when every test passed. Exit status: 0 when no test failed, 1 when one did, 2 when the machine
cannot run the check (no CUDA without --allow-cpu, missing modules).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_BAD_ENVIRONMENT = 2
# Import names of requirements.txt that the tests need (imageio_ffmpeg, make_video.sh's
# fallback ffmpeg, is not among them), and pytest.
RUNTIME_MODULES = (
    *("torch", "torchvision", "albumentations", "cv2", "numpy", "tqdm", "tensorboard"),
    *("torchsummary", "yaml", "cityscapesscripts", "psutil", "pydantic", "pytest"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, help="results folder, new or empty (default runs/gpu_check/DATE-TIME)"
    )
    parser.add_argument("--budget", type=float, default=580, help="seconds (default 580)")
    parser.add_argument("--quick", action="store_true", help="the core tests only (~2 min)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="the tests whose names contain a NAME"
    )
    parser.add_argument(
        "--wheels",
        type=Path,
        metavar="DIR",
        help="install missing modules offline: "
        "pip install --no-index --find-links DIR -r requirements-dev.txt",
    )
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep DIR/work (data, runs) even when every test passed (a failure keeps it)",
    )
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without CUDA, run the tests on the CPU (to check the tests; slow) instead of "
        "exiting with status 2",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = REPO_ROOT / "runs" / "gpu_check" / stamp
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out {args.out} is not a new or empty folder")
    args.out = args.out.resolve()
    return args


def missing_modules() -> list[str]:
    importlib.invalidate_caches()
    return [name for name in RUNTIME_MODULES if importlib.util.find_spec(name) is None]


def install_wheels(wheels: Path, out: Path) -> None:
    """pip install --no-index --find-links WHEELS -r requirements-dev.txt into this
    interpreter, keeping the torch it has (a wheel that wants another torch fails instead of
    replacing a CUDA build); pip's output in OUT/logs/wheels.log."""
    try:
        # The public version (2.9.1, not 2.9.1+cu128): it matches the build installed, and a
        # local label in a constraint can make pip's resolver refuse that very build.
        torch = importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        torch = ""
    constraints = out / "constraints.txt"
    constraints.write_text(f"torch=={torch}\n" if torch else "")
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links"]
    command += [str(wheels.resolve()), "-r", str(REPO_ROOT / "requirements-dev.txt")]
    with open(out / "logs" / "wheels.log", "w") as log:
        subprocess.run([*command, "-c", str(constraints)], stdout=log, stderr=subprocess.STDOUT)


def environment_problem(args: argparse.Namespace) -> str | None:
    """Why the tests cannot run with this interpreter (after --wheels), or None."""
    missing = missing_modules()
    if missing and args.wheels:
        install_wheels(args.wheels, args.out)
        missing = missing_modules()
    if missing:
        return (
            f"{sys.executable} cannot import {', '.join(missing)}: pip install -r "
            "requirements-dev.txt, or --wheels DIR (a folder of wheels) offline"
        )
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        return (
            f"no usable CUDA GPU (torch {torch.__version__}, CUDA build {torch.version.cuda}, "
            "torch.cuda.is_available() is False): run it on a GPU machine, or add --allow-cpu "
            "to run the tests on the CPU"
        )
    return None


def pytest_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-v", "-p", "no:xdist"]
    command += ["-p", "no:cacheprovider", "--basetemp", str(args.out / "work")]
    # xunit1: the JUnit file keeps each test's `detail` property (record_property).
    command += ["-o", "junit_family=xunit1", "--junitxml", str(args.out / "results.xml")]
    if args.only:
        command += ["-k", " or ".join(args.only)]
    if importlib.util.find_spec("pytest_timeout"):  # a test that hangs in-process
        command += ["--timeout", "900"]
    return command


def run_pytest(args: argparse.Namespace, seconds_left: float) -> int:
    """pytest's exit status; its output on the terminal and in OUT/pytest.log."""
    env = dict(os.environ, SEGMENTATION_GPU_OUT=str(args.out))
    env["SEGMENTATION_GPU_BUDGET"] = f"{seconds_left:.0f}"
    env["SEGMENTATION_GPU_QUICK"] = "1" if args.quick else "0"
    env["SEGMENTATION_GPU_TESTS_ON_CPU"] = "1" if args.allow_cpu else "0"
    with open(args.out / "pytest.log", "w") as log:
        process = subprocess.Popen(
            pytest_command(args),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            for line in process.stdout:
                sys.stdout.write(line)
                log.write(line)
        except KeyboardInterrupt:  # pytest got it too: it stops and writes its report
            pass
        return process.wait()


def summary_line(status: str, name: str, detail: str) -> str:
    return f"{status:<4} {name:<50} {detail}".rstrip()


def outcome_line(case: ElementTree.Element) -> str:
    """A JUnit testcase as a summary line: FAIL (a failure or an error) with the first line of
    its message, SKIP with the reason, PASS with the seconds and what the test recorded."""
    name = case.get("name", "?")
    for tag, status in (("failure", "FAIL"), ("error", "FAIL"), ("skipped", "SKIP")):
        found = case.find(tag)
        if found is not None:
            message = (found.get("message") or found.text or tag).strip().splitlines()
            return summary_line(status, name, message[0][:400] if message else tag)
    recorded = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
    seconds = f"{float(case.get('time') or 0):.0f}s"
    return summary_line("PASS", name, "; ".join(filter(None, (seconds, recorded.get("detail")))))


def summary_lines(junit: Path) -> list[str]:
    if not junit.is_file():
        return []
    return [outcome_line(case) for case in ElementTree.parse(junit).getroot().iter("testcase")]


def write_summary(out: Path, lines: list[str], code: int, device: str, seconds: float) -> None:
    counts = "  ".join(
        f"{status} {sum(line.startswith(status) for line in lines)}"
        for status in ("PASS", "FAIL", "SKIP")
    )
    footer = f"{counts}  in {seconds:.0f}s on {device}; exit {code}; results in {out}"
    (out / "summary.txt").write_text("\n".join([*lines, footer]) + "\n")
    print("\n==== gpu_check summary ====\n" + "\n".join([*lines, footer]), flush=True)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: project {REPO_ROOT}, results in {args.out}, budget {args.budget:.0f}s")
    problem = environment_problem(args)
    if problem:
        line = summary_line("FAIL", "environment", problem)
        print(line, flush=True)
        (args.out / "summary.txt").write_text(line + "\n")
        return EXIT_BAD_ENVIRONMENT
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    status = run_pytest(args, args.budget - (time.monotonic() - started))
    lines = summary_lines(args.out / "results.xml")
    code = 0 if status == 0 else 1
    if status == 5:  # no test selected: a mistake in --only
        code = EXIT_BAD_ENVIRONMENT
        only = " ".join(args.only or ())
        lines.append(summary_line("FAIL", "selection", f"no GPU test name contains {only}"))
    elif status not in (0, 1):  # interrupted, or pytest itself failed
        lines.append(summary_line("FAIL", "pytest", f"exit {status}: see {args.out}/pytest.log"))
    write_summary(args.out, lines, code, device, time.monotonic() - started)
    if code == 0 and not args.keep_work:
        shutil.rmtree(args.out / "work", ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
