"""Shared fixtures: tiny generated datasets in the real layouts, and small run configs."""

from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that wait by spinning turn a busy two-core machine into a crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from segmentation.sample import generate_cityscapes, generate_kitti

# Two threads at most: the CI machine has two cores, and oversubscription makes tests crawl.
torch.set_num_threads(min(2, torch.get_num_threads()))


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
def kitti_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    generate_kitti(root, scale=0.2, train_per_category=5, test_per_category=1, seed=2)
    return root


def small_config(data_root: Path, output_dir: Path, **sections) -> dict:
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
