import logging
import shutil
from types import SimpleNamespace

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from segmentation.config import DataConfig
from segmentation.data.build import build_training_datasets, find_samples, label_reader
from segmentation.data.cityscapes import find_cityscapes
from segmentation.data.dataset import FullResolutionDataset, SegmentationDataset
from segmentation.data.io import read_label_ids, read_rgb
from segmentation.data.kitti import find_kitti_road
from segmentation.data.labels import IGNORE_INDEX, get_scheme
from segmentation.data.normalize import Normalizer
from segmentation.data.transforms import evaluation_transform, training_transform
from segmentation.engine.loop import to_device
from segmentation.engine.sampler import EpochSampler
from segmentation.errors import UserError
from segmentation.models import encoder_normalization

TRAIN_CITIES = {"aachen", "bremen", "ulm", "zurich"}


def test_official_splits_are_found(cityscapes_root):
    train = find_cityscapes(cityscapes_root, "train")
    val = find_cityscapes(cityscapes_root, "val")
    test = find_cityscapes(cityscapes_root, "test")
    assert {s.group for s in val} == {"frankfurt", "lindau", "munster"}
    assert len(val) == 6 and len(test) == 2
    assert {s.group for s in train} >= TRAIN_CITIES
    for sample in train + val:
        assert sample.label_path.name == f"{sample.name}_gtFine_labelIds.png"
        assert sample.image_path.name == f"{sample.name}_leftImg8bit.png"
        assert sample.label_path.is_file()


def test_the_seeds_held_out_cities_become_the_validation_set(cityscapes_root):
    config = DataConfig(root=str(cityscapes_root), holdout_cities=["ulm", "bremen", "aachen"])
    train, val = find_samples(config, "train"), find_samples(config, "val")
    assert {s.group for s in val} == {"ulm", "bremen", "aachen"}
    assert not {s.group for s in train} & {"ulm", "bremen", "aachen"}
    assert len(train) + len(val) == len(find_cityscapes(cityscapes_root, "train"))


def test_unknown_holdout_city_lists_the_cities(cityscapes_root):
    config = DataConfig(root=str(cityscapes_root), holdout_cities=["paris"])
    with pytest.raises(UserError, match="zurich"):
        find_samples(config, "train")


def test_coarse_adds_train_extra_with_coarse_labels(cityscapes_root):
    fine = find_samples(DataConfig(root=str(cityscapes_root)), "train")
    both = find_samples(DataConfig(root=str(cityscapes_root), coarse=True), "train")
    extra = both[len(fine) :]
    assert extra and all("gtCoarse" in s.label_path.name for s in extra)
    assert all("train_extra" in str(s.image_path) for s in extra)


def test_kitti_road_and_lane(kitti_root):
    train = find_kitti_road(kitti_root, "train", val_fraction=0.2)
    val = find_kitti_road(kitti_root, "val", val_fraction=0.2)
    assert {s.group for s in val} == {"um", "umm", "uu"} and len(val) == 3
    assert len(train) == 12 and not {s.name for s in train} & {s.name for s in val}
    assert find_kitti_road(kitti_root / "data_road", "val", val_fraction=0.2) == val
    lane = find_kitti_road(kitti_root, "train", mode="lane", val_fraction=0.2)
    assert {s.group for s in lane} == {"um"}
    assert all("_lane_" in s.label_path.name for s in lane)
    test = find_kitti_road(kitti_root, "test")
    assert len(test) == 3 and all(s.label_path is None for s in test)


