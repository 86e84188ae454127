"""Adding a dataset kind is one module: this file defines a fourth kind with a tiny layout of
its own, registers it in the catalog for the test, then trains, evaluates and checks a dataset
of it through the ordinary commands, with no other file changed.

The layout, "pairs": ROOT/SPLIT/NAME.png images beside ROOT/SPLIT/NAME.mask.png masks of three
classes stored as 0 (sky), 1 (road), 2 (car), 255 unlabelled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np
import pytest
import yaml
from pydantic import Field

import evaluate
import train
from segmentation.config import DataConfig
from segmentation.data import check
from segmentation.data.headers import GREY_8BIT, LabelFormat
from segmentation.data.kinds.base import DatasetKind, LabelReader
from segmentation.data.kinds.catalog import KINDS
from segmentation.errors import UserError

MASK = ".mask.png"
CLASSES = ("sky", "road", "car")
COLOURS = [(70, 130, 180), (128, 64, 128), (0, 0, 142)]


class PairsOptions(DataConfig):
    """Pairs: SPLIT/NAME.png beside SPLIT/NAME.mask.png."""

    dataset: Literal["pairs"] = Field("pairs", description="layout of the dataset under data.root")
    val_split: str = Field("val", description="split folder to validate on")


class PairsKind(DatasetKind):
    name: ClassVar[str] = "pairs"
    options: ClassVar[type[DataConfig]] = PairsOptions
    layout: ClassVar[str] = "ROOT/SPLIT/NAME.png, ROOT/SPLIT/NAME.mask.png"
    schemes: ClassVar[tuple[str, ...]] = ("all",)
    labels_help: ClassVar[str] = "pairs: all"
    default_labels: ClassVar[list[str]] = ["all"]

    def scheme_named(self, labels):
        from segmentation.data.labels import IGNORE_INDEX, LabelScheme

        lookup = np.full(256, IGNORE_INDEX, np.uint8)
        lookup[: len(CLASSES)] = np.arange(len(CLASSES))
        return LabelScheme(
            name="all",
            dataset=self.name,
            class_names=CLASSES,
            colors=np.array(COLOURS, np.uint8),
            lookup=lookup,
            export_label_ids=None,
            stored_values=len(CLASSES),
            stored_ignore=IGNORE_INDEX,  # unlabelled on purpose, not unknown
        )

    def label_reader(self, config) -> LabelReader:
        from segmentation.data.io import read_label_ids

        return read_label_ids

    def label_format(self, config) -> LabelFormat:
        return LabelFormat(GREY_8BIT, "a single-channel 8-bit PNG", "store class ids as grey")

    def _pairs(self, root: Path, split: str) -> list[tuple[Path, Path]]:
        images = sorted(p for p in (root / split).glob("*.png") if not p.name.endswith(MASK))
        return [(image, image.with_name(image.stem + MASK)) for image in images]

    def find_samples(self, config, split):
        from segmentation.data.dataset import Sample

        folder = {"val": config.val_split}.get(split, split)
        pairs = self._pairs(Path(config.root), folder)
        if not pairs:
            raise UserError(f"no images in {Path(config.root) / folder}: expected {self.layout}")
        return [Sample(image, mask, image.stem, folder) for image, mask in pairs]

    def detect(self, root: Path) -> bool:
        return any(root.glob(f"*/*{MASK}"))

    def inventory(self, root: Path, labels):
        from segmentation.data.inventory import Inventory, pair_files

        scheme = self.scheme_named(labels or "all")
        inventory = Inventory(
            self.name, root, scheme, self.label_format(None), self.label_reader(None), "pairs"
        )
        for split in ("train", "val"):
            pairs = [(image, mask, image.stem, split) for image, mask in self._pairs(root, split)]
            pair_files(inventory, split, pairs, sorted((root / split).glob(f"*{MASK}")))
        return inventory


def write_tree(root: Path) -> None:
    """Two train and two val pairs, 64x128: sky above, road below, a car on the road."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for index in range(2):
            mask = np.zeros((64, 128), np.uint8)
            mask[32:] = 1
            left = int(rng.integers(0, 96))
            mask[36:52, left : left + 28] = 2
            mask[0, :] = 255
            image = np.array(COLOURS, np.uint8)[np.minimum(mask, 2)]
            noise = rng.integers(-20, 20, image.shape)
            image = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / split / f"p{index}.png"), image[..., ::-1])
            cv2.imwrite(str(root / split / f"p{index}{MASK}"), mask)


@pytest.fixture
def pairs_kind(monkeypatch):
    monkeypatch.setitem(KINDS, "pairs", PairsKind())


@pytest.mark.slow
def test_a_fourth_kind_trains_evaluates_and_checks(pairs_kind, tmp_path, small_config, capsys):
    root = tmp_path / "pairs"
    write_tree(root)
    config = small_config(root, tmp_path / "run", data={"dataset": "pairs", "labels": None})
    config["loss"] = {"name": "ce"}
    config["train"]["batch_size"] = 2
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(path)]) == 0
    checkpoint = tmp_path / "run" / "last.pt"
    scores = tmp_path / "scores.json"
    argv = ["--checkpoint", str(checkpoint), "--output-json", str(scores), "--device", "cpu"]
    assert evaluate.main([*argv, "--export-dir", str(tmp_path / "export")]) == 0
    results = json.loads(scores.read_text())
    assert (results["dataset"], results["images"]) == ("pairs", 2)
    assert list(results["per_class"]) == list(CLASSES)
    assert sorted(p.name for p in (tmp_path / "export" / "masks").iterdir()) == [
        "p0.png",
        "p1.png",
    ]
    capsys.readouterr()
    assert check.main([str(root), "--workers", "0"]) == 0  # found from ROOT, then checked
    out = capsys.readouterr().out
    assert "no problems found" in out and "road" in out


def test_a_fourth_kind_has_its_own_keys_and_reports_problems(pairs_kind, tmp_path, capsys):
    from segmentation.config import config_from_dict

    data = config_from_dict({"data": {"dataset": "pairs", "val_split": "train"}}).data
    assert isinstance(data, PairsOptions) and data.labels == ["all"]
    with pytest.raises(UserError, match="unknown config key.*holdout_cities"):
        config_from_dict({"data": {"dataset": "pairs", "holdout_cities": ["ulm"]}})
    root = tmp_path / "pairs"
    write_tree(root)
    (root / "val" / "p1.mask.png").unlink()
    assert check.main([str(root), "--dataset", "pairs", "--workers", "0"]) == 1
    assert "p1.mask.png" in capsys.readouterr().out
