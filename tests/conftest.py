"""Shared fixtures: tiny generated datasets in the real layouts, small run configs, tiny
trained checkpoints, one torch thread, a plain KITTI road devkit, and the optional tools some
tests need (a browser, a C++ compiler): without one such a test skips, saying how to get it."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

# OpenMP threads that wait by spinning turn a busy two-core machine into a crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch
import yaml

import train
from segmentation.sample.folder import generate_folder
from segmentation.sample.generate import generate_cityscapes, generate_kitti

# Two threads at most: the CI machine has two cores, and oversubscription makes tests crawl.
torch.set_num_threads(min(2, torch.get_num_threads()))

TEST_PROCESSES = 2


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Two test processes where pytest-xdist is installed (requirements-dev.txt) and the
    machine has two cores: most tests wait on one core for a child Python, a tiny model or
    a file, so two processes take the suite from about 10 to about 5 minutes on two cores.
    `-n 0` (or `-n N`, or `-p no:xdist`) chooses otherwise; pytest runs started by a test
    process, and machines without xdist (the GPU check's), run in one process."""
    if (
        config.pluginmanager.hasplugin("xdist")
        and config.getoption("numprocesses", None) is None
        and "PYTEST_XDIST_WORKER" not in os.environ
        and (os.cpu_count() or 1) >= TEST_PROCESSES
    ):
        config.option.numprocesses = TEST_PROCESSES


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory) -> Path:
    """A 64x128 Cityscapes tree: 5 train cities x 3, 3 val cities x 2, 2 test x 1, 4 frames x 3."""
    root = tmp_path_factory.mktemp("cityscapes")
    generate_cityscapes(
        root,
        height=64,
        width=128,
        train_per_city=3,
        val_per_city=2,
        test_per_city=1,
        video_frames=4,
        coarse=1,
        seed=1,
    )
    return root


@pytest.fixture(scope="session")
def long_epochs_root(tmp_path_factory) -> Path:
    """A 64x128 Cityscapes tree of 40 training images: 20 steps an epoch at batch 2, long
    enough to interrupt a run mid-epoch."""
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


@pytest.fixture(scope="session")
def kitti_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    generate_kitti(root, scale=0.2, train_per_category=5, test_per_category=1, seed=2)
    return root


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory) -> Callable[[str], Path]:
    """`folder_root(mask_format)`: a 64x128 folder dataset (index or rgb masks) of the same
    scenes: 10 train images (5 cities x 2), 6 val, 2 test without masks; every other image of
    a city 112 pixels wide. Generated once per session and format; copy it before changing it."""
    roots: dict[str, Path] = {}

    def root(mask_format: str) -> Path:
        if mask_format not in roots:
            path = tmp_path_factory.mktemp(f"folder-{mask_format}")
            generate_folder(
                path,
                mask_format=mask_format,
                height=64,
                width=128,
                train_per_city=2,
                val_per_city=2,
                test_per_city=1,
                seed=4,
            )
            roots[mask_format] = path
        return roots[mask_format]

    return root


def make_config(data_root: Path, output_dir: Path, **sections) -> dict:
    """A config dict for a fast CPU run on the tiny trees; sections update it."""
    config = {
        "output_dir": str(output_dir),
        "data": {
            "dataset": "cityscapes",
            "root": str(data_root),
            "labels": "categories",
            "image_size": [32, 64],
            "workers": 0,
        },
        "model": {
            "arch": "fpn",
            "backbone": "resnet18",
            "pretrained": None,
            "options": {"pyramid_channels": 64, "segmentation_channels": 32},
        },
        "loss": {"name": "bce_dice"},
        "optim": {"optimizer": "adam", "lr": 0.001, "scheduler": "plateau"},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "log_images": 2},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


@pytest.fixture(scope="session")
def small_config() -> Callable[..., dict]:
    """`small_config(data_root, output_dir, **sections)`: a config dict for a fast CPU run on
    the tiny trees (see make_config)."""
    return make_config


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch on `count` threads, then restore the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test. Tiny inputs gain nothing from intra-op threads: on a
    busy two-core machine two OpenMP threads spin-wait for each other (these models ran 10-20x
    slower with two). Subprocesses run with OMP_NUM_THREADS=1: in-process runs compared with
    them must use one thread too, to add up floats in the same order. A whole module asks for
    it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, cityscapes_root, kitti_root) -> Callable[[str, str], Path]:
    """`trained_checkpoint(dataset, labels)`: last.pt of a tiny run, trained once per session.

    ("cityscapes", labels): FPN/resnet18 on the 6 val images (one step of 6), input 32x64,
    bce_dice for the categories scheme and ce otherwise. ("kitti", "road"): a sigmoid head (one
    output channel), input 32x96. One epoch of one or two optimizer steps, a second or two on a
    CPU. The models are poor on purpose: the evaluation, inference and export tests compare
    the toolkit with references, not with a quality bar.
    """
    trained: dict[tuple[str, str], Path] = {}

    def sections(dataset: str, labels: str) -> tuple[Path, dict]:
        if dataset == "cityscapes":
            return cityscapes_root, {
                "data": {"labels": labels, "train_split": "val"},  # 6 images: one step of 6
                "loss": {"name": "bce_dice" if labels == "categories" else "ce"},
                "train": {"batch_size": 6, "log_images": 0},
            }
        if (dataset, labels) == ("kitti", "road"):
            return kitti_root, {
                "data": {"dataset": "kitti", "labels": "road", "image_size": [32, 96]},
                "train": {"batch_size": 6, "log_images": 0},
            }
        raise ValueError(f"no test checkpoint for {dataset} {labels}")

    def checkpoint(dataset: str, labels: str) -> Path:
        key = (dataset, labels)
        if key not in trained:
            data_root, config_sections = sections(dataset, labels)
            run_dir = tmp_path_factory.mktemp(f"trained-{dataset}-{labels}")
            # Plain SGD keeps no optimizer state: checkpoints of the weights alone, 3x smaller
            # than with Adam, so that they write and load quickly.
            config_sections["optim"] = {"optimizer": "sgd", "momentum": 0.0, "lr": 0.01}
            config = make_config(data_root, run_dir / "run", **config_sections)
            # channels_last helps GPUs; on a CPU every new model pays ~1 s of oneDNN warm-up.
            config["model"]["channels_last"] = False
            config_path = run_dir / "config.yaml"
            config_path.write_text(yaml.safe_dump(config))
            with torch_threads(1):
                if train.main(["--config", str(config_path)]) != 0:
                    raise RuntimeError(f"training the {dataset} {labels} test checkpoint failed")
            trained[key] = run_dir / "run" / "last.pt"
        return trained[key]

    return checkpoint