def move_and_link(inside, outside) -> None:
    """Move a folder of the dataset elsewhere and leave a symlink to it in its place."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(inside, outside)
    inside.symlink_to(outside, target_is_directory=True)


def test_symlinked_folders_are_part_of_the_dataset(cityscapes_root, kitti_root, tmp_path):
    """Cities (Cityscapes) and the image and ground-truth folders (KITTI) linked in from
    another disk are found as if they were there."""
    root = shutil.copytree(cityscapes_root, tmp_path / "cityscapes")
    expected = find_cityscapes(root, "val")
    for kind in ("leftImg8bit", "gtFine"):
        move_and_link(root / kind / "val" / "lindau", tmp_path / "elsewhere" / kind / "lindau")
    assert find_cityscapes(root, "val") == expected and len(expected) == 6
    root = shutil.copytree(kitti_root, tmp_path / "kitti")
    expected = find_kitti_road(root, "train", val_fraction=0.2)
    for folder in ("image_2", "gt_image_2"):
        move_and_link(root / "data_road/training" / folder, tmp_path / "elsewhere" / folder)
    assert find_kitti_road(root, "train", val_fraction=0.2) == expected and len(expected) == 12


def test_missing_label_is_listed_or_skipped(cityscapes_root, tmp_path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(cityscapes_root / "leftImg8bit" / "val", root / "leftImg8bit" / "val")
    shutil.copytree(cityscapes_root / "gtFine" / "val", root / "gtFine" / "val")
    victim = sorted((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))[0]
    victim.unlink()
    with pytest.raises(UserError, match=victim.name):
        find_cityscapes(root, "val")
    with caplog.at_level(logging.WARNING):
        samples = find_cityscapes(root, "val", skip_missing_labels=True)
    assert len(samples) == 5 and "skipping 1" in caplog.text


@pytest.mark.parametrize("what", ["missing", "empty", "no_split"])
def test_bad_roots_print_the_expected_layout(tmp_path, what):
    root = tmp_path / "root"
    if what != "missing":
        root.mkdir()
    if what == "no_split":
        (root / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(UserError, match="leftImg8bit/{train,val,test}"):
        find_cityscapes(root, "train")
    with pytest.raises(UserError, match="data_road/training/image_2"):
        find_kitti_road(root, "train")


def test_corrupt_image_names_the_file(cityscapes_root, tmp_path):
    samples = find_cityscapes(cityscapes_root, "val")[:1]
    broken = tmp_path / samples[0].image_path.name
    broken.write_bytes(b"\x89PNG not really")
    samples = [type(samples[0])(broken, samples[0].label_path, "x", "y")]
    scheme = get_scheme("cityscapes", "categories")
    dataset = SegmentationDataset(
        samples,
        scheme,
        evaluation_transform(64, 128),
        label_reader("cityscapes"),
    )
    with pytest.raises(UserError, match=broken.name):
        dataset[0]


@pytest.mark.parametrize("labels", ["categories", "classes", "official", "road"])
def test_samples_have_the_documented_shapes(cityscapes_root, labels):
    config = DataConfig(root=str(cityscapes_root), labels=[labels], image_size=(32, 64))
    train, val = build_training_datasets(config)
    scheme = get_scheme("cityscapes", labels)
    for dataset in (train, val):
        sample = dataset[(0, 123)] if dataset is train else dataset[0]
        assert sample["image"].shape == (32, 64, 3) and sample["image"].dtype == torch.uint8
        assert sample["target"].shape == (32, 64) and sample["target"].dtype == torch.uint8
        values = set(sample["target"].unique().tolist())
        assert values <= set(range(scheme.num_classes)) | {IGNORE_INDEX}


def test_kitti_samples_ignore_outside_the_valid_area(kitti_root):
    config = DataConfig(
        dataset="kitti", root=str(kitti_root), labels=["road"], image_size=(64, 192)
    )
    _, val = build_training_datasets(config)
    target = val[0]["target"]
    assert set(target.unique().tolist()) <= {0, 1, IGNORE_INDEX}
    assert (target == 1).any()


def test_full_resolution_dataset_keeps_stored_values(kitti_root):
    samples = find_kitti_road(kitti_root, "train")
    dataset = FullResolutionDataset(samples, label_reader("kitti"))
    sizes = {tuple(dataset[i]["image"].shape) for i in range(len(dataset))}
    assert len(sizes) > 1, "generated KITTI images should vary in size like the real ones"
    item = dataset[0]
    assert item["image"].dtype == torch.uint8 and item["stored"].shape == item["image"].shape[1:]
    assert set(item["stored"].unique().tolist()) <= {0, 1, 2, 3}


def test_flip_keeps_image_and_label_aligned():
    """An asymmetric pattern whose label is its colour must survive the augmentations."""
    height, width = 96, 192
    stored = np.zeros((height, width), np.uint8)
    stored[:, : width // 3] = 7  # road on the left third
    stored[: height // 2, width // 3 :] = 23  # sky at the top right
    stored[height // 2 :, width // 3 :] = 26  # car at the bottom right
    image = np.zeros((height, width, 3), np.uint8)
    image[stored == 7] = (255, 0, 0)
    image[stored == 23] = (0, 255, 0)
    image[stored == 26] = (0, 0, 255)
    transform = training_transform(48, 96, hflip=1.0, color=0.0)
    transform.set_random_seed(3)
    out = transform(image=image, mask=stored)
    assert (out["mask"][:, -1] == 7).all(), "the flip must move the left third to the right"
    expected = np.select(
        [out["image"][..., 0] > 127, out["image"][..., 1] > 127], [7, 23], default=26
    )
    agreement = (expected == out["mask"]).mean()
    assert agreement > 0.97


def test_augmentations_are_a_function_of_the_sample_seed(cityscapes_root):
    config = DataConfig(root=str(cityscapes_root), image_size=(32, 64))
    train, _ = build_training_datasets(config)
    first, again, other = train[(2, 11)], train[(2, 11)], train[(2, 12)]
    train[(5, 99)]  # an unrelated sample in between changes nothing
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["target"], train[(2, 11)]["target"])
    assert not torch.equal(first["image"], other["image"])


def test_samples_ship_uint8_hwc_a_quarter_of_float32s_bytes(cityscapes_root):
    """Workers ship the transforms' uint8 (H, W, 3) images as they are: no normalization and
    no CHW transposition on the CPU, and a quarter of the bytes of float32 (3, H, W)."""
    config = DataConfig(root=str(cityscapes_root), image_size=(32, 64))
    train, val = build_training_datasets(config)
    items = [train[(0, 5)], train[(1, 6)]]
    for item in [*items, val[0]]:
        image = item["image"]
        assert image.dtype == torch.uint8 and image.shape == (32, 64, 3)
        assert image.is_contiguous()
        assert image.nbytes * 4 == torch.empty(3, 32, 64, dtype=torch.float32).nbytes
    batch = default_collate(items)
    assert batch["image"].shape == (2, 32, 64, 3) and batch["image"].dtype == torch.uint8


def test_a_transform_that_normalizes_is_refused(cityscapes_root):
    """A Normalize left in a pipeline would be applied twice, once more on the device."""
    samples = find_cityscapes(cityscapes_root, "val")[:1]
    scheme = get_scheme("cityscapes", "categories")
    transform = A.Compose([A.Normalize()])
    dataset = SegmentationDataset(samples, scheme, transform, label_reader("cityscapes"))
    with pytest.raises(TypeError, match="uint8"):
        dataset[0]


@pytest.mark.parametrize("channels_last", [True, False])
def test_device_normalization_equals_the_old_cpu_normalization(cityscapes_root, channels_last):
    """The engine's to_device (training and validation) gives what the datasets gave before
    uint8 (the same augmentations, then albumentations' Normalize with the encoder's mean and
    std, CHW) up to float rounding, in the model's memory layout."""
    mean, std = encoder_normalization("resnext50")
    config = DataConfig(root=str(cityscapes_root), image_size=(32, 64))
    train, _ = build_training_datasets(config)
    seeds = [(index, 40 + index) for index in range(4)]
    batch = default_collate([train[item] for item in seeds])
    training = SimpleNamespace(
        config=SimpleNamespace(model=SimpleNamespace(channels_last=channels_last)),
        device=torch.device("cpu"),
        normalizer=Normalizer(mean, std),
    )
    images, target = to_device(batch, training)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert images.dtype == torch.float32 and images.shape == (4, 3, 32, 64)
    assert images.is_contiguous(memory_format=memory_format)
    old = A.Compose(
        [*train.transform.transforms, A.Normalize(mean=mean, std=std, max_pixel_value=255.0)]
    )
    for position, (index, seed) in enumerate(seeds):
        old.set_random_seed(seed)
        sample = train.samples[index]
        out = old(image=read_rgb(sample.image_path), mask=read_label_ids(sample.label_path))
        expected = torch.from_numpy(out["image"].transpose(2, 0, 1).copy())
        assert torch.allclose(images[position], expected, rtol=0, atol=1e-6)
        assert torch.equal(target[position], torch.from_numpy(train.scheme.encode(out["mask"])))


