"""The GPU acceptance tests (`pytest -m gpu tests/gpu`, or bench/gpu_check.py): the CUDA code
paths that the CPU suite never reaches, through the real scripts on the tiny generated trees,
every model with `pretrained: null` (nothing is downloaded).

Without CUDA they skip at collection ("needs CUDA"), building nothing. The environment:
SEGMENTATION_GPU_TESTS_ON_CPU=1 runs them on the CPU instead (those that need CUDA skip);
SEGMENTATION_GPU_BUDGET=SECONDS skips the tests that no longer fit ("time budget spent");
SEGMENTATION_GPU_QUICK=1 skips those marked `gpu(quick=False)`; SEGMENTATION_GPU_OUT=DIR
keeps the scripts' logs (DIR/logs) and reports (the benchmark table) there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from gpu_runs import (
    ON_CPU,
    PYTHON,
    QUICK,
    Script,
    seconds_left,
    train_arguments,
)

# The modules in the order they run, the most valuable first: a short lease that runs out of
# time loses the benchmarks, not the training checks.
MODULE_ORDER = (
    "test_gpu_training",
    "test_gpu_syncs",
    "test_gpu_scripts",
    "test_gpu_video",
    "test_gpu_distributed",
    "test_gpu_cache",
    "test_gpu_compile",
    "test_gpu_end_to_end",
    "test_gpu_benchmarks",
)
DEFAULT_SECONDS = 20  # what a test needs of the budget to start, unless its marker says

BF16 = ("--amp", "bf16", "--set", "train.log_every=1", "--set", "train.grad_clip=1.0")
# Batches of 2 of the 15 training images with accumulate=2: 4 optimizer steps an epoch, so that
# the encoder thaws (freeze_encoder_iters=2) within the first epoch.
FP16 = (
    *("--amp", "fp16", "--set", "loss.name=bce_dice", "--set", "loss.class_weights=auto"),
    *("--set", "loss.options={weighted_bce: true}", "--set", "train.accumulate=2"),
    *("--set", "train.freeze_encoder_iters=2", "--set", "train.grad_clip=1.0"),
    *("--batch-size", "2"),
)
SGD_FP16 = (  # SGD is not fused: GradScaler's own step path
    *("--amp", "fp16", "--model", "unet", "--set", "model.options={num_filters: 16}"),
    *("--set", "optim.optimizer=sgd", "--set", "optim.scheduler=poly"),
)
# name: (dataset fixture, train.py's arguments after the run folder and device, needs CUDA)
TRAININGS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "bf16": ("cityscapes_root", (*BF16, "--epochs", "2", "--batch-size", "4"), False),
    "bf16_part": ("cityscapes_root", (*BF16, "--epochs", "1", "--batch-size", "4"), False),
    "fp16": ("cityscapes_root", (*FP16, "--epochs", "2"), True),
    "sgd_fp16": ("cityscapes_root", (*SGD_FP16, "--epochs", "1", "--batch-size", "4"), True),
    "kitti": ("kitti_root", (), False),  # its own config: see kitti_command
}
FP16_ON_CPU = "fp16 autocast needs CUDA (train.py refuses it on the CPU)"


def module_rank(item: pytest.Item) -> int:
    name = item.path.stem
    return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The GPU tests in MODULE_ORDER (the others stay where they are), skipped without CUDA."""
    places = [index for index, item in enumerate(items) if item.get_closest_marker("gpu")]
    ordered = sorted((items[index] for index in places), key=module_rank)
    no_cuda = not torch.cuda.is_available() and not ON_CPU
    for index, item in zip(places, ordered):
        items[index] = item
        if no_cuda:
            reason = "needs CUDA (SEGMENTATION_GPU_TESTS_ON_CPU=1 runs them on the CPU)"
            item.add_marker(pytest.mark.skip(reason=reason))
        elif QUICK and not item.get_closest_marker("gpu").kwargs.get("quick", True):
            item.add_marker(pytest.mark.skip(reason="not part of --quick"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test that no longer fits the time budget, before its fixtures are built (this
    hook runs after the skip markers' and before pytest's own, which builds them)."""
    needs = item.get_closest_marker("gpu").kwargs.get("seconds", DEFAULT_SECONDS)
    left = seconds_left()
    if left < needs:
        pytest.skip(f"time budget spent ({max(left, 0):.0f}s left, needs ~{needs}s)")


@pytest.fixture(scope="session")
def device() -> str:
    return "cpu" if ON_CPU and not torch.cuda.is_available() else "cuda"


@pytest.fixture(scope="session")
def out(tmp_path_factory) -> Path:
    """Where the logs and reports go: SEGMENTATION_GPU_OUT, or a session folder."""
    folder = os.environ.get("SEGMENTATION_GPU_OUT")
    return Path(folder) if folder else tmp_path_factory.mktemp("gpu-out")


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gpu-work")


@pytest.fixture(scope="session")
def script(out, work) -> Callable[..., Script]:
    """`script(name, command, timeout=240)`: start `command` from the repository root, its
    output in OUT/logs/NAME.log (Script.wait for its exit)."""

    def start(name: str, command: list[str], timeout: float = 240) -> Script:
        return Script(name, command, out / "logs", work, timeout)

    return start


def kitti_command(data_root: Path, run_dir: Path, device: str) -> list[str]:
    """KITTI road (the binary sigmoid head) from its own config, small."""
    return [
        *(PYTHON, "train.py", "--config", "configs/kitti_fpn_road.yaml"),
        *("--data-root", str(data_root), "--output-dir", str(run_dir), "--device", device),
        *("--backbone", "resnet18", "--image-size", "64x192", "--set", "model.pretrained=null"),
        *("--set", "data.val_fraction=0.25", "--epochs", "1", "--batch-size", "4"),
        *("--workers", "2"),
    ]


@pytest.fixture(scope="session", autouse=True)
def trainings(request, device, script, work) -> Iterator[dict[str, Script]]:
    """The training runs that the tests about to run use, all started at once (each test
    then waits for its own): on a GPU these runs take longer to start up than to train."""
    wanted = {
        name
        for item in request.session.items
        if item.get_closest_marker("gpu") and not item.get_closest_marker("skip")
        for name in item.fixturenames
    }
    started = {}
    for name, (data, arguments, needs_cuda) in TRAININGS.items():
        if f"{name}_run" not in wanted or (needs_cuda and device != "cuda"):
            continue
        data_root = request.getfixturevalue(data)
        run_dir = work / "runs" / name
        if name == "kitti":
            command = kitti_command(data_root, run_dir, device)
        else:
            command = [PYTHON, "train.py", *train_arguments(data_root, run_dir, device, *arguments)]
        started[name] = script(f"train_{name}", command, timeout=300)
    yield started
    for run in started.values():  # those whose tests the budget skipped
        run.stop()


def finished_run(trainings: dict[str, Script], work: Path, name: str) -> Path:
    """The folder of training run `name`, once it finished well."""
    if name not in trainings:  # on the CPU, the fp16 runs are not started
        pytest.skip(FP16_ON_CPU)
    trainings[name].wait()
    return work / "runs" / name


@pytest.fixture(scope="session")
def bf16_run(trainings, work) -> Path:
    """2 epochs under bf16 autocast with clipping, a log line per step: best.pt, last.pt."""
    return finished_run(trainings, work, "bf16")


@pytest.fixture(scope="session")
def bf16_part_run(trainings, work) -> Path:
    """The first of bf16_run's 2 epochs: the same run, to be resumed."""
    return finished_run(trainings, work, "bf16_part")


@pytest.fixture(scope="session")
def fp16_run(trainings, work) -> Path:
    """2 epochs under fp16 autocast (GradScaler), bce_dice with class weights, accumulate=2,
    a frozen encoder that thaws after 2 steps, clipping."""
    return finished_run(trainings, work, "fp16")


@pytest.fixture(scope="session")
def sgd_fp16_run(trainings, work) -> Path:
    """1 epoch of a small UNET under fp16 with SGD and the poly schedule."""
    return finished_run(trainings, work, "sgd_fp16")


@pytest.fixture(scope="session")
def kitti_run(trainings, work) -> Path:
    """1 epoch of KITTI road (configs/kitti_fpn_road.yaml, resnet18, 64x192)."""
    return finished_run(trainings, work, "kitti")
