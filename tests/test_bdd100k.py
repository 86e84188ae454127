"""The BDD100K semantic segmentation kind: its generated trees in both release layouts, their
discovery and detection, the train-id labels, data.check, and a tiny run scored by the
confusion matrix and exported as train-id masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from cityscapesscripts.helpers.labels import name2label

import evaluate
import train
from segmentation.config import config_from_dict
from segmentation.data import check
from segmentation.data.bdd100k import find_bdd100k
from segmentation.data.io import read_label_ids
from segmentation.data.kinds.catalog import detect_kind, kind_named
from segmentation.data.labels import IGNORE_INDEX
from segmentation.errors import UserError
from segmentation.sample.generate import generate_bdd100k

TRAIN, VAL, TEST = 6, 2, 2
# (images folder, masks folder, mask name suffix) of each release, relative to ROOT.
LAYOUTS = {
    "current": ("images/10k", "labels/sem_seg/masks", ".png"),
    "original": ("seg/images", "seg/labels", "_train_id.png"),
}


@pytest.fixture(scope="module")
def bdd_roots(tmp_path_factory) -> dict[str, Path]:
    """A tiny tree (72x128 images) per layout, shared: copy one before changing it."""
    roots = {}
    for layout in LAYOUTS:
        root = tmp_path_factory.mktemp(f"bdd100k_{layout}")
        generate_bdd100k(root, layout=layout, scale=0.1, train=TRAIN, val=VAL, test=TEST, seed=1)
        roots[layout] = root
    return roots


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_generated_tree_has_the_release_layout(bdd_roots, layout):
    root = bdd_roots[layout]
    images, masks, suffix = LAYOUTS[layout]
    for split, count in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        jpgs = sorted((root / images / split).iterdir())
        assert len(jpgs) == count and all(p.suffix == ".jpg" for p in jpgs)
        assert all(p.read_bytes()[:2] == b"\xff\xd8" for p in jpgs)  # JPEG, as released
        if split == "test":
            assert not (root / masks / split).exists()
            continue
        expected = sorted(f"{p.stem}{suffix}" for p in jpgs)
        assert sorted(p.name for p in (root / masks / split).iterdir()) == expected
        image = cv2.imread(str(jpgs[0]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(root / masks / split / expected[0]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (72, 128, 3) and mask.shape == (72, 128)
        assert mask.dtype == np.uint8
        values = set(np.unique(mask).tolist())
        assert values <= set(range(19)) | {255} and len(values) > 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_discovery_pairs_each_image_with_its_mask(bdd_roots, layout):
    root = bdd_roots[layout]
    images, masks, suffix = LAYOUTS[layout]
    assert detect_kind(root).name == "bdd100k"
    for split, count in (("train", TRAIN), ("val", VAL)):
        samples = find_bdd100k(root, split)
        assert len(samples) == count
        for sample in samples:
            assert sample.image_path == root / images / split / f"{sample.name}.jpg"
            assert sample.label_path == root / masks / split / f"{sample.name}{suffix}"
    test = find_bdd100k(root, "test")
    assert len(test) == TEST and all(s.label_path is None for s in test)


def test_the_zips_own_bdd100k_folder_is_found(bdd_roots, tmp_path):
    shutil.copytree(bdd_roots["current"], tmp_path / "bdd100k")
    assert detect_kind(tmp_path).name == "bdd100k"
    assert len(find_bdd100k(tmp_path, "val")) == VAL


def test_train_ids_become_the_19_cityscapes_classes():
    scheme = kind_named("bdd100k").scheme_named("classes")
    assert scheme.num_classes == 19
    assert scheme.class_names[0] == "road" and scheme.class_names[13] == "car"
    assert scheme.class_names[18] == "bicycle"
    # Hand-checked pixels: train id 0 is road, 13 car, 18 bicycle; 255 and 19 are ignored.
    stored = np.array([[0, 13, 18, 255, 19]], np.uint8)
    assert scheme.encode(stored).tolist() == [[0, 13, 18, IGNORE_INDEX, IGNORE_INDEX]]
    assert scheme.count_unknown(stored) == 1  # 19 is outside; 255 is ignore on purpose
    assert tuple(scheme.colors[0]) == name2label["road"].color
    # Predictions go out as train ids again.
    assert scheme.to_label_ids(np.array([[0, 13, 18]], np.uint8)).tolist() == [[0, 13, 18]]
    with pytest.raises(UserError, match="unknown BDD100K label scheme 'categories'"):
        kind_named("bdd100k").scheme_named("categories")


def test_a_generated_mask_holds_the_train_ids_of_its_label_ids(bdd_roots):
    """The generator writes each Cityscapes label id's train id: road pixels are 0, and the
    classes the benchmark ignores (e.g. ego vehicle, id 1) are 255."""
    sample = find_bdd100k(bdd_roots["current"], "train")[0]
    mask = read_label_ids(sample.label_path)
    assert (mask == name2label["road"].trainId).any()  # train id 0
    assert (mask == 255).any()


def test_its_options_are_its_own():
    data = config_from_dict({"data": {"dataset": "bdd100k"}}).data
    assert data.labels == ["classes"]
    with pytest.raises(UserError, match="unknown config key.*holdout_cities"):
        config_from_dict({"data": {"dataset": "bdd100k", "holdout_cities": ["ulm"]}})
    with pytest.raises(UserError, match="val_fraction"):
        config_from_dict({"data": {"dataset": "bdd100k", "val_fraction": 0.1}})


def test_bad_layouts_are_refused_in_one_line(bdd_roots, tmp_path):
    with pytest.raises(UserError, match="no BDD100K images") as error:
        find_bdd100k(tmp_path, "train")
    assert "\n" not in str(error.value)
    root = shutil.copytree(bdd_roots["original"], tmp_path / "tree")
    victim = sorted((root / "seg" / "labels" / "train").iterdir())[2]
    victim.unlink()
    with pytest.raises(UserError, match=f"1 BDD100K train image.*{victim.name}.*skip_missing"):
        find_bdd100k(root, "train")
    assert len(find_bdd100k(root, "train", skip_missing_labels=True)) == TRAIN - 1
    with pytest.raises(UserError, match="unknown BDD100K split 'testing'"):
        find_bdd100k(root, "testing")


def test_data_check_finds_it_and_reports_its_problems(bdd_roots, tmp_path, capsys):
    for layout in LAYOUTS:
        assert check.main([str(bdd_roots[layout]), "--workers", "0"]) == 0
        out = capsys.readouterr().out
        assert "BDD100K" in out and f"{layout} release layout" in out
        assert "no problems found" in out
    root = shutil.copytree(bdd_roots["current"], tmp_path / "tree")
    masks = root / "labels" / "sem_seg" / "masks" / "train"
    images = root / "images" / "10k" / "train"
    first, second = sorted(images.iterdir())[:2]
    (masks / f"{first.stem}.png").unlink()
    second.unlink()
    assert check.main([str(root), "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert f"{first.stem}.png" in out and f"{second.stem}.png: its image is missing" in out
    # A colour mask in place of the train ids: refused, naming the files to use.
    third = sorted(images.iterdir())[0]
    colour = np.zeros((72, 128, 3), np.uint8)
    cv2.imwrite(str(masks / f"{third.stem}.png"), colour)
    assert check.main([str(root), "--dataset", "bdd100k", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert f"{third.stem}.png is not a single-channel 8-bit PNG" in out
    assert "use the train-id masks" in out


@pytest.mark.slow
def test_a_tiny_run_trains_evaluates_and_exports_train_ids(bdd_roots, tmp_path, small_config):
    root = bdd_roots["original"]
    config = small_config(
        root,
        tmp_path / "run",
        data={"dataset": "bdd100k", "labels": "classes"},
        loss={"name": "ce"},
        train={"batch_size": 3, "log_images": 0},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(path)]) == 0

    export = tmp_path / "export"
    scores = tmp_path / "scores.json"
    argv = ["--checkpoint", str(tmp_path / "run" / "last.pt"), "--device", "cpu"]
    assert evaluate.main([*argv, "--output-json", str(scores), "--export-dir", str(export)]) == 0
    results = json.loads(scores.read_text())
    val = find_bdd100k(root, "val")
    assert results["images"] == VAL
    predictions = sorted((export / "masks").iterdir())
    assert [p.name for p in predictions] == sorted(f"{s.name}.png" for s in val)
    # The confusion matrix's mIoU, counted again by hand from the exported train ids: the
    # classes present in the ground truth or the predictions, 255 ignored.
    pred = np.concatenate([read_label_ids(p).ravel() for p in predictions])
    gt = np.concatenate(
        [read_label_ids(s.label_path).ravel() for s in sorted(val, key=lambda s: s.name)]
    )
    assert pred.max() < 19
    valid = gt != 255
    ious = []
    for c in range(19):
        tp = np.sum((pred == c) & (gt == c) & valid)
        union = np.sum(((pred == c) | (gt == c)) & valid)
        if union:
            ious.append(tp / union)
    assert results["mIoU"] == pytest.approx(float(np.mean(ious)), abs=1e-4)
    assert evaluate.main([*argv, "--split", "test"]) == 2