def test_unknown_label_values_are_ignored_with_a_warning(cityscapes_root, tmp_path, caplog):
    sample = find_cityscapes(cityscapes_root, "val")[0]
    label = cv2.imread(str(sample.label_path), cv2.IMREAD_UNCHANGED)
    label[:4, :4] = 200
    bad_label = tmp_path / sample.label_path.name
    cv2.imwrite(str(bad_label), label)
    bad = type(sample)(sample.image_path, bad_label, sample.name, sample.group)
    scheme = get_scheme("cityscapes", "categories")
    dataset = SegmentationDataset(
        [bad],
        scheme,
        evaluation_transform(64, 128),
        label_reader("cityscapes"),
    )
    with caplog.at_level(logging.WARNING):
        target = dataset[0]["target"]
    assert (target[:4, :4] == IGNORE_INDEX).all()
    assert "16 pixels" in caplog.text


def test_sampler_shards_cover_the_epoch_and_resume_mid_epoch():
    shards = [EpochSampler(10, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    for shard in shards:
        shard.set_epoch(2)
    items = [list(shard) for shard in shards]
    assert all(len(share) == 4 for share in items)
    assert {index for share in items for index, _ in share} == set(range(10))
    single = EpochSampler(10, shuffle=True, seed=3)
    single.set_epoch(2)
    order = list(single)
    single.set_epoch(2, start=6)
    assert list(single) == order[6:] and len(single) == 4
    single.set_epoch(3)
    assert list(single) != order
    evaluation = [
        EpochSampler(10, shuffle=False, rank=r, world_size=3, pad=False, seeded=False)
        for r in range(3)
    ]
    assert sorted(i for shard in evaluation for i in shard) == list(range(10))
