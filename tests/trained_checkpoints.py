"""Tiny trained checkpoints shared by the evaluation, inference and export tests.

Each checkpoint is trained once per test session (one epoch of one or two optimizer steps,
a second or two on a CPU) and cached here, whichever test module asks first. The models are
poor on purpose: the tests compare the toolkit with references, not with a quality bar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml
from conftest import small_config

import train

_TRAINED: dict[tuple[str, str, str], Path] = {}


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the count. On a busy two-core machine two
    OpenMP threads spin-wait for each other: these tiny models ran 10-20x slower with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(tmp_path_factory, data_root: Path, dataset: str, labels: str, **sections) -> Path:
    key = (str(data_root), dataset, labels)
    if key not in _TRAINED:
        run_dir = tmp_path_factory.mktemp(f"trained-{dataset}-{labels}")
        # Plain SGD keeps no optimizer state: checkpoints of the weights alone, 3x smaller
        # than with Adam, so that they write and load quickly.
        sections.setdefault("optim", {"optimizer": "sgd", "momentum": 0.0, "lr": 0.01})
        config = small_config(data_root, run_dir / "run", **sections)
        # channels_last helps GPUs; on a CPU every new model pays ~1 s of oneDNN warm-up.
        config["model"]["channels_last"] = False
        config_path = run_dir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        if train.main(["--config", str(config_path)]) != 0:
            raise RuntimeError(f"training the {dataset} {labels} test checkpoint failed")
        _TRAINED[key] = run_dir / "run" / "last.pt"
    return _TRAINED[key]


def cityscapes_checkpoint(tmp_path_factory, cityscapes_root: Path, labels: str) -> Path:
    """A Cityscapes FPN/resnet18 checkpoint of the `labels` scheme (input size 32x64)."""
    loss = "bce_dice" if labels == "categories" else "ce"
    return _train(
        tmp_path_factory,
        cityscapes_root,
        "cityscapes",
        labels,
        data={"labels": labels, "train_split": "val"},  # 6 images: one step of 6
        loss={"name": loss},
        train={"batch_size": 6, "log_images": 0},
    )


def kitti_road_checkpoint(tmp_path_factory, kitti_root: Path) -> Path:
    """A KITTI road checkpoint with a sigmoid head (one output channel), input size 32x96."""
    return _train(
        tmp_path_factory,
        kitti_root,
        "kitti",
        "road",
        data={"dataset": "kitti", "labels": "road", "image_size": [32, 96]},
        train={"batch_size": 6, "log_images": 0},
    )