def plain_road_devkit(
    prob_levels: list[np.ndarray], gts: list[np.ndarray], valids: list[np.ndarray]
):
    """The devkit's evalExp + pxEval_maximizeFMeasure + calcEvalMeasures, written plainly.

    prob_levels are the 8-bit PNG values; the devkit reads them as float32 v / 255.
    """
    thresh = np.array(range(0, 256)) / 255.0
    thres_inf = np.concatenate(([-np.inf], thresh, [np.inf]))
    total_fn = np.zeros(256, np.int64)
    total_fp = np.zeros(256, np.int64)
    pos_num = neg_num = 0
    for levels, gt, valid in zip(prob_levels, gts, valids):
        cur_prob = np.clip(levels.astype("f4") / 255, 0.0, 1.0)
        fn_hist = np.histogram(cur_prob[gt & valid], bins=thres_inf)[0]
        total_fn += np.cumsum(fn_hist)[0:256]
        fp_hist = np.histogram(cur_prob[~gt & valid], bins=thres_inf)[0]
        total_fp += np.flipud(np.cumsum(np.flipud(fp_hist)))[1:257]
        pos_num += np.sum(gt & valid)
        neg_num += np.sum(~gt & valid)
    total_tp = pos_num - total_fn
    total_tn = neg_num - total_fp
    recall = total_tp / float(pos_num)
    precision = total_tp / (total_tp + total_fp + 1e-10)
    keep = ~((recall == 0) & (precision == 0))
    recall, precision = recall[keep], precision[keep]
    average_precision = 0
    counter = 0
    for i in np.arange(0, 1.1, 0.1):
        average_precision += max(precision[np.where(recall >= i)])
        counter += 1
    average_precision = average_precision / counter
    f_measure = 2 * (precision * recall) / (precision + recall + 1e-10)
    index = f_measure.argmax()
    values = np.zeros((1, 4), "u4")
    values[0] = [total_tp[index], total_tn[index], total_fp[index], total_fn[index]]
    tp, tn, fp, fn = (values[:, j].astype("f4") for j in range(4))
    return {
        "MaxF": f_measure[index],
        "AP": average_precision,
        "PRE": (tp / (tp + fp))[0],
        "REC": (tp / (tp + fn))[0],
        "FPR": (fp / (tn + fp))[0],
        "FNR": (fn / (tp + fn))[0],
        "threshold": thresh[index],
    }


@pytest.fixture(scope="session")
def road_devkit() -> Callable[..., dict]:
    """`road_devkit(prob_levels, gts, valids)`: the KITTI road devkit's scores (MaxF, AP, PRE,
    REC, FPR, FNR, threshold) of 8-bit probability PNGs, written plainly (plain_road_devkit)."""
    return plain_road_devkit


# --- optional tools ---


def lacking(what: str, how_to_get_it: str, require_variable: str) -> NoReturn:
    """Skips the test that needs `what`, saying how to get it; fails it instead where the
    environment variable `require_variable` is 1 (CI sets it after installing the tool, so
    that a failed install cannot pass unseen as a skip)."""
    message = f"{what} is missing: {how_to_get_it}"
    if os.environ.get(require_variable) == "1":
        pytest.fail(f"{message} ({require_variable}=1 makes it required)")
    pytest.skip(f"{message} (the test runs once it is there)")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a Chromium or Chrome for headless rendering. Without one the test skips;
    under SEGMENTATION_REQUIRE_BROWSER=1 it fails."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    lacking(
        "a browser (chromium, chromium-browser or google-chrome on PATH)",
        "install one, e.g. apt-get install chromium",
        "SEGMENTATION_REQUIRE_BROWSER",
    )


@pytest.fixture(scope="session")
def cxx_compiler() -> str:
    """The C++ compiler that torch.compile's CPU backend (inductor) builds its kernels with:
    $CXX, else g++. Without one the test skips; under SEGMENTATION_REQUIRE_COMPILER=1 it
    fails."""
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path:
        return path
    lacking(
        f"a C++ compiler ({name}, which torch.compile runs on a CPU)",
        "install one, e.g. apt-get install g++, or name it in $CXX",
        "SEGMENTATION_REQUIRE_COMPILER",
    )
